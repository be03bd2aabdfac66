//! How sure the numbers are: bootstrap confidence intervals, and how well the predicted
//! probabilities match observed fracture rates (calibration).

use std::fmt;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::curves::sensitivities_at_specificities;
use super::{
    check_inputs, check_probabilities, check_threshold, roc_auc, ConfusionMatrix, Metric, Undefined,
};
use crate::{Error, Result};

/// Settings of [`bootstrap_ci`] (recorded with an evaluation, so that a report states the
/// resamples and coverage that were used).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct BootstrapConfig {
    /// Number of resamples (with replacement, same size as the data); at least 1.
    pub n_resamples: usize,
    /// Coverage of the interval, in `(0, 1)`, e.g. `0.95`.
    pub confidence: f64,
    /// Seed of the resampling (ChaCha8): the same seed gives the same intervals.
    pub seed: u64,
}

impl BootstrapConfig {
    /// Check that there is at least one resample and the confidence lies in `(0, 1)`.
    ///
    /// ```
    /// use fracture::metrics::BootstrapConfig;
    /// assert!(BootstrapConfig::default().validate().is_ok());
    /// assert!(BootstrapConfig { n_resamples: 0, ..BootstrapConfig::default() }.validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<()> {
        if self.n_resamples == 0 {
            return Err(Error::InvalidInput(
                "bootstrap: n_resamples must be at least 1".into(),
            ));
        }
        if !(self.confidence > 0.0 && self.confidence < 1.0) {
            return Err(Error::InvalidInput(format!(
                "bootstrap: confidence {} is not in (0, 1)",
                self.confidence
            )));
        }
        Ok(())
    }
}

/// One bootstrap resample of `n` cases: `n` indices drawn with replacement into `picks`.
fn draw_resample(rng: &mut ChaCha8Rng, n: usize, picks: &mut Vec<usize>) {
    picks.clear();
    picks.extend((0..n).map(|_| rng.random_range(0..n)));
}

impl Default for BootstrapConfig {
    /// 1000 resamples, 95% intervals, seed 42.
    fn default() -> Self {
        BootstrapConfig {
            n_resamples: 1000,
            confidence: 0.95,
            seed: 42,
        }
    }
}

/// A point estimate with a percentile-bootstrap confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Interval {
    /// The metric on the full data.
    pub estimate: f64,
    /// Lower bound: the `(1 − confidence) / 2` quantile of the resampled values.
    pub lower: f64,
    /// Upper bound: the `(1 + confidence) / 2` quantile of the resampled values.
    pub upper: f64,
    /// Coverage, e.g. `0.95`.
    pub confidence: f64,
    /// Resamples on which the metric was defined (a resample without fractures has no
    /// sensitivity); the bounds come from these.
    pub resamples_used: usize,
}

impl fmt::Display for BootstrapIntervals {
    /// One line per metric: `AUC 0.922 (95% CI 0.897 to 0.944)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "bootstrap AUC         {}", self.auc)?;
        writeln!(f, "bootstrap sensitivity {}", self.sensitivity)?;
        write!(f, "bootstrap specificity {}", self.specificity)
    }
}

impl fmt::Display for Interval {
    /// `0.922 (95% CI 0.897 to 0.944)`; the precision applies to all three numbers.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = f.precision().unwrap_or(3);
        let percent = format!("{:.2}", self.confidence * 100.0);
        let percent = percent.trim_end_matches('0').trim_end_matches('.');
        write!(
            f,
            "{:.digits$} ({percent}% CI {:.digits$} to {:.digits$})",
            self.estimate, self.lower, self.upper
        )
    }
}

/// Bootstrap intervals of the headline metrics (see [`bootstrap_ci`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BootstrapIntervals {
    /// ROC AUC.
    pub auc: Metric<Interval>,
    /// Sensitivity at the threshold.
    pub sensitivity: Metric<Interval>,
    /// Specificity at the threshold.
    pub specificity: Metric<Interval>,
}

