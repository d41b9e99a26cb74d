//! The bench driver behind `scripts/bench-watch.sh`: live views at scale.
//!
//! Against a running server it makes one per-partition resource with `--partitions` live
//! buckets (each holds a long lease, so none is swept as idle), then measures AcquirePermit
//! throughput over those partitions in `--rounds` rounds of (without subscribers, with
//! `--subscribers` of them), so drift on a shared machine hits both alike; the ratio is of
//! the means. Half the subscribers never read: full `Watch` streams whose snapshot stalls. The other half read what a dashboard or a tool reads of such a
//! resource: `WatchSummaries` (top 10) and `Watch` of resource-wide buckets only. It reports
//! the throughput ratio and the server's RSS growth (the largest over the rounds of its
//! peak while the subscribers are open, against just before they opened).
//!
//! `cargo run --release --example watch_scale -- --server 127.0.0.1:50997 --server-pid PID`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use permitd::proto;
use permitd::proto::permits_client::PermitsClient;
use permitd::proto::quotas_client::QuotasClient;
use tokio_stream::StreamExt as _;
use tonic::transport::Channel;

struct Args {
    server: String,
    pid: u32,
    partitions: usize,
    subscribers: usize,
    duration: Duration,
    concurrency: usize,
    rounds: usize,
}

