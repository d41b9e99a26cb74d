//! Registry tests on a manual clock: exact and independent of the machine's speed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::clock::ManualClock;
use crate::permits::limit::Rate;
use crate::permits::resource::{BackoffDef, LimitDef, Origin, REQUESTS};
use crate::watch::Hub;

fn def(name: &str, per_partition: bool, amount: u64, concurrency: u32) -> ResourceDef {
    ResourceDef {
        name: name.into(),
        dimensions: vec![REQUESTS.into()],
        declared_dimensions: vec![],
        limits: vec![LimitDef {
            dimension: 0,
            rate: Rate {
                amount,
                period_ns: 1_000_000_000,
                burst: amount,
            },
            scope: if per_partition {
                Scope::Partition
            } else {
                Scope::Resource
            },
            scope_explicit: false,
            origin: Origin::Config,
        }],
        concurrency,
        lease: Duration::from_secs(60),
        per_partition,
        backoff: BackoffDef::default(),
        max_queue: 10,
        learn_from_headers: true,
        failure_policy: None,
        limits_known: true,
        probe_concurrency: 0,
        accept_feedback_without_permit: false,
    }
}

/// Acquire with no wait and return the grant or the denial.
async fn ask(reg: &Registry, r: AcquireRequest<'_>) -> Result<GrantInfo, Denial> {
    reg.acquire(r).await.unwrap().result
}

fn req<'a>(
    resource: &'a str,
    partition: &'a str,
    cost: &'a HashMap<String, u64>,
) -> AcquireRequest<'a> {
    AcquireRequest {
        resource,
        partition,
        cost,
        max_wait: Duration::ZERO,
        priority: 0,
        lease: None,
    }
}

/// Partition buckets are created on first use and dropped once idle (leases expired,
/// limits refilled), so memory is bounded by live partitions; a dropped partition starts
/// afresh, full.
#[tokio::test]
async fn idle_partitions_are_dropped() {
    let clock = ManualClock::new();
    let reg = Registry::new(Arc::new(clock.clone()), None, Hub::new());
    reg.put(def("r", true, 1, 0));
    let none = HashMap::new();
    for i in 0..1000 {
        let p = format!("user:{i}");
        let o = reg.acquire(req("r", &p, &none)).await.unwrap();
        assert!(o.result.is_ok());
    }
    assert_eq!(reg.bucket_count(), 1001);
    // Leases held and buckets drained: nothing may be dropped.
    assert_eq!(reg.sweep(), (0, 0));
    clock.advance(Duration::from_secs(61));
    assert_eq!(reg.sweep(), (1000, 1000));
    assert_eq!(reg.bucket_count(), 1);
    let o = reg.acquire(req("r", "user:7", &none)).await.unwrap();
    assert!(o.result.is_ok(), "a recreated partition is full");
}

/// A denial's retry_after is exact on the manual clock, and a concurrency denial points at
/// the earliest lease expiry.
#[tokio::test]
async fn exact_retry_after() {
    let clock = ManualClock::new();
    let reg = Registry::new(Arc::new(clock.clone()), None, Hub::new());
    reg.put(def("rate", false, 4, 0));
    reg.put(def("conc", false, 1000, 1));
    let none = HashMap::new();
    for _ in 0..4 {
        assert!(ask(&reg, req("rate", "", &none)).await.is_ok());
    }
    let d = ask(&reg, req("rate", "", &none)).await.unwrap_err();
    assert_eq!(d.reason, DenialReason::RateLimited);
    assert_eq!(d.retry_after, Duration::from_millis(250));
    clock.advance(Duration::from_millis(250));
    assert!(ask(&reg, req("rate", "", &none)).await.is_ok());

    let g = ask(&reg, req("conc", "", &none)).await.unwrap();
    clock.advance(Duration::from_secs(10));
    let d = ask(&reg, req("conc", "", &none)).await.unwrap_err();
    assert_eq!(d.reason, DenialReason::ConcurrencyLimited);
    assert_eq!(d.retry_after, Duration::from_secs(50));
    reg.release(&g.permit_id, Settlement::Keep).unwrap();
    assert!(ask(&reg, req("conc", "", &none)).await.is_ok());
    assert!(matches!(
        reg.release(&g.permit_id, Settlement::Keep),
        Err(PermitError::UnknownPermit)
    ));
}