/// Percentile-bootstrap confidence intervals for ROC AUC, sensitivity and specificity at
/// `threshold`, resampling cases with replacement (seeded, deterministic).
///
/// A resample on which a metric is undefined (one class only) is left out of that metric's
/// interval; a metric undefined on the full data, or on every resample, is undefined. Quantiles interpolate
/// linearly (NumPy's default).
///
/// ```
/// use fracture::metrics::{bootstrap_ci, BootstrapConfig};
///
/// let labels: Vec<bool> = (0..40).map(|i| i % 4 == 0).collect();
/// let scores: Vec<f64> = (0..40).map(|i| if i % 4 == 0 { 0.6 } else { 0.3 } + (i % 7) as f64 / 20.0).collect();
/// let config = BootstrapConfig { n_resamples: 200, ..BootstrapConfig::default() };
/// let ci = bootstrap_ci(&labels, &scores, 0.5, config)?;
/// let auc = ci.auc.value().unwrap();
/// assert!(auc.lower <= auc.estimate && auc.estimate <= auc.upper);
/// println!("AUC {auc}");
/// # Ok::<(), fracture::Error>(())
/// ```
pub fn bootstrap_ci(
    labels: &[bool],
    scores: &[f64],
    threshold: f64,
    config: BootstrapConfig,
) -> Result<BootstrapIntervals> {
    bootstrap_ci_ranked(labels, scores, scores, threshold, config)
}

/// [`bootstrap_ci`] with the AUC taken from `ranking` (for example the logits, which a
/// saturated sigmoid cannot tie) and sensitivity and specificity from `scores >= threshold`,
/// on the same resampled cases. `bootstrap_ci(l, s, t, c)` is `bootstrap_ci_ranked(l, s, s, t, c)`.
///
/// ```
/// use fracture::metrics::{bootstrap_ci_ranked, sigmoid, BootstrapConfig};
/// let labels = [true, false, true, false];
/// let logits = [45.0, 40.0, 2.0, -1.0]; // 40 and 45 are both probability 1.0
/// let probabilities: Vec<f64> = logits.iter().map(|&z| sigmoid(z)).collect();
/// let ci = bootstrap_ci_ranked(&labels, &probabilities, &logits, 0.5, BootstrapConfig::default())?;
/// assert_eq!(ci.auc.value().unwrap().estimate, 0.75);
/// # Ok::<(), fracture::Error>(())
/// ```
pub fn bootstrap_ci_ranked(
    labels: &[bool],
    scores: &[f64],
    ranking: &[f64],
    threshold: f64,
    config: BootstrapConfig,
) -> Result<BootstrapIntervals> {
    check_inputs(labels, scores)?;
    check_inputs(labels, ranking)?;
    check_threshold(threshold)?;
    config.validate()?;
    let full = ConfusionMatrix::from_scores(labels, scores, threshold)?;
    let estimates = [
        roc_auc(labels, ranking)?,
        full.sensitivity(),
        full.specificity(),
    ];
    let mut sample_labels = vec![false; labels.len()];
    let mut sample_scores = vec![0.0; scores.len()];
    let mut sample_ranking = vec![0.0; ranking.len()];
    let [auc, sensitivity, specificity] =
        bootstrap_picks(labels.len(), estimates, config, |picks| {
            for (((label, score), rank), &pick) in sample_labels
                .iter_mut()
                .zip(&mut sample_scores)
                .zip(&mut sample_ranking)
                .zip(picks)
            {
                // `pick` is below the common length of labels and scores (checked above).
                *label = labels.get(pick).copied().unwrap_or_default();
                *score = scores.get(pick).copied().unwrap_or_default();
                *rank = ranking.get(pick).copied().unwrap_or_default();
            }
            let cm = ConfusionMatrix::from_scores(&sample_labels, &sample_scores, threshold)?;
            Ok([
                roc_auc(&sample_labels, &sample_ranking)?,
                cm.sensitivity(),
                cm.specificity(),
            ])
        })?;
    Ok(BootstrapIntervals {
        auc,
        sensitivity,
        specificity,
    })
}

/// The sensitivity at one target specificity, with its bootstrap interval (see
/// [`bootstrap_sensitivity_at_specificity`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SensitivityAtSpecificity {
    /// The specificity the thresholds must reach.
    pub specificity: f64,
    /// The highest sensitivity among thresholds whose specificity reaches it, with a
    /// percentile-bootstrap interval; undefined when the data hold a single class.
    pub sensitivity: Metric<Interval>,
}

impl fmt::Display for SensitivityAtSpecificity {
    /// `sensitivity at specificity 0.90: 0.812 (95% CI 0.750 to 0.870)`; the precision
    /// applies to the interval.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = f.precision().unwrap_or(3);
        let two = format!("{:.2}", self.specificity);
        let target = match two.parse::<f64>() {
            Ok(v) if v == self.specificity => two,
            _ => self.specificity.to_string(),
        };
        write!(f, "sensitivity at specificity {target}: ")?;
        match &self.sensitivity {
            Metric::Defined(interval) => write!(f, "{interval:.digits$}"),
            undefined => write!(f, "{undefined}"),
        }
    }
}

