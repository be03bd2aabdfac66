//! [`BackboneConfig`] and [`Backbone`]: the one interface the rest of the crate sees of a
//! feature extractor.
//!
//! Everything above the model (weights loading, training, bundles, explanations, the facade)
//! works through these two enums: build from a configuration and a `VarBuilder`, the last
//! feature map (pooled by the head, explained by Grad-CAM), its channel count, the variables
//! and their shapes, and the stages that fine-tuning counts from the end. Each backbone keeps
//! its own code (and its CPU fast path) in its own folder.

use super::efficientnet::{EfficientNetLite, EfficientNetLiteConfig};
use super::resnet_v2::{ResNetV2, ResNetV2Config};
use super::VariableSpec;
use crate::error::{Error, Result};
use candle_core::Tensor;
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

/// The shape of a backbone, of any supported architecture. Serialized with an
/// `"architecture"` tag (`{"architecture": "resnet_v2", "blocks": [3, 8, 36, 3], ...}`), as it is
/// stored in bundles and checkpoints.
///
/// ```
/// use fracture::model::{BackboneConfig, ResNetV2Config};
/// let config = BackboneConfig::from(ResNetV2Config::resnet152v2());
/// assert_eq!(config.feature_channels(), 2048);
/// assert_eq!(config.stage_count(), 4);
/// assert_eq!(config.describe(), "ResNetV2 [3, 8, 36, 3]");
/// let json = serde_json::to_string(&config).unwrap();
/// assert!(json.starts_with(r#"{"architecture":"resnet_v2""#));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "architecture")]
#[non_exhaustive]
pub enum BackboneConfig {
    /// Keras's pre-activation ResNet (ResNet50V2/101V2/152V2 or a custom shape).
    #[serde(rename = "resnet_v2")]
    ResNetV2(ResNetV2Config),
    /// EfficientNet-Lite (Lite0 ... Lite4 or a custom shape), with timm's variable names.
    #[serde(rename = "efficientnet_lite")]
    EfficientNetLite(EfficientNetLiteConfig),
}

impl From<ResNetV2Config> for BackboneConfig {
    fn from(config: ResNetV2Config) -> Self {
        Self::ResNetV2(config)
    }
}

impl From<&ResNetV2Config> for BackboneConfig {
    fn from(config: &ResNetV2Config) -> Self {
        Self::ResNetV2(config.clone())
    }
}

impl From<EfficientNetLiteConfig> for BackboneConfig {
    fn from(config: EfficientNetLiteConfig) -> Self {
        Self::EfficientNetLite(config)
    }
}

impl From<&EfficientNetLiteConfig> for BackboneConfig {
    fn from(config: &EfficientNetLiteConfig) -> Self {
        Self::EfficientNetLite(config.clone())
    }
}

impl From<&BackboneConfig> for BackboneConfig {
    fn from(config: &BackboneConfig) -> Self {
        config.clone()
    }
}

impl BackboneConfig {
    /// A short human-readable name (`ResNetV2 [3, 8, 36, 3]`).
    pub fn describe(&self) -> String {
        match self {
            Self::ResNetV2(c) => format!("ResNetV2 {:?}", c.blocks),
            Self::EfficientNetLite(c) => c.describe(),
        }
    }

    /// The ResNetV2 configuration, if this is one.
    pub fn as_resnet_v2(&self) -> Option<&ResNetV2Config> {
        match self {
            Self::ResNetV2(c) => Some(c),
            Self::EfficientNetLite(_) => None,
        }
    }

    /// The EfficientNet-Lite configuration, if this is one.
    pub fn as_efficientnet_lite(&self) -> Option<&EfficientNetLiteConfig> {
        match self {
            Self::EfficientNetLite(c) => Some(c),
            Self::ResNetV2(_) => None,
        }
    }

