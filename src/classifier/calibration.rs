//! Calibrating a [`FractureClassifier`]: a [`LogitMap`] (temperature or Platt scaling) fitted
//! on the validation part, applied to every probability, and recorded with where it came from
//! ([`Calibration`], saved in the bundle).
//!
//! What calibration is: after it, of the images given probability 0.8 about 8 in 10 are
//! fractured, *on data like the part it was fitted on*. What it is not: it does not change the
//! order of the images, the ROC AUC or the decisions at a carried-over threshold; it does not
//! carry over to another prevalence, hospital or scanner; fitted on few images it can make the
//! probabilities worse (the report shows the intervals). A classifier that was never
//! calibrated reports the network's own `sigmoid(logit)`, which need not mean what it says.

use super::FractureClassifier;
use crate::dataset::{Part, PartName};
use crate::error::{Error, Result};
use crate::metrics::{fit_platt, fit_temperature, LogitMap, Metric};
use serde::{Deserialize, Serialize};
use std::fmt;

/// Fewest images of the fitting part [`CalibrationConfig::default`] accepts.
pub const MIN_CALIBRATION_CASES: usize = 100;
/// Fewest images of each class [`CalibrationConfig::default`] accepts.
pub const MIN_CALIBRATION_PER_CLASS: usize = 20;

/// How the probabilities are calibrated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CalibrationMethod {
    /// None: `sigmoid(logit)`.
    None,
    /// Temperature scaling, `sigmoid(logit / T)` (Guo et al. 2017): rescales, cannot shift.
    Temperature,
    /// Platt scaling, `sigmoid(a · logit + b)` (Platt 1999): also removes a logit offset
    /// (a class-weighted loss, another prevalence).
    Platt,
}

/// Where a classifier's calibration came from (recorded in `bundle.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CalibrationSource {
    /// Never fitted; `reason` says why when a fit was tried and declined.
    NotFitted {
        /// Why no calibration was fitted, when one was tried.
        reason: Option<String>,
    },
    /// Fitted on a part of the split.
    Fitted {
        /// The part (`val`, or with `forced` another).
        part: String,
        /// Images it was fitted on.
        cases: usize,
        /// Of which fractured.
        fractured: usize,
        /// The test-time augmentation whose mean logits it was fitted on (`None`: the image
        /// alone).
        tta: Option<String>,
        /// Fitted on a part other than validation, or below the minimum size, because it was
        /// explicitly forced ([`CalibrationConfig::force`]).
        forced: bool,
    },
    /// Set by hand ([`FractureClassifier::set_temperature`]).
    Manual,
    /// Read from a bundle written before the source was recorded.
    Unknown,
}

/// A classifier's calibration: the method, its map of the logit and where it came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// How.
    pub method: CalibrationMethod,
    /// The map of the logit (the identity for [`CalibrationMethod::None`]).
    pub map: LogitMap,
    /// Where it came from.
    pub source: CalibrationSource,
}

impl Calibration {
    /// No calibration, never fitted.
    pub fn none() -> Self {
        Self {
            method: CalibrationMethod::None,
            map: LogitMap::IDENTITY,
            source: CalibrationSource::NotFitted { reason: None },
        }
    }

    /// What a bundle without a calibration record holds: not fitted when its temperature
    /// is 1 (or absent), else a temperature of unknown origin.
    ///
    /// ```
    /// use fracture::classifier::{Calibration, CalibrationSource};
    /// assert_eq!(Calibration::of_old_bundle(1.0)?.source, CalibrationSource::NotFitted { reason: None });
    /// assert_eq!(Calibration::of_old_bundle(1.3)?.source, CalibrationSource::Unknown);
    /// # Ok::<(), fracture::Error>(())
    /// ```
    pub fn of_old_bundle(temperature: f64) -> Result<Self> {
        if temperature == 1.0 {
            return Ok(Self::none());
        }
        Ok(Self {
            method: CalibrationMethod::Temperature,
            map: LogitMap::temperature(temperature)?,
            source: CalibrationSource::Unknown,
        })
    }

    /// Whether the probabilities were fitted to observed fracture rates on a validation part
    /// (not forced onto another part, not set by hand, not of unknown origin).
    pub fn fitted_on_validation(&self) -> bool {
        matches!(self.source, CalibrationSource::Fitted { forced: false, .. })
    }

