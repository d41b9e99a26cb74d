//! The simulated upstream: a token bucket of `rate` units/s holding at most `burst` units,
//! with a hidden tolerance of `slack` units, served over HTTP/1 on 127.0.0.1:0, that states
//! its state in one of several real APIs' header dialects.
//!
//! Every dialect describes the same bucket, each in its API's documented meaning: the limit
//! is the bucket's capacity (`burst`), the remaining units are those the headers show
//! (floored, the tolerance hidden), and the reset is when the bucket is whole again. A 429
//! carries `Retry-After` in whole seconds until one unit is back (at least 1).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::routing::get;

/// The rate-limit headers the upstream sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub(crate) enum Dialect {
    /// IETF `RateLimit-Policy` / `RateLimit` structured fields (q = burst, w = burst / rate).
    Ietf,
    /// OpenAI's `x-ratelimit-{limit,remaining,reset}-requests`, resets as Go durations.
    Openai,
    /// Anthropic's `anthropic-ratelimit-requests-{limit,remaining,reset}`, RFC 3339 resets.
    Anthropic,
    /// GitHub's `x-ratelimit-{limit,remaining,used,reset,resource}`, epoch-second resets.
    Github,
    /// Classic `X-RateLimit-{Limit,Remaining,Reset}`, delta-second resets.
    Classic,
    /// No rate-limit headers at all; a 429 carries `Retry-After` only (Slack's Web API).
    None,
}

impl Dialect {
    /// Every dialect, in the order the matrix runs them by default.
    pub(super) const ALL: [Self; 6] = [
        Self::Ietf,
        Self::Openai,
        Self::Anthropic,
        Self::Github,
        Self::Classic,
        Self::None,
    ];

    /// The flag's spelling.
    pub(super) fn name(self) -> &'static str {
        match self {
            Self::Ietf => "ietf",
            Self::Openai => "openai",
            Self::Anthropic => "anthropic",
            Self::Github => "github",
            Self::Classic => "classic",
            Self::None => "none",
        }
    }
}

/// What the upstream is.
#[derive(Debug, Clone, Copy)]
pub(super) struct Shape {
    /// Units per second.
    pub(crate) rate: f64,
    /// The bucket's capacity.
    pub(crate) burst: u64,
    /// Units tolerated beyond the capacity, never shown in the headers.
    pub(crate) slack: u64,
    /// The headers it sends.
    pub(crate) dialect: Dialect,
}

/// The upstream's state and counters.
#[derive(Debug)]
pub(super) struct Upstream {
    shape: Shape,
    /// (units available, tolerance included; when last refilled).
    bucket: Mutex<(f64, Instant)>,
    /// Calls served with a 200.
    pub(crate) ok: AtomicU64,
    /// Calls refused with a 429.
    pub(crate) limited: AtomicU64,
}

/// What one call to the upstream found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Take {
    /// Whether the call was served.
    pub(crate) allowed: bool,
    /// Units left as the headers show them (the tolerance hidden, floored).
    pub(crate) remaining: u64,
    /// Seconds until one more unit (0 when one is there).
    pub(crate) until_one: f64,
    /// Seconds until the shown bucket is whole again.
    pub(crate) until_full: f64,
}

impl Upstream {
    /// A full bucket.
    pub(super) fn new(shape: Shape) -> Arc<Self> {
        Arc::new(Self {
            shape,
            bucket: Mutex::new((shape.burst as f64 + shape.slack as f64, Instant::now())),
            ok: AtomicU64::new(0),
            limited: AtomicU64::new(0),
        })
    }

    /// Take one unit if there is one.
    fn take(&self) -> Take {
        let mut b = self.bucket.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let Shape {
            rate, burst, slack, ..
        } = self.shape;
        let (burst, slack) = (burst as f64, slack as f64);
        b.0 = (b.0 + now.duration_since(b.1).as_secs_f64() * rate).min(burst + slack);
        b.1 = now;
        let allowed = b.0 >= 1.0;
        if allowed {
            b.0 -= 1.0;
        }
        let shown = (b.0 - slack).clamp(0.0, burst);
        Take {
            allowed,
            remaining: shown.floor() as u64,
            until_one: if b.0 >= 1.0 { 0.0 } else { (1.0 - b.0) / rate },
            until_full: (burst - shown) / rate,
        }
    }
}

