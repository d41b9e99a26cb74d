//! The cells of a run (rate x burst x dialect x workers x processes x mode), their figures,
//! the targets they are held to, and the table and JSON lines that report them.

use std::fmt::Write as _;
use std::time::Duration;

use super::upstream::{Dialect, Shape};
use super::workers::{Mode, Tally};

/// Allowed error when a rate is written as a fraction, relative to the rate.
const EXACT: f64 = 1e-9;

/// Targets (the issues' numbers).
const KNOWN_UTILISATION: f64 = 0.95;
const LEARNED_REFUSED: f64 = 0.01;
const LEARNED_UTILISATION: f64 = 0.90;
const BLIND_REFUSED: f64 = 0.05;
const BLIND_UTILISATION: f64 = 0.80;
/// How far below naive's utilisation a cell may be and still count as no worse: naive
/// hammers the upstream (most of its calls refused), so it takes every unit the instant it
/// appears, the hidden tolerance included; pacing that refuses nothing cannot.
const NAIVE_UTILISATION_MARGIN: f64 = 0.05;

/// A `--burst` value: a number of units, or a multiple of the rate (`rate`, `10rate`),
/// rounded up.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum BurstSpec {
    /// This many units.
    Units(u64),
    /// This many seconds of the rate, rounded up.
    Rate(f64),
}

impl BurstSpec {
    /// The capacity for `rate`, at least 1.
    pub(super) fn resolve(self, rate: f64) -> u64 {
        match self {
            Self::Units(n) => n.max(1),
            // Minus a hair, so 0.3 x 10 (3.0000000000000004) is 3, not 4.
            Self::Rate(k) => ((k * rate) * (1.0 - EXACT)).ceil().max(1.0) as u64,
        }
    }
}

/// Parse `--burst`: `N` (units, at least 1), `rate` or `Krate` (K x rate, rounded up).
pub(super) fn parse_burst(s: &str) -> Result<BurstSpec, String> {
    let s = s.trim();
    if let Some(k) = s.strip_suffix("rate") {
        let k = k.trim_end_matches(['x', '*']);
        let k = if k.is_empty() {
            1.0
        } else {
            k.parse::<f64>()
                .map_err(|_| format!("expected N, rate or Krate (e.g. 10rate), got \"{s}\""))?
        };
        if !(k.is_finite() && k > 0.0) {
            return Err(format!(
                "the multiple of the rate must be above 0, got \"{s}\""
            ));
        }
        return Ok(BurstSpec::Rate(k));
    }
    match s.parse::<u64>() {
        Ok(n) if n >= 1 => Ok(BurstSpec::Units(n)),
        _ => Err(format!(
            "expected N >= 1, rate or Krate (e.g. 10rate), got \"{s}\""
        )),
    }
}

/// `rate` units/s as `amount` per `period` with a whole amount and a whole number of
/// seconds when one of up to 1 000 s fits exactly (3/s is 3 per 1 s, 0.1/s is 1 per 10 s);
/// otherwise the nearest amount per 1 000 s.
pub(super) fn exact_rate(rate: f64) -> (u64, Duration) {
    for secs in 1..=1000u64 {
        let amount = (rate * secs as f64).round();
        if amount >= 1.0 && (amount / secs as f64 - rate).abs() <= EXACT * rate {
            return (amount as u64, Duration::from_secs(secs));
        }
    }
    (
        (rate * 1000.0).round().max(1.0) as u64,
        Duration::from_secs(1000),
    )
}

/// One configuration run against its own upstream and resource.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Cell {
    /// The upstream's units per second.
    pub(crate) rate: f64,
    /// Its capacity.
    pub(crate) burst: u64,
    /// Its hidden tolerance.
    pub(crate) slack: u64,
    /// Its headers.
    pub(crate) dialect: Dialect,
    /// Workers in the whole fleet.
    pub(crate) workers: usize,
    /// OS processes the fleet is split over.
    pub(crate) processes: usize,
    /// How the workers coordinate.
    pub(crate) mode: Mode,
}

