//! Tenant-qualified names: how one tenant's resource names stay apart from another's in
//! every map, store key, Redis key and permit id, with one encoding.
//!
//! A qualified name is `tenant|name`, except for the tenant [`DEFAULT_TENANT`], whose names
//! stay bare: a data directory written before tenants existed reads as tenant `default`
//! with no migration. `|` is outside the name alphabet (`[A-Za-z0-9._:/@-]`) and tenants use
//! that alphabet, so the split is unambiguous: a name without `|` is the default tenant's,
//! and no name of one tenant can be spelt as another's.

use std::borrow::Cow;

use crate::permits::resource::{NameError, check_name};
pub use crate::store::keys::DEFAULT_TENANT;

/// Between the tenant and the name of a qualified name.
pub const SEP: char = '|';

/// Longest tenant name.
pub const MAX_TENANT_LEN: usize = 64;

/// Check a tenant name: the name alphabet, 1 to [`MAX_TENANT_LEN`] bytes.
///
/// # Errors
/// The name is empty, too long, or has a character outside the alphabet.
pub fn check_tenant(tenant: &str) -> Result<(), NameError> {
    check_name(tenant, true, MAX_TENANT_LEN)
}

/// `name` of `tenant` as the registry, the stores and permit ids spell it. Both parts must
/// have been checked ([`check_tenant`], the name checks).
#[must_use]
pub fn qualify<'a>(tenant: &str, name: &'a str) -> Cow<'a, str> {
    if tenant == DEFAULT_TENANT {
        Cow::Borrowed(name)
    } else {
        let mut out = String::with_capacity(tenant.len() + 1 + name.len());
        out.push_str(tenant);
        out.push(SEP);
        out.push_str(name);
        Cow::Owned(out)
    }
}

/// `(tenant, name)` of a qualified name; the inverse of [`qualify`].
#[must_use]
pub fn split(qualified: &str) -> (&str, &str) {
    match qualified.split_once(SEP) {
        Some((tenant, name)) => (tenant, name),
        None => (DEFAULT_TENANT, qualified),
    }
}

/// Check a qualified name read back from a store, a peer or a permit id: a valid tenant
/// (other than `default`, which is never written out) and a valid name.
///
/// # Errors
/// Either part fails its check.
pub fn check_qualified(qualified: &str, max_name: usize) -> Result<(), NameError> {
    if let Some((tenant, name)) = qualified.split_once(SEP) {
        check_tenant(tenant)?;
        if tenant == DEFAULT_TENANT {
            return Err(NameError::BadChar {
                found: SEP,
                at: tenant.len(),
            });
        }
        check_name(name, true, max_name)
    } else {
        check_name(qualified, true, max_name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default tenant's names are bare; others' carry their tenant; both round-trip.
    #[test]
    fn qualify_round_trips() {
        assert_eq!(qualify("default", "openai:gpt-4o"), "openai:gpt-4o");
        assert_eq!(qualify("team-a", "openai:gpt-4o"), "team-a|openai:gpt-4o");
        for (t, n) in [("default", "x"), ("team-a", "a:b/c"), ("t.b", "y")] {
            assert_eq!(split(&qualify(t, n)), (t, n));
        }
    }

    /// No two (tenant, name) pairs qualify to the same string, and stored garbage is
    /// refused.
    #[test]
    fn qualified_names_are_unambiguous() {
        let pairs = [
            ("default", "a"),
            ("a", "default"),
            ("a", "b"),
            ("a:b", "c"),
            ("a", "b:c"),
        ];
        let q: std::collections::HashSet<String> = pairs
            .iter()
            .map(|(t, n)| qualify(t, n).into_owned())
            .collect();
        assert_eq!(q.len(), pairs.len());
        assert!(check_qualified("team-a|x", 256).is_ok());
        assert!(check_qualified("x", 256).is_ok());
        assert!(check_qualified("default|x", 256).is_err());
        assert!(check_qualified("a|b|c", 256).is_err());
        assert!(check_qualified("|x", 256).is_err());
        assert!(check_qualified("a|", 256).is_err());
    }
}