/// Sensitivity at each target specificity ([`super::sensitivity_at_specificity`]: the highest
/// sensitivity among thresholds whose specificity reaches the target, no interpolation), with
/// percentile-bootstrap intervals over the same resamples as [`bootstrap_ci`] (seeded; a
/// resample with a single class is left out). `ranking` is any finite score, logits included.
///
/// ```
/// use fracture::metrics::{bootstrap_sensitivity_at_specificity, BootstrapConfig};
/// let labels: Vec<bool> = (0..40).map(|i| i % 2 == 0).collect();
/// let scores: Vec<f64> = (0..40).map(|i| i as f64 + if i % 2 == 0 { 6.0 } else { 0.0 }).collect();
/// let config = BootstrapConfig { n_resamples: 200, ..BootstrapConfig::default() };
/// let [at_90] = bootstrap_sensitivity_at_specificity(&labels, &scores, [0.9], config)?;
/// let ci = at_90.sensitivity.value().unwrap();
/// assert!(ci.lower <= ci.estimate && ci.estimate <= ci.upper);
/// assert!(at_90.to_string().starts_with("sensitivity at specificity 0.90: "));
/// # Ok::<(), fracture::Error>(())
/// ```
pub fn bootstrap_sensitivity_at_specificity<const K: usize>(
    labels: &[bool],
    ranking: &[f64],
    targets: [f64; K],
    config: BootstrapConfig,
) -> Result<[SensitivityAtSpecificity; K]> {
    let estimates = sensitivities_at_specificities(labels, ranking, targets)?;
    let (mut sample_labels, mut sample_ranking) = (Vec::new(), Vec::new());
    let intervals = bootstrap_picks(labels.len(), estimates, config, |picks| {
        // Every pick is below the common length (checked above).
        sample_labels.clear();
        sample_labels.extend(picks.iter().filter_map(|&i| labels.get(i).copied()));
        sample_ranking.clear();
        sample_ranking.extend(picks.iter().filter_map(|&i| ranking.get(i).copied()));
        sensitivities_at_specificities(&sample_labels, &sample_ranking, targets)
    })?;
    let mut k = 0;
    Ok(intervals.map(|sensitivity| {
        let specificity = targets.get(k).copied().unwrap_or_default();
        k += 1;
        SensitivityAtSpecificity {
            specificity,
            sensitivity,
        }
    }))
}

/// Percentile-bootstrap intervals of `K` statistics of `n` cases: `statistics` gets the case
/// indices of each resample (drawn with replacement, seeded) and returns the `K` values; a
/// value undefined on a resample is left out of its interval. `estimates` are the values on
/// the full data.
pub(super) fn bootstrap_picks<const K: usize>(
    n: usize,
    estimates: [Metric; K],
    config: BootstrapConfig,
    mut statistics: impl FnMut(&[usize]) -> Result<[Metric; K]>,
) -> Result<[Metric<Interval>; K]> {
    config.validate()?;
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let mut resampled: [Vec<f64>; K] = std::array::from_fn(|_| Vec::new());
    let mut first_undefined: [Option<Undefined>; K] = [None; K];
    let mut picks = Vec::with_capacity(n);
    for _ in 0..config.n_resamples {
        draw_resample(&mut rng, n, &mut picks);
        let values = statistics(&picks)?;
        for ((values, reason), value) in resampled.iter_mut().zip(&mut first_undefined).zip(values)
        {
            match value {
                Metric::Defined(v) => values.push(v),
                Metric::Undefined(why) => {
                    reason.get_or_insert(why);
                }
            }
        }
    }
    let mut k = 0;
    Ok(estimates.map(|estimate| {
        let mut values = std::mem::take(&mut resampled[k]);
        let reason = first_undefined[k].unwrap_or(Undefined::NoFractured);
        k += 1;
        interval(estimate, &mut values, config.confidence, reason)
    }))
}