/// `Retry-After` of a 429: whole seconds until one unit, at least 1.
pub(super) fn retry_after_secs(t: &Take) -> u64 {
    t.until_one.ceil().max(1.0) as u64
}

/// The rate-limit headers of `dialect` for the state `t` of a bucket of `shape`, at the
/// wall time `now`.
pub(super) fn headers(shape: &Shape, t: &Take, now: SystemTime) -> Vec<(&'static str, String)> {
    let burst = shape.burst;
    let remaining = t.remaining.min(burst);
    // When the bucket is whole again, in whole seconds rounded up.
    let whole_in_secs = t.until_full.ceil() as u64;
    let whole_at_epoch = || {
        let now = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        (now + t.until_full).ceil() as u64
    };
    match shape.dialect {
        Dialect::Openai => vec![
            ("x-ratelimit-limit-requests", burst.to_string()),
            ("x-ratelimit-remaining-requests", remaining.to_string()),
            (
                "x-ratelimit-reset-requests",
                go_duration((t.until_full * 1000.0).ceil() as u64),
            ),
        ],
        Dialect::Anthropic => {
            let at = SystemTime::UNIX_EPOCH + Duration::from_secs(whole_at_epoch());
            vec![
                ("anthropic-ratelimit-requests-limit", burst.to_string()),
                (
                    "anthropic-ratelimit-requests-remaining",
                    remaining.to_string(),
                ),
                (
                    "anthropic-ratelimit-requests-reset",
                    humantime::format_rfc3339_seconds(at).to_string(),
                ),
            ]
        }
        Dialect::Github => vec![
            ("x-ratelimit-limit", burst.to_string()),
            ("x-ratelimit-remaining", remaining.to_string()),
            ("x-ratelimit-used", (burst - remaining).to_string()),
            ("x-ratelimit-reset", whole_at_epoch().to_string()),
            ("x-ratelimit-resource", "core".to_owned()),
        ],
        Dialect::Classic => vec![
            ("x-ratelimit-limit", burst.to_string()),
            ("x-ratelimit-remaining", remaining.to_string()),
            ("x-ratelimit-reset", whole_in_secs.to_string()),
        ],
        Dialect::Ietf => {
            let window = (burst as f64 / shape.rate).round().max(1.0) as u64;
            vec![
                (
                    "ratelimit-policy",
                    format!("\"default\";q={burst};w={window}"),
                ),
                (
                    "ratelimit",
                    format!("\"default\";r={remaining};t={whole_in_secs}"),
                ),
            ]
        }
        Dialect::None => Vec::new(),
    }
}

/// `ms` milliseconds as Go's `time.Duration.String()` writes them, which is what OpenAI
/// sends: `0s`, `20ms`, `1s`, `1.5s`, `6m0s`, `1h2m3.004s`.
pub(super) fn go_duration(ms: u64) -> String {
    if ms == 0 {
        return "0s".to_owned();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (h, m) = (ms / 3_600_000, ms / 60_000 % 60);
    let (s, frac) = (ms / 1000 % 60, ms % 1000);
    let secs = if frac == 0 {
        format!("{s}s")
    } else {
        let frac = format!("{frac:03}");
        format!("{s}.{}s", frac.trim_end_matches('0'))
    };
    match (h, m) {
        (0, 0) => secs,
        (0, m) => format!("{m}m{secs}"),
        (h, m) => format!("{h}h{m}m{secs}"),
    }
}

async fn handle(State(up): State<Arc<Upstream>>) -> (StatusCode, HeaderMap) {
    let t = up.take();
    let mut h = HeaderMap::new();
    let status = if t.allowed {
        up.ok.fetch_add(1, Ordering::Relaxed);
        StatusCode::OK
    } else {
        up.limited.fetch_add(1, Ordering::Relaxed);
        h.insert("retry-after", HeaderValue::from(retry_after_secs(&t)));
        StatusCode::TOO_MANY_REQUESTS
    };
    for (k, v) in headers(&up.shape, &t, SystemTime::now()) {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(HeaderName::from_static(k), v);
        }
    }
    (status, h)
}

