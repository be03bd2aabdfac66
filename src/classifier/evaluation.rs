//! Measuring a [`FractureClassifier`] on a dataset part: [`Evaluation`] (metrics at the
//! chosen threshold and at 0.5, bootstrap intervals, calibration before and after the
//! temperature, test-time augmentation against none, subgroups, per-case scores, unreadable
//! files) and the threshold choice on the validation part.

use super::{FractureClassifier, DEFAULT_THRESHOLD};
use crate::augment::TtaConfig;
use crate::batch::{check_pass, BatchSource};
use crate::dataset::loader::ImageLoader;
use crate::dataset::{ContentHash, Label, Part, PartName, Split};
use crate::error::{Error, Result};
use crate::metrics::{
    bootstrap_ci_ranked, bootstrap_sensitivity_at_specificity, by_subgroup_ranked,
    choose_threshold, paired_auc_difference, roc_auc, sigmoid, BinaryMetrics, BootstrapConfig,
    BootstrapIntervals, CalibrationComparison, Interval, Metric, SensitivityAtSpecificity,
    SubgroupMetrics, ThresholdRule,
};
use crate::progress::Progress;
use serde::Serialize;
use std::collections::HashSet;
use std::fmt;
use std::path::PathBuf;

/// The specificities at which [`Evaluation::sensitivity_at_specificity`] reports the best
/// sensitivity: operating points a clinician would choose between.
pub const REPORTED_SPECIFICITIES: [f64; 3] = [0.80, 0.90, 0.95];

/// What scoring one dataset part gives: per readable image its label (`true` = fractured),
/// fracture logit (the TTA mean when TTA is on), the logit of the image alone when TTA is on,
/// and index in the part, and the loader (for its skipped files).
pub(super) struct ScoredPart {
    pub(super) labels: Vec<bool>,
    pub(super) logits: Vec<f64>,
    plain_logits: Option<Vec<f64>>,
    indices: Vec<usize>,
    loader: ImageLoader,
}

/// One evaluated image: what the report's curves, reliability diagram and gallery are drawn
/// from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CaseScore {
    /// The image file.
    pub path: PathBuf,
    /// The true label: `true` = fractured.
    pub fractured: bool,
    /// The fracture logit (the mean over the TTA views when TTA is on).
    pub logit: f64,
    /// The calibrated fracture probability, `sigmoid(logit / T)`.
    pub probability: f64,
    /// Body part, from the dataset metadata.
    pub body_part: Option<String>,
    /// Whether surgical hardware is visible, from the dataset metadata (`None` when it does
    /// not say).
    pub hardware: Option<bool>,
}

/// Test-time augmentation against the image alone, on the same cases.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TtaComparison {
    /// The views averaged.
    pub config: TtaConfig,
    /// ROC AUC of the image alone.
    pub auc_without: Metric,
    /// ROC AUC of the mean logit over the views.
    pub auc_with: Metric,
    /// Paired-bootstrap interval of `auc_with − auc_without` (same resampled cases for both).
    pub difference: Metric<Interval>,
}

/// Where the evaluated images stand against the split recorded with the classifier: a fact
/// [`FractureClassifier::evaluate`] checks (by content, SHA-256), so that a report never calls
/// a part held out that the model was trained on.
///
/// ```
/// use fracture::classifier::SplitOrigin;
/// let origin = SplitOrigin::Unrecorded;
/// assert_eq!(serde_json::to_value(origin).unwrap()["kind"], "unrecorded");
/// assert!(!origin.is_known_held_out("test"));
/// assert!(SplitOrigin::Recorded { seen_in_training: 0 }.is_known_held_out("test"));
/// assert!(!SplitOrigin::Recorded { seen_in_training: 0 }.is_known_held_out("val"));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SplitOrigin {
    /// The part of this name of the classifier's recorded split: the same images (by content)
    /// with the same labels. `seen_in_training` of them are, by content, also in its training
    /// or validation part (0 unless the split was edited by hand).
    Recorded {
        /// Evaluated images whose content is in the training or validation part.
        seen_in_training: usize,
    },
    /// Other images than the recorded split's part of this name; `seen_in_training` of them
    /// are, by content, in the classifier's training or validation part.
    Other {
        /// Evaluated images whose content is in the training or validation part.
        seen_in_training: usize,
    },
    /// The classifier holds no record of the images it was trained on (a Keras import, or a
    /// classifier never trained by fracture): whether these images are held out is unknown.
    Unrecorded,
}

