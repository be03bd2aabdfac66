//! [`TrainConfig`]: everything that decides how a model is trained, with the reference
//! notebook's choices as defaults. Written as `config.json` next to every checkpoint.

use super::stage_cache::StageCacheConfig;
use crate::error::{Error, Result};
use crate::metrics::ThresholdRule;
use crate::model::HeadConfig;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// How a training run is set up.
///
/// The defaults are the reference notebook's: 25 epochs, batch 32, Adam with learning rate
/// 1e-4, a 256-unit head with dropout 0.5, a frozen backbone, augmentation on, and the best
/// checkpoint chosen by validation loss.
///
/// ```
/// use fracture::train::{BackboneTraining, LrSchedule, TrainConfig};
/// let config = TrainConfig::default();
/// assert_eq!((config.epochs, config.batch_size), (25, 32));
/// assert_eq!(config.learning_rate, 1e-4);
/// assert_eq!(config.backbone, BackboneTraining::Frozen);
/// assert_eq!(config.schedule, LrSchedule::Constant);
/// assert!(config.augment && config.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainConfig {
    /// Number of passes over the training set (Keras `epochs`).
    pub epochs: usize,
    /// Samples per batch. The loader cuts the batches; the trainer records this value and
    /// loaders built from the config use it.
    pub batch_size: usize,
    /// Learning rate of the head (and of the backbone unless fine-tuning sets its own).
    pub learning_rate: f64,
    /// Adam's moment decay rates and epsilon.
    pub adam: AdamConfig,
    /// Width and dropout of the classification head.
    pub head: HeadConfig,
    /// Which part of the backbone is trained.
    pub backbone: BackboneTraining,
    /// Start the head from the classifier's current head instead of a fresh initialization:
    /// the second phase of transfer learning (train the head on a frozen backbone, then
    /// fine-tune the backbone under that head at a lower learning rate). The head must have
    /// the shape `head` says. [`FractureClassifier::train`](crate::FractureClassifier::train)
    /// honours it; a bare [`Trainer`](crate::train::Trainer) takes the head with
    /// [`Trainer::set_head`](crate::train::Trainer::set_head).
    pub keep_head: bool,
    /// Whether the training loader augments images. When off and the backbone is frozen, the
    /// trainer computes backbone features once and reuses them in every epoch.
    pub augment: bool,
    /// Per-class loss weights (Keras `class_weight`); `None` weighs every sample 1.
    pub class_weights: Option<ClassWeights>,
    /// Stop when the validation loss has not improved for a while; `None` never stops early.
    pub early_stopping: Option<EarlyStopping>,
    /// How the learning rate changes from epoch to epoch.
    pub schedule: LrSchedule,
    /// After the last epoch, put the weights of the best epoch (lowest validation loss) back
    /// into the model, as evaluating "the best checkpoint" expects.
    pub restore_best_weights: bool,
    /// Seed of the head's initial weights and of the dropout masks (epoch `e` draws from
    /// `(seed, e)` only, so a resumed run repeats an uninterrupted one).
    pub seed: u64,
    /// Report progress on stderr: a bar with the live loss on a terminal, otherwise (a log
    /// file) one line per epoch with losses, accuracies, validation AUC, time and ETA.
    pub progress: bool,
    /// A split manifest (CSV) copied into every checkpoint as `split.csv`, so a checkpoint
    /// says which images it was trained and validated on.
    pub split_manifest: Option<PathBuf>,
    /// How [`FractureClassifier::train`](crate::FractureClassifier::train) chooses the
    /// decision threshold on the validation part after training (Youden's J by default, or a
    /// target sensitivity or specificity); the bundle records it as the threshold's source.
    pub threshold_rule: ThresholdRule,
    /// Cache the output of the frozen stages on disk and train the last stages on it
    /// ([`StageCache`](crate::train::StageCache)); needs [`BackboneTraining::LastStages`]. The
    /// cache's views (the picture and its mirror) take the place of `augment`.
    /// [`FractureClassifier::train`](crate::FractureClassifier::train) builds the caches; a
    /// bare [`Trainer`](crate::train::Trainer) reads them from
    /// [`CachedSource`](crate::train::CachedSource)s.
    pub stage_cache: Option<StageCacheConfig>,
    /// Train the head's localization map from the fracture boxes (needs
    /// `head.localization` and batches with targets: a `stage_cache` and annotations).
    pub box_supervision: Option<BoxSupervision>,
}