/// Percentile-bootstrap interval of the mean of per-case `values` (for example one hit or
/// miss per image), resampling cases with replacement as [`bootstrap_ci`] does. An error for
/// no values or a value that is not finite.
///
/// ```
/// use fracture::metrics::{bootstrap_mean, BootstrapConfig};
/// let hits = [1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0];
/// let ci = bootstrap_mean(&hits, BootstrapConfig::default())?;
/// assert_eq!(ci.estimate, 0.75);
/// assert!(ci.lower < 0.75 && 0.75 < ci.upper && ci.upper <= 1.0);
/// # Ok::<(), fracture::Error>(())
/// ```
pub fn bootstrap_mean(values: &[f64], config: BootstrapConfig) -> Result<Interval> {
    config.validate()?;
    if values.is_empty() {
        return Err(Error::InvalidInput("bootstrap: no values".into()));
    }
    if let Some(bad) = values.iter().find(|v| !v.is_finite()) {
        return Err(Error::InvalidInput(format!(
            "bootstrap: values must be finite, found {bad}"
        )));
    }
    let n = values.len();
    let mean = |sum: f64| sum / n as f64;
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let mut means: Vec<f64> = (0..config.n_resamples)
        .map(|_| {
            mean(
                (0..n)
                    .map(|_| {
                        values
                            .get(rng.random_range(0..n))
                            .copied()
                            .unwrap_or_default()
                    })
                    .sum(),
            )
        })
        .collect();
    match interval(
        Metric::Defined(mean(values.iter().sum())),
        &mut means,
        config.confidence,
        Undefined::NoFractured,
    ) {
        Metric::Defined(interval) => Ok(interval),
        Metric::Undefined(_) => Err(Error::Internal(
            "bootstrap of a mean left no resample".into(),
        )),
    }
}

/// Paired percentile-bootstrap interval of the ROC AUC difference `scores_b − scores_a` on
/// the same cases (for example with and without test-time augmentation): every resample
/// draws one set of case indices and scores both on it, so the interval reflects the
/// difference, not the two models' separate uncertainty. Seeded and deterministic; a
/// resample with a single class is left out. Undefined when the data hold a single class.
///
/// ```
/// use fracture::metrics::{paired_auc_difference, BootstrapConfig};
/// let labels: Vec<bool> = (0..60).map(|i| i % 3 == 0).collect();
/// let a: Vec<f64> = (0..60).map(|i| (i % 7) as f64 / 7.0).collect();
/// let b: Vec<f64> = labels.iter().zip(&a).map(|(&y, s)| s + if y { 0.3 } else { 0.0 }).collect();
/// let config = BootstrapConfig { n_resamples: 200, ..BootstrapConfig::default() };
/// let diff = paired_auc_difference(&labels, &a, &b, config)?.value().unwrap();
/// assert!(diff.estimate > 0.0 && diff.lower <= diff.estimate && diff.estimate <= diff.upper);
/// # Ok::<(), fracture::Error>(())
/// ```
pub fn paired_auc_difference(
    labels: &[bool],
    scores_a: &[f64],
    scores_b: &[f64],
    config: BootstrapConfig,
) -> Result<Metric<Interval>> {
    check_inputs(labels, scores_a)?;
    check_inputs(labels, scores_b)?;
    config.validate()?;
    let estimate = match (roc_auc(labels, scores_a)?, roc_auc(labels, scores_b)?) {
        (Metric::Defined(a), Metric::Defined(b)) => Metric::Defined(b - a),
        (Metric::Undefined(reason), _) | (_, Metric::Undefined(reason)) => {
            return Ok(Metric::Undefined(reason))
        }
    };
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let mut picks = Vec::with_capacity(labels.len());
    let (mut sample_labels, mut sample_a, mut sample_b) = (Vec::new(), Vec::new(), Vec::new());
    let mut differences = Vec::with_capacity(config.n_resamples);
    let mut first_undefined = None;
    for _ in 0..config.n_resamples {
        draw_resample(&mut rng, labels.len(), &mut picks);
        // Every pick is below the common length (checked above).
        let take = |values: &[f64], out: &mut Vec<f64>| {
            out.clear();
            out.extend(picks.iter().filter_map(|&i| values.get(i).copied()));
        };
        take(scores_a, &mut sample_a);
        take(scores_b, &mut sample_b);
        sample_labels.clear();
        sample_labels.extend(picks.iter().filter_map(|&i| labels.get(i).copied()));
        match (
            roc_auc(&sample_labels, &sample_a)?,
            roc_auc(&sample_labels, &sample_b)?,
        ) {
            (Metric::Defined(a), Metric::Defined(b)) => differences.push(b - a),
            (Metric::Undefined(why), _) | (_, Metric::Undefined(why)) => {
                first_undefined.get_or_insert(why);
            }
        }
    }
    Ok(interval(
        estimate,
        &mut differences,
        config.confidence,
        first_undefined.unwrap_or(Undefined::NoFractured),
    ))
}

/// The percentile interval of `values` around a point estimate; `Undefined(reason)` if no
/// resample defined the metric.
fn interval(
    estimate: Metric,
    values: &mut [f64],
    confidence: f64,
    reason: Undefined,
) -> Metric<Interval> {
    let estimate = match estimate {
        Metric::Defined(v) => v,
        Metric::Undefined(reason) => return Metric::Undefined(reason),
    };
    values.sort_by(f64::total_cmp);
    let tail = (1.0 - confidence) / 2.0;
    match (quantile(values, tail), quantile(values, 1.0 - tail)) {
        (Some(lower), Some(upper)) => Metric::Defined(Interval {
            estimate,
            lower,
            upper,
            confidence,
            resamples_used: values.len(),
        }),
        _ => Metric::Undefined(reason),
    }
}