    /// The name of the ImageNet classification layer in this backbone's weight files
    /// (Keras's `predictions` for ResNetV2, timm's `classifier` for EfficientNet-Lite): a
    /// dense layer `weight` `(classes, channels)`, `bias` `(classes,)` on the pooled features.
    pub fn imagenet_top_name(&self) -> &'static str {
        match self {
            Self::ResNetV2(_) => "predictions",
            Self::EfficientNetLite(_) => "classifier",
        }
    }

    /// Check that the configuration can be built.
    pub fn validate(&self) -> Result<()> {
        match self {
            Self::ResNetV2(c) => c.validate(),
            Self::EfficientNetLite(c) => c.validate(),
        }
    }

    /// Check that a batch of shape `dims` is an `(N, C, H, W)` batch the backbone accepts; the
    /// error names the expected and the found shape.
    pub fn check_input_dims(&self, dims: &[usize]) -> Result<()> {
        match self {
            Self::ResNetV2(c) => c.check_input_dims(dims),
            Self::EfficientNetLite(c) => c.check_input_dims(dims),
        }
    }

    /// Channels of the last feature map (what the head pools).
    pub fn feature_channels(&self) -> usize {
        match self {
            Self::ResNetV2(c) => c.feature_channels(),
            Self::EfficientNetLite(c) => c.feature_channels(),
        }
    }

    /// Spatial size of the last feature map for an input of `height` x `width`.
    pub fn feature_size(&self, height: usize, width: usize) -> (usize, usize) {
        match self {
            Self::ResNetV2(c) => c.feature_size(height, width),
            Self::EfficientNetLite(c) => c.feature_size(height, width),
        }
    }

    /// Every variable of the backbone with its name and shape (candle layout).
    pub fn variables(&self) -> Vec<VariableSpec> {
        match self {
            Self::ResNetV2(c) => c.variables(),
            Self::EfficientNetLite(c) => c.variables(),
        }
    }

    /// Total number of scalars, moving statistics included.
    pub fn parameter_count(&self) -> usize {
        match self {
            Self::ResNetV2(c) => c.parameter_count(),
            Self::EfficientNetLite(c) => c.parameter_count(),
        }
    }

    /// How many stages fine-tuning counts from the end (ResNetV2: its stacks `conv2`..`conv5`;
    /// EfficientNet-Lite: timm's `blocks.0`..`blocks.6`).
    pub fn stage_count(&self) -> usize {
        match self {
            Self::ResNetV2(c) => c.blocks.len(),
            Self::EfficientNetLite(c) => c.stage_count(),
        }
    }

    /// The variable-name prefixes of the last `stages` stages, plus the final normalization
    /// that follows them (ResNetV2: `conv5_`, `conv4_`, ..., and `post_bn.`; EfficientNet-Lite:
    /// `blocks.6.`, ..., then `conv_head.` and `bn2.`).
    ///
    /// ```
    /// use fracture::model::{BackboneConfig, ResNetV2Config};
    /// let config = BackboneConfig::from(ResNetV2Config::resnet50v2());
    /// assert_eq!(config.last_stage_prefixes(1)?, vec!["conv5_", "post_bn."]);
    /// assert!(config.last_stage_prefixes(5).is_err());
    /// # Ok::<(), fracture::Error>(())
    /// ```
    pub fn last_stage_prefixes(&self, stages: usize) -> Result<Vec<String>> {
        let total = self.stage_count();
        if stages > total {
            return Err(Error::InvalidConfig(format!(
                "cannot fine-tune the last {stages} stages: {} has {total}",
                self.describe()
            )));
        }
        Ok(match self {
            Self::ResNetV2(_) => (total - stages..total)
                .rev()
                .map(|s| format!("conv{}_", s + 2))
                .chain(std::iter::once("post_bn.".to_string()))
                .collect(),
            Self::EfficientNetLite(c) => c.trainable_prefixes(total - stages),
        })
    }
}

/// A built backbone: images `(N, 3, H, W)` in, the last feature map `(N, C, h, w)` out.
///
/// ```
/// use fracture::model::{Backbone, BackboneConfig, ResNetV2Config};
/// use candle_core::{Device, DType, Tensor};
/// let varmap = candle_nn::VarMap::new();
/// let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
/// let config = BackboneConfig::from(ResNetV2Config::custom(vec![2, 2], vec![4, 8]));
/// let backbone = Backbone::new(&config, vb)?;
/// let x = Tensor::zeros((2, 3, 64, 64), DType::F32, &Device::Cpu)?;
/// assert_eq!(backbone.forward_features(&x)?.dims(), &[2, 32, 8, 8]);
/// # Ok::<(), fracture::Error>(())
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Backbone {
    /// Keras's pre-activation ResNet.
    ResNetV2(ResNetV2),
    /// EfficientNet-Lite.
    EfficientNetLite(EfficientNetLite),
}

impl Backbone {
    /// Build the backbone named by `config`, reading its variables from `vb`.
    pub fn new(config: &BackboneConfig, vb: VarBuilder) -> Result<Self> {
        Ok(match config {
            BackboneConfig::ResNetV2(c) => Self::ResNetV2(ResNetV2::new(c, vb)?),
            BackboneConfig::EfficientNetLite(c) => {
                Self::EfficientNetLite(EfficientNetLite::new(c, vb)?)
            }
        })
    }

    /// The configuration it was built from.
    pub fn config(&self) -> BackboneConfig {
        match self {
            Self::ResNetV2(m) => BackboneConfig::ResNetV2(m.config().clone()),
            Self::EfficientNetLite(m) => BackboneConfig::EfficientNetLite(m.config().clone()),
        }
    }

    /// The last feature map, BN in inference mode.
    pub fn forward_features(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_features_t(x, false)
    }

    /// The globally average-pooled last feature map `(N, C)`, BN in inference mode.
    pub fn forward_pooled(&self, x: &Tensor) -> Result<Tensor> {
        global_average_pool(&self.forward_features(x)?)
    }

