//! Costs by dimension name -> costs by dimension index, validated against a resource: an
//! unknown dimension, or an amount no limit could ever grant, is refused by name.

use std::collections::HashMap;

use super::PermitError;
use super::bucket::Cost;
use super::limit::MAX_AMOUNT;
use super::resource::{REQUESTS, ResourceDef};

/// A cost map -> per-dimension amounts, refusing unknown dimensions and costs no limit can
/// ever grant.
pub(crate) fn resolve_cost(
    def: &ResourceDef,
    cost: &HashMap<String, u64>,
) -> Result<Cost, PermitError> {
    let mut out = vec![0u64; def.dimensions.len()].into_boxed_slice();
    out[0] = 1;
    for (dim, &amount) in cost {
        let i = def
            .dimension_index(dim)
            .ok_or_else(|| unknown_dimension(def, "cost", dim))?;
        if let Some(max) = def.max_grantable(i)
            && amount > max
        {
            return Err(PermitError::Invalid {
                field: format!("cost.{dim}"),
                message: format!(
                    "{amount} exceeds {max}, the most resource {:?} can ever grant at once",
                    def.name
                ),
            });
        }
        out[i] = amount;
    }
    Ok(out)
}

pub(crate) fn resolve_actual(
    def: &ResourceDef,
    actual: &HashMap<String, u64>,
) -> Result<Vec<Option<u64>>, PermitError> {
    let mut out = vec![None; def.dimensions.len()];
    for (dim, &amount) in actual {
        let i = def
            .dimension_index(dim)
            .ok_or_else(|| unknown_dimension(def, "actual_cost", dim))?;
        if amount > MAX_AMOUNT {
            return Err(PermitError::Invalid {
                field: format!("actual_cost.{dim}"),
                message: format!(
                    "{amount} is above the largest amount a limit can have ({MAX_AMOUNT})"
                ),
            });
        }
        out[i] = Some(amount);
    }
    Ok(out)
}

fn unknown_dimension(def: &ResourceDef, field: &str, dim: &str) -> PermitError {
    PermitError::Invalid {
        field: format!("{field}.{dim}"),
        message: format!(
            "unknown dimension for resource {:?} (known: {})",
            def.name,
            def.dimensions.join(", ")
        ),
    }
}

pub(crate) fn never(def: &ResourceDef, cost: &[u64]) -> PermitError {
    let dim = def
        .limits
        .iter()
        .find(|l| cost.get(l.dimension).is_some_and(|&c| c > l.rate.burst))
        .map_or(REQUESTS, |l| def.dimensions[l.dimension].as_str());
    PermitError::Invalid {
        field: format!("cost.{dim}"),
        message: format!(
            "exceeds what resource {:?} can ever grant at once",
            def.name
        ),
    }
}
