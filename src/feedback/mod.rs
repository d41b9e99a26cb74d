//! Header feedback: what an upstream's response headers say about its rate limits.
//!
//! [`parse`] turns one response's headers, in any dialect of `headers.md` (Retry-After,
//! classic and GitHub `X-RateLimit-*`, the older `RateLimit-Limit/Remaining/Reset`, OpenAI,
//! Anthropic, the IETF `RateLimit` / `RateLimit-Policy` structured fields), into one
//! dialect-free [`Observation`]. What the observation does to buckets (correction, learned
//! limits, cooldowns) is the registry's business, not this module's.
//!
//! The module is pure on purpose: no transport, no storage, no async and no clock (`now` is
//! passed in), so every rule is a table test and every parser a fuzz target. Upstreams are
//! not trusted: a value that can't be parsed (negative, overflowing, empty, fractional where
//! an integer is due, garbage, a date more than [`MAX_HORIZON`] away, a value over
//! [`MAX_VALUE_LEN`] bytes) is skipped and listed in [`Observation::ignored`] so it can be
//! counted; it never fails the whole report and never panics. Work is linear in the input
//! and bounded per header, and the output can't grow past [`MAX_DIMENSIONS`] entries.
//!
//! One dialect per file: `retry_after`, `classic` (with GitHub), `openai`, `anthropic`,
//! `ietf`; `value` holds the number and time rules they share. They stay private: the
//! contract is [`parse`] and its output, so a dialect's internals can change freely.

mod anthropic;
pub mod apply;
mod classic;
mod ietf;
mod openai;
mod retry_after;
mod value;

#[cfg(test)]
mod proptests;

#[cfg(test)]
mod tests;

use std::time::{Duration, SystemTime};

pub use value::{MAX_HORIZON, MAX_VALUE_LEN};

/// Most entries an [`Observation`] holds; more (only possible with IETF policies of many
/// distinct windows) are ignored, so a hostile upstream can't grow the report.
pub const MAX_DIMENSIONS: usize = 32;

/// Longest header name worth looking at: every recognised name is shorter, so longer names
/// are skipped before any allocation.
const MAX_NAME_LEN: usize = 64;

/// What one upstream response said about its rate limits, whatever the dialect.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observation {
    /// From Retry-After, resolved against `now`; never negative (a past date is zero).
    pub retry_after: Option<Duration>,
    /// One entry per dimension and window, merged most-restrictive-wins across dialects
    /// (lowest remaining, lowest limit, latest reset). Entries of the same dimension with
    /// different known windows (IETF `"burst";w=60` and `"daily";w=86400`) are distinct
    /// limits and stay separate: merging them would pair one policy's remaining with the
    /// other's reset (a spent burst would block a whole day).
    pub dimensions: Vec<DimensionObs>,
    /// GitHub's x-ratelimit-resource (e.g. "core", "search"), when present.
    pub upstream_resource: Option<String>,
    /// Headers recognised as rate-limit headers but not parseable (name, why), for counting.
    pub ignored: Vec<(String, &'static str)>,
}

impl Observation {
    /// Whether any dimension reports nothing left (GitHub's "403 counts as a rate limit"
    /// test, and the registry's "grant nothing until the reset").
    #[must_use]
    pub fn remaining_zero(&self) -> bool {
        self.dimensions.iter().any(|d| d.remaining == Some(0))
    }

    /// Add one dialect's figures, merging with an entry of the same dimension and window.
    fn merge(&mut self, obs: DimensionObs) {
        if let Some(e) = self
            .dimensions
            .iter_mut()
            .find(|e| e.dimension == obs.dimension && e.window == obs.window)
        {
            e.absorb(obs);
        } else if self.dimensions.len() < MAX_DIMENSIONS {
            self.dimensions.push(obs);
        } else {
            self.ignored.push((obs.source, "too many dimensions"));
        }
    }
}

