//! [`LocalizationHead`]: where the network sees a fracture, as a map of logits on a finer
//! feature map than the one the classifier pools.
//!
//! The map is the sum of two 1x1 projections and a bias: one of an earlier, finer stage's
//! output (stride 16 in EfficientNet-Lite's stage 4) and one of the last feature map (stride
//! 32), repeated onto the finer grid. It is trained from the radiologists' boxes
//! ([`crate::train::BoxSupervision`]) and served as the model's own explanation: the evidence
//! the network was taught to put where the fracture is.

use super::VariableSpec;
use crate::error::{Error, Result};
use candle_core::{Tensor, D};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

/// Which finer feature map the [`LocalizationHead`] reads, and its width.
///
/// ```
/// use fracture::model::{EfficientNetLiteConfig, LocalizationHeadConfig};
/// let config = LocalizationHeadConfig::efficientnet_lite(&EfficientNetLiteConfig::lite0())?;
/// assert_eq!((config.stage, config.channels), (4, 112));
/// # Ok::<(), fracture::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalizationHeadConfig {
    /// The stage (0-based) whose output is the fine map.
    pub stage: usize,
    /// Channels of that output.
    pub channels: usize,
}

impl LocalizationHeadConfig {
    /// The stride-16 map of an EfficientNet-Lite: the output of its fifth stage (`blocks.4`),
    /// the last one before the stride-32 stages.
    pub fn efficientnet_lite(config: &super::EfficientNetLiteConfig) -> Result<Self> {
        let stage = config.stage_count().checked_sub(3).ok_or_else(|| {
            Error::InvalidConfig(format!(
                "a localization head needs a stage before the last two, and {} has {} stages",
                config.describe(),
                config.stage_count()
            ))
        })?;
        let channels = config.blocks()?[stage]
            .last()
            .map(|b| b.out_channels)
            .ok_or_else(|| Error::InvalidConfig(format!("stage {stage} has no blocks")))?;
        Ok(Self { stage, channels })
    }

    /// The head's variables under `head.loc.` for `in_features` channels of the last map.
    ///
    /// ```
    /// use fracture::model::LocalizationHeadConfig;
    /// let vars = LocalizationHeadConfig { stage: 4, channels: 112 }.variables(1280);
    /// let names: Vec<&str> = vars.iter().map(|v| v.name.as_str()).collect();
    /// assert_eq!(names, ["head.loc.fine.weight", "head.loc.deep.weight", "head.loc.bias"]);
    /// ```
    pub fn variables(&self, in_features: usize) -> Vec<VariableSpec> {
        let spec = |name: &str, shape: Vec<usize>| VariableSpec {
            name: format!("head.loc.{name}"),
            shape,
        };
        vec![
            spec("fine.weight", vec![1, self.channels]),
            spec("deep.weight", vec![1, in_features]),
            spec("bias", vec![1]),
        ]
    }
}

/// A map of fracture logits `(N, h, w)` on the fine grid; see the module documentation.
///
/// ```
/// use fracture::model::{LocalizationHead, LocalizationHeadConfig};
/// use candle_core::{Device, DType, Tensor};
/// let varmap = candle_nn::VarMap::new();
/// let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
/// let config = LocalizationHeadConfig { stage: 4, channels: 8 };
/// let head = LocalizationHead::new(&config, 16, vb.pp("loc"))?;
/// let fine = Tensor::ones((2, 8, 6, 4), DType::F32, &Device::Cpu)?;
/// let deep = Tensor::ones((2, 16, 3, 2), DType::F32, &Device::Cpu)?;
/// assert_eq!(head.forward(&fine, &deep)?.dims(), &[2, 6, 4]);
/// # Ok::<(), fracture::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct LocalizationHead {
    config: LocalizationHeadConfig,
    fine: Tensor,
    deep: Tensor,
    bias: Tensor,
}

impl LocalizationHead {
    /// Build the head for `in_features` channels of the last feature map.
    pub fn new(
        config: &LocalizationHeadConfig,
        in_features: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        if config.channels == 0 || in_features == 0 {
            return Err(Error::InvalidConfig(format!(
                "a localization head needs channels, found {} fine and {in_features} deep",
                config.channels
            )));
        }
        // Fresh values come from `init_variables` (the trainer, the builder), as for the
        // classification head.
        Ok(Self {
            config: *config,
            fine: vb.get((1, config.channels), "fine.weight")?,
            deep: vb.get((1, in_features), "deep.weight")?,
            bias: vb.get(1, "bias")?,
        })
    }

    /// Its configuration.
    pub fn config(&self) -> &LocalizationHeadConfig {
        &self.config
    }

    /// Logits `(N, h, w)` on the grid of `fine` `(N, C_fine, h, w)`, from it and the last
    /// feature map `deep` `(N, C_deep, h', w')`, whose cells are repeated onto the finer grid
    /// (nearest neighbour).
    pub fn forward(&self, fine: &Tensor, deep: &Tensor) -> Result<Tensor> {
        let (n, c, h, w) = fine.dims4()?;
        let (nd, cd, hd, wd) = deep.dims4()?;
        if n != nd || c != self.config.channels || cd != self.deep.dim(1)? || hd > h || wd > w {
            return Err(Error::InvalidInput(format!(
                "localization head expects fine (N, {}, h, w) and deep (N, {}, h', w') with h' <= h, w' <= w, found {:?} and {:?}",
                self.config.channels,
                self.deep.dim(1)?,
                fine.dims(),
                deep.dims()
            )));
        }
        let fine_logits = project(fine, &self.fine)?;
        let deep_logits = project(deep, &self.deep)?;
        let deep_logits = if h % hd == 0 && w % wd == 0 {
            let (sy, sx) = (h / hd, w / wd);
            deep_logits
                .reshape((n, hd, 1, wd, 1))?
                .broadcast_as((n, hd, sy, wd, sx))?
                .reshape((n, h, w))?
        } else {
            deep_logits
                .unsqueeze(1)?
                .upsample_nearest2d(h, w)?
                .squeeze(1)?
        };
        Ok(fine_logits.add(&deep_logits)?.broadcast_add(&self.bias)?)
    }
}

/// `(N, C, h, w)` times a `(1, C)` weight summed over channels: `(N, h, w)`.
fn project(x: &Tensor, weight: &Tensor) -> Result<Tensor> {
    let c = weight.dim(D::Minus1)?;
    let weight = weight.reshape((1, c, 1, 1))?;
    Ok(x.broadcast_mul(&weight)?.sum(1)?)
}
