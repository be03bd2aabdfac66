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

mod builder;
mod bundle;
mod calibration;
mod evaluation;
mod explain;
mod keras;
mod predict;
mod score;
mod training;
mod tta;

pub use builder::FractureClassifierBuilder;
pub use bundle::{
    BundleManifest, PreprocessSpec, ThresholdSource, BUNDLE_FORMAT, BUNDLE_FORMAT_VERSION,
};
pub use evaluation::{CaseScore, Evaluation, TtaComparison};
pub use explain::ExplainedImage;
pub use keras::KerasImport;
pub use predict::{ClassifiedDir, Prediction};

use crate::augment::TtaConfig;
use crate::dataset::{Label, Split};
use crate::device;
use crate::error::{Error, Result};
use crate::model::{BackboneConfig, FractureNet, FrozenBackbone, HeadConfig};
use crate::preprocess::Preprocess;
use crate::train::{History, TrainConfig};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use std::collections::HashMap;
use std::fmt;

fn check_threshold(threshold: f64) -> Result<()> {
    if !(0.0..=1.0).contains(&threshold) {
        return Err(Error::InvalidConfig(format!(
            "threshold must be a probability in [0, 1], found {threshold}"
        )));
    }
    Ok(())
}

/// A trained (or loaded) fracture classifier: network, preprocessing and decision threshold.
pub struct FractureClassifier {
    backbone: BackboneConfig,
    head: HeadConfig,
    tensors: HashMap<String, Tensor>,
    net: FractureNet,
    /// The backbone as inference runs it (its fast path on the CPU).
    inference: FrozenBackbone,
    preprocess: Preprocess,
    threshold: f64,
    /// Temperature `T` of the probabilities, `sigmoid(logit / T)` (1: uncalibrated).
    temperature: f64,
    /// Test-time augmentation of `classify` and `evaluate` (off by default).
    tta: TtaConfig,
    /// Where the threshold came from (`None`: a bundle written before this was recorded).
    threshold_source: Option<ThresholdSource>,
    device: Device,
    history: Option<History>,
    split: Option<Split>,
    evaluation: Option<serde_json::Value>,
    /// Where the initial weights came from ([`crate::WeightsSource::describe`]), when known.
    initial_weights: Option<String>,
    /// How the classifier was trained, when it was.
    train_config: Option<TrainConfig>,
}

impl fmt::Debug for FractureClassifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FractureClassifier")
            .field("backbone", &self.backbone)
            .field("head", &self.head)
            .field("preprocess", &self.preprocess)
            .field("threshold", &self.threshold)
            .field("temperature", &self.temperature)
            .field("tta", &self.tta)
            .field("device", &device::name(&self.device))
            .finish_non_exhaustive()
    }
}

impl FractureClassifier {
    /// Start building a classifier.
    pub fn builder() -> FractureClassifierBuilder {
        FractureClassifierBuilder::default()
    }

    fn from_tensors(
        backbone: BackboneConfig,
        head: HeadConfig,
        tensors: HashMap<String, Tensor>,
        preprocess: Preprocess,
        threshold: f64,
        device: &Device,
    ) -> Result<Self> {
        let vb = VarBuilder::from_tensors(tensors.clone(), DType::F32, device);
        let net = FractureNet::new(&backbone, &head, vb)?;
        let inference = FrozenBackbone::new(net.backbone.clone(), device)?;
        Ok(Self {
            backbone,
            head,
            tensors,
            net,
            inference,
            preprocess,
            threshold,
            temperature: 1.0,
            tta: TtaConfig::none(),
            threshold_source: Some(ThresholdSource::of_unchosen(threshold)),
            device: device.clone(),
            history: None,
            split: None,
            evaluation: None,
            initial_weights: None,
            train_config: None,
        })
    }

    /// The network.
    pub fn net(&self) -> &FractureNet {
        &self.net
    }

