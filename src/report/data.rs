//! What the report shows, as data: [`ReportData`] is written as `metrics.json` beside the
//! page, and every number on the page is read from it (by JSON pointer), so the two cannot
//! disagree.

use super::gallery::GalleryImage;
use crate::augment::TtaConfig;
use crate::classifier::{Evaluation, FractureClassifier, PreprocessSpec};
use crate::dataset::{LoadReport, Split};
use crate::metrics::ConfusionMatrix;
use crate::model::HeadConfig;
use crate::train::{History, TrainConfig};
use serde::Serialize;

/// Where the model and its weights come from (the report's provenance section).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelInfo {
    /// Version of `fracture` that wrote the report.
    pub crate_version: String,
    /// The backbone's architecture and shape.
    pub backbone: String,
    /// Trainable and frozen numbers in the backbone.
    pub backbone_parameters: usize,
    /// The head's shape.
    pub head: HeadConfig,
    /// Input size, resize filter and normalization.
    pub preprocess: PreprocessSpec,
    /// Decision threshold on the fracture probability.
    pub threshold: f64,
    /// Temperature of the probabilities (`1 / slope` of the calibration map).
    pub temperature: f64,
    /// The calibration: method, map and where it came from.
    pub calibration: crate::classifier::Calibration,
    /// Test-time augmentation in use.
    pub tta: TtaConfig,
    /// Where the initial weights came from (`random(seed 42)`, a file, a hub repository).
    pub initial_weights: Option<String>,
    /// How the model was trained.
    pub training: Option<TrainConfig>,
    /// The bundle folder, when the report was made from a saved bundle.
    pub bundle: Option<String>,
    /// SHA-256 of the bundle's `model.safetensors`, when known.
    pub weights_sha256: Option<String>,
}

impl ModelInfo {
    /// What a classifier says about itself.
    pub fn of(classifier: &FractureClassifier) -> Self {
        let backbone = classifier.backbone_config();
        Self {
            crate_version: env!("CARGO_PKG_VERSION").into(),
            backbone: backbone.describe(),
            backbone_parameters: backbone.parameter_count(),
            head: classifier.head_config().clone(),
            preprocess: PreprocessSpec::from(classifier.preprocess()),
            threshold: classifier.threshold(),
            temperature: classifier.temperature(),
            calibration: classifier.calibration().clone(),
            tta: classifier.tta().clone(),
            initial_weights: classifier.initial_weights().map(str::to_string),
            training: classifier.train_config().cloned(),
            bundle: None,
            weights_sha256: None,
        }
    }

    /// Whether training started from random weights (no pretraining).
    pub fn trained_from_scratch(&self) -> bool {
        self.initial_weights
            .as_deref()
            .is_some_and(|w| w.starts_with("random"))
    }
}

/// The data the model was trained and evaluated on (the model card's data section).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DataSource {
    /// Name and origin, e.g. "FracAtlas (Abedeen et al., Scientific Data 2023, CC-BY 4.0)".
    pub name: String,
    /// Facts about the data a reader must know (quirks, possible shortcuts), in plain words.
    pub notes: Vec<String>,
    /// What was left out when the data set was opened: (what, how many).
    pub excluded: Vec<(String, usize)>,
}

impl DataSource {
    /// A data source with a name and nothing else known.
    pub fn named(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }

    /// FracAtlas, with the facts about it that change how its results read.
    ///
    /// ```
    /// let source = fracture::report::DataSource::fracatlas();
    /// assert!(source.name.contains("FracAtlas") && !source.notes.is_empty());
    /// ```
    pub fn fracatlas() -> Self {
        Self {
            name: "FracAtlas (Abedeen et al., Scientific Data 10, 521, 2023; CC-BY 4.0): \
                   4083 musculoskeletal radiographs of hand, leg, hip and shoulder"
                .into(),
            notes: vec![
                "All images come from the one FracAtlas collection; the model has not been \
                 validated on radiographs from other hospitals, scanners or populations."
                    .into(),
                "FracAtlas has no patient identifiers, so the split is by image (byte-identical \
                 copies kept together): images of one patient may sit in both training and test \
                 parts; a patient-level split is not possible."
                    .into(),
                "97 of the 99 images with surgical hardware are fractured, and very large scans \
                 are twice as common among fractured images: shortcuts a model can learn instead \
                 of the fracture."
                    .into(),
            ],
            excluded: Vec::new(),
        }
    }

    /// Synthetic radiographs ([`crate::dataset::synthetic`]): no patient, no clinical meaning.
    ///
    /// ```
    /// let source = fracture::report::DataSource::synthetic();
    /// assert!(source.name.contains("synthetic"));
    /// ```
    pub fn synthetic() -> Self {
        Self {
            name: "synthetic radiographs generated by fracture::dataset::synthetic".into(),
            notes: vec![
                "The images are synthetic (drawn bones with drawn fractures): these numbers show                  that the pipeline works, not how the model would do on real radiographs."
                    .into(),
            ],
            excluded: Vec::new(),
        }
    }

    /// Record what opening the data set left out or noticed.
    pub fn with_load_report(mut self, report: &LoadReport) -> Self {
        self.excluded = vec![
            ("unreadable files skipped".into(), report.unreadable.len()),
            (
                "truncated JPEGs kept (decoded leniently)".into(),
                report.truncated.len(),
            ),
            (
                "CSV labels that disagree with the folder (folder kept)".into(),
                report.label_disagreements.len(),
            ),
            (
                "images without metadata".into(),
                report.missing_metadata.len(),
            ),
            (
                "metadata rows without an image".into(),
                report.orphan_rows.len(),
            ),
            ("other files ignored".into(), report.ignored.len()),
        ];
        self
    }
}