impl SplitOrigin {
    /// Check `part` against the classifier's recorded split (`None`: no record).
    pub fn of(recorded: Option<&Split>, part: &Part) -> Self {
        let Some(split) = recorded else {
            return Self::Unrecorded;
        };
        let shaped_model: HashSet<ContentHash> = [&split.train, &split.val]
            .into_iter()
            .flat_map(|p| p.samples.iter().map(|s| s.hash))
            .collect();
        let seen_in_training = part
            .samples
            .iter()
            .filter(|s| shaped_model.contains(&s.hash))
            .count();
        let content = |p: &Part| {
            let mut v: Vec<(ContentHash, Label)> =
                p.samples.iter().map(|s| (s.hash, s.label)).collect();
            v.sort();
            v
        };
        if content(split.part(part.name)) == content(part) {
            Self::Recorded { seen_in_training }
        } else {
            Self::Other { seen_in_training }
        }
    }

    /// Whether the evaluated part (named `part`) is known to hold no image the model was
    /// trained or validated on: the recorded split's test part, or other images none of which
    /// is in its training or validation part.
    pub fn is_known_held_out(&self, part: &str) -> bool {
        match *self {
            Self::Recorded { seen_in_training } => {
                seen_in_training == 0 && part == PartName::Test.name()
            }
            Self::Other { seen_in_training } => seen_in_training == 0,
            Self::Unrecorded => false,
        }
    }
}

/// What [`FractureClassifier::evaluate`] measured on one dataset part.
#[derive(Debug, Clone, Serialize)]
pub struct Evaluation {
    /// The part evaluated: `train`, `val` or `test`.
    pub part: String,
    /// Where the evaluated images stand against the classifier's recorded split.
    pub split_origin: SplitOrigin,
    /// Metrics at the classifier's threshold.
    pub at_threshold: BinaryMetrics,
    /// Metrics at [`DEFAULT_THRESHOLD`], the reference notebook's implicit threshold (for
    /// comparison).
    pub at_half: BinaryMetrics,
    /// The resampling behind every interval of this evaluation.
    pub bootstrap: BootstrapConfig,
    /// Seeded bootstrap intervals (AUC, sensitivity, specificity) at the classifier's threshold.
    pub intervals: BootstrapIntervals,
    /// The same intervals at threshold 0.5.
    pub intervals_at_half: BootstrapIntervals,
    /// At each of [`REPORTED_SPECIFICITIES`], the highest sensitivity among thresholds whose
    /// specificity reaches it (ranked by the logits, no interpolation), with its seeded
    /// bootstrap interval: what the model could do at other operating points, threshold-free.
    pub sensitivity_at_specificity: Vec<SensitivityAtSpecificity>,
    /// Metrics per body part, when the samples carry metadata.
    pub by_body_part: Option<SubgroupMetrics>,
    /// Metrics by visible surgical hardware, when every sample's metadata says (FracAtlas
    /// does, DICOM does not).
    pub by_hardware: Option<SubgroupMetrics>,
    /// The temperature part of the calibration the probabilities were computed with
    /// (`1 / slope`; a Platt calibration also has an intercept, see `calibrated_by`).
    pub temperature: f64,
    /// The classifier's calibration when evaluated: method, map and where it came from.
    pub calibrated_by: super::Calibration,
    /// Calibration before (`sigmoid(logit)`) and after the classifier's calibration map: ECE and
    /// Brier score with bootstrap intervals, calibration slope and intercept, the bins.
    pub calibration: CalibrationComparison,
    /// Test-time augmentation against none, when TTA was on.
    pub tta: Option<TtaComparison>,
    /// Every evaluated image with its label, logit and probability, in part order.
    pub cases: Vec<CaseScore>,
    /// Images that could not be read (path and reason).
    pub skipped: Vec<(PathBuf, String)>,
}

