//! Soak: hours of insert/expire churn with short TTLs against the real binary, printing the
//! server's memory (RSS) and data-directory size over time, to see both level off (sled is
//! known for space amplification, spacejam/sled#1124, #1333). Not a CI test: ignored; run it
//! with `scripts/soak.sh` (`PERMITD_SOAK_SECS`, `PERMITD_SOAK_SAMPLE_SECS`,
//! `PERMITD_SOAK_CLIENTS`).
//!
//! Prints `SOAK t=...` samples and a final `RESULT soak ...` line.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use permitd::proto::{self, cache_client::CacheClient, idempotency_client::IdempotencyClient};
use tonic::transport::Channel;

use crate::spawned::{Spawned, dir_bytes, env_or};
use crate::support::dur;

/// Short TTLs and a brisk sweeper, so the churn is mostly insert-then-expire.
const CONFIG: &str = r#"
[idempotency]
ttl = "3s"
lock_ttl = "1s"
sweep_interval = "250ms"

[cache]
default_ttl = "3s"
max_total_bytes = 67108864
sweep_interval = "250ms"
"#;

/// Writes until `stop`: cache puts (1-8 KiB, TTL 1-3 s) and Begin + Complete of fresh keys.
async fn churn(ch: Channel, id: usize, stop: Arc<AtomicBool>, writes: Arc<AtomicU64>) {
    let mut cache = CacheClient::new(ch.clone());
    let mut idem = IdempotencyClient::new(ch);
    let mut rng = fastrand::Rng::new();
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let key = format!("s{id}-{i}");
        let ok = if i.is_multiple_of(3) {
            let begin = proto::BeginRequest {
                ttl: Some(dur(Duration::from_secs(3))),
                ..crate::idempotency::begin_req(&key, "fp")
            };
            match idem.begin(begin).await {
                Ok(r) => {
                    let result = proto::StoredResult {
                        status_code: 200,
                        body: vec![1; rng.usize(100..2000)],
                        ..Default::default()
                    };
                    let req = proto::CompleteRequest {
                        key,
                        result: Some(result),
                        lock_token: r.into_inner().lock_token,
                    };
                    idem.complete(req).await.is_ok()
                }
                Err(_) => false,
            }
        } else {
            let ttl = Duration::from_millis(rng.u64(1000..3000));
            let req = proto::CachePutRequest {
                namespace: "soak".into(),
                key,
                value: vec![2; rng.usize(1024..8192)],
                ttl: Some(dur(ttl)),
            };
            cache.put(req).await.is_ok()
        };
        assert!(ok, "a write failed during the soak");
        writes.fetch_add(1, Ordering::Relaxed);
    }
}

/// Insert/expire churn for `PERMITD_SOAK_SECS` (default 60), sampling RSS and disk size.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "soak: long; run scripts/soak.sh"]
async fn soak_memory_and_disk_level_off() {
    let secs: u64 = env_or("PERMITD_SOAK_SECS", 60);
    let every: u64 = env_or("PERMITD_SOAK_SAMPLE_SECS", 10);
    let clients: usize = env_or("PERMITD_SOAK_CLIENTS", 8);
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let config = tmp.path().join("soak.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let server = Spawned::start(&data, Some(&config), &tmp.path().join("permitd.log"))
        .await
        .unwrap_or_else(|e| panic!("start: {}", e.log));
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..clients)
        .map(|id| tokio::spawn(churn(server.channel(), id, stop.clone(), writes.clone())))
        .collect();
    let mut cache = CacheClient::new(server.channel());
    let started = Instant::now();
    let mut samples: Vec<(u64, u64)> = Vec::new();
    let mut last_writes = 0;
    while started.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(Duration::from_secs(every)).await;
        let (rss, disk) = (server.rss_kib() / 1024, dir_bytes(&data) >> 20);
        let s = cache
            .stats(proto::CacheStatsRequest {})
            .await
            .unwrap()
            .into_inner();
        let w = writes.load(Ordering::Relaxed);
        println!(
            "SOAK t={}s rss_mib={rss} disk_mib={disk} cache_entries={} cache_mib={} expired_removed={} writes={w} writes_per_s={}",
            started.elapsed().as_secs(),
            s.entries,
            s.bytes >> 20,
            s.expired_removed,
            (w - last_writes) / every
        );
        last_writes = w;
        samples.push((rss, disk));
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let max = |f: fn(&(u64, u64)) -> u64| samples.iter().map(f).max().unwrap_or(0);
    let (first, last) = (
        samples.first().copied().unwrap_or_default(),
        samples.last().copied().unwrap_or_default(),
    );
    // Levelling off: the second half's peak against the first half's.
    let half = samples.len() / 2;
    let peak = |s: &[(u64, u64)], f: fn(&(u64, u64)) -> u64| s.iter().map(f).max().unwrap_or(0);
    println!(
        "RESULT soak secs={secs} clients={clients} writes={} rss_mib_first={} rss_mib_max={} rss_mib_last={} \
         rss_mib_peak_1st_half={} rss_mib_peak_2nd_half={} disk_mib_first={} disk_mib_max={} disk_mib_last={} \
         disk_mib_peak_1st_half={} disk_mib_peak_2nd_half={}",
        writes.load(Ordering::Relaxed),
        first.0,
        max(|s| s.0),
        last.0,
        peak(&samples[..half], |s| s.0),
        peak(&samples[half..], |s| s.0),
        first.1,
        max(|s| s.1),
        last.1,
        peak(&samples[..half], |s| s.1),
        peak(&samples[half..], |s| s.1),
    );
}
