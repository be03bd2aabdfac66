//! [`FractureClassifier`]: dataset, model, weights, training and metrics behind one type.
//!
//! ```no_run
//! use fracture::{FractureClassifier, WeightsSource};
//! use fracture::dataset::{FracAtlas, SplitConfig};
//! use fracture::model::ResNetV2Config;
//! use fracture::train::TrainConfig;
//!
//! let data = FracAtlas::open("FracAtlas")?;
//! let split = data.split(&SplitConfig::default())?;
//! let mut clf = FractureClassifier::builder()
//!     .backbone(ResNetV2Config::resnet152v2())
//!     .weights(WeightsSource::file("resnet152v2_imagenet.safetensors"))
//!     .build()?;
//! let history = clf.train(&split, TrainConfig::default())?;
//! println!("{}", clf.evaluate(&split.test)?);
//! println!("{}", clf.classify_path("xray.jpg")?);
//! clf.save("model_dir")?;
//! # Ok::<(), fracture::Error>(())
//! ```

mod bundle;
mod predict;

pub use bundle::{BundleManifest, PreprocessSpec, BUNDLE_FORMAT, BUNDLE_FORMAT_VERSION};
pub use predict::{ClassifiedDir, Prediction};

use crate::augment::AugmentConfig;
use crate::batch::BatchSource;
use crate::dataset::loader::{ImageLoader, LoaderConfig, Preprocess};
use crate::dataset::{Label, Part, Split};
use crate::device::{self, DeviceRequest};
use crate::error::{Error, Result};
use crate::metrics::{
    bootstrap_ci, by_subgroup, choose_threshold, BinaryMetrics, BootstrapConfig,
    BootstrapIntervals, SubgroupMetrics, ThresholdRule,
};
use crate::model::{FastResNetV2, FractureNet, HeadConfig, ResNetV2Config};
use crate::train::{History, TrainConfig, Trainer};
use crate::weights::{HubOptions, WeightsSource};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Step-by-step construction of a [`FractureClassifier`].
///
/// Defaults: ResNet152V2, randomly initialized weights (seed 0), the notebook's head, the best
/// available device, 224x224 Keras `resnet_v2` preprocessing, threshold 0.5.
///
/// ```
/// use fracture::{FractureClassifier, WeightsSource};
/// use fracture::device::DeviceRequest;
/// use fracture::model::ResNetV2Config;
/// let clf = FractureClassifier::builder()
///     .backbone(ResNetV2Config::custom(vec![2, 2], vec![4, 8]))
///     .weights(WeightsSource::Random { seed: 7 })
///     .device(DeviceRequest::Cpu)
///     .image_size(64, 64)
///     .build()?;
/// assert_eq!(clf.threshold(), 0.5);
/// # Ok::<(), fracture::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct FractureClassifierBuilder {
    backbone: ResNetV2Config,
    weights: WeightsSource,
    head: HeadConfig,
    device: DeviceRequest,
    preprocess: Preprocess,
    hub: HubOptions,
    threshold: f64,
}

impl Default for FractureClassifierBuilder {
    fn default() -> Self {
        Self {
            backbone: ResNetV2Config::resnet152v2(),
            weights: WeightsSource::Random { seed: 0 },
            head: HeadConfig::default(),
            device: DeviceRequest::BestAvailable,
            preprocess: Preprocess::default(),
            hub: HubOptions::from_env(),
            threshold: 0.5,
        }
    }
}

impl FractureClassifierBuilder {
    /// The backbone's shape (a preset such as [`ResNetV2Config::resnet152v2`] or a custom one).
    pub fn backbone(mut self, config: ResNetV2Config) -> Self {
        self.backbone = config;
        self
    }

    /// Where the initial weights come from (hub, file or seeded random).
    pub fn weights(mut self, source: WeightsSource) -> Self {
        self.weights = source;
        self
    }

    /// Width and dropout of the classification head.
    pub fn head(mut self, head: HeadConfig) -> Self {
        self.head = head;
        self
    }

    /// The compute device (CPU, CUDA, Metal or best available).
    pub fn device(mut self, request: DeviceRequest) -> Self {
        self.device = request;
        self
    }

    /// Resize, filter and normalization of input images.
    pub fn preprocess(mut self, preprocess: Preprocess) -> Self {
        self.preprocess = preprocess;
        self
    }

    /// Shortcut for the model input size (height, width); the rest of the preprocessing stays.
    pub fn image_size(mut self, height: usize, width: usize) -> Self {
        self.preprocess.height = height;
        self.preprocess.width = width;
        self
    }

    /// Hub endpoint, cache and offline mode for [`WeightsSource::Hub`] (default: from the
    /// environment, `HF_ENDPOINT`, `HF_HOME`, `HF_HUB_OFFLINE`).
    pub fn hub_options(mut self, options: HubOptions) -> Self {
        self.hub = options;
        self
    }