impl Cell {
    /// The upstream of the cell.
    pub(super) fn shape(&self) -> Shape {
        Shape {
            rate: self.rate,
            burst: self.burst,
            slack: self.slack,
            dialect: self.dialect,
        }
    }

    /// `rate=3 burst=1 dialect=openai workers=8 processes=1 mode=high`.
    pub(super) fn label(&self) -> String {
        format!(
            "rate={} burst={} dialect={} workers={} processes={} mode={}",
            self.rate,
            self.burst,
            self.dialect.name(),
            self.workers,
            self.processes,
            self.mode.name()
        )
    }

    /// Whether `other` is this cell's naive baseline (same upstream limits and fleet).
    fn baseline_is(&self, other: &Self) -> bool {
        other.mode == Mode::Naive
            && other.rate == self.rate
            && other.burst == self.burst
            && other.slack == self.slack
            && other.workers == self.workers
            && other.processes == self.processes
    }
}

/// The lists a run combines.
#[derive(Debug, Clone)]
pub(super) struct Lists {
    pub(crate) rates: Vec<f64>,
    pub(crate) bursts: Vec<BurstSpec>,
    pub(crate) slack: u64,
    pub(crate) dialects: Vec<Dialect>,
    pub(crate) workers: Vec<usize>,
    pub(crate) processes: Vec<usize>,
    pub(crate) modes: Vec<Mode>,
}

/// Every cell of `lists`. Modes that ignore headers (`known`, `naive`) run once per
/// rate/burst/workers/processes, against the first dialect; bursts that resolve to the same
/// capacity for a rate (`1` and `rate` at 1/s) run once.
pub(super) fn cells(lists: &Lists) -> Vec<Cell> {
    let mut out = Vec::new();
    for &rate in &lists.rates {
        let mut bursts: Vec<u64> = Vec::new();
        for b in &lists.bursts {
            let b = b.resolve(rate);
            if !bursts.contains(&b) {
                bursts.push(b);
            }
        }
        for &burst in &bursts {
            for &workers in &lists.workers {
                for &processes in &lists.processes {
                    for &mode in &lists.modes {
                        let dialects = if mode.reads_headers() {
                            &lists.dialects[..]
                        } else {
                            &lists.dialects[..lists.dialects.len().min(1)]
                        };
                        for &dialect in dialects {
                            out.push(Cell {
                                rate,
                                burst,
                                slack: lists.slack,
                                dialect,
                                workers,
                                processes,
                                mode,
                            });
                        }
                    }
                }
            }
        }
    }
    out
}

/// What one cell did.
#[derive(Debug, Clone)]
pub(super) struct Outcome {
    /// The cell.
    pub(crate) cell: Cell,
    /// ok and 429 as the upstream counted them; errors as the workers did.
    pub(crate) tally: Tally,
    /// Why the cell could not run to its end (a child process failed, say).
    pub(crate) failure: Option<String>,
    /// How long the server was away when it was restarted in the middle of the run.
    pub(crate) restart_away: Option<Duration>,
}

impl Outcome {
    /// Calls the upstream answered.
    pub(super) fn calls(&self) -> u64 {
        self.tally.ok + self.tally.limited
    }

    /// 429s / calls.
    pub(super) fn refused(&self) -> f64 {
        self.tally.limited as f64 / self.calls().max(1) as f64
    }

    /// What the upstream could have served: burst + rate x elapsed.
    fn capacity(&self) -> f64 {
        self.cell.burst as f64 + self.cell.rate * self.tally.elapsed.as_secs_f64()
    }

    /// ok / (burst + rate x elapsed).
    pub(super) fn utilisation(&self) -> f64 {
        self.tally.ok as f64 / self.capacity()
    }
}

/// A cell's target and whether it was met.
#[derive(Debug, Clone)]
pub(super) struct Verdict {
    /// The target in words.
    pub(crate) target: String,
    /// `None` for the naive baseline, which has no target.
    pub(crate) met: Option<bool>,
    /// Each missed part, in words.
    pub(crate) missed: Vec<String>,
}