/// Images per class in one part of the split.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PartCounts {
    /// `train`, `val` or `test`.
    pub part: String,
    /// Images in the part.
    pub images: usize,
    /// Fractured images.
    pub fractured: usize,
    /// Not-fractured images.
    pub not_fractured: usize,
}

/// The split as the report shows it.
pub(super) fn part_counts(split: &Split) -> Vec<PartCounts> {
    split
        .summary()
        .iter()
        .map(|s| PartCounts {
            part: s.name.to_string(),
            images: s.counts.total(),
            fractured: s.counts.fractured,
            not_fractured: s.counts.not_fractured,
        })
        .collect()
}

/// The headline's counts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    /// Evaluated images.
    pub cases: usize,
    /// Fractured images among them.
    pub fractured: usize,
    /// Not-fractured images among them.
    pub not_fractured: usize,
    /// Fraction fractured.
    pub prevalence: f64,
    /// Unreadable images left out of the evaluation.
    pub skipped: usize,
    /// Positive predictive value at the threshold (`None`: no case called fractured).
    pub ppv: Option<f64>,
    /// Negative predictive value at the threshold (`None`: no case called not fractured).
    pub npv: Option<f64>,
}

/// Sensitivity, specificity and predictive values at one threshold (`None` where undefined).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SweepPoint {
    /// Threshold on the fracture probability.
    pub threshold: f64,
    /// Fraction of fractures found.
    pub sensitivity: Option<f64>,
    /// Fraction of not-fractured cases cleared.
    pub specificity: Option<f64>,
    /// Positive predictive value (precision).
    pub ppv: Option<f64>,
    /// Negative predictive value.
    pub npv: Option<f64>,
}

/// Thresholds of the sweep: 0, 0.01, ..., 1.
pub(super) const SWEEP_STEPS: usize = 100;

fn sweep(labels: &[bool], scores: &[f64]) -> crate::Result<Vec<SweepPoint>> {
    (0..=SWEEP_STEPS)
        .map(|k| {
            let threshold = k as f64 / SWEEP_STEPS as f64;
            let cm = ConfusionMatrix::from_scores(labels, scores, threshold)?;
            Ok(SweepPoint {
                threshold,
                sensitivity: cm.sensitivity().value(),
                specificity: cm.specificity().value(),
                ppv: cm.precision().value(),
                npv: cm.negative_predictive_value().value(),
            })
        })
        .collect()
}

/// One gallery picture as `metrics.json` lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GalleryEntry {
    /// False negative, false positive or true positive.
    pub kind: String,
    /// The image's path as the report stores it: relative to the data root, or its salted
    /// hash ([`crate::FractureClassifier::set_path_form`]).
    pub file: String,
    /// The true label.
    pub fractured: bool,
    /// The calibrated fracture probability.
    pub probability: f64,
    /// Whether an explanation overlay is shown.
    pub overlay: bool,
    /// Annotation boxes drawn.
    pub boxes: usize,
}

/// Everything the report shows: written as `metrics.json`.
#[derive(Debug, Clone, Serialize)]
pub struct ReportData<'a> {
    /// Page title.
    pub title: String,
    /// The headline's counts.
    pub summary: Summary,
    /// The evaluation itself (metrics, intervals, calibration, TTA, subgroups, cases).
    pub evaluation: &'a Evaluation,
    /// Sensitivity, specificity, PPV and NPV at thresholds 0, 0.01, ..., 1.
    pub threshold_sweep: Vec<SweepPoint>,
    /// Model and weights provenance.
    pub model: ModelInfo,
    /// The data source.
    pub data_source: DataSource,
    /// The split the model was trained on, when known.
    pub split: Option<Vec<PartCounts>>,
    /// The training history, when known.
    pub history: Option<&'a History>,
    /// The gallery's pictures.
    pub gallery: Vec<GalleryEntry>,
    /// Limitations in plain words (the model card's last item).
    pub limitations: Vec<String>,
}

impl<'a> ReportData<'a> {
    /// Collect the report's data (the sweep is computed here).
    pub(super) fn new(
        report: &'a super::Report<'a>,
        gallery: &[GalleryImage],
    ) -> crate::Result<Self> {
        let evaluation = report.evaluation;
        let (labels, scores) = evaluation.labels_and_probabilities();
        let fractured = labels.iter().filter(|&&l| l).count();
        let cases = labels.len();
        Ok(Self {
            title: report.title.clone(),
            summary: Summary {
                cases,
                fractured,
                not_fractured: cases - fractured,
                prevalence: if cases == 0 {
                    0.0
                } else {
                    fractured as f64 / cases as f64
                },
                skipped: evaluation.skipped.len(),
                ppv: evaluation.at_threshold.confusion.precision().value(),
                npv: evaluation
                    .at_threshold
                    .confusion
                    .negative_predictive_value()
                    .value(),
            },
            evaluation,
            threshold_sweep: if cases == 0 {
                Vec::new()
            } else {
                sweep(&labels, &scores)?
            },
            model: report.model.clone(),
            data_source: report.data_source.clone(),
            split: report.split.clone(),
            history: report.history.as_ref(),
            gallery: gallery
                .iter()
                .map(|g| GalleryEntry {
                    kind: g.kind.name().into(),
                    file: report.path_form.store(&report.data_root, &g.path),
                    fractured: g.fractured,
                    probability: g.probability,
                    overlay: g.overlay.is_some(),
                    boxes: g.boxes.len(),
                })
                .collect(),
            limitations: super::model_card::limitations(report),
        })
    }
}
