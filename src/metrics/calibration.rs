//! Calibration: whether a predicted fracture probability of 0.8 means "fractured 8 times in
//! 10", and temperature scaling to make it so.
//!
//! A network trained with cross-entropy is often over-confident: its probabilities crowd at
//! 0 and 1. Temperature scaling (Guo et al., "On Calibration of Modern Neural Networks", 2017)
//! divides every logit by one scalar `T > 0` fitted on held-out data by minimizing the
//! negative log-likelihood: `p = sigmoid(logit / T)`. `T > 1` softens over-confident
//! probabilities, `T < 1` sharpens timid ones. Because `T > 0` keeps the order of the logits,
//! the ranking metrics (ROC AUC, average precision) do not move, and a threshold carried over
//! with [`rescale_threshold`] makes the same decisions.
//!
//! One temperature rescales the logits but cannot shift them: for the offset a class-weighted
//! loss or a change of prevalence causes, use Platt scaling ([`super::fit_platt`]). Neither
//! carries over to data unlike the part it was fitted on, and a fit on few cases can make the
//! probabilities worse: [`CalibrationSummary`] gives bootstrap intervals of the ECE and the
//! Brier score, and the calibration slope and intercept.
//!
//! Computed in `f64` from logits, the order is kept exactly; probabilities so close to 1 that
//! they round to the same `f64` (`logit / T` above about 36) tie, which only `T < 1` can add.
//!
//! ```
//! use fracture::metrics::{fit_temperature, CalibrationComparison, LogitMap, Metric};
//! // An over-confident model: logits four times too large for the labels.
//! let labels = [true, false, true, false, true, false, false, true];
//! let logits = [8.0, -8.0, 4.0, 4.0, -4.0, -12.0, -4.0, 12.0];
//! let fit = fit_temperature(&labels, &logits)?.value().unwrap();
//! assert!(fit.temperature > 1.0 && fit.nll_after < fit.nll_before);
//! let map = LogitMap::temperature(fit.temperature)?;
//! let comparison = CalibrationComparison::compute(&labels, &logits, map)?;
//! assert!(comparison.after.brier < comparison.before.brier);
//! # Ok::<(), fracture::Error>(())
//! ```

use serde::Serialize;

use super::{
    calibration_bins, check_inputs, check_probabilities, BootstrapConfig, CalibrationBin, Interval,
    LogitMap, Metric, Undefined,
};
use crate::{Error, Result};

/// Bins of the reliability diagram and of the expected calibration error in reports (15
/// equal-width bins, the usual choice since Guo et al. 2017).
pub const ECE_BINS: usize = 15;

/// Smallest temperature [`fit_temperature`] returns.
pub const MIN_TEMPERATURE: f64 = 0.01;
/// Largest temperature [`fit_temperature`] returns (logits divided by 100: almost no
/// information left, what a model that ranks no better than chance gets).
pub const MAX_TEMPERATURE: f64 = 100.0;

/// The logistic function `1 / (1 + e^-x)`, without overflow for large `|x|`.
///
/// ```
/// use fracture::metrics::sigmoid;
/// assert_eq!(sigmoid(0.0), 0.5);
/// assert!(sigmoid(-800.0) >= 0.0 && sigmoid(800.0) == 1.0);
/// ```
pub fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// The fracture probability of a logit at temperature `T`: `sigmoid(logit / T)`, the one
/// place the temperature is applied.
///
/// ```
/// use fracture::metrics::calibrated_probability;
/// assert_eq!(calibrated_probability(2.0, 1.0), fracture::metrics::sigmoid(2.0));
/// assert_eq!(calibrated_probability(2.0, 2.0), fracture::metrics::sigmoid(1.0));
/// ```
pub fn calibrated_probability(logit: f64, temperature: f64) -> f64 {
    sigmoid(logit / temperature)
}

/// Check that a temperature is finite and positive.
///
/// ```
/// use fracture::metrics::check_temperature;
/// assert!(check_temperature(1.5).is_ok());
/// assert!(check_temperature(0.0).is_err() && check_temperature(f64::NAN).is_err());
/// ```
pub fn check_temperature(temperature: f64) -> Result<()> {
    if temperature.is_finite() && temperature > 0.0 {
        Ok(())
    } else {
        Err(Error::InvalidConfig(format!(
            "the temperature must be finite and positive, found {temperature}"
        )))
    }
}

