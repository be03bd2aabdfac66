//! Recalibrating the logit by an increasing affine map, `p = sigmoid(slope · z + intercept)`
//! ([`LogitMap`]): temperature scaling (`slope = 1 / T`, no intercept,
//! [`super::fit_temperature`]) and Platt scaling (slope and intercept, [`fit_platt`]); and the
//! calibration slope and intercept ([`calibration_slope`], [`calibration_intercept`]) that
//! measure what such a map would still have to correct on other data.
//!
//! One temperature rescales the logits but cannot move them: a logit offset, such as a
//! class-weighted loss or a prevalence that differs between training and use produces, needs
//! the intercept of Platt scaling (Platt, "Probabilistic outputs for support vector machines",
//! 1999). Both maps are increasing, so neither changes the order of the cases, the ROC AUC or
//! (with the threshold carried over, [`LogitMap::carry_threshold`]) the decisions.
//!
//! ```
//! use fracture::metrics::{fit_platt, LogitMap, Metric};
//! // Logits shifted by +2 (a class-weighted loss): Platt scaling finds the offset.
//! let labels = [true, false, false, true, false, false, true, false];
//! let logits = [3.0, 1.0, 2.5, 1.5, 0.5, 2.0, 3.5, 1.8];
//! let fit = fit_platt(&labels, &logits)?.value().unwrap();
//! assert!(fit.map.intercept < 0.0 && fit.nll_after < fit.nll_before);
//! assert!((LogitMap::temperature(2.0)?.probability(2.0) - fracture::metrics::sigmoid(1.0)).abs() < 1e-15);
//! # Ok::<(), fracture::Error>(())
//! ```

use serde::{Deserialize, Serialize};

use super::calibration::{sigmoid, MAX_TEMPERATURE, MIN_TEMPERATURE};
use super::{check_inputs, Metric, Undefined};
use crate::{Error, Result};

/// How much [`LogitMap::carry_threshold`] lowers a carried threshold (relative): far above
/// the rounding of its round trip through the logit (a few 1e-16), far below any difference
/// between two images' probabilities that matters.
pub const CARRY_MARGIN: f64 = 1e-13;

/// An increasing affine map of the logit: the calibrated probability is
/// `sigmoid(slope · logit + intercept)`, `slope > 0`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LogitMap {
    /// Multiplies the logit (`1 / T` for temperature scaling); finite and positive.
    pub slope: f64,
    /// Added after the slope (0 for temperature scaling); finite.
    pub intercept: f64,
}

impl LogitMap {
    /// The map that changes nothing: `sigmoid(logit)`.
    pub const IDENTITY: LogitMap = LogitMap {
        slope: 1.0,
        intercept: 0.0,
    };

    /// A map with a finite positive slope and a finite intercept; anything else is an error.
    ///
    /// ```
    /// use fracture::metrics::LogitMap;
    /// assert!(LogitMap::new(0.5, -1.0).is_ok());
    /// assert!(LogitMap::new(0.0, 0.0).is_err() && LogitMap::new(1.0, f64::NAN).is_err());
    /// ```
    pub fn new(slope: f64, intercept: f64) -> Result<Self> {
        if !(slope.is_finite() && slope > 0.0 && intercept.is_finite()) {
            return Err(Error::InvalidConfig(format!(
                "a calibration map needs a finite positive slope and a finite intercept, \
                 found slope {slope}, intercept {intercept}"
            )));
        }
        Ok(Self { slope, intercept })
    }

    /// Temperature scaling: slope `1 / T`, no intercept (`T` finite and positive).
    pub fn temperature(temperature: f64) -> Result<Self> {
        super::check_temperature(temperature)?;
        Self::new(1.0 / temperature, 0.0)
    }

    /// The temperature this map is, when it has no intercept.
    ///
    /// ```
    /// use fracture::metrics::LogitMap;
    /// assert_eq!(LogitMap::temperature(2.0)?.as_temperature(), Some(2.0));
    /// assert_eq!(LogitMap::new(1.0, 0.5)?.as_temperature(), None);
    /// # Ok::<(), fracture::Error>(())
    /// ```
    pub fn as_temperature(&self) -> Option<f64> {
        (self.intercept == 0.0).then(|| 1.0 / self.slope)
    }

    /// The calibrated logit `slope · logit + intercept`.
    pub fn logit(&self, logit: f64) -> f64 {
        self.slope * logit + self.intercept
    }

