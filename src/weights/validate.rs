//! Checking a set of tensors against the variables a network expects.

use crate::error::{first_non_finite, Error, Result};
use crate::model::VariableSpec;
use std::collections::{BTreeMap, HashSet};

/// How many names of each kind of problem an error message lists.
const LISTED: usize = 10;

/// A variable whose shape differs from the expected one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeMismatch {
    /// Variable name (our naming).
    pub name: String,
    /// Shape the network needs.
    pub expected: Vec<usize>,
    /// Shape found in the weights.
    pub found: Vec<usize>,
}

/// What a comparison of found tensors with expected variables turned up.
///
/// ```
/// use fracture::model::VariableSpec;
/// use fracture::weights::ValidationReport;
/// use std::collections::BTreeMap;
/// let expected = vec![VariableSpec { name: "post_bn.weight".into(), shape: vec![8] }];
/// let found = BTreeMap::from([("post_bn.weight".to_string(), vec![4])]);
/// let report = ValidationReport::compare(&found, &expected);
/// assert_eq!(report.mismatched[0].found, vec![4]);
/// assert!(report.into_result("example.safetensors").is_err());
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ValidationReport {
    /// Expected variables absent from the weights.
    pub missing: Vec<VariableSpec>,
    /// Variables present with the wrong shape.
    pub mismatched: Vec<ShapeMismatch>,
    /// Tensors in the weights that the network does not use (not an error by themselves).
    pub unexpected: Vec<VariableSpec>,
    /// Number of expected variables found with the right shape.
    pub matched: usize,
}

impl ValidationReport {
    /// Compare `found` (name → shape) with `expected`.
    pub fn compare(found: &BTreeMap<String, Vec<usize>>, expected: &[VariableSpec]) -> Self {
        let mut report = Self::default();
        let expected_names: HashSet<&str> = expected.iter().map(|v| v.name.as_str()).collect();
        for spec in expected {
            match found.get(&spec.name) {
                None => report.missing.push(spec.clone()),
                Some(shape) if *shape != spec.shape => report.mismatched.push(ShapeMismatch {
                    name: spec.name.clone(),
                    expected: spec.shape.clone(),
                    found: shape.clone(),
                }),
                Some(_) => report.matched += 1,
            }
        }
        report.unexpected = found
            .iter()
            .filter(|(name, _)| !expected_names.contains(name.as_str()))
            .map(|(name, shape)| VariableSpec {
                name: name.clone(),
                shape: shape.clone(),
            })
            .collect();
        report
    }

    /// True when every expected variable is present with its shape.
    pub fn is_complete(&self) -> bool {
        self.missing.is_empty() && self.mismatched.is_empty()
    }

    /// `Ok(self)` when complete, else an [`Error::Weights`] naming `source_name`, the counts of
    /// each kind of problem and the first few names with expected vs found shapes.
    pub fn into_result(self, source_name: &str) -> Result<Self> {
        if self.is_complete() {
            return Ok(self);
        }
        Err(Error::Weights {
            source_name: source_name.to_string(),
            message: self.describe(),
        })
    }

    /// A human-readable summary of the problems (counts first, then the first names).
    pub fn describe(&self) -> String {
        let mut lines = vec![format!(
            "{} missing, {} with the wrong shape, {} unexpected, {} matched",
            self.missing.len(),
            self.mismatched.len(),
            self.unexpected.len(),
            self.matched
        )];
        let more = |n: usize| {
            (n > LISTED)
                .then(|| format!("  ... and {} more", n - LISTED))
                .into_iter()
        };
        for m in self.mismatched.iter().take(LISTED) {
            lines.push(format!(
                "  wrong shape: {} expected {:?}, found {:?}",
                m.name, m.expected, m.found
            ));
        }
        lines.extend(more(self.mismatched.len()));
        for v in self.missing.iter().take(LISTED) {
            lines.push(format!("  missing: {} (expected {:?})", v.name, v.shape));
        }
        lines.extend(more(self.missing.len()));
        for v in self.unexpected.iter().take(LISTED) {
            lines.push(format!("  unexpected: {} {:?}", v.name, v.shape));
        }
        lines.extend(more(self.unexpected.len()));
        lines.join("\n")
    }
}

/// Why tensor `name`'s `values` cannot be used, when one of them is NaN or infinite (weights
/// are checked once, when they are read, so that a corrupt file never gives answers).
pub(crate) fn non_finite_weight(name: &str, values: &[f32]) -> Option<String> {
    first_non_finite(values).map(|(index, value)| {
        format!(
            "tensor {name} holds {value} at index {index} (of {} values): the weights are \
             corrupt",
            values.len()
        )
    })
}