    /// One sentence on what the calibration is and where it came from, from the record alone.
    ///
    /// ```
    /// use fracture::classifier::Calibration;
    /// assert!(Calibration::none().describe().starts_with("Not calibrated"));
    /// ```
    pub fn describe(&self) -> String {
        let what = match self.method {
            CalibrationMethod::None => "Not calibrated: the probabilities are the network's \
                                        sigmoid(logit), not fitted to observed fracture rates"
                .to_string(),
            CalibrationMethod::Temperature => {
                format!("Temperature scaling ({})", self.map.describe())
            }
            CalibrationMethod::Platt => format!("Platt scaling ({})", self.map.describe()),
        };
        let whence = match &self.source {
            CalibrationSource::NotFitted { reason: Some(why) } => format!(" ({why})"),
            CalibrationSource::NotFitted { reason: None } => String::new(),
            CalibrationSource::Fitted {
                part,
                cases,
                fractured,
                tta,
                forced,
            } => format!(
                ", fitted on the {part} part ({cases} images, {fractured} fractured{}){}",
                tta.as_ref()
                    .map(|t| format!(", mean logits over {t}"))
                    .unwrap_or_default(),
                if *forced {
                    ", forced against the checks (part or size)"
                } else {
                    ""
                }
            ),
            CalibrationSource::Manual => ", set by hand, not fitted on data".into(),
            CalibrationSource::Unknown => {
                ", of unknown origin (a bundle written before fracture recorded it)".into()
            }
        };
        format!("{what}{whence}.")
    }
}

impl Default for Calibration {
    fn default() -> Self {
        Self::none()
    }
}

impl fmt::Display for Calibration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// How [`FractureClassifier::calibrate_with`] fits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CalibrationConfig {
    /// Temperature (the default) or Platt scaling.
    pub method: CalibrationMethod,
    /// Fewest images of the part ([`MIN_CALIBRATION_CASES`]).
    pub min_cases: usize,
    /// Fewest images of each class ([`MIN_CALIBRATION_PER_CLASS`]).
    pub min_per_class: usize,
    /// Fit even on a part other than validation or below the minimum size; the record says
    /// `forced` and the report says so.
    pub force: bool,
}

impl Default for CalibrationConfig {
    fn default() -> Self {
        Self {
            method: CalibrationMethod::Temperature,
            min_cases: MIN_CALIBRATION_CASES,
            min_per_class: MIN_CALIBRATION_PER_CLASS,
            force: false,
        }
    }
}

/// The result of a calibration fit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CalibrationFit {
    /// The method fitted.
    pub method: CalibrationMethod,
    /// The fitted map.
    pub map: LogitMap,
    /// Mean negative log-likelihood before and after.
    pub nll_before: f64,
    /// Mean negative log-likelihood after.
    pub nll_after: f64,
}

impl CalibrationFit {
    /// The fitted temperature, for temperature scaling.
    pub fn temperature(&self) -> Option<f64> {
        (self.method == CalibrationMethod::Temperature)
            .then(|| self.map.as_temperature())
            .flatten()
    }
}

/// Why `part` may not be calibrated on under `config` (`None`: it may).
fn refusal(part: PartName, labels: &[bool], config: &CalibrationConfig) -> Option<String> {
    let fractured = labels.iter().filter(|&&y| y).count();
    let smaller_class = fractured.min(labels.len() - fractured);
    if part != PartName::Val {
        return Some(format!(
            "calibrating on the {part} part is refused: fit on the validation part (its \
             probabilities on the {part} part would be optimistic or meaningless), or set \
             CalibrationConfig::force and the report will say so"
        ));
    }
    if labels.len() < config.min_cases || smaller_class < config.min_per_class {
        return Some(format!(
            "the {part} part holds {} images ({fractured} fractured), fewer than the {} images \
             with {} of each class a calibration fit needs to be trusted",
            labels.len(),
            config.min_cases,
            config.min_per_class
        ));
    }
    None
}

impl FractureClassifier {
    /// The temperature `T` of the probabilities: `1 / slope` of the calibration map (1 when
    /// not calibrated). A Platt calibration also has an intercept: see [`Self::calibration`].
    pub fn temperature(&self) -> f64 {
        1.0 / self.calibration.map.slope
    }

    /// The calibration: method, map and where it came from.
    pub fn calibration(&self) -> &Calibration {
        &self.calibration
    }

    /// Set the temperature by hand (finite and positive; recorded as set by hand). The
    /// threshold is carried over to the new scale, so the classifier makes the same decisions
    /// with differently calibrated probabilities.
    ///
    /// ```
    /// use fracture::device::DeviceRequest;
    /// use fracture::model::ResNetV2Config;
    /// let mut clf = fracture::FractureClassifier::builder()
    ///     .backbone(ResNetV2Config::custom(vec![2, 2], vec![4, 8]))
    ///     .weights(fracture::WeightsSource::Random { seed: 0 })
    ///     .device(DeviceRequest::Cpu)
    ///     .image_size(32, 32)
    ///     .threshold(0.7)
    ///     .build()?;
    /// clf.set_temperature(2.0)?;
    /// assert_eq!(clf.temperature(), 2.0);
    /// assert!(clf.threshold() < 0.7); // the same logit cut-off, softer probabilities
    /// assert!(clf.set_temperature(0.0).is_err());
    /// # Ok::<(), fracture::Error>(())
    /// ```
    pub fn set_temperature(&mut self, temperature: f64) -> Result<()> {
        let map = LogitMap::temperature(temperature)?;
        self.apply_calibration(
            Calibration {
                method: CalibrationMethod::Temperature,
                map,
                source: CalibrationSource::Manual,
            },
            true,
        );
        Ok(())
    }

