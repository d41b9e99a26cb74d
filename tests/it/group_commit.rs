//! What group commit buys: durable record writes per second and their latency on sled,
//! with one flush per write (the baseline: insert + flush, each in `spawn_blocking`)
//! against grouped flushes (`GroupCommit`), at several concurrencies, measured in the same
//! run on the same disk. A benchmark, not a test: ignored by default; run it in release:
//!
//! `cargo test --release --test it group_commit -- --ignored --nocapture`
//!
//! Prints `RESULT group_commit mode=... concurrency=... writes_per_s=... p50_ms=... p99_ms=...`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use permitd::store::keys::RecordTree;
use permitd::store::{GroupCommit, RecordStore, SledStore, Write};

use crate::spawned::env_or;
use crate::support::pct;

/// One writer: durable writes until `until`, returning each write's latency.
async fn writer(
    store: Arc<dyn RecordStore>,
    commit: GroupCommit,
    id: usize,
    until: Instant,
) -> Vec<Duration> {
    let mut lat = Vec::new();
    let mut i = 0u64;
    while Instant::now() < until {
        i += 1;
        let t = Instant::now();
        let key = format!("w{id}-{i}").into_bytes();
        let s = Arc::clone(&store);
        tokio::task::spawn_blocking(move || {
            s.update(RecordTree::Cache, &key, &mut |_| Write::Put(vec![7; 256]))
        })
        .await
        .unwrap()
        .unwrap();
        commit.durable().await.unwrap();
        lat.push(t.elapsed());
    }
    lat
}

/// Durable writes per second and latency, per write vs grouped, at concurrency 1/16/64.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "benchmark: run with --ignored --nocapture, in release"]
async fn group_commit_throughput() {
    let secs: f64 = env_or("PERMITD_BENCH_SECS", 2.0);
    for concurrency in [1usize, 16, 64] {
        for grouped in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let store: Arc<dyn RecordStore> = Arc::new(SledStore::open(dir.path()).unwrap());
            let commit = if grouped {
                GroupCommit::start(Arc::clone(&store)).unwrap()
            } else {
                GroupCommit::per_write(Arc::clone(&store))
            };
            let started = Instant::now();
            let until = started + Duration::from_secs_f64(secs);
            let tasks: Vec<_> = (0..concurrency)
                .map(|id| tokio::spawn(writer(Arc::clone(&store), commit.clone(), id, until)))
                .collect();
            let mut lat = Vec::new();
            for t in tasks {
                lat.extend(t.await.unwrap());
            }
            let elapsed = started.elapsed().as_secs_f64();
            lat.sort();
            let ms = |d: Duration| d.as_secs_f64() * 1e3;
            let writes = lat.len();
            println!(
                "RESULT group_commit mode={} concurrency={concurrency} writes={writes} writes_per_s={:.0} \
                 p50_ms={:.2} p99_ms={:.2} flushes={} writes_per_flush={:.1}",
                if grouped { "grouped" } else { "per_write" },
                writes as f64 / elapsed,
                ms(pct(&lat, 0.5)),
                ms(pct(&lat, 0.99)),
                commit.flushes(),
                writes as f64 / commit.flushes().max(1) as f64,
            );
            commit.close();
        }
    }
}