impl Evaluation {
    /// True labels (`true` = fractured) and calibrated probabilities of the cases.
    pub fn labels_and_probabilities(&self) -> (Vec<bool>, Vec<f64>) {
        self.cases
            .iter()
            .map(|c| (c.fractured, c.probability))
            .unzip()
    }
}

impl fmt::Display for Evaluation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "== at the classifier's threshold {:.4}",
            self.at_threshold.threshold
        )?;
        writeln!(f, "{}", self.at_threshold)?;
        writeln!(f, "{}", self.intervals)?;
        if (self.at_half.threshold - self.at_threshold.threshold).abs() > 1e-12 {
            writeln!(
                f,
                "== at threshold {DEFAULT_THRESHOLD} (the reference notebook's)"
            )?;
            writeln!(f, "{}", self.at_half)?;
            writeln!(f, "{}", self.intervals_at_half)?;
        }
        writeln!(
            f,
            "== operating points, threshold-free (at each specificity the best sensitivity among \
             thresholds that reach it, no interpolation)"
        )?;
        writeln!(f, "ROC AUC {:.4}", self.at_threshold.roc_auc)?;
        for point in &self.sensitivity_at_specificity {
            writeln!(f, "{point}")?;
        }
        let c = &self.calibration;
        writeln!(f, "== calibration: {}", self.calibrated_by)?;
        writeln!(
            f,
            "   {} bins: ECE {} -> {}, Brier {} -> {}; slope {:.3} -> {:.3}, intercept {:.3} -> {:.3}",
            crate::metrics::ECE_BINS,
            c.before.ece_interval.map(|i| format!("{i:.4}")),
            c.after.ece_interval.map(|i| format!("{i:.4}")),
            c.before.brier_interval.map(|i| format!("{i:.4}")),
            c.after.brier_interval.map(|i| format!("{i:.4}")),
            c.before.slope,
            c.after.slope,
            c.before.intercept,
            c.after.intercept
        )?;
        if let Some(tta) = &self.tta {
            writeln!(
                f,
                "== test-time augmentation ({}, logits averaged): AUC {:.4} -> {:.4}, difference {}",
                tta.config.describe(),
                tta.auc_without,
                tta.auc_with,
                tta.difference.map(|d| format!("{d:+.4}"))
            )?;
        }
        if let Some(groups) = &self.by_body_part {
            writeln!(f, "== by body part\n{groups}")?;
        }
        if let Some(groups) = &self.by_hardware {
            writeln!(f, "== by visible hardware\n{groups}")?;
        }
        if !self.skipped.is_empty() {
            writeln!(f, "== {} unreadable image(s) left out", self.skipped.len())?;
            for (path, reason) in &self.skipped {
                writeln!(f, "  {}: {reason}", path.display())?;
            }
        }
        Ok(())
    }
}