    /// Install `calibration`, carrying the threshold over to its scale when `carry` (same
    /// decisions).
    pub(super) fn apply_calibration(&mut self, calibration: Calibration, carry: bool) {
        if carry {
            self.threshold = calibration
                .map
                .carry_threshold(self.threshold, self.calibration.map);
        }
        self.calibration = calibration;
    }

    /// Fit a temperature on `part`, which must be the validation part with at least
    /// [`MIN_CALIBRATION_CASES`] images and [`MIN_CALIBRATION_PER_CLASS`] of each class (else
    /// an error); see [`Self::calibrate_with`].
    pub fn calibrate(&mut self, part: &Part) -> Result<Metric<CalibrationFit>> {
        self.calibrate_with(part, CalibrationConfig::default())
    }

    /// Fit `config.method` on the logits of `part` (the mean over the test-time augmentation
    /// views when TTA is on) and apply it as [`Self::set_temperature`] does, recording the
    /// part, its size and the TTA. A part other than validation, or one below the minimum
    /// size, is an error unless `config.force`; `Undefined` (calibration unchanged) when the
    /// part holds a single class.
    pub fn calibrate_with(
        &mut self,
        part: &Part,
        config: CalibrationConfig,
    ) -> Result<Metric<CalibrationFit>> {
        let scored = self.score_part(part)?;
        let forced = refusal(part.name, &scored.labels, &config);
        if let (Some(why), false) = (&forced, config.force) {
            return Err(Error::InvalidInput(why.clone()));
        }
        self.calibrate_from(
            part.name,
            &scored.labels,
            &scored.logits,
            config.method,
            forced.is_some(),
        )
    }

    /// Fit on scored cases and install the fit (threshold carried over).
    pub(super) fn calibrate_from(
        &mut self,
        part: PartName,
        labels: &[bool],
        logits: &[f64],
        method: CalibrationMethod,
        forced: bool,
    ) -> Result<Metric<CalibrationFit>> {
        let fit = match method {
            CalibrationMethod::None => {
                return Err(Error::InvalidConfig(
                    "calibration method None cannot be fitted".into(),
                ))
            }
            CalibrationMethod::Temperature => {
                fit_temperature(labels, logits)?.map(|f| -> Result<CalibrationFit> {
                    Ok(CalibrationFit {
                        method,
                        map: LogitMap::temperature(f.temperature)?,
                        nll_before: f.nll_before,
                        nll_after: f.nll_after,
                    })
                })
            }
            CalibrationMethod::Platt => fit_platt(labels, logits)?.map(|f| {
                Ok(CalibrationFit {
                    method,
                    map: f.map,
                    nll_before: f.nll_before,
                    nll_after: f.nll_after,
                })
            }),
        };
        let fit = match fit {
            Metric::Defined(fit) => fit?,
            Metric::Undefined(reason) => return Ok(Metric::Undefined(reason)),
        };
        let source = CalibrationSource::Fitted {
            part: part.name().to_string(),
            cases: labels.len(),
            fractured: labels.iter().filter(|&&y| y).count(),
            tta: self.tta.is_enabled().then(|| self.tta.describe()),
            forced,
        };
        self.apply_calibration(
            Calibration {
                method,
                map: fit.map,
                source,
            },
            true,
        );
        Ok(Metric::Defined(fit))
    }

    /// Training's calibration: on the validation part when it is large enough, else none,
    /// recorded with the reason. The threshold is not carried over (the caller chooses it).
    pub(super) fn calibrate_after_training(
        &mut self,
        labels: &[bool],
        logits: &[f64],
    ) -> Result<()> {
        let config = CalibrationConfig::default();
        let declined = |reason: String| Calibration {
            source: CalibrationSource::NotFitted {
                reason: Some(reason),
            },
            ..Calibration::none()
        };
        if let Some(why) = refusal(PartName::Val, labels, &config) {
            self.apply_calibration(declined(why), false);
            return Ok(());
        }
        let carried = self.threshold;
        match self.calibrate_from(PartName::Val, labels, logits, config.method, false)? {
            Metric::Defined(_) => self.threshold = carried,
            Metric::Undefined(reason) => {
                self.apply_calibration(declined(reason.to_string()), false)
            }
        }
        Ok(())
    }
}
