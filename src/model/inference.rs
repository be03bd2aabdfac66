//! [`FrozenBackbone`]: a backbone used for inference only (classification, a frozen backbone
//! under a trained head, explanations), and the one place that chooses how it runs: on the
//! CPU through the backbone's fast path when it has one, elsewhere through candle's ops, and
//! at which [`Precision`] the fast path runs.

use super::efficientnet::FastEfficientNetLite;
use super::resnet_v2::FastResNetV2;
use super::{global_average_pool, Backbone, Precision};
use crate::error::{Error, Result};
use candle_core::{Device, Tensor};

/// A backbone's CPU inference path, when it has one.
#[derive(Debug, Clone)]
enum FastPath {
    ResNetV2(FastResNetV2),
    EfficientNetLite(FastEfficientNetLite),
}

/// A backbone in inference mode, outside the autograd graph.
///
/// ```
/// use fracture::model::{Backbone, BackboneConfig, FrozenBackbone, ResNetV2Config};
/// use candle_core::{Device, DType, Tensor};
/// let varmap = candle_nn::VarMap::new();
/// let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
/// let config = BackboneConfig::from(ResNetV2Config::custom(vec![2, 2], vec![4, 8]));
/// let frozen = FrozenBackbone::new(Backbone::new(&config, vb)?, &Device::Cpu)?;
/// assert!(frozen.uses_fast_path());
/// let x = Tensor::ones((2, 3, 64, 64), DType::F32, &Device::Cpu)?;
/// assert_eq!(frozen.pooled(&x)?.dims(), &[2, 32]);
/// # Ok::<(), fracture::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct FrozenBackbone {
    backbone: Backbone,
    fast: Option<FastPath>,
}

impl FrozenBackbone {
    /// Plan inference for `backbone` (its current weights) on `device`: the fast path on a
    /// CPU when the architecture has one.
    pub fn new(backbone: Backbone, device: &Device) -> Result<Self> {
        let fast = if device.is_cpu() {
            match &backbone {
                Backbone::ResNetV2(m) => Some(FastPath::ResNetV2(FastResNetV2::from_model(m)?)),
                Backbone::EfficientNetLite(m) => Some(FastPath::EfficientNetLite(
                    FastEfficientNetLite::from_model(m)?,
                )),
            }
        } else {
            None
        };
        Ok(Self { backbone, fast })
    }

    /// [`FrozenBackbone::new`] with the fast path at `precision`; an error when that precision
    /// cannot run here (bf16 without AVX512_BF16, or off the CPU, where there is no fast path).
    ///
    /// ```
    /// use fracture::model::{Backbone, BackboneConfig, FrozenBackbone, Precision, ResNetV2Config};
    /// use candle_core::{Device, DType};
    /// let varmap = candle_nn::VarMap::new();
    /// let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    /// let config = BackboneConfig::from(ResNetV2Config::custom(vec![2, 2], vec![4, 8]));
    /// let backbone = Backbone::new(&config, vb)?;
    /// match FrozenBackbone::with_precision(backbone, &Device::Cpu, Precision::Bf16) {
    ///     Ok(frozen) => assert_eq!(frozen.precision(), Precision::Bf16),
    ///     Err(e) => assert!(e.to_string().contains("AVX512_BF16")),
    /// }
    /// # Ok::<(), fracture::Error>(())
    /// ```
    pub fn with_precision(
        backbone: Backbone,
        device: &Device,
        precision: Precision,
    ) -> Result<Self> {
        let mut frozen = Self::new(backbone, device)?;
        frozen.set_precision(precision)?;
        Ok(frozen)
    }

    /// Run the fast path's convolutions at `precision`. [`Precision::F32`] always succeeds;
    /// [`Precision::Bf16`] needs the fast path (a CPU device, not
    /// [`FrozenBackbone::without_fast_path`]) and a CPU with AVX512_BF16, and otherwise leaves
    /// the backbone as it was and says why.
    pub fn set_precision(&mut self, precision: Precision) -> Result<()> {
        match &mut self.fast {
            Some(FastPath::ResNetV2(f)) => f.set_precision(precision),
            Some(FastPath::EfficientNetLite(f)) => f.set_precision(precision),
            None if precision == Precision::Bf16 => Err(Error::InvalidConfig(
                "precision bf16 is a mode of the CPU fast path, and this backbone runs through \
                 candle's ops (another device, or the fast path turned off)"
                    .into(),
            )),
            None => Ok(()),
        }
    }