fn args() -> Result<Args, String> {
    let mut a = Args {
        server: "127.0.0.1:50997".into(),
        pid: 0,
        partitions: 100_000,
        subscribers: 1000,
        duration: Duration::from_secs(4),
        concurrency: 64,
        rounds: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().ok_or(format!("{k}: needs a value"))?;
        let num = |v: &str| v.parse::<usize>().map_err(|e| format!("{k}: {e}"));
        match k.as_str() {
            "--server" => a.server = v,
            "--server-pid" => a.pid = v.parse().map_err(|e| format!("{k}: {e}"))?,
            "--partitions" => a.partitions = num(&v)?,
            "--subscribers" => a.subscribers = num(&v)?,
            "--duration-secs" => a.duration = Duration::from_secs(num(&v)? as u64),
            "--concurrency" => a.concurrency = num(&v)?,
            "--rounds" => a.rounds = num(&v)?.max(1),
            _ => return Err(format!("unknown flag {k}")),
        }
    }
    Ok(a)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn channel(addr: &str) -> Result<Channel, tonic::codegen::http::uri::InvalidUri> {
    Ok(Channel::from_shared(format!("http://{addr}"))?.connect_lazy())
}

const RESOURCE: &str = "scale:users";

/// AcquirePermit over random live partitions at `concurrency` for `d`: permits per second.
async fn throughput(a: &Args, channels: &[Channel]) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + a.duration;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..a.concurrency {
        let mut c = PermitsClient::new(channels[i % channels.len()].clone());
        let done = Arc::clone(&done);
        let n = a.partitions;
        tasks.spawn(async move {
            // A cheap per-task sequence over the partitions (xorshift).
            let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (i as u64 + 1);
            while Instant::now() < end {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let r = c
                    .acquire_permit(proto::AcquirePermitRequest {
                        resource: RESOURCE.into(),
                        partition: format!("user:{}", x % n as u64),
                        lease: Some(prost_types::Duration {
                            seconds: 1,
                            nanos: 0,
                        }),
                        ..Default::default()
                    })
                    .await;
                if r.is_ok() {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    done.load(Ordering::Relaxed) as f64 / a.duration.as_secs_f64()
}

/// The subscribers of one round: half full `Watch` streams that never read, half readers.
struct Subscribers {
    idle: Vec<tonic::Streaming<proto::QuotaUpdate>>,
    readers: tokio::task::JoinSet<()>,
    read: Arc<AtomicU64>,
}

impl Subscribers {
    async fn open(a: &Args) -> Result<Self, Box<dyn std::error::Error>> {
        let idle_n = a.subscribers / 2;
        let readers_n = a.subscribers - idle_n;
        let mut idle = Vec::new();
        let idle_channels = (0..idle_n.div_ceil(50))
            .map(|_| channel(&a.server))
            .collect::<Result<Vec<_>, _>>()?;
        for i in 0..idle_n {
            let mut q = QuotasClient::new(idle_channels[i / 50].clone());
            idle.push(
                q.watch(proto::WatchRequest {
                    resource_prefix: "scale:".into(),
                    ..Default::default()
                })
                .await?
                .into_inner(),
            );
        }
        let read = Arc::new(AtomicU64::new(0));
        let reader_channels = (0..8)
            .map(|_| channel(&a.server))
            .collect::<Result<Vec<_>, _>>()?;
        let mut readers = tokio::task::JoinSet::new();
        let (first_tx, mut first_rx) = tokio::sync::mpsc::channel::<()>(readers_n.max(1));
        for i in 0..readers_n {
            let mut q = QuotasClient::new(reader_channels[i % 8].clone());
            let read = Arc::clone(&read);
            let first = first_tx.clone();
            if i % 2 == 0 {
                let mut s = q
                    .watch_summaries(proto::WatchSummariesRequest {
                        resource_prefix: "scale:".into(),
                        top: 10,
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                readers.spawn(async move {
                    let mut sent = false;
                    while let Some(Ok(_)) = s.next().await {
                        read.fetch_add(1, Ordering::Relaxed);
                        if !sent {
                            sent = first.send(()).await.is_ok();
                        }
                    }
                });
            } else {
                let mut s = q
                    .watch(proto::WatchRequest {
                        resource_prefix: "scale:".into(),
                        resource_buckets_only: true,
                        min_interval: Some(prost_types::Duration {
                            seconds: 0,
                            nanos: 250_000_000,
                        }),
                        ..Default::default()
                    })
                    .await?
                    .into_inner();
                // The resource has no shared bucket: this stream stays quiet, as the
                // dashboard's feed does for it; it counts as open once subscribed.
                let _ = first.send(()).await;
                readers.spawn(async move {
                    while let Some(Ok(_)) = s.next().await {
                        read.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        }
        drop(first_tx);
        for _ in 0..readers_n {
            first_rx.recv().await;
        }
        Ok(Self {
            idle,
            readers,
            read,
        })
    }

    /// Close every stream and give the server a moment to let go of them.
    async fn close(mut self) {
        self.idle.clear();
        self.readers.abort_all();
        while self.readers.join_next().await.is_some() {}
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a = args()?;
    let ch = channel(&a.server)?;
    QuotasClient::new(ch.clone())
        .put_resource(proto::PutResourceRequest {
            resource: Some(proto::Resource {
                name: RESOURCE.into(),
                limits: vec![proto::Limit {
                    dimension: "requests".into(),
                    amount: 1_000_000_000,
                    period: Some(prost_types::Duration {
                        seconds: 1,
                        nanos: 0,
                    }),
                    burst: 0,
                    scope: 0,
                }],
                per_partition: true,
                limits_known: Some(true),
                ..Default::default()
            }),
        })
        .await?;
    let t = Instant::now();
    let mut c = PermitsClient::new(ch.clone());
    for start in (0..a.partitions).step_by(1000) {
        let requests = (start..(start + 1000).min(a.partitions))
            .map(|i| proto::AcquirePermitRequest {
                resource: RESOURCE.into(),
                partition: format!("user:{i}"),
                // Held for the run: the bucket stays live.
                lease: Some(prost_types::Duration {
                    seconds: 3600,
                    nanos: 0,
                }),
                ..Default::default()
            })
            .collect();
        c.acquire_permits(proto::AcquirePermitsRequest { requests })
            .await?;
    }
    eprintln!(
        "{} partitions live in {:.1} s",
        a.partitions,
        t.elapsed().as_secs_f64()
    );
    let load = (0..4)
        .map(|_| channel(&a.server))
        .collect::<Result<Vec<_>, _>>()?;
    throughput(&a, &load).await; // warm-up
    let (mut alone, mut watched) = (Vec::new(), Vec::new());
    let (mut growth, mut before_max, mut read_during) = (0u64, 0u64, 0u64);
    // Rounds of (without, with): drift on a shared machine hits both alike.
    for _ in 0..a.rounds {
        alone.push(throughput(&a, &load).await);
        let rss_before = rss_kib(a.pid);
        before_max = before_max.max(rss_before);
        let opened = Subscribers::open(&a).await?;
        let peak = Arc::new(AtomicU64::new(rss_kib(a.pid)));
        let sampler = {
            let peak = Arc::clone(&peak);
            let pid = a.pid;
            tokio::spawn(async move {
                loop {
                    peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        };
        let read_before = opened.read.load(Ordering::Relaxed);
        watched.push(throughput(&a, &load).await);
        read_during += opened.read.load(Ordering::Relaxed) - read_before;
        sampler.abort();
        let peak = peak.load(Ordering::Relaxed).max(rss_kib(a.pid));
        growth = growth.max(peak.saturating_sub(rss_before));
        opened.close().await;
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let fmt = |v: &[f64]| {
        v.iter()
            .map(|x| format!("{x:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let idle_n = a.subscribers / 2;
    println!(
        "partitions={} subscribers={} (idle full Watch {idle_n}, reading {}: WatchSummaries \
         top 10 and resource-wide Watch) concurrency={} rounds={} of {}s each way",
        a.partitions,
        a.subscribers,
        a.subscribers - idle_n,
        a.concurrency,
        a.rounds,
        a.duration.as_secs()
    );
    println!(
        "acquire/s without subscribers: {} (mean {:.0}); with: {} (mean {:.0}); ratio {:.2}",
        fmt(&alone),
        mean(&alone),
        fmt(&watched),
        mean(&watched),
        mean(&watched) / mean(&alone)
    );
    println!(
        "server RSS: {before_max} KiB before subscribing; largest growth with them open: \
         {:.1} MiB ({:.1} KiB per subscriber); summaries read while measured: {read_during}",
        growth as f64 / 1024.0,
        growth as f64 / a.subscribers.max(1) as f64
    );
    Ok(())
}
