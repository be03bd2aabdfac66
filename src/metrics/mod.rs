//! The metrics a radiologist reviewing the classifier would ask for.
//!
//! Predictions become numbers here, at the end of the pipeline. Accuracy alone hides what
//! matters on an imbalanced data set such as FracAtlas: a model that always answers "not
//! fractured" scores 82.5% on its test split while finding no fracture at all. So every summary
//! in this module puts sensitivity (fractures found), specificity, ROC AUC and average precision
//! first, and shows the majority-class baseline next to the accuracy.
//!
//! # Conventions (shared with scikit-learn and checked against it, `tests/fixtures/metrics/`)
//! - Labels are `&[bool]`: `true` means fractured, the positive class (1).
//! - Scores are `&[f64]`: the probability of a fracture. A case is predicted fractured when
//!   `score >= threshold`. Ranking metrics (ROC, PR, thresholds) accept any finite score, logits
//!   included; cross-entropy, calibration and [`BinaryMetrics`] require probabilities in `[0, 1]`.
//! - A metric the data cannot define (ROC AUC when only one class is present, sensitivity
//!   without any fracture) is [`Metric::Undefined`] with its [`Undefined`] reason: never NaN,
//!   never a panic. Invalid input (lengths that differ, no samples, a NaN score) is an
//!   [`Error::InvalidInput`].
//! - The [`ClassificationReport`] follows scikit-learn's `classification_report` with
//!   `zero_division=0`, so its numbers can be compared with the Python notebook's.
//!
//! ```
//! use fracture::metrics::{BinaryMetrics, Metric};
//!
//! let fractured = [true, true, false, false, false];
//! let probability = [0.9, 0.4, 0.6, 0.2, 0.1];
//! let metrics = BinaryMetrics::compute(&fractured, &probability, 0.5)?;
//! assert_eq!(metrics.sensitivity, Metric::Defined(0.5)); // one fracture of two found
//! assert_eq!(metrics.roc_auc, Metric::Defined(5.0 / 6.0));
//! println!("{metrics}\n{}", metrics.report);
//! # Ok::<(), fracture::Error>(())
//! ```

mod calibration;
mod curves;
pub mod localization;
mod recalibration;
mod report;
mod uncertainty;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Serialize, Serializer};

use crate::{Error, Result};

pub use calibration::{
    brier_score, calibrated_probability, check_temperature, fit_temperature, rescale_threshold,
    sigmoid, CalibrationComparison, CalibrationSummary, TemperatureFit, ECE_BINS, MAX_TEMPERATURE,
    MIN_TEMPERATURE,
};
pub use curves::{
    average_precision, choose_threshold, roc_auc, sensitivity_at_specificity, OperatingPoint,
    PrCurve, RocCurve, ThresholdRule,
};
pub use localization::{LocalizationConfig, LocalizationReport};
pub use recalibration::{calibration_intercept, calibration_slope, fit_platt, LogitMap, PlattFit};
pub use report::{ClassScores, ClassificationReport, ConfusionMatrix};
pub(crate) use uncertainty::quantile;
pub use uncertainty::{
    bootstrap_ci, bootstrap_ci_ranked, bootstrap_mean, bootstrap_sensitivity_at_specificity,
    calibration_bins, expected_calibration_error, paired_auc_difference, BootstrapConfig,
    BootstrapIntervals, CalibrationBin, Interval, SensitivityAtSpecificity,
};

/// Class names in report order: the positive class first, as in the reference fixtures.
pub const CLASS_NAMES: [&str; 2] = ["Fractured", "Not_Fractured"];

/// Why a metric has no value on the given data.
///
/// ```
/// use fracture::metrics::Undefined;
/// assert_eq!(Undefined::NoFractured.to_string(), "no fractured cases");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Undefined {
    /// No fractured case among the labels (sensitivity, ROC AUC, average precision).
    NoFractured,
    /// No not-fractured case among the labels (specificity, ROC AUC).
    NoNotFractured,
    /// No case was predicted fractured (precision, the positive predictive value).
    NoPredictedFractured,
    /// No case was predicted not fractured (the negative predictive value).
    NoPredictedNotFractured,
    /// No threshold does better than calling every case not fractured (Youden's J <= 0).
    NoInformativeThreshold,
    /// The classes are perfectly separated, so a logistic fit has no finite slope (the
    /// calibration slope).
    SeparatedClasses,
}