/// How the localization map learns from the boxes: per-cell binary cross-entropy, cells
/// overlapping a grown box positive, every other cell (and every cell of an image without
/// fracture) negative; its weight in the loss beside the classification's.
///
/// ```
/// let b = fracture::train::BoxSupervision::default();
/// assert_eq!((b.weight, b.positive_weight, b.grow), (1.0, 10.0, 0.1));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BoxSupervision {
    /// Weight of the localization loss in the total loss.
    pub weight: f64,
    /// Weight of a positive cell relative to a negative one (boxes cover few cells).
    pub positive_weight: f64,
    /// Each side of a box grown by this share of its size.
    pub grow: f64,
}

impl Default for BoxSupervision {
    fn default() -> Self {
        Self {
            weight: 1.0,
            positive_weight: 10.0,
            grow: 0.1,
        }
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 25,
            batch_size: 32,
            learning_rate: 1e-4,
            adam: AdamConfig::default(),
            head: HeadConfig::default(),
            backbone: BackboneTraining::Frozen,
            keep_head: false,
            augment: true,
            class_weights: None,
            early_stopping: None,
            schedule: LrSchedule::Constant,
            restore_best_weights: true,
            seed: 42,
            progress: true,
            split_manifest: None,
            threshold_rule: ThresholdRule::Youden,
            stage_cache: None,
            box_supervision: None,
        }
    }
}

impl TrainConfig {
    /// Check that every value can be used; the error names the field.
    ///
    /// ```
    /// let mut config = fracture::train::TrainConfig::default();
    /// config.learning_rate = -1.0;
    /// assert!(config.validate().unwrap_err().to_string().contains("learning_rate"));
    /// ```
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::InvalidConfig(msg));
        if self.epochs == 0 {
            return bad("epochs must be at least 1".into());
        }
        if self.batch_size == 0 {
            return bad("batch_size must be at least 1".into());
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return bad(format!(
                "learning_rate must be positive, found {}",
                self.learning_rate
            ));
        }
        self.adam.validate()?;
        if self.head.hidden == 0 || !(0.0..1.0).contains(&self.head.dropout) {
            return bad(format!(
                "head needs hidden > 0 and dropout in [0, 1), found hidden {} dropout {}",
                self.head.hidden, self.head.dropout
            ));
        }
        match &self.backbone {
            BackboneTraining::Frozen => {}
            BackboneTraining::LastStages {
                stages,
                learning_rate,
            } => {
                if *stages == 0 {
                    return bad("backbone LastStages needs at least 1 stage (or use Frozen)".into());
                }
                if !(learning_rate.is_finite() && *learning_rate > 0.0) {
                    return bad(format!(
                        "backbone learning_rate must be positive, found {learning_rate}"
                    ));
                }
            }
            BackboneTraining::All { learning_rate } => {
                if !(learning_rate.is_finite() && *learning_rate > 0.0) {
                    return bad(format!(
                        "backbone learning_rate must be positive, found {learning_rate}"
                    ));
                }
            }
        }
        if let Some(w) = &self.class_weights {
            let ok = |x: f64| x.is_finite() && x >= 0.0;
            if !ok(w.negative) || !ok(w.positive) || w.negative + w.positive == 0.0 {
                return bad(format!(
                    "class_weights must be finite, non-negative and not both zero, found {w:?}"
                ));
            }
        }
        if let Some(e) = &self.early_stopping
            && !(e.min_delta.is_finite() && e.min_delta >= 0.0)
        {
            return bad(format!(
                "early_stopping.min_delta must be >= 0, found {}",
                e.min_delta
            ));
        }
        if self.stage_cache.is_some()
            && !matches!(self.backbone, BackboneTraining::LastStages { .. })
        {
            return bad("stage_cache trains the last stages: set backbone to LastStages".into());
        }
        if let Some(b) = &self.box_supervision {
            let ok = |x: f64| x.is_finite() && x >= 0.0;
            if !(ok(b.weight)
                && ok(b.grow)
                && b.positive_weight.is_finite()
                && b.positive_weight > 0.0)
            {
                return bad(format!(
                    "box_supervision needs finite weight >= 0, positive_weight > 0 and grow >= 0, found {b:?}"
                ));
            }
            if self.stage_cache.is_none() {
                return bad("box_supervision trains on a stage cache: set stage_cache".into());
            }
            if self.head.localization.is_none() {
                return bad(
                    "box_supervision trains the head's localization map: set head.localization"
                        .into(),
                );
            }
        }
        if self.head.localization.is_some() && self.box_supervision.is_none_or(|b| b.weight == 0.0)
        {
            // An untrained map would be served as the model's explanation.
            return bad(
                "head.localization learns only from boxes: set box_supervision with a weight above 0"
                    .into(),
            );
        }
        if let Some(cache) = &self.stage_cache
            && cache.views.is_empty()
        {
            return bad("stage_cache needs at least one view".into());
        }
        self.schedule.validate()?;
        self.threshold_rule
            .validate()
            .map_err(|e| Error::InvalidConfig(format!("threshold_rule: {e}")))
    }
}