/// Serve `up` on 127.0.0.1:0; returns its URL and the server task (abort it when done).
pub(super) async fn start(
    up: Arc<Upstream>,
) -> anyhow::Result<(String, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the upstream on 127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let app = Router::new().route("/call", get(handle)).with_state(up);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            eprintln!("upstream stopped: {e}");
        }
    });
    Ok((format!("http://{addr}/call"), task))
}

#[cfg(test)]
mod tests {
    use super::*;
    use permitd::feedback;

    /// Go's spelling, and permitd's OpenAI parser reads each back exactly.
    #[test]
    fn go_durations_read_back() {
        for (ms, s) in [
            (0, "0s"),
            (20, "20ms"),
            (999, "999ms"),
            (1000, "1s"),
            (1500, "1.5s"),
            (179_560, "2m59.56s"),
            (360_000, "6m0s"),
            (3_723_004, "1h2m3.004s"),
        ] {
            assert_eq!(go_duration(ms), s);
            let obs = feedback::parse([("x-ratelimit-reset-requests", s)], SystemTime::now());
            assert!(obs.ignored.is_empty(), "{s}: {obs:?}");
            assert_eq!(
                obs.dimensions[0].reset_after,
                Some(Duration::from_millis(ms)),
                "{s}"
            );
        }
    }

    /// Every dialect states the same bucket (capacity 10, 4 shown, whole in 2 s) and
    /// permitd's parser reads it as that: limit 10, remaining 4, reset 2 s (rounded up to
    /// a whole second where the dialect says seconds).
    #[test]
    fn dialects_state_the_bucket() {
        let t = Take {
            allowed: true,
            remaining: 4,
            until_one: 0.0,
            until_full: 2.0,
        };
        let now = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_250);
        for dialect in Dialect::ALL {
            let shape = Shape {
                rate: 3.0,
                burst: 10,
                slack: 1,
                dialect,
            };
            let h = headers(&shape, &t, now);
            let obs = feedback::parse(h.iter().map(|(k, v)| (*k, v.as_str())), now);
            assert!(obs.ignored.is_empty(), "{dialect:?}: {obs:?}");
            if dialect == Dialect::None {
                assert!(h.is_empty() && obs.dimensions.is_empty());
                continue;
            }
            let d = obs
                .dimensions
                .iter()
                .find(|d| d.dimension == "requests")
                .unwrap_or_else(|| panic!("{dialect:?}: {obs:?}"));
            assert_eq!(d.limit, Some(10), "{dialect:?}");
            assert_eq!(d.remaining, Some(4), "{dialect:?}");
            let reset = d.reset_after.unwrap();
            assert!(
                reset >= Duration::from_secs(2) && reset <= Duration::from_secs(3),
                "{dialect:?}: {reset:?}"
            );
            if dialect == Dialect::Ietf {
                // w = round(10 / 3) = 3.
                assert_eq!(d.window, Some(Duration::from_secs(3)));
            }
            if dialect == Dialect::Github {
                assert_eq!(obs.upstream_resource.as_deref(), Some("core"));
            }
        }
    }

    /// The bucket starts full (tolerance included), hides the tolerance, and a 429 says
    /// when one unit is back, in whole seconds.
    #[test]
    fn bucket_hides_its_tolerance() {
        let up = Upstream::new(Shape {
            rate: 0.5,
            burst: 2,
            slack: 1,
            dialect: Dialect::Classic,
        });
        let takes: Vec<Take> = (0..4).map(|_| up.take()).collect();
        assert!(takes[..3].iter().all(|t| t.allowed), "{takes:?}");
        assert_eq!(
            takes.iter().map(|t| t.remaining).collect::<Vec<_>>(),
            [1, 0, 0, 0]
        );
        assert!(!takes[3].allowed);
        // One unit at 0.5/s is 2 s away; the bucket is whole in 4 s.
        assert_eq!(retry_after_secs(&takes[3]), 2);
        assert!((takes[3].until_full - 4.0).abs() < 0.01, "{:?}", takes[3]);
    }
}