/// The probability threshold at temperature `to` that makes the same decisions as
/// `threshold` at temperature `from` (the same logit cut-off, `from · logit(threshold)`).
/// Thresholds 0 and 1 stay where they are. Exact up to the rounding of the threshold itself.
///
/// ```
/// use fracture::metrics::{calibrated_probability, rescale_threshold};
/// let t = rescale_threshold(0.3, 1.0, 2.5);
/// assert!((t - calibrated_probability((0.3f64 / 0.7).ln(), 2.5)).abs() < 1e-15);
/// assert_eq!(rescale_threshold(1.0, 1.0, 2.5), 1.0);
/// ```
pub fn rescale_threshold(threshold: f64, from: f64, to: f64) -> f64 {
    if threshold <= 0.0 || threshold >= 1.0 {
        return threshold;
    }
    let logit = (threshold / (1.0 - threshold)).ln();
    calibrated_probability(logit * from, to)
}

/// Mean squared difference between the fracture probability and the outcome (0 or 1):
/// 0 is perfect, 0.25 is what always answering 0.5 scores.
///
/// ```
/// use fracture::metrics::brier_score;
/// assert_eq!(brier_score(&[true, false], &[0.5, 0.5])?, 0.25);
/// assert_eq!(brier_score(&[true, false], &[1.0, 0.0])?, 0.0);
/// # Ok::<(), fracture::Error>(())
/// ```
pub fn brier_score(labels: &[bool], probabilities: &[f64]) -> Result<f64> {
    check_probabilities(labels, probabilities)?;
    let total: f64 = labels
        .iter()
        .zip(probabilities)
        .map(|(&fractured, &p)| (p - f64::from(u8::from(fractured))).powi(2))
        .sum();
    Ok(total / labels.len() as f64)
}

/// Calibration of one set of probabilities: expected calibration error and Brier score over
/// [`ECE_BINS`] bins with their bootstrap intervals, the calibration slope and intercept, and
/// the bins themselves (for a reliability diagram).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CalibrationSummary {
    /// Expected calibration error over [`ECE_BINS`] equal-width bins.
    pub ece: f64,
    /// Percentile-bootstrap interval of the ECE (resampling cases).
    pub ece_interval: Metric<Interval>,
    /// Brier score.
    pub brier: f64,
    /// Percentile-bootstrap interval of the Brier score (the same resamples).
    pub brier_interval: Metric<Interval>,
    /// Calibration slope ([`super::calibration_slope`]): 1 is ideal, below 1 over-confident.
    pub slope: Metric,
    /// Calibration intercept ([`super::calibration_intercept`]): 0 is ideal, below 0 the
    /// probabilities are too high on average.
    pub intercept: Metric,
    /// The non-empty bins of the reliability diagram.
    pub bins: Vec<CalibrationBin>,
}

impl CalibrationSummary {
    /// Summarize calibrated logits (`map.logit(z)`; the probabilities are their sigmoid)
    /// against labels, with `bootstrap` intervals of the ECE and the Brier score.
    ///
    /// ```
    /// use fracture::metrics::{BootstrapConfig, CalibrationSummary};
    /// let logit_of = |p: f64| (p / (1.0 - p)).ln();
    /// let s = CalibrationSummary::compute(&[true, false], &[logit_of(0.9), logit_of(0.1)], BootstrapConfig::default())?;
    /// assert!((s.ece - 0.1).abs() < 1e-12 && (s.brier - 0.01).abs() < 1e-12);
    /// let ece = s.ece_interval.value().unwrap();
    /// assert!(ece.lower <= s.ece && s.ece <= ece.upper);
    /// # Ok::<(), fracture::Error>(())
    /// ```
    pub fn compute(
        labels: &[bool],
        calibrated_logits: &[f64],
        bootstrap: BootstrapConfig,
    ) -> Result<Self> {
        check_inputs(labels, calibrated_logits)?;
        let probabilities: Vec<f64> = calibrated_logits.iter().map(|&x| sigmoid(x)).collect();
        let bins = calibration_bins(labels, &probabilities, ECE_BINS)?;
        let ece = super::uncertainty::ece_of_bins(&bins, labels.len());
        let brier = brier_score(labels, &probabilities)?;
        let (mut sample_labels, mut sample_probabilities) = (Vec::new(), Vec::new());
        let [ece_interval, brier_interval] = super::uncertainty::bootstrap_picks(
            labels.len(),
            [Metric::Defined(ece), Metric::Defined(brier)],
            bootstrap,
            |picks| {
                sample_labels.clear();
                sample_labels.extend(picks.iter().filter_map(|&i| labels.get(i).copied()));
                sample_probabilities.clear();
                sample_probabilities
                    .extend(picks.iter().filter_map(|&i| probabilities.get(i).copied()));
                Ok([
                    Metric::Defined(super::expected_calibration_error(
                        &sample_labels,
                        &sample_probabilities,
                        ECE_BINS,
                    )?),
                    Metric::Defined(brier_score(&sample_labels, &sample_probabilities)?),
                ])
            },
        )?;
        Ok(Self {
            ece,
            ece_interval,
            brier,
            brier_interval,
            slope: super::calibration_slope(labels, calibrated_logits)?,
            intercept: super::calibration_intercept(labels, calibrated_logits)?,
            bins,
        })
    }
}

