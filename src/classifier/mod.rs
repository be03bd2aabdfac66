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
mod cached_training;
mod calibration;
mod evaluation;
mod explain;
#[cfg(test)]
mod finite_tests;
mod keras;
mod predict;
mod robustness;
mod score;
pub(crate) mod stored;
mod training;
mod tta;

pub use builder::FractureClassifierBuilder;
pub use bundle::{
    BundleManifest, PreprocessSpec, ThresholdSource, BUNDLE_FORMAT, BUNDLE_FORMAT_VERSION,
};
pub use calibration::{
    Calibration, CalibrationConfig, CalibrationFit, CalibrationMethod, CalibrationSource,
    MIN_CALIBRATION_CASES, MIN_CALIBRATION_PER_CLASS,
};
pub use evaluation::{CaseScore, Evaluation, SplitOrigin, TtaComparison, REPORTED_SPECIFICITIES};
pub use explain::ExplainedImage;
pub use keras::KerasImport;
pub use predict::{ClassifiedDir, Prediction};

use crate::augment::TtaConfig;
use crate::dataset::stored_path::PathForm;
use crate::dataset::{Dataset, Label, Split, SplitConfig};
use crate::device;
use crate::error::{Error, Result};
use crate::model::{BackboneConfig, FractureNet, FrozenBackbone, HeadConfig, Precision};
use crate::preprocess::Preprocess;
use crate::train::{History, TrainConfig};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use std::collections::HashMap;
use std::fmt;

/// The decision threshold of a classifier whose threshold was never chosen on data (a fresh
/// or imported one): 0.5, the reference notebook's implicit threshold. Evaluations also
/// report their metrics at it ([`Evaluation::at_half`]) for comparison.
///
/// ```
/// use fracture::classifier::{ThresholdSource, DEFAULT_THRESHOLD};
/// assert_eq!(DEFAULT_THRESHOLD, 0.5);
/// assert_eq!(ThresholdSource::of_unchosen(DEFAULT_THRESHOLD), ThresholdSource::Default);
/// ```
pub const DEFAULT_THRESHOLD: f64 = 0.5;

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
    /// The calibration of the probabilities, `sigmoid(slope · logit + intercept)`, and where
    /// it came from.
    calibration: Calibration,
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
    /// How image paths are written into its bundle and reports.
    path_form: PathForm,
}