/// One dimension's figures, from whichever header(s) gave them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DimensionObs {
    /// "requests", "tokens", "input_tokens", "output_tokens" (OpenAI/Anthropic words mapped:
    /// input-tokens -> input_tokens), or for classic X-RateLimit-* / IETF with unit
    /// "requests" -> "requests"; IETF qu "content-bytes" -> "content_bytes",
    /// "concurrent-requests" -> "concurrent_requests".
    pub dimension: String,
    /// The upstream's limit; never 0 (a 0 limit means "unknown" with some gateways and
    /// would teach a limit that grants nothing, so it is dropped).
    pub limit: Option<u64>,
    /// What is left.
    pub remaining: Option<u64>,
    /// Time from `now` until the quota resets / is back to full; never negative.
    pub reset_after: Option<Duration>,
    /// The limit's window when the upstream says (IETF w=, `X-Ratelimit-Limit: 3, 3;w=3600`,
    /// GitHub/classic: unknown -> None; OpenAI/Anthropic: None).
    pub window: Option<Duration>,
    /// The header the figures came from (lower-case name), e.g.
    /// "x-ratelimit-remaining-tokens"; with several, the one that gave `remaining`.
    pub source: String,
    /// What the reset means, per the dialect: it decides what a remaining of 0 does.
    pub refill: Refill,
    /// How finely the dialect states the reset (a millisecond for Go durations, a second
    /// for whole seconds and dates): the reset may be rounded up by as much.
    pub resolution: Duration,
}

/// The resolution of resets stated in whole seconds (epoch or delta seconds, RFC 3339 and
/// HTTP dates, IETF `t`).
pub const SECONDS: Duration = Duration::from_secs(1);
/// The resolution of resets stated as Go durations (OpenAI).
pub const MILLISECONDS: Duration = Duration::from_millis(1);

/// How an upstream's quota comes back, i.e. what its reset means. A remaining of 0 means
/// "nothing until the reset" for a fixed window but "the next unit at the limit's rate" for
/// a token bucket, whose reset is only when it is whole again.
///
/// Ordered from least to most cautious: merging dialects keeps the most cautious.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Refill {
    /// Units come back continuously and the reset is when the quota is whole again:
    /// OpenAI ("time until the rate limit resets to its initial state") and Anthropic
    /// ("when the rate limit will be fully replenished") document token buckets.
    Continuous,
    /// The dialect does not say: IETF `RateLimit`'s `t` is when the quota "resets", sent by
    /// fixed windows and token buckets alike; decided per report from the policy's window.
    Unstated,
    /// The quota comes back whole at the reset and nothing before it: fixed windows
    /// (GitHub, classic `X-RateLimit-*` with an epoch reset, the older `RateLimit-*` drafts).
    AtReset,
}

impl DimensionObs {
    /// Most restrictive of both: lowest limit and remaining, latest reset. The source
    /// follows the remaining, the figure that denies permits.
    fn absorb(&mut self, o: Self) {
        if o.remaining.is_some() && (self.remaining.is_none() || o.remaining < self.remaining) {
            self.source = o.source;
        }
        self.limit = min_opt(self.limit, o.limit);
        self.remaining = min_opt(self.remaining, o.remaining);
        self.reset_after = self.reset_after.max(o.reset_after);
        self.refill = self.refill.max(o.refill);
        self.resolution = self.resolution.max(o.resolution);
    }
}

/// The smaller of two optional figures, either one when the other is unknown.
fn min_opt<T: Ord>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Parse a response's headers. Names are case-insensitive; `now` is the wall time of the
/// report (for epoch resets and HTTP-dates). Never panics; bounded work per header (refuse to
/// look at values over 4 KiB: count them as ignored).
pub fn parse<'a>(
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
    now: SystemTime,
) -> Observation {
    let mut acc = Accumulator::default();
    let mut buf = [0u8; MAX_NAME_LEN];
    for (name, raw) in headers {
        let Some(lower) = lowercase(name, &mut buf) else {
            continue;
        };
        let Some(field) = Field::recognise(lower) else {
            continue;
        };
        let canonical = field.name();
        if raw.len() > MAX_VALUE_LEN {
            acc.obs
                .ignored
                .push((canonical.to_owned(), "value over 4 KiB"));
            continue;
        }
        if let Err(why) = acc.apply(field, value::trim(raw), now) {
            acc.obs.ignored.push((canonical.to_owned(), why));
        }
    }
    acc.finish()
}