impl FractureClassifier {
    /// Logits and labels of every readable image of `part`.
    pub(super) fn score_part(&self, part: &Part) -> Result<ScoredPart> {
        let loader = self.loader(part, 16, false, 0)?;
        let (mut labels, mut logits, mut indices) = (Vec::new(), Vec::new(), Vec::new());
        let mut plain_logits = self.tta.is_enabled().then(Vec::new);
        let pass = format!("scoring the {} part", part.name);
        let progress = Progress::items(&pass, part.len() as u64);
        for batch in loader.batches(0)? {
            let batch = batch?;
            let name = |i: usize| {
                let sample = batch.indices.get(i).and_then(|&k| part.samples.get(k))?;
                Some(sample.path.display().to_string())
            };
            let views = self
                .view_logits(&batch.images)
                .map_err(|e| e.naming_image(name))?;
            if let (Some(plain), Some(identity)) = (plain_logits.as_mut(), views.first()) {
                plain.extend_from_slice(identity);
            }
            logits.extend(super::tta::mean_logits(&views)?);
            labels.extend(batch.labels.to_vec1::<f32>()?.into_iter().map(|y| y > 0.5));
            progress.inc(batch.indices.len() as u64);
            indices.extend(batch.indices);
        }
        check_pass(&loader, 0, indices.len(), &pass)?;
        progress.finish_quietly();
        Ok(ScoredPart {
            labels,
            logits,
            plain_logits,
            indices,
            loader,
        })
    }

    fn probabilities_of(&self, logits: &[f64]) -> Vec<f64> {
        logits.iter().map(|&z| self.probability_of(z)).collect()
    }

    /// True labels (`true` = fractured) and fracture probabilities of every readable image of
    /// `part`, in part order (for curves and custom metrics).
    pub fn scores(&self, part: &Part) -> Result<(Vec<bool>, Vec<f64>)> {
        let scored = self.score_part(part)?;
        let probabilities = self.probabilities_of(&scored.logits);
        Ok((scored.labels, probabilities))
    }

    /// Set the threshold from `part` (normally the validation part) by `rule`, recording the
    /// rule as its source ([`super::ThresholdSource::Validation`]); returns the chosen
    /// threshold, or `None` (threshold and source unchanged) when the rule is undefined there.
    /// An error for a rule whose target is outside `(0, 1]`.
    pub fn choose_threshold(&mut self, part: &Part, rule: ThresholdRule) -> Result<Option<f64>> {
        let ScoredPart { labels, logits, .. } = self.score_part(part)?;
        self.choose_threshold_from(&labels, &logits, rule)
    }

    /// [`Self::choose_threshold`] on scored cases: chosen on the calibrated logits (which a
    /// saturated sigmoid cannot tie), then turned into a probability.
    pub(super) fn choose_threshold_from(
        &mut self,
        labels: &[bool],
        logits: &[f64],
        rule: ThresholdRule,
    ) -> Result<Option<f64>> {
        let map = self.calibration.map;
        let calibrated: Vec<f64> = logits.iter().map(|&z| map.logit(z)).collect();
        let chosen = choose_threshold(labels, &calibrated, rule)?
            .value()
            .map(|point| sigmoid(point.threshold).clamp(0.0, 1.0));
        if let Some(threshold) = chosen {
            self.threshold = threshold;
            self.threshold_source = Some(super::ThresholdSource::Validation { rule: Some(rule) });
        }
        Ok(chosen)
    }