    /// The calibrated probability `sigmoid(slope · logit + intercept)`.
    pub fn probability(&self, logit: f64) -> f64 {
        sigmoid(self.logit(logit))
    }

    /// The probability threshold under `self` that makes the same decisions as `threshold`
    /// under `from` (the same cut-off on the network's logit). Thresholds 0 and 1 stay.
    ///
    /// The round trip through the logit rounds, and a chosen threshold is always some case's
    /// probability (Youden's J picks one), so that case would fall on either side by chance:
    /// the carried threshold is lowered by [`CARRY_MARGIN`] (relative), which keeps such a
    /// case a positive. A case closer than that below the cut-off may become one too.
    ///
    /// ```
    /// use fracture::metrics::LogitMap;
    /// let platt = LogitMap::new(0.5, -1.0)?;
    /// let t = platt.carry_threshold(0.5, LogitMap::IDENTITY); // cut-off at logit 0
    /// let exact = platt.probability(0.0);
    /// assert!(t < exact && exact - t < 1e-12);
    /// # Ok::<(), fracture::Error>(())
    /// ```
    pub fn carry_threshold(&self, threshold: f64, from: LogitMap) -> f64 {
        if threshold <= 0.0 || threshold >= 1.0 {
            return threshold;
        }
        let calibrated = (threshold / (1.0 - threshold)).ln();
        let carried = self.probability((calibrated - from.intercept) / from.slope);
        carried * (1.0 - CARRY_MARGIN)
    }

    /// `T = 0.745` for a temperature, `slope 0.812, intercept -0.310` otherwise.
    pub fn describe(&self) -> String {
        match self.as_temperature() {
            Some(t) => format!("T = {t:.3}"),
            None => format!("slope {:.3}, intercept {:.3}", self.slope, self.intercept),
        }
    }
}

impl Default for LogitMap {
    fn default() -> Self {
        Self::IDENTITY
    }
}

/// The result of [`fit_platt`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PlattFit {
    /// The fitted map; its slope lies in `[1 / MAX_TEMPERATURE, 1 / MIN_TEMPERATURE]`.
    pub map: LogitMap,
    /// Mean negative log-likelihood (against the labels) of `sigmoid(logit)`.
    pub nll_before: f64,
    /// Mean negative log-likelihood (against the labels) after the map.
    pub nll_after: f64,
    /// Cases the map was fitted on.
    pub cases: usize,
}

/// Mean of `softplus(x) − t·x` (the cross-entropy of `sigmoid(x)` against the target `t`), its
/// gradient and Hessian in (slope, intercept), at `x = slope · z + intercept`.
fn logistic_objective(z: &[f64], targets: &[f64], map: LogitMap) -> (f64, [f64; 2], [f64; 3]) {
    let (mut loss, mut g, mut h) = (0.0, [0.0; 2], [0.0; 3]);
    for (&zi, &t) in z.iter().zip(targets) {
        let x = map.logit(zi);
        loss += x.max(0.0) + (-x.abs()).exp().ln_1p() - t * x;
        let p = sigmoid(x);
        let w = p * (1.0 - p);
        g[0] += (p - t) * zi;
        g[1] += p - t;
        h[0] += w * zi * zi;
        h[1] += w * zi;
        h[2] += w;
    }
    let n = z.len() as f64;
    (
        loss / n,
        [g[0] / n, g[1] / n],
        [h[0] / n, h[1] / n, h[2] / n],
    )
}

/// Minimize [`logistic_objective`] by Newton's method with step halving, from `start`; with
/// `fixed_slope` only the intercept moves. Returns `None` if the minimum is not finite (the
/// classes are separated and the targets are the labels).
fn fit_logistic(
    z: &[f64],
    targets: &[f64],
    start: LogitMap,
    fixed_slope: bool,
) -> Option<LogitMap> {
    let mut map = start;
    let (mut loss, mut g, mut h) = logistic_objective(z, targets, map);
    for _ in 0..200 {
        let step = if fixed_slope {
            (h[2] > 0.0).then(|| [0.0, g[1] / h[2]])
        } else {
            let det = h[0] * h[2] - h[1] * h[1];
            (det > 0.0).then(|| {
                [
                    (h[2] * g[0] - h[1] * g[1]) / det,
                    (h[0] * g[1] - h[1] * g[0]) / det,
                ]
            })
        };
        // A flat direction (all logits equal): a gradient step instead.
        let step = step.unwrap_or(if fixed_slope { [0.0, g[1]] } else { g });
        let mut scale = 1.0;
        let mut improved = false;
        for _ in 0..60 {
            let next = LogitMap {
                slope: map.slope - scale * step[0],
                intercept: map.intercept - scale * step[1],
            };
            let (next_loss, next_g, next_h) = logistic_objective(z, targets, next);
            if next_loss.is_finite() && next_loss <= loss {
                improved = next_loss < loss || next != map;
                map = next;
                (loss, g, h) = (next_loss, next_g, next_h);
                break;
            }
            scale *= 0.5;
        }
        let size = g[0].abs().max(g[1].abs());
        if !improved || size <= 1e-13 {
            break;
        }
    }
    (map.slope.is_finite() && map.intercept.is_finite() && map.slope.abs() < 1e6).then_some(map)
}