/// ASCII-lowercase `name` into `buf` (no allocation per header); `None` when it is too long
/// to be a rate-limit header.
fn lowercase<'b>(name: &str, buf: &'b mut [u8; MAX_NAME_LEN]) -> Option<&'b str> {
    let out = buf.get_mut(..name.len())?;
    out.copy_from_slice(name.as_bytes());
    out.make_ascii_lowercase();
    // Lowercasing ASCII bytes keeps UTF-8 valid, so this never fails; no unwrap either way.
    std::str::from_utf8(out).ok()
}

/// Every header name this module understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    /// `Retry-After`.
    RetryAfter,
    /// `X-RateLimit-*`, GitHub and the older `RateLimit-*` drafts.
    Classic(classic::Field),
    /// `x-ratelimit-{limit,remaining,reset}-{kind}`.
    OpenAi(KindField),
    /// `anthropic-ratelimit-{kind}-{limit,remaining,reset}`.
    Anthropic(KindField),
    /// `RateLimit-Policy` / `RateLimit`.
    Ietf(ietf::Field),
}

impl Field {
    /// The field a lower-case header name denotes, if any.
    fn recognise(lower: &str) -> Option<Self> {
        if lower == retry_after::NAME {
            return Some(Self::RetryAfter);
        }
        classic::Field::recognise(lower)
            .map(Self::Classic)
            .or_else(|| KindField::recognise(&openai::FIELDS, lower).map(Self::OpenAi))
            .or_else(|| KindField::recognise(&anthropic::FIELDS, lower).map(Self::Anthropic))
            .or_else(|| ietf::Field::recognise(lower).map(Self::Ietf))
    }

    /// Its lower-case name, static so sources and ignored entries cost one small copy.
    fn name(self) -> &'static str {
        match self {
            Self::RetryAfter => retry_after::NAME,
            Self::Classic(f) => f.name(),
            Self::OpenAi(f) | Self::Anthropic(f) => f.name,
            Self::Ietf(f) => f.name(),
        }
    }
}

/// Per-dialect state while the headers stream by: a dimension's figures arrive in separate
/// headers (and IETF `RateLimit` needs `RateLimit-Policy`, in any order), so dialects are
/// joined only in [`Accumulator::finish`].
#[derive(Debug, Default)]
struct Accumulator {
    obs: Observation,
    classic: classic::State,
    openai: openai::State,
    anthropic: anthropic::State,
    ietf: ietf::State,
}

impl Accumulator {
    /// Take one header's value, or say why it is ignored.
    fn apply(&mut self, field: Field, v: &str, now: SystemTime) -> Result<(), &'static str> {
        match field {
            Field::RetryAfter => {
                let d = retry_after::parse(v, now)?;
                // Two Retry-After headers (case variants): the later moment is the safe one.
                self.obs.retry_after = self.obs.retry_after.max(Some(d));
                Ok(())
            }
            Field::Classic(f) => self.classic.apply(f, v, now),
            Field::OpenAi(f) => self.openai.apply(f, v),
            Field::Anthropic(f) => self.anthropic.apply(f, v, now),
            Field::Ietf(f) => self.ietf.apply(f, v),
        }
    }

    /// Join every dialect into the observation.
    fn finish(self) -> Observation {
        let Self {
            mut obs,
            classic,
            openai,
            anthropic,
            ietf,
        } = self;
        let classic = classic.finish();
        obs.upstream_resource = classic.resource;
        let all = classic
            .dimensions
            .into_iter()
            .chain(openai.finish())
            .chain(anthropic.finish())
            .chain(ietf.finish(&mut obs.ignored));
        for mut d in all {
            if d.limit == Some(0) {
                d.limit = None;
            }
            obs.merge(d);
        }
        obs
    }
}

/// The quota kinds OpenAI and Anthropic name in their headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `requests`.
    Requests,
    /// `tokens`.
    Tokens,
    /// `input-tokens`.
    InputTokens,
    /// `output-tokens`.
    OutputTokens,
}

impl Kind {
    /// The dimension the header word maps to (`input-tokens` -> `input_tokens`): permitd's
    /// dimension names are the API's, not the upstream's.
    fn dimension(self) -> &'static str {
        match self {
            Self::Requests => "requests",
            Self::Tokens => "tokens",
            Self::InputTokens => "input_tokens",
            Self::OutputTokens => "output_tokens",
        }
    }
}

/// Which figure a per-kind header carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum What {
    /// The limit.
    Limit,
    /// What is left.
    Remaining,
    /// When it is back to full.
    Reset,
}