impl fmt::Display for Undefined {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Undefined::NoFractured => "no fractured cases",
            Undefined::NoNotFractured => "no not-fractured cases",
            Undefined::NoPredictedFractured => "no case predicted fractured",
            Undefined::NoPredictedNotFractured => "no case predicted not fractured",
            Undefined::NoInformativeThreshold => {
                "no threshold does better than calling every case not fractured"
            }
            Undefined::SeparatedClasses => {
                "the classes are perfectly separated (the fitted slope would be infinite)"
            }
        })
    }
}

/// A metric value, or the reason the data does not define it.
///
/// `Display` prints the value (honouring a precision such as `{:.3}`) or
/// `undefined (reason)`; serde writes the value or `null`.
///
/// ```
/// use fracture::metrics::{roc_auc, Metric, Undefined};
///
/// let only_healthy = [false, false, false];
/// let auc = roc_auc(&only_healthy, &[0.2, 0.7, 0.4])?;
/// assert_eq!(auc, Metric::Undefined(Undefined::NoFractured));
/// assert_eq!(auc.value(), None);
/// assert_eq!(format!("{auc}"), "undefined (no fractured cases)");
/// assert!(auc.defined_or("ROC AUC").is_err());
/// # Ok::<(), fracture::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Metric<T = f64> {
    /// The data defines the metric.
    Defined(T),
    /// The data does not define the metric, and why.
    Undefined(Undefined),
}

impl<T> Metric<T> {
    /// The value, if defined.
    pub fn value(self) -> Option<T> {
        match self {
            Metric::Defined(value) => Some(value),
            Metric::Undefined(_) => None,
        }
    }

    /// Whether the data defines the metric.
    pub fn is_defined(&self) -> bool {
        matches!(self, Metric::Defined(_))
    }

    /// The value, or an [`Error::Metric`] naming the metric (`what`) and the reason.
    pub fn defined_or(self, what: &str) -> Result<T> {
        match self {
            Metric::Defined(value) => Ok(value),
            Metric::Undefined(reason) => {
                Err(Error::Metric(format!("{what} is undefined: {reason}")))
            }
        }
    }

    /// Apply `f` to a defined value; keep the reason of an undefined one.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Metric<U> {
        match self {
            Metric::Defined(value) => Metric::Defined(f(value)),
            Metric::Undefined(reason) => Metric::Undefined(reason),
        }
    }
}

impl<T: fmt::Display> fmt::Display for Metric<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Metric::Defined(value) => value.fmt(f),
            Metric::Undefined(reason) => write!(f, "undefined ({reason})"),
        }
    }
}

impl<T: Serialize> Serialize for Metric<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        match self {
            Metric::Defined(value) => serializer.serialize_some(value),
            Metric::Undefined(_) => serializer.serialize_none(),
        }
    }
}

/// `numerator / denominator`, or `Undefined(reason)` when the denominator is zero.
fn ratio(numerator: usize, denominator: usize, reason: Undefined) -> Metric {
    if denominator == 0 {
        Metric::Undefined(reason)
    } else {
        Metric::Defined(numerator as f64 / denominator as f64)
    }
}

/// Check that labels and scores describe the same, non-empty set of cases with finite scores.
fn check_inputs(labels: &[bool], scores: &[f64]) -> Result<()> {
    if labels.len() != scores.len() {
        return Err(Error::InvalidInput(format!(
            "metrics: {} labels but {} scores; give one score per labelled case",
            labels.len(),
            scores.len()
        )));
    }
    if labels.is_empty() {
        return Err(Error::InvalidInput(
            "metrics: no cases (labels and scores are empty)".into(),
        ));
    }
    if let Some((index, score)) = scores.iter().enumerate().find(|(_, s)| !s.is_finite()) {
        return Err(Error::InvalidInput(format!(
            "metrics: score {index} is {score}; scores must be finite"
        )));
    }
    Ok(())
}

/// [`check_inputs`], and every score a probability in `[0, 1]`.
fn check_probabilities(labels: &[bool], scores: &[f64]) -> Result<()> {
    check_inputs(labels, scores)?;
    if let Some((index, score)) = scores
        .iter()
        .enumerate()
        .find(|(_, s)| !(0.0..=1.0).contains(*s))
    {
        return Err(Error::InvalidInput(format!(
            "metrics: score {index} is {score}, outside [0, 1]; expected the probability of a \
             fracture (apply the sigmoid to logits first)"
        )));
    }
    Ok(())
}

/// Reject a NaN threshold (it would call every case not fractured without saying so).
fn check_threshold(threshold: f64) -> Result<()> {
    if threshold.is_nan() {
        return Err(Error::InvalidInput("metrics: the threshold is NaN".into()));
    }
    Ok(())
}