/// Deleting a resource makes it unknown; replacing one starts its buckets afresh.
#[tokio::test]
async fn replace_and_delete() {
    let clock = ManualClock::new();
    let reg = Registry::new(Arc::new(clock), None, Hub::new());
    assert!(!reg.put(def("r", false, 1, 0)));
    let none = HashMap::new();
    assert!(ask(&reg, req("r", "", &none)).await.is_ok());
    assert!(ask(&reg, req("r", "", &none)).await.is_err());
    assert!(reg.put(def("r", false, 2, 0)));
    assert!(ask(&reg, req("r", "", &none)).await.is_ok());
    assert!(reg.delete("r"));
    assert!(matches!(
        reg.acquire(req("r", "", &none)).await,
        Err(PermitError::UnknownResource(_))
    ));
}

/// A concurrency denial points at the earliest lease still held, never at one already
/// released.
#[tokio::test]
async fn concurrency_wait_ignores_released_leases() {
    let clock = ManualClock::new();
    let reg = Registry::new(Arc::new(clock.clone()), None, Hub::new());
    reg.put(def("conc", false, 1000, 1));
    let none = HashMap::new();
    let a = ask(&reg, req("conc", "", &none)).await.unwrap();
    clock.advance(Duration::from_secs(10));
    reg.release(&a.permit_id, Settlement::Keep).unwrap();
    let _b = ask(&reg, req("conc", "", &none)).await.unwrap();
    let d = ask(&reg, req("conc", "", &none)).await.unwrap_err();
    assert_eq!(d.reason, DenialReason::ConcurrencyLimited);
    // b's lease ends at 70 s; a's (released) would have ended at 60 s.
    assert_eq!(d.retry_after, Duration::from_secs(60));
}

/// A partition bucket is one allocation of 192 bytes (208 with malloc's header): the lock,
/// the state, the resource pointer and an inline partition name (see `memory_per_bucket`).
#[test]
#[cfg(target_pointer_width = "64")]
fn bucket_is_one_small_allocation() {
    assert_eq!(std::mem::size_of::<Bucket>(), 176);
    assert_eq!(std::mem::size_of::<PartitionKey>(), 8);
}

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0)
        * 1024
}

/// Memory per live partition bucket (RSS growth / buckets), with and without a held
/// lease; run with `cargo test --release --lib memory_per_bucket -- --ignored --nocapture`.
#[tokio::test]
#[ignore = "a measurement, run by scripts/bench.sh"]
async fn memory_per_bucket() {
    const N: usize = 500_000;
    let clock = ManualClock::new();
    // Above the default cap on live partitions, which would stop it at 100 000.
    let caps = crate::permits::caps::Caps {
        partitions_per_resource: N + 1,
        ..crate::permits::caps::Caps::default()
    };
    let reg = Registry::new(Arc::new(clock.clone()), None, Hub::new()).with_caps(caps);
    reg.put(def("mem", true, 10, 0));
    reg.put(def("idle", true, 10, 0));
    let none = HashMap::new();
    let names: Vec<String> = (0..N).map(|i| format!("user:{i}")).collect();
    let before = rss_bytes();
    for p in &names {
        let o = reg.acquire(req("mem", p, &none)).await.unwrap();
        assert!(o.result.is_ok());
    }
    let after = rss_bytes();
    assert_eq!(reg.bucket_count(), N + 2);
    // Live without a lease: the permit is released at once (its cost stays taken, so the
    // bucket is not idle and is kept).
    for p in &names {
        let g = ask(&reg, req("idle", p, &none)).await.unwrap();
        reg.release(&g.permit_id, Settlement::Keep).unwrap();
    }
    let after_idle = rss_bytes();
    assert_eq!(reg.bucket_count(), 2 * N + 2);
    assert_eq!(reg.sweep(), (0, 0));
    println!(
        "RESULT memory_per_bucket buckets={N} bytes_per_bucket_with_lease={} \
         bytes_per_bucket_without_lease={} size_of_bucket_state={}",
        (after - before) / N as u64,
        (after_idle - after) / N as u64,
        std::mem::size_of::<BucketState>()
    );
}