/// Whether every fractured case's logit is at least every other case's, or at most: then a
/// logistic fit against the labels has no finite slope.
fn separated(labels: &[bool], z: &[f64]) -> bool {
    let range = |class: bool| {
        z.iter()
            .zip(labels)
            .filter(|&(_, &y)| y == class)
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), (&v, _)| {
                (lo.min(v), hi.max(v))
            })
    };
    let (pos, neg) = (range(true), range(false));
    pos.0 >= neg.1 || pos.1 <= neg.0
}

fn both_classes(labels: &[bool]) -> std::result::Result<(), Undefined> {
    if !labels.contains(&true) {
        Err(Undefined::NoFractured)
    } else if !labels.contains(&false) {
        Err(Undefined::NoNotFractured)
    } else {
        Ok(())
    }
}

fn mean_nll(labels: &[bool], logits: &[f64], map: LogitMap) -> f64 {
    let targets: Vec<f64> = labels.iter().map(|&y| f64::from(u8::from(y))).collect();
    logistic_objective(logits, &targets, map).0
}

/// Fit Platt scaling, `sigmoid(a · logit + b)`, on `logits` (normally the validation part's)
/// against `labels`, with Platt's smoothed targets `(N₊ + 1) / (N₊ + 2)` and `1 / (N₋ + 2)`
/// in place of 1 and 0: a prior that keeps the fit finite when the classes are separated and
/// pulls a small part's fit towards caution. Newton's method with step halving (the objective
/// is convex). The slope is kept in `[1 / MAX_TEMPERATURE, 1 / MIN_TEMPERATURE]` (the
/// intercept refitted at the bound when the optimum lies beyond it). Undefined with a single
/// class.
///
/// ```
/// use fracture::metrics::{fit_platt, Metric, Undefined};
/// let fit = fit_platt(&[true, false, true, false], &[2.0, -1.0, 0.5, 0.8])?;
/// assert!(fit.value().unwrap().map.slope > 0.0);
/// assert_eq!(fit_platt(&[true, true], &[1.0, 2.0])?, Metric::Undefined(Undefined::NoNotFractured));
/// # Ok::<(), fracture::Error>(())
/// ```
pub fn fit_platt(labels: &[bool], logits: &[f64]) -> Result<Metric<PlattFit>> {
    check_inputs(labels, logits)?;
    if let Err(reason) = both_classes(labels) {
        return Ok(Metric::Undefined(reason));
    }
    let fractured = labels.iter().filter(|&&y| y).count() as f64;
    let others = labels.len() as f64 - fractured;
    let (high, low) = ((fractured + 1.0) / (fractured + 2.0), 1.0 / (others + 2.0));
    let targets: Vec<f64> = labels.iter().map(|&y| if y { high } else { low }).collect();
    let (min_slope, max_slope) = (1.0 / MAX_TEMPERATURE, 1.0 / MIN_TEMPERATURE);
    let fitted = fit_logistic(logits, &targets, LogitMap::IDENTITY, false)
        .filter(|m| (min_slope..=max_slope).contains(&m.slope));
    let map = match fitted {
        Some(map) => map,
        None => {
            // The optimum's slope lies beyond a bound: the best intercept at the nearer bound.
            let unbounded = fit_logistic(logits, &targets, LogitMap::IDENTITY, false);
            let slope = match unbounded {
                Some(m) if m.slope > max_slope => max_slope,
                _ => min_slope,
            };
            let start = LogitMap {
                slope,
                intercept: 0.0,
            };
            fit_logistic(logits, &targets, start, true).ok_or_else(|| {
                Error::Metric("Platt scaling: the intercept fit did not converge".into())
            })?
        }
    };
    let map = LogitMap::new(map.slope, map.intercept)?;
    Ok(Metric::Defined(PlattFit {
        map,
        nll_before: mean_nll(labels, logits, LogitMap::IDENTITY),
        nll_after: mean_nll(labels, logits, map),
        cases: labels.len(),
    }))
}