/// The decision rule, the one place it is written: a case is called fractured when its score
/// reaches the threshold (`score >= threshold`), as scikit-learn's curves count it. A
/// probability of exactly 0.5 at threshold 0.5 is "fractured". A NaN score or threshold is an
/// [`Error::InvalidInput`]: no decision, never "not fractured".
///
/// ```
/// use fracture::metrics::predicts_fracture;
/// assert!(predicts_fracture(0.5, 0.5)?);
/// assert!(!predicts_fracture(0.49, 0.5)?);
/// assert!(predicts_fracture(f64::NAN, 0.5).is_err());
/// assert!(predicts_fracture(0.5, f64::NAN).is_err());
/// # Ok::<(), fracture::Error>(())
/// ```
pub fn predicts_fracture(score: f64, threshold: f64) -> Result<bool> {
    check_threshold(threshold)?;
    if score.is_nan() {
        return Err(Error::InvalidInput(format!(
            "the score is NaN: no decision at threshold {threshold} (corrupt weights?)"
        )));
    }
    Ok(score >= threshold)
}

/// Fraction of cases classified correctly at `threshold` (fractured if `score >= threshold`).
///
/// Read it next to [`ConfusionMatrix::majority_baseline_accuracy`]: on imbalanced data a
/// useless model scores high.
///
/// ```
/// use fracture::metrics::accuracy;
/// let acc = accuracy(&[true, false, false, false], &[0.2, 0.1, 0.3, 0.4], 0.5)?;
/// assert_eq!(acc, 0.75); // every case called "not fractured", the fracture missed
/// # Ok::<(), fracture::Error>(())
/// ```
pub fn accuracy(labels: &[bool], scores: &[f64], threshold: f64) -> Result<f64> {
    Ok(ConfusionMatrix::from_scores(labels, scores, threshold)?.accuracy())
}

/// Smallest and largest probability used by [`binary_cross_entropy`] (Keras's epsilon).
pub const BCE_EPSILON: f64 = 1e-7;

/// Mean binary cross-entropy of fracture probabilities, clipped to `[1e-7, 1 - 1e-7]` as Keras
/// does, so a confident mistake costs about 16.1 instead of infinity.
///
/// ```
/// use fracture::metrics::binary_cross_entropy;
/// let loss = binary_cross_entropy(&[true, false], &[0.5, 0.5])?;
/// assert!((loss - std::f64::consts::LN_2).abs() < 1e-12);
/// # Ok::<(), fracture::Error>(())
/// ```
pub fn binary_cross_entropy(labels: &[bool], scores: &[f64]) -> Result<f64> {
    check_probabilities(labels, scores)?;
    let total: f64 = labels
        .iter()
        .zip(scores)
        .map(|(&fractured, &score)| {
            let p = score.clamp(BCE_EPSILON, 1.0 - BCE_EPSILON);
            if fractured {
                -p.ln()
            } else {
                -(1.0 - p).ln()
            }
        })
        .sum();
    Ok(total / labels.len() as f64)
}

/// Everything a reviewer needs about one set of predictions at one threshold.
///
/// `Display` prints a short clinical summary (sensitivity first); the sklearn-style table is
/// in [`BinaryMetrics::report`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct BinaryMetrics {
    /// The threshold used: predicted fractured if `score >= threshold`.
    pub threshold: f64,
    /// Counts of true/false positives/negatives at the threshold.
    pub confusion: ConfusionMatrix,
    /// Fraction of cases classified correctly.
    pub accuracy: f64,
    /// Accuracy of always answering the majority class (on FracAtlas: "not fractured").
    pub majority_baseline_accuracy: f64,
    /// Mean binary cross-entropy, probabilities clipped to `[1e-7, 1 - 1e-7]`.
    pub binary_cross_entropy: f64,
    /// Area under the ROC curve (ties count one half).
    pub roc_auc: Metric,
    /// Average precision (area under the step-wise precision-recall curve).
    pub average_precision: Metric,
    /// Fraction of fractures found (recall of the fractured class).
    pub sensitivity: Metric,
    /// Fraction of not-fractured cases called not fractured.
    pub specificity: Metric,
    /// Per-class precision / recall / F1 / support as scikit-learn reports them.
    pub report: ClassificationReport,
}