/// Calibration before (`sigmoid(logit)`) and after a calibration map, on the same cases.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CalibrationComparison {
    /// The map applied for "after".
    pub map: LogitMap,
    /// Probabilities `sigmoid(logit)`.
    pub before: CalibrationSummary,
    /// Probabilities `sigmoid(slope · logit + intercept)`.
    pub after: CalibrationSummary,
}

impl CalibrationComparison {
    /// Compare the calibration of `logits` as they are and under `map` (intervals from
    /// [`BootstrapConfig::default`]).
    ///
    /// ```
    /// use fracture::metrics::{CalibrationComparison, LogitMap};
    /// let labels = [true, false, true, false, true, false, false, true];
    /// let logits = [8.0, -8.0, 4.0, 4.0, -4.0, -12.0, -4.0, 12.0];
    /// let c = CalibrationComparison::compute(&labels, &logits, LogitMap::temperature(4.0)?)?;
    /// assert!(c.after.brier < c.before.brier);
    /// # Ok::<(), fracture::Error>(())
    /// ```
    pub fn compute(labels: &[bool], logits: &[f64], map: LogitMap) -> Result<Self> {
        check_inputs(labels, logits)?;
        let map = LogitMap::new(map.slope, map.intercept)?;
        let mapped: Vec<f64> = logits.iter().map(|&z| map.logit(z)).collect();
        let bootstrap = BootstrapConfig::default();
        Ok(Self {
            map,
            before: CalibrationSummary::compute(labels, logits, bootstrap)?,
            after: CalibrationSummary::compute(labels, &mapped, bootstrap)?,
        })
    }
}

/// The result of [`fit_temperature`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TemperatureFit {
    /// The fitted temperature, in `[MIN_TEMPERATURE, MAX_TEMPERATURE]`.
    pub temperature: f64,
    /// Mean negative log-likelihood at `T = 1`.
    pub nll_before: f64,
    /// Mean negative log-likelihood at the fitted temperature.
    pub nll_after: f64,
    /// Cases the temperature was fitted on.
    pub cases: usize,
}

/// Mean negative log-likelihood, its first and second derivative in the inverse temperature
/// `beta` (`p = sigmoid(beta · logit)`), computed stably from logits.
fn nll_and_derivatives(labels: &[bool], logits: &[f64], beta: f64) -> (f64, f64, f64) {
    let (mut nll, mut gradient, mut curvature) = (0.0, 0.0, 0.0);
    for (&fractured, &z) in labels.iter().zip(logits) {
        let x = beta * z;
        let y = f64::from(u8::from(fractured));
        // log(1 + e^x) - y·x, without overflow.
        nll += x.max(0.0) + (-x.abs()).exp().ln_1p() - y * x;
        let p = sigmoid(x);
        gradient += (p - y) * z;
        curvature += p * (1.0 - p) * z * z;
    }
    let n = labels.len() as f64;
    (nll / n, gradient / n, curvature / n)
}