    /// Measure the classifier on one dataset part: metrics at its threshold and at 0.5 (ROC
    /// AUC and average precision from the logits), bootstrap intervals (1000 resamples, seed
    /// 42), the sensitivity at each of [`REPORTED_SPECIFICITIES`] with intervals, calibration before and after its calibration map (with intervals, slope and
    /// intercept), every case's score and, when metadata is present, metrics per body part
    /// and by visible hardware. With test-time augmentation on ([`Self::set_tta`]) the
    /// metrics are those of the mean logit, and [`Evaluation::tta`] compares them with the
    /// image alone (paired bootstrap of the AUC difference).
    pub fn evaluate(&mut self, part: &Part) -> Result<Evaluation> {
        let ScoredPart {
            labels,
            logits,
            plain_logits,
            indices,
            loader,
        } = self.score_part(part)?;
        let scores = self.probabilities_of(&logits);
        let bootstrap = BootstrapConfig::default();
        // Ranking metrics from the logits: the sigmoid ties logits above about 37.
        let at_threshold =
            BinaryMetrics::compute_ranked(&labels, &scores, &logits, self.threshold)?;
        let at_half = BinaryMetrics::compute_ranked(&labels, &scores, &logits, DEFAULT_THRESHOLD)?;
        let intervals = bootstrap_ci_ranked(&labels, &scores, &logits, self.threshold, bootstrap)?;
        let intervals_at_half =
            bootstrap_ci_ranked(&labels, &scores, &logits, DEFAULT_THRESHOLD, bootstrap)?;
        let sensitivity_at_specificity = bootstrap_sensitivity_at_specificity(
            &labels,
            &logits,
            REPORTED_SPECIFICITIES,
            bootstrap,
        )?
        .to_vec();
        let calibration = CalibrationComparison::compute(&labels, &logits, self.calibration.map)?;
        let tta = match plain_logits {
            Some(plain) => Some(TtaComparison {
                config: self.tta.clone(),
                auc_without: roc_auc(&labels, &plain)?,
                auc_with: roc_auc(&labels, &logits)?,
                difference: paired_auc_difference(&labels, &plain, &logits, bootstrap)?,
            }),
            None => None,
        };
        let samples = loader.samples();
        let cases: Vec<CaseScore> = indices
            .iter()
            .zip(labels.iter().zip(logits.iter().zip(&scores)))
            .filter_map(|(&i, (&fractured, (&logit, &probability)))| {
                let sample = samples.get(i)?;
                Some(CaseScore {
                    path: sample.path.clone(),
                    fractured,
                    logit,
                    probability,
                    body_part: sample.metadata.as_ref().map(|m| m.body_part.to_string()),
                    hardware: sample.metadata.as_ref().and_then(|m| m.hardware),
                })
            })
            .collect();
        let (by_body_part, by_hardware) = self.subgroups(&cases)?;
        let skipped = loader
            .skipped()
            .into_iter()
            .map(|s| (s.path, s.reason))
            .collect();
        let evaluation = Evaluation {
            bootstrap,
            part: part.name.name().to_string(),
            split_origin: SplitOrigin::of(self.split.as_ref(), part),
            at_threshold,
            at_half,
            intervals,
            intervals_at_half,
            sensitivity_at_specificity,
            by_body_part,
            by_hardware,
            temperature: self.temperature(),
            calibrated_by: self.calibration.clone(),
            calibration,
            tta,
            cases,
            skipped,
        };
        // The bundle's metrics.json: an evaluation that cannot be recorded is an error, never
        // a bundle silently saved without it.
        self.evaluation = Some(serde_json::to_value(&evaluation).map_err(|e| {
            Error::InvalidInput(format!(
                "the evaluation of the {} part cannot be recorded as JSON: {e}",
                evaluation.part
            ))
        })?);
        Ok(evaluation)
    }

    /// Metrics per body part when every case's body part is known, and by visible hardware
    /// when every case's hardware is known (DICOM does not say), each on its own.
    fn subgroups(
        &self,
        cases: &[CaseScore],
    ) -> Result<(Option<SubgroupMetrics>, Option<SubgroupMetrics>)> {
        if cases.is_empty() {
            return Ok((None, None));
        }
        let (labels, scores): (Vec<bool>, Vec<f64>) =
            cases.iter().map(|c| (c.fractured, c.probability)).unzip();
        // Ranked by the logits, as the whole part's AUC is (saturated probabilities tie).
        let logits: Vec<f64> = cases.iter().map(|c| c.logit).collect();
        let parts: Option<Vec<&str>> = cases.iter().map(|c| c.body_part.as_deref()).collect();
        let hardware: Option<Vec<&str>> = cases
            .iter()
            .map(|c| {
                Some(if c.hardware? {
                    "hardware"
                } else {
                    "no hardware"
                })
            })
            .collect();
        let by = |groups: Option<Vec<&str>>| {
            groups
                .map(|g| by_subgroup_ranked(&labels, &scores, &logits, &g, self.threshold))
                .transpose()
        };
        Ok((by(parts)?, by(hardware)?))
    }
}
