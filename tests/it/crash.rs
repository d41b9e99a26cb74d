//! The crash test: the real binary under write load from several clients (Begin + Complete,
//! Cache.Put), killed with SIGKILL at a random moment, restarted on the same directory,
//! for several cycles. Every write the server acknowledged must be there after each
//! restart, byte for byte: 0 lost, 0 corrupt, 0 failed reopens.
//!
//! Short by default (3 cycles, a few seconds); `scripts/crash-test.sh` runs it long
//! (`PERMITD_CRASH_CYCLES`, `PERMITD_CRASH_CLIENTS`, `PERMITD_CRASH_LOAD_MS`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use permitd::proto::{
    self, IdempotencyState, cache_client::CacheClient, idempotency_client::IdempotencyClient,
};
use tonic::transport::Channel;

use crate::spawned::{Spawned, env_or};
use crate::support::pct;

/// Older acknowledged writes re-checked per cycle (all of them in the last cycle).
const OLD_SAMPLE: usize = 300;

/// A cache budget no run reaches (16 GiB), so a missing entry can only be a lost write,
/// never an eviction; the test also checks that nothing was evicted.
const CONFIG: &str = "[cache]\nmax_total_bytes = 17179869184\n";

/// One acknowledged write.
#[derive(Debug, Clone)]
struct Acked {
    idempotency: bool,
    key: String,
    len: usize,
}

/// The bytes stored under `key`: a function of the key, so a check needs no copy.
fn payload(key: &str, len: usize) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(u64::from(crc32fast::hash(key.as_bytes())));
    (0..len).map(|_| rng.u8(..)).collect()
}

fn result_of(key: &str, len: usize) -> proto::StoredResult {
    proto::StoredResult {
        status_code: 200,
        headers: HashMap::from([("x-key".into(), key.into())]),
        body: payload(key, len),
        metadata: HashMap::from([("len".into(), len.to_string())]),
    }
}

/// Writes until told to stop or the server goes away; records what was acknowledged.
async fn writer(ch: Channel, prefix: String, stop: Arc<AtomicBool>, acked: Arc<Mutex<Vec<Acked>>>) {
    let mut idem = IdempotencyClient::new(ch.clone());
    let mut cache = CacheClient::new(ch);
    let mut rng = fastrand::Rng::new();
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let key = format!("{prefix}-{i}");
        let len = rng.usize(0..4096);
        let idempotency = i.is_multiple_of(2);
        let ok = if idempotency {
            let Ok(r) = idem.begin(crate::idempotency::begin_req(&key, "fp")).await else {
                return;
            };
            let r = r.into_inner();
            assert_eq!(r.state(), IdempotencyState::Acquired, "fresh key {key}");
            let req = proto::CompleteRequest {
                key: key.clone(),
                result: Some(result_of(&key, len)),
                lock_token: r.lock_token,
            };
            idem.complete(req).await.is_ok()
        } else {
            let req = proto::CachePutRequest {
                namespace: "crash".into(),
                key: key.clone(),
                value: payload(&key, len),
                ttl: None,
            };
            cache.put(req).await.is_ok()
        };
        if !ok {
            return;
        }
        acked.lock().unwrap().push(Acked {
            idempotency,
            key,
            len,
        });
    }
}

/// Checks acknowledged writes against the server: (lost, corrupt).
async fn verify(ch: Channel, items: Vec<Acked>) -> (u64, u64) {
    let chunks: Vec<Vec<Acked>> = items
        .chunks(items.len().div_ceil(8).max(1))
        .map(<[Acked]>::to_vec)
        .collect();
    let tasks: Vec<_> = chunks
        .into_iter()
        .map(|chunk| {
            let ch = ch.clone();
            tokio::spawn(async move {
                let mut idem = IdempotencyClient::new(ch.clone());
                let mut cache = CacheClient::new(ch);
                let (mut lost, mut corrupt) = (0, 0);
                for a in chunk {
                    let (found, intact) = if a.idempotency {
                        match idem.get(proto::GetRequest { key: a.key.clone() }).await {
                            // Still in progress = the acknowledged Complete was lost.
                            Ok(r) => {
                                let r = r.into_inner();
                                let done = r.state() == IdempotencyState::Completed;
                                (done, r.result == Some(result_of(&a.key, a.len)))
                            }
                            Err(s) if s.code() == tonic::Code::NotFound => (false, false),
                            Err(s) => panic!("get {}: {s:?}", a.key),
                        }
                    } else {
                        let r = cache
                            .get(proto::CacheGetRequest {
                                namespace: "crash".into(),
                                key: a.key.clone(),
                            })
                            .await;
                        let r = r
                            .unwrap_or_else(|s| panic!("cache get {}: {s:?}", a.key))
                            .into_inner();
                        (r.found, r.value == payload(&a.key, a.len))
                    };
                    if !found {
                        eprintln!("LOST {a:?}");
                        lost += 1;
                    } else if !intact {
                        eprintln!("CORRUPT {a:?}");
                        corrupt += 1;
                    }
                }
                (lost, corrupt)
            })
        })
        .collect();
    let mut total = (0, 0);
    for t in tasks {
        let (l, c) = t.await.unwrap();
        total = (total.0 + l, total.1 + c);
    }
    total
}

