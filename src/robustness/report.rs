//! [`RobustnessReport`]: per perturbation, how far the fracture probabilities moved and how
//! many decisions flipped; a table as `Display`, JSON through serde.

use super::Perturbation;
use crate::error::{Error, Result};
use crate::metrics::{predicts_fracture, quantile};
use serde::Serialize;
use std::fmt;

/// One image of a robustness run: its probability as read and under each perturbation.
///
/// ```
/// use fracture::robustness::RobustnessCase;
/// let case = RobustnessCase { file: "a.jpg".into(), fractured: true, probability: 0.7, perturbed: vec![0.75] };
/// assert_eq!(case.changes(), vec![0.75 - 0.7]);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RobustnessCase {
    /// The image file, in the classifier's path form (relative to the data root, or a salted
    /// hash: [`crate::FractureClassifier::set_path_form`]).
    pub file: String,
    /// The true label: `true` = fractured.
    pub fractured: bool,
    /// The fracture probability of the picture as read.
    pub probability: f64,
    /// The fracture probability under each perturbation, in the report's order.
    pub perturbed: Vec<f64>,
}

impl RobustnessCase {
    /// The signed change of the probability under each perturbation (perturbed minus as read).
    ///
    /// ```
    /// use fracture::robustness::RobustnessCase;
    /// let case = RobustnessCase { file: "a.jpg".into(), fractured: false, probability: 0.5, perturbed: vec![0.25, 0.5] };
    /// assert_eq!(case.changes(), vec![-0.25, 0.0]);
    /// ```
    pub fn changes(&self) -> Vec<f64> {
        self.perturbed
            .iter()
            .map(|p| p - self.probability)
            .collect()
    }
}

/// How one perturbation moved the probabilities of a part's images.
///
/// ```
/// use fracture::robustness::{PerturbationSummary, RobustnessCase};
/// let cases: Vec<RobustnessCase> = [(0.2, 0.3), (0.6, 0.4), (0.5, 0.5)]
///     .into_iter()
///     .map(|(p, q)| RobustnessCase { file: "x".into(), fractured: true, probability: p, perturbed: vec![q] })
///     .collect();
/// let s = PerturbationSummary::of("example", &cases, 0, 0.5)?;
/// assert_eq!((s.images, s.flipped), (3, 1)); // 0.6 -> 0.4 crosses 0.5
/// assert!((s.max_change - 0.2).abs() < 1e-12 && (s.median_change - 0.1).abs() < 1e-12);
/// # Ok::<(), fracture::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PerturbationSummary {
    /// The perturbation ([`Perturbation::describe`]).
    pub perturbation: String,
    /// Images measured.
    pub images: usize,
    /// Median absolute change of the fracture probability.
    pub median_change: f64,
    /// 95th percentile of the absolute change (linear interpolation between order statistics).
    pub p95_change: f64,
    /// Largest absolute change.
    pub max_change: f64,
    /// Images whose decision at the threshold changed.
    pub flipped: usize,
    /// `flipped / images`.
    pub flipped_share: f64,
}

impl PerturbationSummary {
    /// The summary of perturbation number `index` of `cases` at `threshold` (a picture is
    /// called fractured when its probability reaches the threshold). An error for no cases, a
    /// case without that perturbation, or a NaN probability.
    pub fn of(name: &str, cases: &[RobustnessCase], index: usize, threshold: f64) -> Result<Self> {
        if cases.is_empty() {
            return Err(Error::InvalidInput(format!(
                "no image to measure the robustness to {name} on"
            )));
        }
        let mut changes = Vec::with_capacity(cases.len());
        let mut flipped = 0;
        for case in cases {
            let perturbed = *case.perturbed.get(index).ok_or_else(|| {
                Error::Internal(format!("{}: no probability under {name}", case.file))
            })?;
            let before = predicts_fracture(case.probability, threshold)?;
            let after = predicts_fracture(perturbed, threshold)
                .map_err(|e| Error::InvalidInput(format!("{} under {name}: {e}", case.file)))?;
            flipped += usize::from(before != after);
            changes.push((perturbed - case.probability).abs());
        }
        changes.sort_by(f64::total_cmp);
        let at = |q: f64| quantile(&changes, q).unwrap_or(f64::NAN);
        Ok(Self {
            perturbation: name.to_string(),
            images: cases.len(),
            median_change: at(0.5),
            p95_change: at(0.95),
            max_change: at(1.0),
            flipped,
            flipped_share: flipped as f64 / cases.len() as f64,
        })
    }
}