    /// Probability at or above which an image is called fractured.
    pub fn threshold(mut self, threshold: f64) -> Self {
        self.threshold = threshold;
        self
    }

    /// Load the weights, check them and build the network on the chosen device.
    pub fn build(self) -> Result<FractureClassifier> {
        self.preprocess.validate()?;
        check_threshold(self.threshold)?;
        let device = device::select(self.device)?;
        let loaded = self
            .weights
            .load(&self.backbone, &self.head, &device, &self.hub)?;
        // The head comes from the file when it has one, else it is freshly initialized (seeded).
        let tensors = loaded.into_tensors()?;
        FractureClassifier::from_tensors(
            self.backbone,
            self.head,
            tensors,
            self.preprocess,
            self.threshold,
            &device,
        )
    }
}

fn poisoned<T>(_: T) -> Error {
    Error::Training("a variable map's lock is poisoned".into())
}

fn check_threshold(threshold: f64) -> Result<()> {
    if !(0.0..=1.0).contains(&threshold) {
        return Err(Error::InvalidConfig(format!(
            "threshold must be a probability in [0, 1], found {threshold}"
        )));
    }
    Ok(())
}

/// What scoring one dataset part gives: per readable image its label (`true` = fractured),
/// fracture probability and index in the part, and the loader (for its skipped files).
struct ScoredPart {
    labels: Vec<bool>,
    scores: Vec<f64>,
    indices: Vec<usize>,
    loader: ImageLoader,
}

/// A trained (or loaded) fracture classifier: network, preprocessing and decision threshold.
pub struct FractureClassifier {
    backbone: ResNetV2Config,
    head: HeadConfig,
    tensors: HashMap<String, Tensor>,
    net: FractureNet,
    /// The backbone's fast inference path, used on the CPU.
    fast: Option<FastResNetV2>,
    preprocess: Preprocess,
    threshold: f64,
    device: Device,
    history: Option<History>,
    split: Option<Split>,
    evaluation: Option<serde_json::Value>,
}

