//! Permit ids: opaque to clients, but they carry what the server needs to find the lease
//! without a global index (resource, partition, lease sequence) plus a random tag, so an id
//! cannot be guessed from another and a stale id never matches a newer lease.
//!
//! Layout: `{seq:x}.{tag:x}.{resource_len:x}.{resource}{partition}`.

/// The parts of a permit id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermitId<'a> {
    /// The resource.
    pub resource: &'a str,
    /// The partition the permit was asked for.
    pub partition: &'a str,
    /// The lease's sequence number.
    pub seq: u64,
    /// The random tag.
    pub tag: u64,
}

impl PermitId<'_> {
    /// The id as sent to clients.
    #[must_use]
    pub fn encode(&self) -> String {
        // Written by hand, not with `format!`: the formatting machinery was the largest
        // cost of permitd's own code on the grant path (bench/profile.md).
        let mut out =
            String::with_capacity(16 * 2 + 4 + 3 + self.resource.len() + self.partition.len());
        push_hex(&mut out, self.seq);
        out.push('.');
        push_hex(&mut out, self.tag);
        out.push('.');
        push_hex(
            &mut out,
            u64::try_from(self.resource.len()).unwrap_or(u64::MAX),
        );
        out.push('.');
        out.push_str(self.resource);
        out.push_str(self.partition);
        out
    }
}

/// `v` in lowercase hex without leading zeros, like `{:x}`.
fn push_hex(out: &mut String, v: u64) {
    let digits = (64 - v.leading_zeros()).div_ceil(4).max(1);
    for i in (0..digits).rev() {
        let nibble = u32::try_from((v >> (4 * i)) & 0xf).unwrap_or(0);
        out.push(char::from_digit(nibble, 16).unwrap_or('0'));
    }
}

/// Random bytes drawn from the OS CSPRNG per thread, a block at a time, so a permit's tag
/// cannot be predicted from others yet costs no system call per grant.
struct Pool {
    bytes: [u8; POOL],
    next: usize,
}

const POOL: usize = 512;

thread_local! {
    static TAGS: std::cell::RefCell<Pool> = const {
        std::cell::RefCell::new(Pool { bytes: [0; POOL], next: POOL })
    };
}

/// A permit id's tag: 64 bits from the OS CSPRNG (`getrandom`, through ring).
#[must_use]
pub fn random_tag() -> u64 {
    TAGS.with(|p| {
        let mut p = p.borrow_mut();
        if p.next + 8 > POOL {
            use ring::rand::SecureRandom as _;
            if ring::rand::SystemRandom::new().fill(&mut p.bytes).is_err() {
                // The OS source failing is not something to grant permits through with
                // guessable ids; it does not happen on Linux once booted.
                panic!("the OS random source failed");
            }
            p.next = 0;
        }
        let at = p.next;
        let mut b = [0u8; 8];
        b.copy_from_slice(&p.bytes[at..at + 8]);
        // Used once: the pool never hands the same bytes out twice.
        p.bytes[at..at + 8].fill(0);
        p.next = at + 8;
        u64::from_le_bytes(b)
    })
}

/// Parse an id; `None` when it is not one of ours.
#[must_use]
pub fn parse(id: &str) -> Option<PermitId<'_>> {
    let mut parts = id.splitn(4, '.');
    let seq = u64::from_str_radix(parts.next()?, 16).ok()?;
    let tag = u64::from_str_radix(parts.next()?, 16).ok()?;
    let len = usize::from_str_radix(parts.next()?, 16).ok()?;
    let rest = parts.next()?;
    if len == 0 || !rest.is_char_boundary(len.min(rest.len())) || len > rest.len() {
        return None;
    }
    let (resource, partition) = rest.split_at(len);
    Some(PermitId {
        resource,
        partition,
        seq,
        tag,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tags are drawn afresh: across several pool refills no two repeat, and they are not
    /// sequential.
    #[test]
    fn tags_do_not_repeat() {
        let tags: std::collections::HashSet<u64> = (0..10_000).map(|_| random_tag()).collect();
        assert_eq!(tags.len(), 10_000);
    }
    use proptest::prelude::*;

    /// An id round-trips, including names that contain the separator.
    #[test]
    fn round_trip() {
        let id = PermitId {
            resource: "openai:gpt-4.1",
            partition: "user:4.2",
            seq: 42,
            tag: u64::MAX,
        };
        assert_eq!(parse(&id.encode()), Some(id));
    }

    /// Garbage is refused, never a panic.
    #[test]
    fn garbage() {
        for s in [
            "",
            "x",
            "1.2",
            "1.2.3",
            "1.2.0.ab",
            "1.2.ff.ab",
            "g.1.1.a",
            "1.1.1.é",
        ] {
            assert_eq!(parse(s), None, "{s:?}");
        }
    }

    proptest! {
        /// The hand-written encoder writes what `format!` would, and the id parses back.
        #[test]
        fn encode_is_the_documented_layout(
            seq in any::<u64>(),
            tag in any::<u64>(),
            resource in ".{1,40}",
            partition in ".{0,40}",
        ) {
            let id = PermitId { resource: &resource, partition: &partition, seq, tag };
            let expected = format!("{seq:x}.{tag:x}.{:x}.{resource}{partition}", resource.len());
            let encoded = id.encode();
            prop_assert_eq!(&encoded, &expected);
            prop_assert_eq!(parse(&encoded), Some(id));
        }

        /// No input panics the parser.
        #[test]
        fn never_panics(s in ".*") {
            let _ = parse(&s);
        }
    }
}
