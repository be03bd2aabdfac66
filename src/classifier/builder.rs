//! [`FractureClassifierBuilder`]: choosing backbone, weights, head, device, preprocessing and
//! threshold, then loading and checking the weights.

use super::{check_threshold, FractureClassifier, DEFAULT_THRESHOLD};
use crate::device::{self, DeviceRequest};
use crate::error::{Error, Result};
use crate::model::{BackboneConfig, HeadConfig, Precision, ResNetV2Config};
use crate::preprocess::Preprocess;
use crate::weights::{HubOptions, KerasCache, WeightsSource};

/// Step-by-step construction of a [`FractureClassifier`].
///
/// Defaults: ResNet152V2, the notebook's head, the best available device, 224x224 Keras
/// `resnet_v2` preprocessing, threshold [`DEFAULT_THRESHOLD`] (0.5). The weights have no default: a classifier on
/// random weights runs and predicts nonsense, so [`FractureClassifierBuilder::weights`] must be
/// called (with [`WeightsSource::Random`] when an untrained network is really what is wanted,
/// e.g. to train from scratch), else [`FractureClassifierBuilder::build`] is an error.
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
    backbone: BackboneConfig,
    weights: Option<WeightsSource>,
    head: HeadConfig,
    device: DeviceRequest,
    preprocess: Preprocess,
    hub: HubOptions,
    keras: KerasCache,
    threshold: f64,
    precision: Precision,
}

impl Default for FractureClassifierBuilder {
    fn default() -> Self {
        Self {
            backbone: ResNetV2Config::resnet152v2().into(),
            weights: None,
            head: HeadConfig::default(),
            device: DeviceRequest::BestAvailable,
            preprocess: Preprocess::default(),
            hub: HubOptions::from_env(),
            keras: KerasCache::from_env(),
            threshold: DEFAULT_THRESHOLD,
            precision: Precision::F32,
        }
    }
}

impl FractureClassifierBuilder {
    /// The backbone's architecture and shape (a preset such as
    /// [`ResNetV2Config::resnet152v2`], a custom one, or any [`BackboneConfig`]).
    pub fn backbone(mut self, config: impl Into<BackboneConfig>) -> Self {
        self.backbone = config.into();
        self
    }

    /// Where the initial weights come from (hub, file, or seeded random for training from
    /// scratch). Required.
    pub fn weights(mut self, source: WeightsSource) -> Self {
        self.weights = Some(source);
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

    /// The Keras cache and expected hashes for [`WeightsSource::KerasImageNet`] (default:
    /// `$KERAS_HOME/models`, Keras's address and published MD5s). Offline mode and the progress
    /// bar follow [`FractureClassifierBuilder::hub_options`].
    pub fn keras_cache(mut self, cache: KerasCache) -> Self {
        self.keras = cache;
        self
    }

    /// Probability at or above which an image is called fractured.
    pub fn threshold(mut self, threshold: f64) -> Self {
        self.threshold = threshold;
        self
    }

    /// The precision of the CPU fast path's convolutions (default [`Precision::F32`]; see
    /// [`FractureClassifier::set_precision`]). [`Precision::Bf16`] makes
    /// [`FractureClassifierBuilder::build`] an error on a CPU without AVX512_BF16 or off the
    /// CPU.
    ///
    /// ```
    /// use fracture::model::{Precision, ResNetV2Config};
    /// let built = fracture::FractureClassifier::builder()
    ///     .backbone(ResNetV2Config::custom(vec![2, 2], vec![4, 8]))
    ///     .weights(fracture::WeightsSource::Random { seed: 0 })
    ///     .device(fracture::device::DeviceRequest::Cpu)
    ///     .precision(Precision::Bf16)
    ///     .build();
    /// assert_eq!(built.is_ok(), Precision::Bf16.is_supported());
    /// ```
    pub fn precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }

    /// Load the weights, check them and build the network on the chosen device.
    ///
    /// ```
    /// let err = fracture::FractureClassifier::builder().build().unwrap_err();
    /// assert!(err.to_string().contains("no weights chosen"));
    /// ```
    pub fn build(self) -> Result<FractureClassifier> {
        let weights = self.weights.as_ref().ok_or_else(|| {
            Error::InvalidConfig(
                "no weights chosen: call .weights(...) with WeightsSource::imagenet() (Keras's \
                 ImageNet file), WeightsSource::file(path), WeightsSource::hub(repo), or \
                 WeightsSource::Random { seed } to start from untrained weights on purpose"
                    .into(),
            )
        })?;
        self.preprocess.validate()?;
        check_threshold(self.threshold)?;
        self.precision.check_supported()?;
        let device = device::select(self.device)?;
        let loaded =
            weights.load_with(&self.backbone, &self.head, &device, &self.hub, &self.keras)?;
        // The head comes from the file when it has one, else it is freshly initialized (seeded).
        let tensors = loaded.into_tensors()?;
        let mut classifier = FractureClassifier::from_tensors(
            self.backbone,
            self.head,
            tensors,
            self.preprocess,
            self.threshold,
            &device,
        )?;
        classifier.initial_weights = Some(weights.describe());
        classifier.set_precision(self.precision)?;
        Ok(classifier)
    }
}