    /// The precision of the convolutions: the fast path's, [`Precision::F32`] without one.
    pub fn precision(&self) -> Precision {
        match &self.fast {
            Some(FastPath::ResNetV2(f)) => f.precision(),
            Some(FastPath::EfficientNetLite(f)) => f.precision(),
            None => Precision::F32,
        }
    }

    /// Use candle's ops even on the CPU (to compare the two paths, or to save the fast
    /// path's memory).
    pub fn without_fast_path(backbone: Backbone) -> Self {
        Self {
            backbone,
            fast: None,
        }
    }

    /// Whether inference runs through a CPU fast path.
    pub fn uses_fast_path(&self) -> bool {
        self.fast.is_some()
    }

    /// The backbone itself (candle's ops, trainable).
    pub fn backbone(&self) -> &Backbone {
        &self.backbone
    }

    /// The last feature map `(N, C, h, w)`, detached.
    pub fn features(&self, x: &Tensor) -> Result<Tensor> {
        let features = match &self.fast {
            Some(FastPath::ResNetV2(fast)) => fast.forward_features(x)?,
            Some(FastPath::EfficientNetLite(fast)) => fast.forward_features(x)?,
            None => self.backbone.forward_features(x)?,
        };
        Ok(features.detach())
    }

    /// The output of stage `stage` (0-based), detached: what a
    /// [`StageCache`](crate::train::StageCache) stores (EfficientNet-Lite only).
    ///
    /// ```
    /// use fracture::model::{Backbone, BackboneConfig, EfficientNetLiteConfig, FrozenBackbone};
    /// use candle_core::{Device, DType, Tensor};
    /// let varmap = candle_nn::VarMap::new();
    /// let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    /// let config = BackboneConfig::from(EfficientNetLiteConfig::lite0());
    /// let frozen = FrozenBackbone::new(Backbone::new(&config, vb)?, &Device::Cpu)?;
    /// let x = Tensor::zeros((1, 3, 64, 64), DType::F32, &Device::Cpu)?;
    /// assert_eq!(frozen.stage_output(&x, 4)?.dims(), &[1, 112, 4, 4]);
    /// # Ok::<(), fracture::Error>(())
    /// ```
    pub fn stage_output(&self, x: &Tensor, stage: usize) -> Result<Tensor> {
        match &self.fast {
            // Only the layers up to that stage run.
            Some(FastPath::EfficientNetLite(fast)) => Ok(fast.forward_stage(x, stage)?.detach()),
            _ => Ok(self.stage_and_features(x, stage)?.0),
        }
    }

    /// The output of stage `stage` and the last feature map of one pass, detached: what a
    /// [`LocalizationHead`](crate::model::LocalizationHead) reads (EfficientNet-Lite only).
    pub fn stage_and_features(&self, x: &Tensor, stage: usize) -> Result<(Tensor, Tensor)> {
        let (mut stages, features) = match &self.fast {
            Some(FastPath::EfficientNetLite(fast)) => {
                let taps = fast.forward_taps(x)?;
                (taps.stages, taps.head)
            }
            _ => self.backbone.forward_stage_outputs(x)?,
        };
        if stage >= stages.len() {
            return Err(Error::InvalidConfig(format!(
                "stage {stage} does not exist: the backbone has {}",
                stages.len()
            )));
        }
        Ok((stages.swap_remove(stage).detach(), features.detach()))
    }

    /// The globally average-pooled features `(N, C)`, detached.
    pub fn pooled(&self, x: &Tensor) -> Result<Tensor> {
        let pooled = match &self.fast {
            Some(FastPath::ResNetV2(fast)) => fast.forward_pooled(x)?,
            Some(FastPath::EfficientNetLite(fast)) => fast.forward_pooled(x)?,
            None => global_average_pool(&self.backbone.forward_features(x)?)?,
        };
        Ok(pooled.detach())
    }
}