/// What [`crate::FractureClassifier::robustness`] measured on a dataset part.
///
/// ```
/// use fracture::dataset::{synthetic::SyntheticConfig, FracAtlas, SplitConfig};
/// use fracture::robustness::Perturbation;
/// let dir = tempfile::tempdir()?;
/// SyntheticConfig { n_fractured: 3, n_not_fractured: 3, ..Default::default() }.generate_to(dir.path())?;
/// let split = FracAtlas::open(dir.path())?.split(&SplitConfig::default())?;
/// let clf = fracture::FractureClassifier::builder()
///     .backbone(fracture::model::ResNetV2Config::custom(vec![2, 2], vec![4, 8]))
///     .weights(fracture::WeightsSource::Random { seed: 0 })
///     .device(fracture::device::DeviceRequest::Cpu)
///     .image_size(32, 32)
///     .build()?;
/// let report = clf.robustness(&split.test, &[Perturbation::Identity], 7)?;
/// assert_eq!(report.summary(&Perturbation::Identity).unwrap().max_change, 0.0);
/// println!("{report}");
/// let json = serde_json::to_value(&report)?;
/// assert_eq!(json["perturbations"][0]["perturbation"], "identity");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RobustnessReport {
    /// The part measured: `train`, `val` or `test`.
    pub part: String,
    /// The seed of the noise.
    pub seed: u64,
    /// The classifier's threshold, at which decisions are compared.
    pub threshold: f64,
    /// One summary per perturbation, in the order asked for.
    pub perturbations: Vec<PerturbationSummary>,
    /// Every measured image, in part order.
    pub cases: Vec<RobustnessCase>,
    /// Images that could not be read (file in the classifier's path form, and why).
    pub skipped: Vec<(String, String)>,
    /// How `cases` and `skipped` write image files ([`crate::dataset::stored_path`]).
    pub path_form: String,
}

impl RobustnessReport {
    /// The report of `cases` (each with a probability per perturbation of `perturbations`).
    pub(crate) fn new(
        part: String,
        seed: u64,
        threshold: f64,
        perturbations: &[Perturbation],
        cases: Vec<RobustnessCase>,
        skipped: Vec<(String, String)>,
        path_form: String,
    ) -> Result<Self> {
        let summaries = perturbations
            .iter()
            .enumerate()
            .map(|(i, p)| PerturbationSummary::of(&p.describe(), &cases, i, threshold))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            part,
            seed,
            threshold,
            perturbations: summaries,
            cases,
            skipped,
            path_form,
        })
    }

    /// The summary of `perturbation`, if it was measured.
    pub fn summary(&self, perturbation: &Perturbation) -> Option<&PerturbationSummary> {
        let name = perturbation.describe();
        self.perturbations.iter().find(|s| s.perturbation == name)
    }
}

impl fmt::Display for RobustnessReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let images = self.cases.len();
        writeln!(
            f,
            "robustness on the {} part: {images} images ({} unreadable), noise seed {}, \
             decisions at threshold {:.4}",
            self.part,
            self.skipped.len(),
            self.seed,
            self.threshold
        )?;
        writeln!(
            f,
            "{:<42} {:>8} {:>8} {:>8} {:>16}",
            "perturbation", "median", "p95", "max", "flipped"
        )?;
        writeln!(
            f,
            "{:<42} {:>8} {:>8} {:>8} {:>16}",
            "", "|Δp|", "|Δp|", "|Δp|", ""
        )?;
        for s in &self.perturbations {
            writeln!(
                f,
                "{:<42} {:>8.4} {:>8.4} {:>8.4} {:>16}",
                s.perturbation,
                s.median_change,
                s.p95_change,
                s.max_change,
                format!("{} ({:.2} %)", s.flipped, 100.0 * s.flipped_share)
            )?;
        }
        Ok(())
    }
}