/// The `q` quantile of sorted values, interpolating linearly; `None` if empty.
pub(crate) fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let position = q * last as f64;
    let below = position.floor() as usize;
    let low = *sorted.get(below)?;
    let high = *sorted.get(below + 1).unwrap_or(&low);
    Some(low + (position - below as f64) * (high - low))
}

/// One bin of a reliability diagram.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CalibrationBin {
    /// Lower edge (excluded, except 0 for the first bin).
    pub lower: f64,
    /// Upper edge (included).
    pub upper: f64,
    /// Number of cases whose score fell in the bin (at least 1).
    pub count: usize,
    /// Mean predicted fracture probability in the bin.
    pub mean_score: f64,
    /// Observed fraction of fractured cases in the bin.
    pub fraction_fractured: f64,
}

/// Reliability diagram of the fracture probability: `n_bins` equal-width bins over `[0, 1]`
/// (edges `k / n_bins`, each bin `(lower, upper]`, the first including 0), non-empty bins only,
/// as scikit-learn's `calibration_curve(strategy="uniform")`.
///
/// ```
/// use fracture::metrics::calibration_bins;
/// let bins = calibration_bins(&[true, false, true, true], &[0.2, 0.4, 0.8, 0.9], 2)?;
/// assert_eq!(bins.len(), 2);
/// assert_eq!((bins[0].count, bins[0].fraction_fractured), (2, 0.5));
/// assert_eq!((bins[1].count, bins[1].fraction_fractured), (2, 1.0));
/// # Ok::<(), fracture::Error>(())
/// ```
pub fn calibration_bins(
    labels: &[bool],
    scores: &[f64],
    n_bins: usize,
) -> Result<Vec<CalibrationBin>> {
    check_probabilities(labels, scores)?;
    if n_bins == 0 {
        return Err(Error::InvalidInput(
            "calibration: n_bins must be at least 1".into(),
        ));
    }
    let width = 1.0 / n_bins as f64;
    let inner_edges: Vec<f64> = (1..n_bins).map(|k| k as f64 * width).collect();
    // (count, sum of scores, fractured) per bin.
    let mut sums = vec![(0usize, 0.0f64, 0usize); n_bins];
    for (&fractured, &score) in labels.iter().zip(scores) {
        let bin = inner_edges.partition_point(|&edge| edge < score);
        if let Some(sum) = sums.get_mut(bin) {
            sum.0 += 1;
            sum.1 += score;
            sum.2 += usize::from(fractured);
        }
    }
    Ok(sums
        .into_iter()
        .enumerate()
        .filter(|(_, (count, _, _))| *count > 0)
        .map(|(k, (count, score_sum, fractured))| CalibrationBin {
            lower: k as f64 * width,
            upper: if k + 1 == n_bins {
                1.0
            } else {
                (k + 1) as f64 * width
            },
            count,
            mean_score: score_sum / count as f64,
            fraction_fractured: fractured as f64 / count as f64,
        })
        .collect())
}

/// Expected calibration error of the fracture probability: over the [`calibration_bins`],
/// `Σ (count / N) · |fraction fractured − mean score|`. 0 for a perfectly calibrated model.
///
/// ```
/// use fracture::metrics::expected_calibration_error;
/// // Bin (0, 0.5]: says 0.3, observed 1 in 2. Bin (0.5, 1]: says 0.9, observed 1 in 1.
/// let ece = expected_calibration_error(&[true, false, true], &[0.3, 0.3, 0.9], 2)?;
/// assert!((ece - (2.0 / 3.0 * 0.2 + 1.0 / 3.0 * 0.1)).abs() < 1e-12);
/// # Ok::<(), fracture::Error>(())
/// ```
pub fn expected_calibration_error(labels: &[bool], scores: &[f64], n_bins: usize) -> Result<f64> {
    let bins = calibration_bins(labels, scores, n_bins)?;
    Ok(ece_of_bins(&bins, labels.len()))
}

/// `Σ (count / total) · |fraction fractured − mean score|` over the bins of `total` cases.
pub(super) fn ece_of_bins(bins: &[CalibrationBin], total: usize) -> f64 {
    let total = total as f64;
    bins.iter()
        .map(|bin| bin.count as f64 / total * (bin.fraction_fractured - bin.mean_score).abs())
        .sum()
}
