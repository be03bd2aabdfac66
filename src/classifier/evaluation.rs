//! Measuring a [`FractureClassifier`] on a dataset part: [`Evaluation`] (metrics at the
//! chosen threshold and at 0.5, bootstrap intervals, subgroups, unreadable files) and the
//! threshold choice on the validation part.

use super::FractureClassifier;
use crate::batch::{check_pass, BatchSource};
use crate::dataset::loader::ImageLoader;
use crate::dataset::Part;
use crate::error::Result;
use crate::metrics::{
    bootstrap_ci, by_subgroup, choose_threshold, BinaryMetrics, BootstrapConfig,
    BootstrapIntervals, SubgroupMetrics, ThresholdRule,
};
use crate::progress::Progress;
use std::fmt;
use std::path::PathBuf;

/// What scoring one dataset part gives: per readable image its label (`true` = fractured),
/// fracture probability and index in the part, and the loader (for its skipped files).
struct ScoredPart {
    labels: Vec<bool>,
    scores: Vec<f64>,
    indices: Vec<usize>,
    loader: ImageLoader,
}

/// What [`FractureClassifier::evaluate`] measured on one dataset part.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Evaluation {
    /// Metrics at the classifier's threshold.
    pub at_threshold: BinaryMetrics,
    /// Metrics at 0.5, the reference notebook's implicit threshold (for comparison).
    pub at_half: BinaryMetrics,
    /// Seeded bootstrap intervals (AUC, sensitivity, specificity) at the classifier's threshold.
    pub intervals: BootstrapIntervals,
    /// The same intervals at threshold 0.5.
    pub intervals_at_half: BootstrapIntervals,
    /// Metrics per body part, when the samples carry metadata.
    pub by_body_part: Option<SubgroupMetrics>,
    /// Metrics by visible surgical hardware, when the samples carry metadata.
    pub by_hardware: Option<SubgroupMetrics>,
    /// Images that could not be read (path and reason).
    pub skipped: Vec<(PathBuf, String)>,
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
            writeln!(f, "== at threshold 0.5 (the reference notebook's)")?;
            writeln!(f, "{}", self.at_half)?;
            writeln!(f, "{}", self.intervals_at_half)?;
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
    /// Fracture probabilities and labels of every readable image of `part`.
    fn score_part(&self, part: &Part) -> Result<ScoredPart> {
        let loader = self.loader(part, 16, false, 0)?;
        let (mut labels, mut scores, mut indices) = (Vec::new(), Vec::new(), Vec::new());
        let pass = format!("scoring the {} part", part.name);
        let progress = Progress::items(&pass, part.len() as u64);
        for batch in loader.batches(0)? {
            let batch = batch?;
            let probabilities: Vec<f32> = self.probabilities(&batch.images)?.to_vec1()?;
            scores.extend(probabilities.into_iter().map(f64::from));
            labels.extend(batch.labels.to_vec1::<f32>()?.into_iter().map(|y| y > 0.5));
            progress.inc(batch.indices.len() as u64);
            indices.extend(batch.indices);
        }
        check_pass(&loader, 0, indices.len(), &pass)?;
        progress.finish_quietly();
        Ok(ScoredPart {
            labels,
            scores,
            indices,
            loader,
        })
    }

    /// True labels (`true` = fractured) and fracture probabilities of every readable image of
    /// `part`, in part order (for curves and custom metrics).
    pub fn scores(&self, part: &Part) -> Result<(Vec<bool>, Vec<f64>)> {
        let scored = self.score_part(part)?;
        Ok((scored.labels, scored.scores))
    }

    /// Set the threshold from `part` (normally the validation part) by `rule`; returns the
    /// chosen threshold, or `None` (threshold unchanged) when the rule is undefined there.
    pub fn choose_threshold(&mut self, part: &Part, rule: ThresholdRule) -> Result<Option<f64>> {
        let ScoredPart { labels, scores, .. } = self.score_part(part)?;
        let chosen = choose_threshold(&labels, &scores, rule)?
            .value()
            .map(|point| point.threshold.clamp(0.0, 1.0));
        if let Some(threshold) = chosen {
            self.threshold = threshold;
            self.threshold_source = Some(super::ThresholdSource::Validation);
        }
        Ok(chosen)
    }

    /// Measure the classifier on one dataset part: metrics at its threshold and at 0.5,
    /// bootstrap intervals (1000 resamples, seed 42) and, when metadata is present, metrics per
    /// body part and by visible hardware.
    pub fn evaluate(&mut self, part: &Part) -> Result<Evaluation> {
        let ScoredPart {
            labels,
            scores,
            indices,
            loader,
        } = self.score_part(part)?;
        let at_threshold = BinaryMetrics::compute(&labels, &scores, self.threshold)?;
        let at_half = BinaryMetrics::compute(&labels, &scores, 0.5)?;
        let intervals = bootstrap_ci(&labels, &scores, self.threshold, BootstrapConfig::default())?;
        let intervals_at_half = bootstrap_ci(&labels, &scores, 0.5, BootstrapConfig::default())?;
        let samples = loader.samples();
        let metadata: Option<Vec<_>> = indices
            .iter()
            .map(|&i| samples.get(i).and_then(|s| s.metadata.clone()))
            .collect();
        let (by_body_part, by_hardware) = match metadata {
            Some(meta) if !meta.is_empty() => {
                let parts: Vec<String> = meta.iter().map(|m| m.body_part.to_string()).collect();
                let hardware: Vec<&str> = meta
                    .iter()
                    .map(|m| {
                        if m.hardware {
                            "hardware"
                        } else {
                            "no hardware"
                        }
                    })
                    .collect();
                (
                    Some(by_subgroup(&labels, &scores, &parts, self.threshold)?),
                    Some(by_subgroup(&labels, &scores, &hardware, self.threshold)?),
                )
            }
            _ => (None, None),
        };
        let skipped = loader
            .skipped()
            .into_iter()
            .map(|s| (s.path, s.reason))
            .collect();
        let evaluation = Evaluation {
            at_threshold,
            at_half,
            intervals,
            intervals_at_half,
            by_body_part,
            by_hardware,
            skipped,
        };
        self.evaluation = serde_json::to_value(&evaluation).ok();
        Ok(evaluation)
    }
}
