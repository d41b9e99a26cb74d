//! The Redis key layout of the cluster engine, in one place. Every key of one decision
//! carries the same hash tag, `{r:<resource>}`, so a permit's bucket, its resource-wide
//! bucket, its leases and its learned limits live on one Redis Cluster slot and one Lua
//! script may touch them all. Resource and partition names are restricted to
//! `[A-Za-z0-9._:/@-]` (no braces), so the tag always ends where the resource does; a
//! resource of a tenant other than `default` is `tenant|name` (see
//! [`crate::auth::tenant`]). A partition is written behind its length (`p:7:user/42`):
//! names may contain `:`, and without the length partition `V:leases`'s bucket would be
//! partition `V`'s lease set.

/// The keys of one decision, in the order every script takes them as `KEYS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketKeys {
    /// Home bucket hash: limit slots, cooldown, blocked dimensions, counters.
    pub home: String,
    /// Home leases: sorted set of lease member -> expiry (µs, Redis time).
    pub leases: String,
    /// What each lease took: hash of lease member -> costs (csv, per dimension).
    pub lease_costs: String,
    /// The resource-wide bucket of a per-partition resource (its own limits), else `home`.
    pub shared: String,
    /// Limits learned from headers for the home bucket.
    pub learned: String,
    /// The resource's live partitions (zset: home key -> expiry, µs), for the partition cap.
    pub parts: String,
}

impl BucketKeys {
    /// The keys for `partition` of `resource`: `per_partition` resources have one home
    /// bucket per partition plus the resource-wide one; others have only the latter.
    #[must_use]
    pub fn new(prefix: &str, resource: &str, partition: &str, per_partition: bool) -> Self {
        let tag = format!("{prefix}{{r:{resource}}}");
        let shared = format!("{tag}:shared");
        let home_id = if per_partition {
            format!("p:{}:{partition}", partition.len())
        } else {
            "shared".to_owned()
        };
        Self {
            home: format!("{tag}:{home_id}"),
            leases: format!("{tag}:{home_id}:leases"),
            lease_costs: format!("{tag}:{home_id}:lcost"),
            learned: format!("{tag}:{home_id}:learned"),
            parts: format!("{tag}:parts"),
            shared,
        }
    }

    /// As `KEYS`, in the scripts' order.
    #[must_use]
    pub fn as_array(&self) -> [&str; 6] {
        [
            &self.home,
            &self.leases,
            &self.lease_costs,
            &self.shared,
            &self.learned,
            &self.parts,
        ]
    }
}

/// The pub/sub channel every replica listens on: wake-ups, Watch fan-out, resource changes.
#[must_use]
pub fn events_channel(prefix: &str) -> String {
    format!("{prefix}events")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::keys::hash_tag;

    #[test]
    fn layout_is_pinned() {
        let k = BucketKeys::new("pd:", "openai:gpt-4o", "user/42", true);
        assert_eq!(k.home, "pd:{r:openai:gpt-4o}:p:7:user/42");
        assert_eq!(k.leases, "pd:{r:openai:gpt-4o}:p:7:user/42:leases");
        assert_eq!(k.lease_costs, "pd:{r:openai:gpt-4o}:p:7:user/42:lcost");
        assert_eq!(k.learned, "pd:{r:openai:gpt-4o}:p:7:user/42:learned");
        assert_eq!(k.shared, "pd:{r:openai:gpt-4o}:shared");
        let k = BucketKeys::new("pd:", "slack", "ignored", false);
        assert_eq!(k.home, "pd:{r:slack}:shared");
        assert_eq!(k.home, k.shared);
        assert_eq!(events_channel("pd:"), "pd:events");
    }

    #[test]
    fn every_key_of_a_decision_hashes_to_one_slot() {
        for (res, part) in [("a", ""), ("x:y/z@w.v-1", "p:q"), ("r", "{}")] {
            let k = BucketKeys::new("pd:", res, part, true);
            let tags: Vec<&[u8]> = k
                .as_array()
                .iter()
                .map(|key| hash_tag(key.as_bytes()))
                .collect();
            assert!(
                tags.iter().all(|t| *t == format!("r:{res}").as_bytes()),
                "{tags:?}"
            );
        }
    }

    #[test]
    fn partitions_and_resources_do_not_collide() {
        let a = BucketKeys::new("pd:", "a", "shared", true);
        let b = BucketKeys::new("pd:", "a", "", false);
        assert_ne!(a.home, b.home);
        let c = BucketKeys::new("pd:", "a:b", "", false);
        let d = BucketKeys::new("pd:", "a", "b", true);
        assert_ne!(c.home, d.home);
        // No partition's keys are another partition's: every key of every partition of a
        // set of names that embed the suffixes is distinct.
        let names = [
            "V",
            "V:leases",
            "V:lcost",
            "V:learned",
            "shared",
            "p:V",
            "1:V",
        ];
        let mut seen = std::collections::HashSet::new();
        for p in names {
            let k = BucketKeys::new("pd:", "r", p, true);
            for key in [&k.home, &k.leases, &k.lease_costs, &k.learned] {
                assert!(seen.insert(key.clone()), "{key} twice");
            }
        }
        assert!(!seen.contains(&BucketKeys::new("pd:", "r", "", true).shared));
        // Tenants' resources are apart too (their names carry the tenant).
        let a = BucketKeys::new("pd:", "team-a|x", "p", true);
        let b = BucketKeys::new("pd:", "x", "p", true);
        assert_ne!(a.home, b.home);
    }
}