impl fmt::Debug for FractureClassifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FractureClassifier")
            .field("backbone", &self.backbone)
            .field("head", &self.head)
            .field("preprocess", &self.preprocess)
            .field("threshold", &self.threshold)
            .field("calibration", &self.calibration)
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
            calibration: Calibration::none(),
            tta: TtaConfig::none(),
            threshold_source: Some(ThresholdSource::of_unchosen(threshold)),
            device: device.clone(),
            history: None,
            split: None,
            evaluation: None,
            initial_weights: None,
            train_config: None,
            path_form: PathForm::Relative,
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

    /// Where the threshold came from: the default 0.5, chosen on the validation part (with the
    /// rule), or set by hand; `None` for a bundle written before this was recorded.
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
    ///
    /// Turning the fast path off also returns its precision to [`Precision::F32`].
    pub fn set_fast_path(&mut self, enabled: bool) -> Result<()> {
        let backbone = self.net.backbone.clone();
        self.inference = if enabled {
            FrozenBackbone::with_precision(backbone, &self.device, self.precision())?
        } else {
            FrozenBackbone::without_fast_path(backbone)
        };
        Ok(())
    }

    /// The precision of the fast path's convolutions ([`Precision::F32`] by default).
    pub fn precision(&self) -> Precision {
        self.inference.precision()
    }

    /// Run the fast path's convolutions at `precision` (also
    /// [`FractureClassifierBuilder::precision`]). [`Precision::Bf16`] is opt-in, needs the CPU
    /// fast path on a CPU with AVX512_BF16, and moves probabilities slightly (see
    /// [`Precision`]); otherwise it is an error that says why, and the classifier stays as it
    /// was. Not saved in bundles: a loaded classifier runs at f32 until told otherwise. Kept
    /// through training, so that the threshold chosen after training is chosen on the scores
    /// this precision gives.
    ///
    /// ```
    /// use fracture::model::{Precision, ResNetV2Config};
    /// let mut clf = fracture::FractureClassifier::builder()
    ///     .backbone(ResNetV2Config::custom(vec![2, 2], vec![4, 8]))
    ///     .weights(fracture::WeightsSource::Random { seed: 0 })
    ///     .device(fracture::device::DeviceRequest::Cpu)
    ///     .build()?;
    /// assert_eq!(clf.precision(), Precision::F32);
    /// match clf.set_precision(Precision::Bf16) {
    ///     Ok(()) => assert_eq!(clf.precision(), Precision::Bf16),
    ///     Err(e) => assert!(e.to_string().contains("AVX512_BF16")),
    /// }
    /// # Ok::<(), fracture::Error>(())
    /// ```
    pub fn set_precision(&mut self, precision: Precision) -> Result<()> {
        self.inference.set_precision(precision)
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

    /// How image paths are written into this classifier's bundle (`split.csv`,
    /// `metrics.json`) and its reports: relative to the data root (the default) or as salted
    /// hashes ([`crate::dataset::stored_path`]). Not saved in the bundle (a salt is never
    /// written): set it again after loading.
    ///
    /// ```
    /// use fracture::dataset::stored_path::{PathForm, PathSalt};
    /// # let mut clf = fracture::FractureClassifier::builder()
    /// #     .backbone(fracture::model::ResNetV2Config::custom(vec![2, 2], vec![4, 8]))
    /// #     .weights(fracture::WeightsSource::Random { seed: 0 })
    /// #     .device(fracture::device::DeviceRequest::Cpu)
    /// #     .image_size(32, 32)
    /// #     .build()?;
    /// // The salt is the user's secret (from a vault or an environment variable), never saved.
    /// let salt = PathSalt::new("a salt of at least 16 bytes")?;
    /// clf.set_path_form(PathForm::SaltedHash(salt));
    /// assert!(matches!(clf.path_form(), PathForm::SaltedHash(_)));
    /// # Ok::<(), fracture::Error>(())
    /// ```
    pub fn set_path_form(&mut self, form: PathForm) {
        self.path_form = form;
    }

    /// How image paths are written ([`Self::set_path_form`]).
    pub fn path_form(&self) -> &PathForm {
        &self.path_form
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

    /// Fracture probabilities of a preprocessed NCHW batch: [`Self::logits`] under this
    /// classifier's calibration.
    pub(crate) fn probabilities(&self, images: &Tensor) -> Result<Vec<f64>> {
        Ok(self
            .logits(images)?
            .into_iter()
            .map(|z| self.probability_of(z))
            .collect())
    }

    /// The calibrated fracture probability of one logit.
    pub(crate) fn probability_of(&self, logit: f64) -> f64 {
        self.calibration.map.probability(logit)
    }

    /// The split to train or evaluate this classifier on: the split recorded with it (a bundle's
    /// `split.csv`, or the one it was trained on) when it has one, else `fresh` applied to
    /// `data`. A recorded split is the split: `data` only locates its images (the folder may
    /// have moved), and must hold exactly the recorded parts, with the same labels and the same
    /// content ([`Split::locate`], in this classifier's [`PathForm`]); otherwise the error names the first difference. A
    /// classifier without a recorded split (a Keras import) needs `data`, and its evaluation
    /// says that the split is not the one it was trained on ([`SplitOrigin::Unrecorded`]).
    ///
    /// ```
    /// use fracture::dataset::{synthetic::SyntheticConfig, FracAtlas, SplitConfig};
    /// let dir = tempfile::tempdir()?;
    /// SyntheticConfig { n_fractured: 5, n_not_fractured: 5, ..Default::default() }.generate_to(dir.path())?;
    /// let data = FracAtlas::open(dir.path())?;
    /// let clf = fracture::FractureClassifier::builder()
    ///     .backbone(fracture::model::ResNetV2Config::custom(vec![2, 2], vec![4, 8]))
    ///     .weights(fracture::WeightsSource::Random { seed: 0 })
    ///     .device(fracture::device::DeviceRequest::Cpu)
    ///     .build()?;
    /// // No recorded split yet: `fresh` splits the data.
    /// let fresh = SplitConfig { seed: 7, ..SplitConfig::default() };
    /// assert_eq!(clf.resolve_split(Some(&data), &fresh)?, data.split(&fresh)?);
    /// assert!(clf.resolve_split(None, &fresh).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn resolve_split(&self, data: Option<&Dataset>, fresh: &SplitConfig) -> Result<Split> {
        match (&self.split, data) {
            (Some(recorded), None) if recorded.data_root().is_some() => Ok(recorded.clone()),
            (Some(_), None) => Err(Error::InvalidInput(
                "this model's split stores image paths relative to the data root (or as salted \
                 hashes), never where they are: give the data folder the images are in now"
                    .into(),
            )),
            (Some(recorded), Some(data)) => recorded.locate(&data.samples, &self.path_form),
            (None, Some(data)) => data.split(fresh),
            (None, None) => Err(Error::InvalidInput(
                "this model holds no split (a Keras model never does), so its images cannot be \
                 known: give a data folder to split"
                    .into(),
            )),
        }
    }

    /// The label for a fracture probability at this classifier's threshold; a NaN
    /// probability is an error, never "not fractured".
    ///
    /// ```
    /// use fracture::dataset::Label;
    /// use fracture::model::ResNetV2Config;
    /// let clf = fracture::FractureClassifier::builder()
    ///     .backbone(ResNetV2Config::custom(vec![2, 2], vec![4, 8]))
    ///     .weights(fracture::WeightsSource::Random { seed: 0 })
    ///     .device(fracture::device::DeviceRequest::Cpu)
    ///     .build()?;
    /// assert_eq!(clf.label_for(0.9)?, Label::Fractured);
    /// assert!(clf.label_for(f64::NAN).is_err());
    /// # Ok::<(), fracture::Error>(())
    /// ```
    pub fn label_for(&self, fracture_probability: f64) -> Result<Label> {
        Ok(
            if crate::metrics::predicts_fracture(fracture_probability, self.threshold)? {
                Label::Fractured
            } else {
                Label::NotFractured
            },
        )
    }
}

/// An [`Error::NonFinite`] for the first image (a row of `values`, `per_image` values each)
/// holding a NaN or an infinity: one pass, so that no corrupt number becomes an answer.
fn check_finite(values: &[f32], per_image: usize, what: &str) -> Result<()> {
    match crate::error::first_non_finite(values) {
        Some((at, value)) => Err(Error::non_finite(at / per_image.max(1), what, value)),
        None => Ok(()),
    }
}
