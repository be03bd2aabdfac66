//! What the report shows, as data: [`ReportData`] is written as `metrics.json` beside the
//! page, and every number on the page is read from it (by JSON pointer), so the two cannot
//! disagree.

use super::gallery::GalleryImage;
use super::localization::LocalizationData;
use crate::augment::TtaConfig;
use crate::classifier::{
    Evaluation, FractureClassifier, PreprocessSpec, SplitOrigin, ThresholdSource,
};
use crate::dataset::{LoadReport, Split};
use crate::metrics::{ConfusionMatrix, ThresholdRule};
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
    /// Where the threshold came from (`None`: a bundle written before this was recorded).
    pub threshold_source: Option<ThresholdSource>,
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
            threshold_source: classifier.threshold_source(),
            temperature: classifier.temperature(),
            calibration: classifier.calibration().clone(),
            tta: classifier.tta().clone(),
            initial_weights: classifier.initial_weights().map(str::to_string),
            training: classifier.train_config().cloned(),
            bundle: None,
            weights_sha256: None,
        }
    }

    /// Whether fracture trained the model starting from random weights (no pretraining).
    pub fn trained_from_scratch(&self) -> bool {
        self.training.is_some() && self.random_initial_weights()
    }

    /// Whether the initial weights were seeded random ones.
    fn random_initial_weights(&self) -> bool {
        self.initial_weights
            .as_deref()
            .is_some_and(|w| w.starts_with("random"))
    }

    /// One sentence on where the weights come from, from what the classifier recorded: its
    /// initial weights and whether fracture trained it.
    pub fn weights_sentence(&self) -> String {
        let initial = self.initial_weights.as_deref();
        match (&self.training, initial) {
            (Some(_), Some(w)) => format!(
                "Trained by fracture from the initial weights {w} (training configuration under \
                 provenance)."
            ),
            (Some(_), None) => "Trained by fracture; the initial weights are not recorded (a \
                                bundle written before fracture recorded them)."
                .into(),
            (None, Some(w)) if self.random_initial_weights() => format!(
                "Untrained: the weights are seeded random ones ({w}) and were never trained, so \
                 the model's answers are chance."
            ),
            (None, Some(w)) => format!(
                "Weights {w}; not trained by fracture, so how they were trained is not recorded \
                 here."
            ),
            (None, None) => "The origin of the weights is not recorded, and no training by \
                             fracture is recorded."
                .into(),
        }
    }

    /// One sentence on where the decision threshold comes from, from its recorded source.
    pub fn threshold_sentence(&self) -> String {
        let t = self.threshold;
        match self.threshold_source {
            Some(ThresholdSource::Default) => format!(
                "Threshold {t:.3}: the default (the reference notebook's), never chosen on data."
            ),
            Some(ThresholdSource::Validation { rule: Some(rule) }) => {
                let how = match rule {
                    ThresholdRule::Youden => "by Youden's J: the highest sensitivity + \
                                              specificity − 1 there"
                        .to_string(),
                    ThresholdRule::TargetSensitivity(target) => format!(
                        "for a target sensitivity of {target}: the highest threshold whose \
                         sensitivity reaches it there"
                    ),
                    ThresholdRule::TargetSpecificity(target) => format!(
                        "for a target specificity of {target}: the threshold of highest \
                         sensitivity whose specificity reaches it there"
                    ),
                };
                format!("Threshold {t:.3}: chosen on the validation part {how}.")
            }
            Some(ThresholdSource::Validation { rule: None }) => format!(
                "Threshold {t:.3}: chosen on the validation part (the rule used is not recorded)."
            ),
            Some(ThresholdSource::Manual) => {
                format!("Threshold {t:.3}: set by hand, not chosen on data by fracture.")
            }
            None => format!(
                "Threshold {t:.3}: where it came from is not recorded (a bundle written before \
                 fracture recorded it)."
            ),
        }
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

/// The evaluation must have been made by the classifier as the report describes it: at its
/// threshold, its temperature and its test-time augmentation. Otherwise the page would pair
/// one model's description with another's numbers; the error names the field.
fn check_consistent(evaluation: &Evaluation, model: &ModelInfo) -> crate::Result<()> {
    let differ = |field: &str, evaluated: String, classifier: String| {
        Err(crate::Error::InvalidInput(format!(
            "report: the evaluation's {field} ({evaluated}) is not the classifier's ({classifier}); \
             evaluate again with the classifier as it is now"
        )))
    };
    let threshold = evaluation.at_threshold.threshold;
    if threshold.to_bits() != model.threshold.to_bits() {
        return differ(
            "threshold",
            threshold.to_string(),
            model.threshold.to_string(),
        );
    }
    if evaluation.temperature.to_bits() != model.temperature.to_bits() {
        return differ(
            "temperature",
            evaluation.temperature.to_string(),
            model.temperature.to_string(),
        );
    }
    let evaluated = evaluation.tta.as_ref().map(|t| &t.config);
    let current = model.tta.is_enabled().then_some(&model.tta);
    if evaluated != current {
        let describe = |c: Option<&TtaConfig>| c.map_or_else(|| "off".into(), TtaConfig::describe);
        return differ(
            "test-time augmentation",
            describe(evaluated),
            describe(current),
        );
    }
    Ok(())
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

/// What the evaluated images are, from the split origin [`FractureClassifier::evaluate`]
/// checked: never "held out" unless that was checked.
///
/// [`FractureClassifier::evaluate`]: crate::FractureClassifier::evaluate
pub(super) fn split_origin_sentence(part: &str, origin: SplitOrigin) -> String {
    match origin {
        SplitOrigin::Recorded {
            seen_in_training: 0,
        } if part == "test" => "Evaluated on the test part of the split recorded with the model: \
             images held out from training and validation (checked by content), but from the \
             same data set, not from another site: internal validation only."
            .into(),
        SplitOrigin::Recorded { seen_in_training } if part == "test" => format!(
            "Evaluated on the test part of the split recorded with the model, but \
             {seen_in_training} of its images are, by content, also in the training or \
             validation part: these numbers are optimistic."
        ),
        SplitOrigin::Recorded { .. } => format!(
            "Evaluated on the {part} part of the split recorded with the model, which is not \
             held out: the model was trained or validated on these images, so these numbers are \
             optimistic."
        ),
        SplitOrigin::Other {
            seen_in_training: 0,
        } => format!(
            "Evaluated on images that are not the {part} part of the split recorded with the \
             model; none of them is, by content, in its training or validation part."
        ),
        SplitOrigin::Other { seen_in_training } => format!(
            "Evaluated on images that are not the {part} part of the split recorded with the \
             model, and {seen_in_training} of them are, by content, in its training or \
             validation part: these numbers are optimistic, not a held-out measurement."
        ),
        SplitOrigin::Unrecorded => "The model holds no record of the images it was trained on \
             (for example a Keras import): whether the evaluated images were held out from its \
             training is unknown, so these numbers may be optimistic."
            .into(),
    }
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
    /// How many contents (by hash) of that split lie in more than one part (0 for every split
    /// the crate makes; a manifest edited by hand may differ), when the split is known.
    pub split_copies_across_parts: Option<usize>,
    /// The training history, when known.
    pub history: Option<&'a History>,
    /// The gallery's pictures.
    pub gallery: Vec<GalleryEntry>,
    /// Where the explanation maps land on the annotated fractures, when scored.
    pub localization: Option<LocalizationData<'a>>,
    /// How the probability moved under each perturbation of the pictures, when measured.
    pub robustness: Option<RobustnessData<'a>>,
    /// Limitations in plain words (the model card's last item).
    pub limitations: Vec<String>,
}

impl<'a> ReportData<'a> {
    /// Collect the report's data (the sweep is computed here); `limitations` are the model
    /// card's (`model_card::limitations`, which reads this module: the caller joins them).
    pub(super) fn new(
        report: &'a super::Report<'a>,
        gallery: &[GalleryImage],
        limitations: Vec<String>,
    ) -> crate::Result<Self> {
        let evaluation = report.evaluation;
        check_consistent(evaluation, &report.model)?;
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
            split_copies_across_parts: report.split_copies_across_parts,
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
            localization: report.localization.map(LocalizationData::of),
            robustness: report
                .robustness
                .map(|r| RobustnessData::of(r, evaluation))
                .transpose()?,
            limitations,
        })
    }
}

/// The robustness figures the model card shows: the summaries, not the images.
#[derive(Debug, Clone, Serialize)]
pub struct RobustnessData<'a> {
    /// The noise seed.
    pub seed: u64,
    /// Images measured.
    pub images: usize,
    /// One row per perturbation.
    pub perturbations: &'a [crate::robustness::PerturbationSummary],
}

impl<'a> RobustnessData<'a> {
    /// The summaries of `report`, which must be of the evaluated part at the evaluation's
    /// threshold (an error names the difference).
    fn of(
        report: &'a crate::robustness::RobustnessReport,
        evaluation: &Evaluation,
    ) -> crate::Result<Self> {
        if report.part != evaluation.part || report.threshold != evaluation.at_threshold.threshold {
            return Err(crate::Error::InvalidInput(format!(
                "the robustness figures are of the {} part at threshold {}, the evaluation of the {} part at threshold {}",
                report.part, report.threshold, evaluation.part, evaluation.at_threshold.threshold
            )));
        }
        Ok(Self {
            seed: report.seed,
            images: report.cases.len(),
            perturbations: &report.perturbations,
        })
    }
}