impl BinaryMetrics {
    /// Compute every metric for fracture `scores` (probabilities) against `labels`.
    ///
    /// Errors on empty or mismatched input, scores outside `[0, 1]` or NaN, or a NaN threshold;
    /// a metric the data cannot define is [`Metric::Undefined`].
    ///
    /// ```
    /// use fracture::metrics::BinaryMetrics;
    /// // Always answering "not fractured": high accuracy, nothing found.
    /// let labels = [true, false, false, false, false];
    /// let m = BinaryMetrics::compute(&labels, &[0.1; 5], 0.5)?;
    /// assert_eq!(m.accuracy, 0.8);
    /// assert_eq!(m.majority_baseline_accuracy, 0.8);
    /// assert_eq!(m.sensitivity.value(), Some(0.0));
    /// # Ok::<(), fracture::Error>(())
    /// ```
    pub fn compute(labels: &[bool], scores: &[f64], threshold: f64) -> Result<Self> {
        Self::compute_ranked(labels, scores, scores, threshold)
    }

    /// [`BinaryMetrics::compute`] with ROC AUC and average precision taken from `ranking`,
    /// any finite scores in the same order as the probabilities, such as the logits: a
    /// sigmoid saturated in `f64` (logits above about 37) ties cases the logits tell apart.
    ///
    /// ```
    /// use fracture::metrics::{sigmoid, BinaryMetrics, Metric};
    /// let labels = [true, false];
    /// let logits = [45.0, 40.0];
    /// let p: Vec<f64> = logits.iter().map(|&z| sigmoid(z)).collect();
    /// assert_eq!(p, [1.0, 1.0]);
    /// let m = BinaryMetrics::compute_ranked(&labels, &p, &logits, 0.5)?;
    /// assert_eq!(m.roc_auc, Metric::Defined(1.0));
    /// assert_eq!(BinaryMetrics::compute(&labels, &p, 0.5)?.roc_auc, Metric::Defined(0.5));
    /// # Ok::<(), fracture::Error>(())
    /// ```
    pub fn compute_ranked(
        labels: &[bool],
        scores: &[f64],
        ranking: &[f64],
        threshold: f64,
    ) -> Result<Self> {
        check_probabilities(labels, scores)?;
        check_inputs(labels, ranking)?;
        let confusion = ConfusionMatrix::from_scores(labels, scores, threshold)?;
        Ok(BinaryMetrics {
            threshold,
            confusion,
            accuracy: confusion.accuracy(),
            majority_baseline_accuracy: confusion.majority_baseline_accuracy(),
            binary_cross_entropy: binary_cross_entropy(labels, scores)?,
            roc_auc: roc_auc(labels, ranking)?,
            average_precision: average_precision(labels, ranking)?,
            sensitivity: confusion.sensitivity(),
            specificity: confusion.specificity(),
            report: confusion.report(),
        })
    }
}

impl fmt::Display for BinaryMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = f.precision().unwrap_or(4);
        let c = &self.confusion;
        writeln!(
            f,
            "{} cases ({} fractured, {} not fractured), predicted fractured if score >= {:.digits$}",
            c.total(),
            c.fractured(),
            c.not_fractured(),
            self.threshold
        )?;
        writeln!(
            f,
            "sensitivity        {:.digits$}  ({} of {} fractures found)",
            self.sensitivity,
            c.true_positives(),
            c.fractured()
        )?;
        writeln!(
            f,
            "specificity        {:.digits$}  ({} of {} not-fractured cases cleared)",
            self.specificity,
            c.true_negatives(),
            c.not_fractured()
        )?;
        writeln!(f, "ROC AUC            {:.digits$}", self.roc_auc)?;
        writeln!(f, "average precision  {:.digits$}", self.average_precision)?;
        writeln!(
            f,
            "accuracy           {:.digits$}  (always \"{}\": {:.digits$})",
            self.accuracy,
            self.report.majority_class(),
            self.majority_baseline_accuracy
        )?;
        write!(
            f,
            "cross-entropy      {:.digits$}",
            self.binary_cross_entropy
        )
    }
}

/// [`BinaryMetrics`] for each subgroup of cases (body part, hardware, site, ...).
///
/// `Display` prints one line per group, so a weak subgroup is visible at a glance.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SubgroupMetrics {
    groups: BTreeMap<String, BinaryMetrics>,
}

impl SubgroupMetrics {
    /// The metrics of one group, if it had any case.
    pub fn get(&self, group: &str) -> Option<&BinaryMetrics> {
        self.groups.get(group)
    }

    /// Groups and their metrics, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &BinaryMetrics)> {
        self.groups.iter().map(|(name, m)| (name.as_str(), m))
    }

    /// Number of groups.
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    /// Whether there is no group (never, for a successful [`by_subgroup`]).
    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }
}