    /// The backbone's configuration.
    pub fn backbone_config(&self) -> &BackboneConfig {
        &self.backbone
    }

    /// The head's shape.
    pub fn head_config(&self) -> &HeadConfig {
        &self.head
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

    /// Change the decision threshold (its source becomes [`ThresholdSource::Manual`]).
    pub fn set_threshold(&mut self, threshold: f64) -> Result<()> {
        check_threshold(threshold)?;
        self.threshold = threshold;
        self.threshold_source = Some(ThresholdSource::Manual);
        Ok(())
    }

    /// Where the threshold came from: the default 0.5, chosen on the validation part, or set by
    /// hand; `None` for a bundle written before this was recorded.
    pub fn threshold_source(&self) -> Option<ThresholdSource> {
        self.threshold_source
    }

    /// Whether inference runs the backbone through its CPU fast path (the default on the CPU).
    pub fn uses_fast_path(&self) -> bool {
        self.inference.uses_fast_path()
    }

    /// Run the backbone through its CPU fast path (`true`, the default on the CPU; ignored on
    /// other devices) or through candle's ops (`false`: to compare the two, or to save the fast
    /// path's memory).
    ///
    /// ```
    /// use fracture::FractureClassifier;
    /// use fracture::model::ResNetV2Config;
    /// let mut clf = FractureClassifier::builder()
    ///     .backbone(ResNetV2Config::custom(vec![2, 2], vec![4, 8]))
    ///     .weights(fracture::WeightsSource::Random { seed: 0 })
    ///     .device(fracture::device::DeviceRequest::Cpu)
    ///     .build()?;
    /// assert!(clf.uses_fast_path());
    /// clf.set_fast_path(false)?;
    /// assert!(!clf.uses_fast_path());
    /// # Ok::<(), fracture::Error>(())
    /// ```
    pub fn set_fast_path(&mut self, enabled: bool) -> Result<()> {
        let backbone = self.net.backbone.clone();
        self.inference = if enabled {
            FrozenBackbone::new(backbone, &self.device)?
        } else {
            FrozenBackbone::without_fast_path(backbone)
        };
        Ok(())
    }

    /// The training history of the last [`FractureClassifier::train`] (or of the loaded bundle).
    pub fn history(&self) -> Option<&History> {
        self.history.as_ref()
    }

    /// Where the initial weights came from (for example `random(seed 42)` or a file path),
    /// when known: set by the builder, kept through training and in the bundle.
    pub fn initial_weights(&self) -> Option<&str> {
        self.initial_weights.as_deref()
    }

    /// The training configuration of the last [`FractureClassifier::train`] (or of the loaded
    /// bundle), when known.
    pub fn train_config(&self) -> Option<&TrainConfig> {
        self.train_config.as_ref()
    }

    /// Fracture logits of a preprocessed NCHW batch, in inference mode (the backbone's fast
    /// path on the CPU): the mean over the test-time augmentation views (the batch alone when
    /// TTA is off).
    pub(crate) fn logits(&self, images: &Tensor) -> Result<Vec<f64>> {
        tta::mean_logits(&self.view_logits(images)?)
    }

    /// Fracture probabilities of a preprocessed NCHW batch: [`Self::logits`] at this
    /// classifier's temperature.
    pub(crate) fn probabilities(&self, images: &Tensor) -> Result<Vec<f64>> {
        Ok(self
            .logits(images)?
            .into_iter()
            .map(|z| self.probability_of(z))
            .collect())
    }

    /// The calibrated fracture probability of one logit.
    pub(crate) fn probability_of(&self, logit: f64) -> f64 {
        crate::metrics::calibrated_probability(logit, self.temperature)
    }

    /// The label for a fracture probability at this classifier's threshold.
    pub fn label_for(&self, fracture_probability: f64) -> Label {
        if crate::metrics::predicts_fracture(fracture_probability, self.threshold) {
            Label::Fractured
        } else {
            Label::NotFractured
        }
    }
}