/// Hold `o` to its mode's target and to its naive baseline, if it ran. "Never worse than
/// naive": no more refused, and a utilisation at most [`NAIVE_UTILISATION_MARGIN`] below
/// naive's (which takes every unit the instant it appears, by refusing most of its calls).
pub(super) fn verdict(o: &Outcome, naive: Option<&Outcome>) -> Verdict {
    let (refused, util) = (o.refused(), o.utilisation());
    let (max_refused, min_util, strict) = match o.cell.mode {
        Mode::Naive => {
            return Verdict {
                target: "none (the baseline)".into(),
                met: None,
                missed: o.failure.iter().cloned().collect(),
            };
        }
        Mode::Known => (0.0, KNOWN_UTILISATION, true),
        _ if o.cell.dialect == Dialect::None => (BLIND_REFUSED, BLIND_UTILISATION, false),
        _ => (LEARNED_REFUSED, LEARNED_UTILISATION, false),
    };
    let mut target = if strict {
        format!("0 refused, utilisation >= {min_util:.2}")
    } else {
        format!(
            "refused < {}%, utilisation >= {min_util:.2}",
            max_refused * 100.0
        )
    };
    let mut missed: Vec<String> = o.failure.iter().cloned().collect();
    if strict && o.tally.limited > 0 {
        missed.push(format!("{} refused (429)", o.tally.limited));
    } else if !strict && refused >= max_refused {
        missed.push(format!(
            "refused {:.2}% >= {}%",
            refused * 100.0,
            max_refused * 100.0
        ));
    }
    if util < min_util {
        missed.push(format!("utilisation {util:.3} < {min_util:.2}"));
    }
    if let Some(n) = naive {
        target.push_str(", not worse than naive");
        if refused > n.refused() {
            missed.push(format!(
                "refused {:.2}% > naive's {:.2}%",
                refused * 100.0,
                n.refused() * 100.0
            ));
        }
        if util + NAIVE_UTILISATION_MARGIN < n.utilisation() {
            missed.push(format!(
                "utilisation {util:.3} < naive's {:.3} ({} ok against {})",
                n.utilisation(),
                o.tally.ok,
                n.tally.ok
            ));
        }
    }
    Verdict {
        target,
        met: Some(missed.is_empty()),
        missed,
    }
}

/// The naive baseline of `o` among `all`.
pub(super) fn baseline<'a>(o: &Outcome, all: &'a [Outcome]) -> Option<&'a Outcome> {
    if o.cell.mode == Mode::Naive {
        return None;
    }
    all.iter().find(|n| o.cell.baseline_is(&n.cell))
}

/// The cell's JSON line.
pub(super) fn json(
    o: &Outcome,
    naive: Option<&Outcome>,
    v: &Verdict,
    duration: Duration,
) -> String {
    let c = &o.cell;
    let opt = |x: Option<f64>| x.map_or_else(|| "null".to_owned(), |x| format!("{x:.4}"));
    let missed = v
        .missed
        .iter()
        .map(|m| format!("\"{}\"", escape(m)))
        .collect::<Vec<_>>()
        .join(",");
    format!(
        "{{\"cell\":\"{}\",\"mode\":\"{}\",\"rate\":{},\"burst\":{},\"slack\":{},\"dialect\":\"{}\",\
         \"workers\":{},\"processes\":{},\"duration_s\":{:.3},\"elapsed_s\":{:.3},\"calls\":{},\
         \"ok\":{},\"upstream_429\":{},\"refused\":{:.4},\"utilisation\":{:.4},\"errors\":{},\
         \"naive_refused\":{},\"naive_utilisation\":{},\"restart_away_s\":{},\"target\":\"{}\",\
         \"target_met\":{},\"missed\":[{missed}]}}",
        c.label(),
        c.mode.name(),
        c.rate,
        c.burst,
        c.slack,
        c.dialect.name(),
        c.workers,
        c.processes,
        duration.as_secs_f64(),
        o.tally.elapsed.as_secs_f64(),
        o.calls(),
        o.tally.ok,
        o.tally.limited,
        o.refused(),
        o.utilisation(),
        o.tally.errors,
        opt(naive.map(Outcome::refused)),
        opt(naive.map(Outcome::utilisation)),
        opt(o.restart_away.map(|d| d.as_secs_f64())),
        escape(&v.target),
        v.met.map_or("null", |m| if m { "true" } else { "false" }),
    )
}