impl fmt::Display for SubgroupMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = f.precision().unwrap_or(3);
        let width = self
            .groups
            .keys()
            .map(|k| k.chars().count())
            .chain([5])
            .max()
            .unwrap_or(5);
        writeln!(
            f,
            "{:<width$}  {:>6} {:>9}  {:>11}  {:>11}  {:>9}  {:>8}",
            "group", "cases", "fractured", "sensitivity", "specificity", "ROC AUC", "accuracy"
        )?;
        for (name, m) in &self.groups {
            let show = |metric: Metric| match metric {
                Metric::Defined(v) => format!("{v:.digits$}"),
                Metric::Undefined(_) => "n/a".to_string(),
            };
            writeln!(
                f,
                "{:<width$}  {:>6} {:>9}  {:>11}  {:>11}  {:>9}  {:>8.digits$}",
                name,
                m.confusion.total(),
                m.confusion.fractured(),
                show(m.sensitivity),
                show(m.specificity),
                show(m.roc_auc),
                m.accuracy
            )?;
        }
        Ok(())
    }
}

/// [`BinaryMetrics`] per subgroup: `groups[i]` names the group of case `i` (for example its
/// body part or the presence of hardware, from the dataset metadata; use a name such as
/// `"unknown"` for cases without metadata).
///
/// A group with a single class gets undefined AUC and sensitivity or specificity, not an
/// error.
///
/// ```
/// use fracture::metrics::by_subgroup;
///
/// let labels = [true, false, true, false, false];
/// let scores = [0.9, 0.2, 0.3, 0.1, 0.6];
/// let body_part = ["hand", "hand", "leg", "leg", "hip"];
/// let per_part = by_subgroup(&labels, &scores, &body_part, 0.5)?;
/// assert_eq!(per_part.get("hand").unwrap().sensitivity.value(), Some(1.0));
/// assert_eq!(per_part.get("leg").unwrap().sensitivity.value(), Some(0.0));
/// assert!(!per_part.get("hip").unwrap().roc_auc.is_defined()); // no fracture there
/// println!("{per_part}");
/// # Ok::<(), fracture::Error>(())
/// ```
pub fn by_subgroup<G: AsRef<str>>(
    labels: &[bool],
    scores: &[f64],
    groups: &[G],
    threshold: f64,
) -> Result<SubgroupMetrics> {
    by_subgroup_ranked(labels, scores, scores, groups, threshold)
}

/// [`by_subgroup`] with each group's ROC AUC and average precision ranked by `ranking` (the
/// logits), as [`BinaryMetrics::compute_ranked`] does for the whole part: probabilities of
/// logits above about 37 are all 1.0 and would tie, so subgroup AUCs from probabilities are
/// not comparable with an overall AUC from logits.
///
/// ```
/// use fracture::metrics::{by_subgroup_ranked, sigmoid, Metric};
/// let labels = [true, false, true, false];
/// let logits = [45.0, 40.0, 2.0, -1.0];
/// let p: Vec<f64> = logits.iter().map(|&z| sigmoid(z)).collect();
/// let parts = ["hand", "hand", "leg", "leg"];
/// let m = by_subgroup_ranked(&labels, &p, &logits, &parts, 0.5)?;
/// assert_eq!(m.get("hand").unwrap().roc_auc, Metric::Defined(1.0)); // 0.5 from probabilities
/// # Ok::<(), fracture::Error>(())
/// ```
pub fn by_subgroup_ranked<G: AsRef<str>>(
    labels: &[bool],
    scores: &[f64],
    ranking: &[f64],
    groups: &[G],
    threshold: f64,
) -> Result<SubgroupMetrics> {
    check_probabilities(labels, scores)?;
    if ranking.len() != labels.len() {
        return Err(Error::InvalidInput(format!(
            "metrics by subgroup: {} labels but {} ranking scores",
            labels.len(),
            ranking.len()
        )));
    }
    if groups.len() != labels.len() {
        return Err(Error::InvalidInput(format!(
            "metrics by subgroup: {} labels but {} group names",
            labels.len(),
            groups.len()
        )));
    }
    type Members = (Vec<bool>, Vec<f64>, Vec<f64>);
    let mut members: BTreeMap<&str, Members> = BTreeMap::new();
    for (((group, &label), &score), &rank) in groups.iter().zip(labels).zip(scores).zip(ranking) {
        let entry = members.entry(group.as_ref()).or_default();
        entry.0.push(label);
        entry.1.push(score);
        entry.2.push(rank);
    }
    let groups = members
        .into_iter()
        .map(|(name, (labels, scores, ranking))| {
            Ok((
                name.to_string(),
                BinaryMetrics::compute_ranked(&labels, &scores, &ranking, threshold)?,
            ))
        })
        .collect::<Result<_>>()?;
    Ok(SubgroupMetrics { groups })
}