/// Partition names are held inline when short and shared when long: both (and non-ASCII
/// ones) find their bucket again, for a release and for a quota.
#[tokio::test]
async fn short_and_long_partition_names() {
    let clock = ManualClock::new();
    let reg = Registry::new(Arc::new(clock), None, Hub::new());
    reg.put(def("r", true, 2, 0));
    let none = HashMap::new();
    let long = "tenant-0123456789abcdef-0123456789abcdef";
    for p in ["", "a", "exactly-22-bytes-name!", "été", long] {
        let g = ask(&reg, req("r", p, &none)).await.unwrap();
        assert!(ask(&reg, req("r", p, &none)).await.is_ok());
        assert!(ask(&reg, req("r", p, &none)).await.is_err(), "{p}");
        assert_eq!(reg.quota("r", p).unwrap().in_flight, 2, "{p}");
        reg.release(&g.permit_id, Settlement::Refund).unwrap();
        assert_eq!(reg.quota("r", p).unwrap().in_flight, 1, "{p}");
    }
    assert_eq!(reg.bucket_count(), 6);
}

mod summaries {
    //! The summary equals the sum over the partitions, and its top N are the partitions a
    //! plain sort by pressure puts first, on random workloads.

    use super::*;
    use crate::permits::QuotaView;
    use crate::permits::summary::{NEAR_EMPTY, Order, Row};
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Take { part: u8, cost: u64 },
        Release { nth: u8, refund: bool },
        Advance { ms: u16 },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u8..12, 1u64..4).prop_map(|(part, cost)| Op::Take { part, cost }),
            2 => (any::<u8>(), any::<bool>()).prop_map(|(nth, refund)| Op::Release { nth, refund }),
            1 => (1u16..700).prop_map(|ms| Op::Advance { ms }),
        ]
    }

    /// A row as the partition's own quota view gives it (the brute force).
    fn row_of(name: &str, v: &QuotaView, burst: u64) -> Row {
        let mut share = 1.0f32;
        for d in &v.dimensions {
            #[allow(clippy::cast_precision_loss)]
            let f = d.remaining as f32 / burst as f32;
            share = share.min(f);
        }
        if v.concurrency > 0 {
            #[allow(clippy::cast_precision_loss)]
            let used = v.in_flight as f32 / v.concurrency as f32;
            share = share.min(1.0 - used.min(1.0));
        }
        Row {
            partition: name.into(),
            share,
            queue: v.queue_depth,
            in_flight: v.in_flight,
            cooling: v.cooldown_until.is_some(),
            cooldown_until: 0,
            probing: v.probing,
            granted: v.granted_total,
            denied: v.denied_total,
            upstream_429: v.upstream_429_total,
            granted_delta: 0,
            denied_delta: 0,
        }
    }

    fn run(amount: u64, concurrency: u32, ops: &[Op], prefix: &str, n: usize) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let clock = ManualClock::new();
            let reg = Registry::new(Arc::new(clock.clone()), None, Hub::new());
            reg.put(def("r", true, amount, concurrency));
            let mut held: Vec<String> = Vec::new();
            let mut granted_since = 0u64;
            let mut denied_since = 0u64;
            // A first ranking, so the deltas of the second count what the ops did.
            let first = reg.summary("r", "", 0).unwrap();
            assert_eq!(first.totals.partitions, 0);
            for o in ops {
                match o {
                    Op::Take { part, cost } => {
                        let p = format!("{}{part}", if part % 2 == 0 { "a" } else { "b" });
                        // A cost above the burst is refused as invalid, not denied.
                        let c = HashMap::from([("requests".to_owned(), (*cost).min(amount))]);
                        match ask(&reg, req("r", &p, &c)).await {
                            Ok(g) => {
                                held.push(g.permit_id);
                                granted_since += 1;
                            }
                            Err(_) => denied_since += 1,
                        }
                    }
                    Op::Release { nth, refund } if !held.is_empty() => {
                        let id = held.swap_remove(usize::from(*nth) % held.len());
                        let s = if *refund {
                            Settlement::Refund
                        } else {
                            Settlement::Keep
                        };
                        reg.release(&id, s).unwrap();
                    }
                    Op::Release { .. } => {}
                    Op::Advance { ms } => clock.advance(Duration::from_millis(u64::from(*ms))),
                }
            }
            // Past the shared ranking's age: the next summary reads every partition now.
            clock.advance(crate::permits::summary::REFRESH);
            let s = reg.summary("r", prefix, n).unwrap();
            let (all, more, total) = reg.partitions("r", prefix, Order::Name, "", 1000).unwrap();
            assert!(!more);
            assert_eq!(total, s.totals.partitions);
            let rows: Vec<Row> = all.iter().map(|(p, v)| row_of(p, v, amount)).collect();
            let sum = |f: fn(&Row) -> u64| rows.iter().map(f).sum::<u64>();
            let t = s.totals;
            assert_eq!(t.partitions, rows.len() as u64);
            assert_eq!(t.in_flight, sum(|r| u64::from(r.in_flight)));
            assert_eq!(t.queued, sum(|r| u64::from(r.queue)));
            assert_eq!(t.granted, sum(|r| r.granted));
            assert_eq!(t.denied, sum(|r| r.denied));
            assert_eq!(t.cooling, sum(|r| u64::from(r.cooling)));
            assert_eq!(t.near_empty, sum(|r| u64::from(r.share <= NEAR_EMPTY)));
            if prefix.is_empty() {
                // Partitions are never dropped here, so every grant and denial is counted
                // in the window since the first ranking.
                assert_eq!(t.granted, granted_since);
                assert_eq!(t.denied, denied_since);
                assert_eq!(t.granted_delta, granted_since);
                assert_eq!(t.denied_delta, denied_since);
            }
            // The top N: a plain stable sort of the name-ordered rows by pressure.
            let mut want = rows.clone();
            want.sort_by(Row::pressure);
            let want: Vec<&str> = want.iter().take(n).map(|r| &*r.partition).collect();
            let got: Vec<&str> = s.top.iter().map(|(p, _)| &**p).collect();
            assert_eq!(got, want);
            // Paging by pressure walks the same order.
            let (page, _, _) = reg
                .partitions("r", prefix, Order::Pressure, "1", 3)
                .unwrap();
            let paged: Vec<&str> = page.iter().map(|(p, _)| &**p).collect();
            let mut all_p = rows.clone();
            all_p.sort_by(Row::pressure);
            let want_p: Vec<&str> = all_p
                .iter()
                .skip(1)
                .take(3)
                .map(|r| &*r.partition)
                .collect();
            assert_eq!(paged, want_p);
        });
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn summary_is_the_sum_and_top_is_the_sort(
            amount in 1u64..6,
            concurrency in 0u32..4,
            ops in proptest::collection::vec(op(), 0..120),
            prefix in prop_oneof![Just(""), Just("a"), Just("b1")],
            n in 0usize..6,
        ) {
            run(amount, concurrency, &ops, prefix, n);
        }
    }
}