/// A header of a dialect that names quota kinds (OpenAI, Anthropic): which figure, of which
/// kind, under which lower-case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct KindField {
    what: What,
    kind: Kind,
    name: &'static str,
}

impl KindField {
    /// The field of `table` a lower-case name denotes, if any.
    fn recognise(table: &[(&'static str, What, Kind)], lower: &str) -> Option<Self> {
        table
            .iter()
            .find(|(n, ..)| *n == lower)
            .map(|&(name, what, kind)| Self { what, kind, name })
    }
}

/// Figures per [`Kind`], for the dialects that name kinds.
#[derive(Debug, Default)]
struct PerKind {
    requests: Partial,
    tokens: Partial,
    input_tokens: Partial,
    output_tokens: Partial,
}

impl PerKind {
    /// The figures of one kind.
    fn kind(&mut self, k: Kind) -> &mut Partial {
        match k {
            Kind::Requests => &mut self.requests,
            Kind::Tokens => &mut self.tokens,
            Kind::InputTokens => &mut self.input_tokens,
            Kind::OutputTokens => &mut self.output_tokens,
        }
    }

    /// One entry per kind that received a figure, all refilling as `refill` says.
    fn finish(self, refill: Refill, resolution: Duration) -> impl Iterator<Item = DimensionObs> {
        [
            (self.requests, Kind::Requests),
            (self.tokens, Kind::Tokens),
            (self.input_tokens, Kind::InputTokens),
            (self.output_tokens, Kind::OutputTokens),
        ]
        .into_iter()
        .filter_map(move |(p, k)| p.into_obs(k.dimension(), refill, resolution))
    }
}

/// One dimension's figures as a dialect collects them from separate headers; each figure
/// remembers the header it came from.
#[derive(Debug, Default, Clone)]
struct Partial {
    limit: Option<(u64, &'static str)>,
    remaining: Option<(u64, &'static str)>,
    reset_after: Option<(Duration, &'static str)>,
    window: Option<Duration>,
}

impl Partial {
    /// Record a limit; a repeated header (a case variant) keeps the lower.
    fn limit(&mut self, v: u64, src: &'static str) {
        self.limit = Some(self.limit.map_or((v, src), |(o, s)| (o.min(v), s)));
    }

    /// Record a remaining; a repeated header keeps the lower.
    fn remaining(&mut self, v: u64, src: &'static str) {
        self.remaining = Some(self.remaining.map_or((v, src), |(o, s)| (o.min(v), s)));
    }

    /// Record a reset; a repeated header keeps the later.
    fn reset(&mut self, v: Duration, src: &'static str) {
        self.reset_after = Some(self.reset_after.map_or((v, src), |(o, s)| (o.max(v), s)));
    }

    /// The entry for `dimension`, if any figure arrived; the source is the remaining's
    /// header, else the limit's, else the reset's.
    fn into_obs(
        self,
        dimension: &str,
        refill: Refill,
        resolution: Duration,
    ) -> Option<DimensionObs> {
        let source = self
            .remaining
            .map(|r| r.1)
            .or(self.limit.map(|l| l.1))
            .or(self.reset_after.map(|r| r.1))?;
        Some(DimensionObs {
            dimension: dimension.to_owned(),
            limit: self.limit.map(|l| l.0),
            remaining: self.remaining.map(|r| r.0),
            reset_after: self.reset_after.map(|r| r.0),
            window: self.window,
            source: source.to_owned(),
            refill,
            resolution,
        })
    }
}

/// What the upstream's answer says about waiting, whatever its dialect.
#[derive(Debug, Clone, Copy)]
pub struct Upstream {
    /// Retry-After, else the reset of an exhausted dimension.
    pub wait: Option<Duration>,
    /// Some dimension has 0 remaining.
    pub remaining_zero: bool,
}

impl Upstream {
    /// Read off an observation.
    #[must_use]
    pub fn of(obs: &Observation) -> Self {
        let exhausted = obs.dimensions.iter().filter(|d| d.remaining == Some(0));
        let reset = exhausted.clone().filter_map(|d| d.reset_after).max();
        Self {
            wait: obs.retry_after.or(reset),
            remaining_zero: exhausted.count() > 0,
        }
    }
}