/// Adam's hyper-parameters, Keras's defaults (`epsilon` 1e-7, not PyTorch's 1e-8).
///
/// The update is Keras's: `lr_t = lr * sqrt(1 - beta2^t) / (1 - beta1^t)`,
/// `w -= lr_t * m / (sqrt(v) + epsilon)` (epsilon added to the uncorrected `sqrt(v)`).
///
/// ```
/// let adam = fracture::train::AdamConfig::default();
/// assert_eq!((adam.beta1, adam.beta2, adam.epsilon), (0.9, 0.999, 1e-7));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamConfig {
    /// Decay of the first moment.
    pub beta1: f64,
    /// Decay of the second moment.
    pub beta2: f64,
    /// Added to the square root of the second moment.
    pub epsilon: f64,
}

impl Default for AdamConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            epsilon: 1e-7,
        }
    }
}

impl AdamConfig {
    fn validate(&self) -> Result<()> {
        let rate = |b: f64| (0.0..1.0).contains(&b);
        let epsilon_ok = self.epsilon > 0.0;
        if !(rate(self.beta1) && rate(self.beta2) && epsilon_ok) {
            return Err(Error::InvalidConfig(format!(
                "adam needs beta1, beta2 in [0, 1) and epsilon > 0, found {self:?}"
            )));
        }
        Ok(())
    }
}

/// Which part of the backbone is trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum BackboneTraining {
    /// Nothing: the backbone runs in inference mode outside the autograd graph and only the
    /// head reaches the optimizer (the notebook's transfer learning).
    Frozen,
    /// Fine-tune the last `stages` stages of the backbone and its final normalization with
    /// their own learning rate (ResNetV2: the stacks `conv5_*`, `conv4_*`, ... and `post_bn`;
    /// see [`crate::model::BackboneConfig::last_stage_prefixes`]); their batch normalization
    /// runs in training mode, the rest of the backbone stays frozen in inference mode.
    #[serde(alias = "LastStacks")]
    LastStages {
        /// How many stages, counted from the end.
        #[serde(alias = "stacks")]
        stages: usize,
        /// Learning rate of the fine-tuned backbone variables.
        learning_rate: f64,
    },
    /// Train every backbone variable (training from scratch).
    All {
        /// Learning rate of the backbone variables.
        learning_rate: f64,
    },
}

