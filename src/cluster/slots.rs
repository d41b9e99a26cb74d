//! A definition's limits as the scripts take them: slot arguments, the exact-integer
//! bound of their GCRA, key lifetimes, and the scripts' reply shapes.

#[allow(clippy::wildcard_imports)]
use super::*;

/// Limit slots of a definition as the scripts take them (see `read_slots` in common.lua).
pub(super) fn slot_args(def: &ResourceDef, per_partition_home: bool, out: &mut Vec<String>) {
    let slots: Vec<_> = def.limits.iter().collect();
    out.push(slots.len().to_string());
    for l in slots {
        // Per-partition limits live in the home bucket (KEYS[1]), resource-wide ones of a
        // per-partition resource in the shared one (KEYS[4]); a resource that is not per
        // partition has only its shared bucket, which is its home.
        let which = if per_partition_home && l.scope == Scope::Resource {
            "4"
        } else {
            "1"
        };
        let (a, p, period_us) = reduced(l.rate);
        out.push(which.to_owned());
        out.push(format!(
            "{}{}/{}/{}/{}",
            if l.scope == Scope::Resource { 's' } else { 'p' },
            l.dimension,
            l.rate.amount,
            period_us,
            l.rate.burst
        ));
        out.push(a.to_string());
        out.push(p.to_string());
        out.push(l.rate.burst.to_string());
        out.push(l.dimension.to_string());
        out.push(period_us.to_string());
    }
}

/// Whether `rate` stays exact in the scripts' doubles: `burst * p` below 2^52, so that a
/// slot's "ahead" (at most twice that) stays below 2^53 (common.lua).
#[must_use]
pub fn exact_in_lua(rate: Rate) -> bool {
    let (_, p, _) = reduced(rate);
    u128::from(rate.burst) * u128::from(p) < 1 << 52
}

/// The definition's limits the Redis engine cannot hold exactly, as the error naming the
/// first one (`limits[i]`).
///
/// # Errors
/// A limit whose `burst * period` (reduced) reaches 2^52.
pub fn check_exact(def: &ResourceDef) -> Result<(), PermitError> {
    for (i, l) in def.limits.iter().enumerate() {
        if !exact_in_lua(l.rate) {
            return Err(PermitError::Invalid {
                field: format!("limits[{i}]"),
                message: format!(
                    "burst {} over a period of {} µs is beyond the Redis engine's exact \
                     integer range (burst x period / gcd(amount, period) must stay below \
                     2^52): use a shorter period or a smaller burst",
                    l.rate.burst,
                    l.rate.period_ns / 1000
                ),
            });
        }
    }
    Ok(())
}

/// A rate as `a` units per `p` µs, reduced by their gcd, and its period in µs.
pub(super) fn reduced(rate: Rate) -> (u64, u64, u64) {
    let period_us = (rate.period_ns / 1000).max(1);
    let g = gcd(rate.amount.max(1), period_us);
    (rate.amount.max(1) / g, period_us / g, period_us)
}

pub(super) fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a.max(1)
}

/// How long an idle bucket's keys live: longer than a full refill, a lease and the longest
/// cooldown, so expiry never forgets state that still matters.
pub(super) fn ttl_ms(def: &ResourceDef) -> u64 {
    let refill = def
        .limits
        .iter()
        .map(|l| {
            let (a, p, _) = reduced(l.rate);
            l.rate.burst.saturating_mul(p) / a / 1000
        })
        .max()
        .unwrap_or(0);
    let lease = u64::try_from(def.lease.as_millis()).unwrap_or(u64::MAX);
    let cool = u64::try_from(def.backoff.max_retry_after.as_millis()).unwrap_or(u64::MAX);
    refill.max(lease).max(cool).saturating_add(60_000)
}

pub(super) fn pairs(v: &[i64]) -> Vec<(usize, u64)> {
    let mut out: Vec<(usize, u64)> = Vec::new();
    for c in v.chunks_exact(2) {
        let (Ok(d), Ok(a)) = (usize::try_from(c[0]), u64::try_from(c[1])) else {
            continue;
        };
        match out.iter_mut().find(|(x, _)| *x == d) {
            Some((_, r)) => *r = (*r).min(a),
            None => out.push((d, a)),
        }
    }
    out
}

pub(super) fn us(v: i64) -> Duration {
    Duration::from_micros(u64::try_from(v).unwrap_or(0))
}