impl fmt::Debug for FractureClassifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FractureClassifier")
            .field("backbone", &self.backbone)
            .field("head", &self.head)
            .field("preprocess", &self.preprocess)
            .field("threshold", &self.threshold)
            .field("device", &device::name(&self.device))
            .finish_non_exhaustive()
    }
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
    /// Start building a classifier.
    pub fn builder() -> FractureClassifierBuilder {
        FractureClassifierBuilder::default()
    }

    fn from_tensors(
        backbone: ResNetV2Config,
        head: HeadConfig,
        tensors: HashMap<String, Tensor>,
        preprocess: Preprocess,
        threshold: f64,
        device: &Device,
    ) -> Result<Self> {
        let vb = VarBuilder::from_tensors(tensors.clone(), DType::F32, device);
        let net = FractureNet::new(&backbone, &head, vb)?;
        let fast = if device.is_cpu() {
            Some(FastResNetV2::from_model(&net.backbone)?)
        } else {
            None
        };
        Ok(Self {
            backbone,
            head,
            tensors,
            net,
            fast,
            preprocess,
            threshold,
            device: device.clone(),
            history: None,
            split: None,
            evaluation: None,
        })
    }

    /// The network.
    pub fn net(&self) -> &FractureNet {
        &self.net
    }

    /// The backbone's configuration.
    pub fn backbone_config(&self) -> &ResNetV2Config {
        &self.backbone
    }

    /// The device the network runs on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Input preprocessing.
    pub fn preprocess(&self) -> &Preprocess {
        &self.preprocess
    }

    /// The decision threshold on the fracture probability.
    pub fn threshold(&self) -> f64 {
        self.threshold
    }

    /// Change the decision threshold.
    pub fn set_threshold(&mut self, threshold: f64) -> Result<()> {
        check_threshold(threshold)?;
        self.threshold = threshold;
        Ok(())
    }

    /// The training history of the last [`FractureClassifier::train`] (or of the loaded bundle).
    pub fn history(&self) -> Option<&History> {
        self.history.as_ref()
    }

    /// Train on `split.train`, validating on `split.val`; afterwards the network holds the
    /// weights of the epoch with the lowest validation loss and the threshold is chosen on
    /// the validation part by Youden's J (kept at its old value if J is undefined there).
    ///
    /// The head is trained from a fresh initialization seeded by `config.seed`; the backbone
    /// starts from the classifier's current weights and is frozen or fine-tuned as
    /// `config.backbone` says. Augmentation (the notebook's Keras generator) is applied to the
    /// training images when `config.augment` is on.
    pub fn train(&mut self, split: &Split, config: TrainConfig) -> Result<History> {
        self.train_with_checkpoints(split, config, None)
    }

    /// [`FractureClassifier::train`], writing a checkpoint after every epoch into
    /// `checkpoint_dir` (resume with [`Trainer::resume`]).
    pub fn train_with_checkpoints(
        &mut self,
        split: &Split,
        config: TrainConfig,
        checkpoint_dir: Option<&Path>,
    ) -> Result<History> {
        let backbone_vars = VarMap::new();
        {
            let mut data = backbone_vars.data().lock().map_err(poisoned)?;
            for spec in self.backbone.variables() {
                let value = self.tensor(&spec.name)?;
                data.insert(spec.name, Var::from_tensor(&value)?);
            }
        }
        let (train_loader, val_loader) = self.loaders(split, &config)?;
        let mut trainer = Trainer::new(&self.backbone, backbone_vars, config, &self.device)?;
        let history = trainer.fit(&train_loader, &val_loader, checkpoint_dir)?;
        self.adopt(trainer, split, history)
    }

    /// Continue an interrupted [`FractureClassifier::train_with_checkpoints`] run from its
    /// checkpoint folder, on the same split; the result is the same as an uninterrupted run.
    /// The backbone shape and training configuration come from the checkpoint.
    pub fn resume_training(&mut self, split: &Split, checkpoint_dir: &Path) -> Result<History> {
        let mut trainer = Trainer::resume(checkpoint_dir, &self.device)?;
        let config = trainer.config().clone();
        let (train_loader, val_loader) = self.loaders(split, &config)?;
        let history = trainer.fit(&train_loader, &val_loader, Some(checkpoint_dir))?;
        self.adopt(trainer, split, history)
    }

    fn loaders(&self, split: &Split, config: &TrainConfig) -> Result<(ImageLoader, ImageLoader)> {
        let train_loader = self.loader(&split.train, config.batch_size, true, config.seed)?;
        let train_loader = if config.augment {
            train_loader.with_transform(Arc::new(AugmentConfig::default()))
        } else {
            train_loader
        };
        let val_loader = self.loader(&split.val, config.batch_size, false, config.seed)?;
        Ok((train_loader, val_loader))
    }

    /// Take over the trained weights, remember history and split, choose the threshold.
    fn adopt(&mut self, trainer: Trainer, split: &Split, history: History) -> Result<History> {
        let backbone = trainer.backbone_config().clone();
        let head = trainer.config().head.clone();
        let tensors: HashMap<String, Tensor> = trainer.weights()?.into_iter().collect();
        let mut trained = Self::from_tensors(
            backbone,
            head,
            tensors,
            self.preprocess,
            self.threshold,
            &self.device,
        )?;
        trained.history = Some(history.clone());
        trained.split = Some(split.clone());
        trained.choose_threshold(&split.val, ThresholdRule::Youden)?;
        *self = trained;
        Ok(history)
    }

    fn tensor(&self, name: &str) -> Result<Tensor> {
        self.tensors
            .get(name)
            .cloned()
            .ok_or_else(|| Error::Weights {
                source_name: "classifier".into(),
                message: format!("variable {name} missing"),
            })
    }

    fn loader(
        &self,
        part: &Part,
        batch_size: usize,
        shuffle: bool,
        seed: u64,
    ) -> Result<ImageLoader> {
        let config = LoaderConfig {
            batch_size,
            shuffle,
            seed,
            ..LoaderConfig::default()
        };
        ImageLoader::for_part(part, self.preprocess, config, self.device.clone())
    }

    /// Fracture probabilities `(N,)` of a preprocessed NCHW batch, in inference mode (the fast
    /// backbone path on the CPU).
    pub(crate) fn probabilities(&self, images: &Tensor) -> Result<Tensor> {
        let logits = match &self.fast {
            Some(fast) => self
                .net
                .head
                .forward_t(&fast.forward_pooled(images)?, false)?,
            None => self.net.forward_t(images, false)?,
        };
        Ok(candle_nn::ops::sigmoid(&logits)?)
    }

    /// Fracture probabilities and labels of every readable image of `part`.
    fn score_part(&self, part: &Part) -> Result<ScoredPart> {
        let loader = self.loader(part, 16, false, 0)?;
        let (mut labels, mut scores, mut indices) = (Vec::new(), Vec::new(), Vec::new());
        for batch in loader.batches(0)? {
            let batch = batch?;
            let probabilities: Vec<f32> = self.probabilities(&batch.images)?.to_vec1()?;
            scores.extend(probabilities.into_iter().map(f64::from));
            labels.extend(batch.labels.to_vec1::<f32>()?.into_iter().map(|y| y > 0.5));
            indices.extend(batch.indices);
        }
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

    /// The label for a fracture probability at this classifier's threshold.
    pub fn label_for(&self, fracture_probability: f64) -> Label {
        if fracture_probability >= self.threshold {
            Label::Fractured
        } else {
            Label::NotFractured
        }
    }
}