/// Damaged values the server itself noticed since its start (either service's counter:
/// both include the store's), and cache evictions since its start.
async fn server_counters(ch: Channel) -> (u64, u64) {
    let i = IdempotencyClient::new(ch.clone())
        .stats(proto::IdempotencyStatsRequest {})
        .await
        .unwrap()
        .into_inner();
    let c = CacheClient::new(ch)
        .stats(proto::CacheStatsRequest {})
        .await
        .unwrap()
        .into_inner();
    (i.corrupt_values.max(c.corrupt_values), c.evictions)
}

/// SIGKILL under write load, restart, check every acknowledged write; several cycles.
/// Prints `RESULT crash_test ...`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill9_under_load_loses_no_acknowledged_write() {
    let cycles: usize = env_or("PERMITD_CRASH_CYCLES", 3);
    let clients: usize = env_or("PERMITD_CRASH_CLIENTS", 8);
    let load_ms: u64 = env_or("PERMITD_CRASH_LOAD_MS", 400);
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let log = tmp.path().join("permitd.log");
    let config = tmp.path().join("crash.toml");
    std::fs::write(&config, CONFIG).unwrap();
    let started = Instant::now();
    let mut server = Spawned::start(&data, Some(&config), &log)
        .await
        .unwrap_or_else(|e| panic!("first start: {}", e.log));
    let acked = Arc::new(Mutex::new(Vec::<Acked>::new()));
    let (mut lost, mut corrupt, mut failed_reopens, mut evicted) = (0u64, 0u64, 0u64, 0u64);
    let mut recoveries = Vec::new();
    let mut checked_upto = 0;
    for cycle in 0..cycles {
        let stop = Arc::new(AtomicBool::new(false));
        let writers: Vec<_> = (0..clients)
            .map(|w| {
                tokio::spawn(writer(
                    server.channel(),
                    format!("c{cycle}-w{w}"),
                    stop.clone(),
                    acked.clone(),
                ))
            })
            .collect();
        // The random moment: somewhere in the load window, mid-write for most clients.
        tokio::time::sleep(Duration::from_millis(fastrand::u64(load_ms / 4..=load_ms))).await;
        server.kill();
        stop.store(true, Ordering::Relaxed);
        for w in writers {
            w.await.unwrap();
        }
        server = match Spawned::start(&data, Some(&config), &log).await {
            Ok(s) => s,
            Err(e) => {
                failed_reopens += 1;
                eprintln!("REOPEN FAILED after cycle {cycle}:\n{}", e.log);
                break;
            }
        };
        recoveries.push(server.ready_in);
        let all = acked.lock().unwrap().clone();
        let last = cycle + 1 == cycles;
        let mut check: Vec<Acked> = all[checked_upto..].to_vec();
        if last {
            check = all.clone();
        } else {
            let old = &all[..checked_upto];
            check.extend(
                (0..OLD_SAMPLE.min(old.len())).map(|_| old[fastrand::usize(..old.len())].clone()),
            );
        }
        checked_upto = all.len();
        let (l, c) = verify(server.channel(), check).await;
        let (server_corrupt, evictions) = server_counters(server.channel()).await;
        lost += l;
        corrupt += c + server_corrupt;
        evicted += evictions;
    }
    drop(server);
    recoveries.sort();
    let acknowledged = acked.lock().unwrap().len();
    println!(
        "RESULT crash_test cycles={cycles} clients={clients} acknowledged={acknowledged} lost={lost} corrupt={corrupt} \
         failed_reopens={failed_reopens} recovery_ms_p50={} max={} evicted={evicted} elapsed_s={:.1}",
        pct(&recoveries, 0.5).as_millis(),
        recoveries.last().copied().unwrap_or_default().as_millis(),
        started.elapsed().as_secs_f64()
    );
    assert!(acknowledged > 0, "no write was acknowledged");
    assert_eq!((lost, corrupt, failed_reopens, evicted), (0, 0, 0, 0));
}