/// The calibration slope of calibrated logits `x` (for example `map.logit(z)` on the test
/// part): `β` of the logistic regression `P(fractured) = sigmoid(α + β · x)`. 1 is ideal;
/// below 1 the probabilities are too extreme (over-confident), above 1 too timid.
/// Undefined with a single class, or when the classes are separated (`β` is then infinite).
///
/// ```
/// use fracture::metrics::{calibration_slope, Metric, Undefined};
/// let labels = [true, false, true, false, false, true];
/// let slope = calibration_slope(&labels, &[2.0, -1.0, 0.5, 0.8, -2.0, -0.3])?;
/// assert!(slope.value().unwrap() > 0.0);
/// let separated = calibration_slope(&[true, false], &[1.0, -1.0])?;
/// assert_eq!(separated, Metric::Undefined(Undefined::SeparatedClasses));
/// # Ok::<(), fracture::Error>(())
/// ```
pub fn calibration_slope(labels: &[bool], calibrated_logits: &[f64]) -> Result<Metric> {
    check_inputs(labels, calibrated_logits)?;
    if let Err(reason) = both_classes(labels) {
        return Ok(Metric::Undefined(reason));
    }
    if separated(labels, calibrated_logits) {
        return Ok(Metric::Undefined(Undefined::SeparatedClasses));
    }
    let targets: Vec<f64> = labels.iter().map(|&y| f64::from(u8::from(y))).collect();
    Ok(
        match fit_logistic(calibrated_logits, &targets, LogitMap::IDENTITY, false) {
            Some(map) => Metric::Defined(map.slope),
            None => Metric::Undefined(Undefined::SeparatedClasses),
        },
    )
}

/// The calibration intercept ("calibration in the large") of calibrated logits `x`: `α` of
/// `P(fractured) = sigmoid(α + x)`, the slope held at 1. 0 is ideal; below 0 the probabilities
/// are too high on average, above 0 too low. Undefined with a single class.
///
/// ```
/// use fracture::metrics::calibration_intercept;
/// // Two of four fractured, every probability 0.5: nothing to correct.
/// let alpha = calibration_intercept(&[true, false, true, false], &[0.0; 4])?;
/// assert!(alpha.value().unwrap().abs() < 1e-12);
/// # Ok::<(), fracture::Error>(())
/// ```
pub fn calibration_intercept(labels: &[bool], calibrated_logits: &[f64]) -> Result<Metric> {
    check_inputs(labels, calibrated_logits)?;
    if let Err(reason) = both_classes(labels) {
        return Ok(Metric::Undefined(reason));
    }
    let targets: Vec<f64> = labels.iter().map(|&y| f64::from(u8::from(y))).collect();
    Ok(
        match fit_logistic(calibrated_logits, &targets, LogitMap::IDENTITY, true) {
            Some(map) => Metric::Defined(map.intercept),
            None => Metric::Undefined(Undefined::SeparatedClasses),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platt_recovers_a_known_slope_and_offset() {
        // Labels drawn from sigmoid(0.5·z − 1) by a fixed, seeded stream.
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let (labels, logits): (Vec<bool>, Vec<f64>) = (0..20_000)
            .map(|_| {
                let z: f64 = rng.random_range(-8.0..8.0);
                (rng.random::<f64>() < sigmoid(0.5 * z - 1.0), z)
            })
            .unzip();
        let fit = fit_platt(&labels, &logits).unwrap().value().unwrap();
        assert!((fit.map.slope - 0.5).abs() < 0.03, "{:?}", fit.map);
        assert!((fit.map.intercept + 1.0).abs() < 0.06, "{:?}", fit.map);
    }

    #[test]
    fn the_intercept_matches_its_closed_form_for_equal_logits() {
        // All logits 0: sigmoid(alpha) must equal the fraction fractured, 1 in 4.
        let alpha = calibration_intercept(&[true, false, false, false], &[0.0; 4])
            .unwrap()
            .value()
            .unwrap();
        assert!((alpha - (1.0f64 / 3.0).ln()).abs() < 1e-12, "{alpha}");
    }
}