    /// The last feature map, BN in training mode when `train` is true.
    pub fn forward_features_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        match self {
            Self::ResNetV2(m) => m.forward_features_t(x, train),
            Self::EfficientNetLite(m) => m.forward_features_t(x, train),
        }
    }

    /// The last feature map for fine-tuning the last `stages` stages: the earlier stages run in
    /// inference mode, detached from the autograd graph; the last `stages` and the final
    /// normalization in training mode.
    pub fn forward_features_last_stages(&self, x: &Tensor, stages: usize) -> Result<Tensor> {
        let total = self.config().stage_count();
        let first = total.checked_sub(stages).ok_or_else(|| {
            Error::InvalidConfig(format!(
                "cannot fine-tune the last {stages} stages: the backbone has {total}"
            ))
        })?;
        match self {
            Self::ResNetV2(m) => m.forward_features_partial(x, first),
            Self::EfficientNetLite(m) => m.forward_features_partial(x, first),
        }
    }
}

impl Backbone {
    /// The feature map from `h`, the output of stage `first_stage - 1`: the stages from
    /// `first_stage` (0-based) on and the final layers, BN with batch statistics when
    /// `train`. What training the last stages on a
    /// [`StageCache`](crate::train::StageCache) runs; EfficientNet-Lite only for now.
    ///
    /// ```
    /// use fracture::model::{Backbone, BackboneConfig, EfficientNetLiteConfig};
    /// use candle_core::{Device, DType, Tensor};
    /// let varmap = candle_nn::VarMap::new();
    /// let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    /// let net = Backbone::new(&BackboneConfig::from(EfficientNetLiteConfig::lite0()), vb)?;
    /// let h = Tensor::zeros((1, 112, 4, 4), DType::F32, &Device::Cpu)?;
    /// assert_eq!(net.forward_from_stage_t(&h, 5, false)?.dims(), &[1, 1280, 2, 2]);
    /// # Ok::<(), fracture::Error>(())
    /// ```
    pub fn forward_from_stage_t(
        &self,
        h: &Tensor,
        first_stage: usize,
        train: bool,
    ) -> Result<Tensor> {
        match self {
            Self::EfficientNetLite(m) => m.forward_from_stage_t(h, first_stage, train),
            Self::ResNetV2(_) => Err(Error::InvalidConfig(
                "training from cached stage outputs and localization maps are implemented for EfficientNet-Lite only"
                    .into(),
            )),
        }
    }

    /// Every stage's output and the feature map, in inference mode (EfficientNet-Lite only,
    /// as [`Backbone::forward_from_stage_t`]).
    pub fn forward_stage_outputs(&self, x: &Tensor) -> Result<(Vec<Tensor>, Tensor)> {
        match self {
            Self::EfficientNetLite(m) => {
                let taps = m.forward_taps(x, false)?;
                Ok((taps.stages, taps.head))
            }
            Self::ResNetV2(_) => Err(Error::InvalidConfig(
                "localization maps are implemented for EfficientNet-Lite only".into(),
            )),
        }
    }
}

/// Mean over the spatial dimensions of an NCHW tensor: `(N, C, H, W) -> (N, C)` (Keras's
/// `GlobalAveragePooling2D`, what every head here starts with).
///
/// ```
/// use candle_core::{Device, Tensor};
/// let x = Tensor::arange(0f32, 8., &Device::Cpu)?.reshape((1, 2, 2, 2))?;
/// let m = fracture::model::global_average_pool(&x)?;
/// assert_eq!(m.to_vec2::<f32>()?, vec![vec![1.5, 5.5]]);
/// # Ok::<(), fracture::Error>(())
/// ```
pub fn global_average_pool(x: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    Ok(x.reshape((n, c, h * w))?.mean(2)?)
}

/// Read a [`BackboneConfig`] written by this version (tagged with `"architecture"`) or by an
/// earlier one (a bare ResNetV2 configuration, the only backbone there was), for
/// `#[serde(deserialize_with = ...)]` in bundles and checkpoints.
pub(crate) fn deserialize_backbone_config<'de, D>(
    deserializer: D,
) -> std::result::Result<BackboneConfig, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Tagged(BackboneConfig),
        Legacy(ResNetV2Config),
    }
    Ok(match Either::deserialize(deserializer)? {
        Either::Tagged(config) => config,
        Either::Legacy(config) => BackboneConfig::ResNetV2(config),
    })
}

/// Check that `dims` is a non-empty `(N, channels, H, W)` batch with `H, W >= min_size`; the
/// error names the backbone (`what`), the expected and the found shape. The one input check of
/// every backbone.
pub(crate) fn check_nchw(
    what: &str,
    dims: &[usize],
    channels: usize,
    min_size: usize,
) -> Result<()> {
    let expected = format!("(N, {channels}, H, W) with H, W >= {min_size}");
    let [n, ch, h, w] = *dims else {
        return Err(Error::InvalidInput(format!(
            "{what} expects a rank-4 NCHW batch {expected}, found shape {dims:?} (rank {})",
            dims.len()
        )));
    };
    if ch != channels {
        return Err(Error::InvalidInput(format!(
            "{what} expects {channels} input channels {expected}, found shape {dims:?} ({ch} channels)"
        )));
    }
    if h < min_size || w < min_size {
        return Err(Error::InvalidInput(format!(
            "{what} expects images of at least {min_size}x{min_size} {expected}, found shape {dims:?}"
        )));
    }
    if n == 0 {
        return Err(Error::InvalidInput(format!(
            "{what} got an empty batch {dims:?}"
        )));
    }
    Ok(())
}