/// Loss weight of each class (Keras `class_weight`): the loss of a sample is multiplied by
/// the weight of its label.
///
/// ```
/// let w = fracture::train::ClassWeights::balanced(900, 100);
/// assert!((w.negative - 1000.0 / 1800.0).abs() < 1e-12);
/// assert!((w.positive - 5.0).abs() < 1e-12);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClassWeights {
    /// Weight of label 0 (not fractured).
    pub negative: f64,
    /// Weight of label 1 (fractured).
    pub positive: f64,
}

impl ClassWeights {
    /// scikit-learn's `"balanced"` weights, `n / (2 * n_class)`; a class with no sample gets 0.
    pub fn balanced(negatives: usize, positives: usize) -> Self {
        let n = (negatives + positives) as f64;
        let weight = |count: usize| {
            if count == 0 {
                0.0
            } else {
                n / (2.0 * count as f64)
            }
        };
        Self {
            negative: weight(negatives),
            positive: weight(positives),
        }
    }
}

/// Stop training when the validation loss has not fallen by more than `min_delta` for
/// `patience` epochs in a row (Keras `EarlyStopping(monitor="val_loss")`).
///
/// ```
/// let e = fracture::train::EarlyStopping::default();
/// assert_eq!((e.patience, e.min_delta), (5, 0.0));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EarlyStopping {
    /// Epochs without improvement before training stops.
    pub patience: usize,
    /// Smallest fall of the validation loss that counts as an improvement.
    pub min_delta: f64,
}

impl Default for EarlyStopping {
    fn default() -> Self {
        Self {
            patience: 5,
            min_delta: 0.0,
        }
    }
}

/// How the learning rate changes between epochs. Every learning rate (head and fine-tuned
/// backbone) is scaled by the same factor.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum LrSchedule {
    /// The same learning rate in every epoch (the notebook).
    Constant,
    /// Keras `ReduceLROnPlateau(monitor="val_loss")`: multiply the learning rate by `factor`
    /// when the validation loss has not fallen by more than `min_delta` for `patience`
    /// epochs, never going below `min_lr`.
    ReduceOnPlateau {
        /// Multiplier applied on a plateau, in (0, 1).
        factor: f64,
        /// Epochs without improvement before reducing.
        patience: usize,
        /// Smallest fall of the validation loss that counts as an improvement.
        min_delta: f64,
        /// Lower bound of the head learning rate.
        min_lr: f64,
    },
    /// Cosine annealing from the initial learning rate (first epoch) towards `min_lr`
    /// (reached after the last epoch): `min + (lr - min) * (1 + cos(pi * e / epochs)) / 2`
    /// for the 0-based epoch `e`.
    Cosine {
        /// Learning rate the cosine decays towards.
        min_lr: f64,
    },
}

impl LrSchedule {
    /// Keras's `ReduceLROnPlateau` defaults: factor 0.1, patience 10, min_delta 1e-4, min_lr 0.
    pub fn reduce_on_plateau() -> Self {
        LrSchedule::ReduceOnPlateau {
            factor: 0.1,
            patience: 10,
            min_delta: 1e-4,
            min_lr: 0.0,
        }
    }

    fn validate(&self) -> Result<()> {
        match *self {
            LrSchedule::Constant => Ok(()),
            LrSchedule::ReduceOnPlateau {
                factor,
                min_delta,
                min_lr,
                ..
            } => {
                let ok = factor > 0.0 && factor < 1.0 && min_delta >= 0.0 && min_lr >= 0.0;
                if !ok {
                    return Err(Error::InvalidConfig(format!(
                        "schedule ReduceOnPlateau needs factor in (0, 1), min_delta >= 0 and min_lr >= 0, found {self:?}"
                    )));
                }
                Ok(())
            }
            LrSchedule::Cosine { min_lr } => {
                if !(min_lr >= 0.0 && min_lr.is_finite()) {
                    return Err(Error::InvalidConfig(format!(
                        "schedule Cosine needs min_lr >= 0, found {min_lr}"
                    )));
                }
                Ok(())
            }
        }
    }
}