/// `s` inside a JSON string.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

/// The outcomes with their baselines and verdicts, worst first: missed targets, then met,
/// then the baselines; within each, most refused first, then least utilisation.
pub(super) fn judged(all: &[Outcome]) -> Vec<(&Outcome, Option<&Outcome>, Verdict)> {
    let mut rows: Vec<_> = all
        .iter()
        .map(|o| {
            let n = baseline(o, all);
            let v = verdict(o, n);
            (o, n, v)
        })
        .collect();
    let rank = |m: Option<bool>| match m {
        Some(false) => 0,
        Some(true) => 1,
        None => 2,
    };
    rows.sort_by(|a, b| {
        rank(a.2.met)
            .cmp(&rank(b.2.met))
            .then(b.0.refused().total_cmp(&a.0.refused()))
            .then(a.0.utilisation().total_cmp(&b.0.utilisation()))
    });
    rows
}

/// The table of `rows`.
pub(super) fn table(rows: &[(&Outcome, Option<&Outcome>, Verdict)]) -> String {
    let mut t = format!(
        "refused = 429s / calls; utilisation = ok / (burst + rate x elapsed); naive = the \
         baseline of the same rate, burst, workers and processes\n\
         {:<6} {:>6} {:>6} {:<9} {:>7} {:>5} {:>7} {:>7} {:>6} {:>8} {:>6} {:>6} {:>8} {:>6} {:>6}  missed\n",
        "mode",
        "rate",
        "burst",
        "dialect",
        "workers",
        "procs",
        "calls",
        "ok",
        "429",
        "refused",
        "util",
        "errors",
        "naive_rf",
        "n_util",
        "target",
    );
    let pct = |x: f64| format!("{:.2}%", x * 100.0);
    for (o, n, v) in rows {
        let c = &o.cell;
        let _ = writeln!(
            t,
            "{:<6} {:>6} {:>6} {:<9} {:>7} {:>5} {:>7} {:>7} {:>6} {:>8} {:>6.3} {:>6} {:>8} {:>6} {:>6}  {}",
            c.mode.name(),
            c.rate,
            c.burst,
            if c.mode.reads_headers() {
                c.dialect.name()
            } else {
                "-"
            },
            c.workers,
            c.processes,
            o.calls(),
            o.tally.ok,
            o.tally.limited,
            pct(o.refused()),
            o.utilisation(),
            o.tally.errors,
            n.map_or_else(|| "-".to_owned(), |n| pct(n.refused())),
            n.map_or_else(|| "-".to_owned(), |n| format!("{:.3}", n.utilisation())),
            match v.met {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "-",
            },
            v.missed.join("; "),
        );
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_parse_and_resolve() {
        assert_eq!(parse_burst("1"), Ok(BurstSpec::Units(1)));
        assert_eq!(parse_burst("rate"), Ok(BurstSpec::Rate(1.0)));
        assert_eq!(parse_burst("10rate"), Ok(BurstSpec::Rate(10.0)));
        assert!(parse_burst("0").is_err());
        assert!(parse_burst("xrate2").is_err());
        assert_eq!(BurstSpec::Rate(1.0).resolve(0.5), 1);
        assert_eq!(BurstSpec::Rate(10.0).resolve(0.3), 3);
        assert_eq!(BurstSpec::Rate(1.0).resolve(2.5), 3);
        assert_eq!(BurstSpec::Rate(10.0).resolve(50.0), 500);
    }

    #[test]
    fn rates_are_written_exactly() {
        assert_eq!(exact_rate(3.0), (3, Duration::from_secs(1)));
        assert_eq!(exact_rate(0.1), (1, Duration::from_secs(10)));
        assert_eq!(exact_rate(0.3), (3, Duration::from_secs(10)));
        assert_eq!(exact_rate(2.5), (5, Duration::from_secs(2)));
        assert_eq!(exact_rate(5000.0), (5000, Duration::from_secs(1)));
        assert_eq!(exact_rate(1.0 / 3.0), (1, Duration::from_secs(3)));
    }

    fn lists() -> Lists {
        Lists {
            rates: vec![1.0, 3.0],
            bursts: vec![BurstSpec::Units(1), BurstSpec::Rate(1.0)],
            slack: 1,
            dialects: vec![Dialect::Openai, Dialect::None],
            workers: vec![8],
            processes: vec![1],
            modes: vec![Mode::Known, Mode::High, Mode::Naive],
        }
    }

    /// Header-blind modes run once per dialect list; equal bursts once.
    #[test]
    fn cells_skip_what_cannot_differ() {
        let all = cells(&lists());
        // rate 1: one burst; rate 3: two. Each: known + naive + high x 2 dialects.
        assert_eq!(all.len(), 3 * 4);
        assert_eq!(all.iter().filter(|c| c.mode == Mode::Known).count(), 3);
        assert!(
            all.iter()
                .filter(|c| !c.mode.reads_headers())
                .all(|c| c.dialect == Dialect::Openai)
        );
    }

    fn outcome(mode: Mode, dialect: Dialect, ok: u64, limited: u64) -> Outcome {
        Outcome {
            cell: Cell {
                rate: 10.0,
                burst: 10,
                slack: 1,
                dialect,
                workers: 8,
                processes: 1,
                mode,
            },
            tally: Tally {
                ok,
                limited,
                errors: 0,
                elapsed: Duration::from_secs(9),
            },
            failure: None,
            restart_away: None,
        }
    }

    /// Each mode is held to its own numbers and to naive's.
    #[test]
    fn verdicts_follow_the_targets() {
        let naive = outcome(Mode::Naive, Dialect::Openai, 100, 300);
        let v = verdict(&outcome(Mode::Known, Dialect::Openai, 100, 0), Some(&naive));
        assert_eq!(v.met, Some(true), "{v:?}");
        let v = verdict(&outcome(Mode::Known, Dialect::Openai, 100, 1), Some(&naive));
        assert_eq!(v.met, Some(false));
        // 90 of 100 is 0.90 utilisation: met with headers, and below naive (by more than
        // the margin of 5 points) fails; 98 is within it.
        let v = verdict(&outcome(Mode::High, Dialect::Openai, 90, 0), None);
        assert_eq!(v.met, Some(true), "{v:?}");
        let v = verdict(&outcome(Mode::High, Dialect::Openai, 90, 0), Some(&naive));
        assert_eq!(v.met, Some(false));
        assert!(v.missed[0].contains("naive"), "{v:?}");
        let v = verdict(&outcome(Mode::High, Dialect::Openai, 98, 0), Some(&naive));
        assert_eq!(v.met, Some(true), "{v:?}");
        // Without headers, 4% refused is within the target.
        let v = verdict(&outcome(Mode::Bare, Dialect::None, 96, 4), None);
        assert_eq!(v.met, Some(true), "{v:?}");
        let v = verdict(&outcome(Mode::Bare, Dialect::Openai, 96, 4), None);
        assert_eq!(v.met, Some(false));
        assert_eq!(verdict(&naive, None).met, None);
    }

    /// The JSON line is one object with the cell's figures.
    #[test]
    fn json_line_names_the_cell() {
        let o = outcome(Mode::High, Dialect::Openai, 90, 0);
        let line = json(&o, None, &verdict(&o, None), Duration::from_secs(9));
        assert!(line.starts_with("{\"cell\":\"rate=10 burst=10 dialect=openai workers=8"));
        assert!(line.contains("\"naive_refused\":null"), "{line}");
        assert!(line.contains("\"utilisation\":0.9000"), "{line}");
        assert!(
            line.ends_with("\"target_met\":true,\"missed\":[]}"),
            "{line}"
        );
    }
}