/// Fit the temperature that minimizes the mean negative log-likelihood of `logits` (normally
/// the validation part's) against `labels`.
///
/// The likelihood is convex in the inverse temperature `beta = 1 / T`, so its derivative has
/// one root; it is found by Newton's method kept inside a shrinking bracket (a bisection step
/// whenever Newton would leave it), deterministically, within
/// `[MIN_TEMPERATURE, MAX_TEMPERATURE]` (at a bound when the optimum lies beyond it).
/// Undefined with a single class (the likelihood then only grows as `T` shrinks).
///
/// ```
/// use fracture::metrics::{fit_temperature, Metric, Undefined};
/// let fit = fit_temperature(&[true, false, true], &[3.0, -1.0, -0.5])?;
/// assert!(fit.value().unwrap().temperature > 0.0);
/// let one_class = fit_temperature(&[true, true], &[3.0, -1.0])?;
/// assert_eq!(one_class, Metric::Undefined(Undefined::NoNotFractured));
/// # Ok::<(), fracture::Error>(())
/// ```
pub fn fit_temperature(labels: &[bool], logits: &[f64]) -> Result<Metric<TemperatureFit>> {
    check_inputs(labels, logits)?;
    if !labels.contains(&true) {
        return Ok(Metric::Undefined(Undefined::NoFractured));
    }
    if !labels.contains(&false) {
        return Ok(Metric::Undefined(Undefined::NoNotFractured));
    }
    let derivative = |beta: f64| nll_and_derivatives(labels, logits, beta);
    // beta = 1/T: the bracket of beta is [1 / MAX, 1 / MIN].
    let (mut low, mut high) = (1.0 / MAX_TEMPERATURE, 1.0 / MIN_TEMPERATURE);
    let beta = if derivative(low).1 >= 0.0 {
        low
    } else if derivative(high).1 <= 0.0 {
        high
    } else {
        let mut beta = 1.0;
        for _ in 0..200 {
            let (_, gradient, curvature) = derivative(beta);
            if gradient == 0.0 {
                break;
            }
            if gradient > 0.0 {
                high = beta;
            } else {
                low = beta;
            }
            let newton = beta - gradient / curvature;
            let next = if curvature > 0.0 && newton > low && newton < high {
                newton
            } else {
                0.5 * (low + high)
            };
            if (next - beta).abs() <= 1e-14 * beta.max(1.0) || high - low <= 1e-14 * high {
                beta = next;
                break;
            }
            beta = next;
        }
        beta
    };
    let nll_before = derivative(1.0).0;
    let nll_after = derivative(beta).0;
    Ok(Metric::Defined(TemperatureFit {
        temperature: (1.0 / beta).clamp(MIN_TEMPERATURE, MAX_TEMPERATURE),
        nll_before,
        nll_after,
        cases: labels.len(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Brute force: the minimum of the likelihood over a fine grid of log-temperatures.
    fn grid_minimum(labels: &[bool], logits: &[f64]) -> f64 {
        (0..=4000)
            .map(|k| 10f64.powf(-2.0 + 4.0 * k as f64 / 4000.0))
            .map(|t| (t, nll_and_derivatives(labels, logits, 1.0 / t).0))
            .fold((f64::NAN, f64::INFINITY), |best, (t, nll)| {
                if nll < best.1 {
                    (t, nll)
                } else {
                    best
                }
            })
            .0
    }

    #[test]
    fn fitted_temperature_matches_a_grid_search() {
        let labels = [
            true, false, true, false, true, false, false, true, false, false,
        ];
        let logits = [5.0, -3.0, 1.0, 2.5, -1.5, -6.0, 0.5, 7.0, -2.0, 3.0];
        let fit = fit_temperature(&labels, &logits).unwrap().value().unwrap();
        let grid = grid_minimum(&labels, &logits);
        assert!(
            (fit.temperature / grid - 1.0).abs() < 3e-3,
            "fit {} grid {grid}",
            fit.temperature
        );
    }

    #[test]
    fn a_model_worse_than_chance_gets_the_largest_temperature() {
        let fit = fit_temperature(&[true, false], &[-2.0, 2.0])
            .unwrap()
            .value()
            .unwrap();
        assert_eq!(fit.temperature, MAX_TEMPERATURE);
    }
}
