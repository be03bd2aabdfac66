//! The classification head the reference notebook put on ResNet152V2:
//! global average pool → Dense(256, ReLU) → Dropout(0.5) → Dense(1) logit.

use super::resnet_v2::global_average_pool;
use crate::error::{Error, Result};
use candle_core::{Module, Tensor};
use candle_nn::{Dropout, Linear, VarBuilder};
use serde::{Deserialize, Serialize};

/// Width and dropout of the [`ClassifierHead`].
///
/// ```
/// let h = fracture::model::HeadConfig::default();
/// assert_eq!((h.hidden, h.dropout), (256, 0.5));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeadConfig {
    /// Units of the hidden dense layer (`head.dense`).
    pub hidden: usize,
    /// Dropout probability applied after the hidden layer during training.
    pub dropout: f32,
}

impl Default for HeadConfig {
    fn default() -> Self {
        Self {
            hidden: 256,
            dropout: 0.5,
        }
    }
}

/// Pool → dense → ReLU → dropout → one logit, the probability of a fracture after a sigmoid.
///
/// Variables: `dense.{weight,bias}` and `logit.{weight,bias}` under the builder's prefix
/// (the network uses `head.`).
///
/// ```
/// use fracture::model::{ClassifierHead, HeadConfig};
/// use candle_core::{Device, DType, Tensor};
/// let varmap = candle_nn::VarMap::new();
/// let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
/// let head = ClassifierHead::new(128, &HeadConfig::default(), vb)?;
/// let features = Tensor::ones((4, 128, 7, 7), DType::F32, &Device::Cpu)?;
/// assert_eq!(head.forward_t(&features, false)?.dims(), &[4]);
/// # Ok::<(), fracture::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct ClassifierHead {
    pub(crate) dense: Linear,
    dropout: Dropout,
    pub(crate) logit: Linear,
    in_features: usize,
}

impl ClassifierHead {
    /// Build a head for `in_features` backbone channels.
    pub fn new(in_features: usize, config: &HeadConfig, vb: VarBuilder) -> Result<Self> {
        if config.hidden == 0 || !(0.0..1.0).contains(&config.dropout) {
            return Err(Error::InvalidConfig(format!(
                "head needs hidden > 0 and dropout in [0, 1), found hidden {} dropout {}",
                config.hidden, config.dropout
            )));
        }
        Ok(Self {
            dense: candle_nn::linear(in_features, config.hidden, vb.pp("dense"))?,
            dropout: Dropout::new(config.dropout),
            logit: candle_nn::linear(config.hidden, 1, vb.pp("logit"))?,
            in_features,
        })
    }

    /// Logits `(N,)` from a 4-D feature map `(N, C, H, W)` or pooled features `(N, C)`.
    pub fn forward_t(&self, features: &Tensor, train: bool) -> Result<Tensor> {
        let pooled = match features.rank() {
            4 => global_average_pool(features)?,
            2 => features.clone(),
            _ => {
                return Err(Error::InvalidInput(format!(
                    "head expects (N, {c}, H, W) or (N, {c}) features, found {:?}",
                    features.dims(),
                    c = self.in_features
                )))
            }
        };
        if pooled.dim(1)? != self.in_features {
            return Err(Error::InvalidInput(format!(
                "head expects {} feature channels, found shape {:?}",
                self.in_features,
                features.dims()
            )));
        }
        let hidden = self.dense.forward(&pooled)?.relu()?;
        let hidden = self.dropout.forward(&hidden, train)?;
        Ok(self.logit.forward(&hidden)?.squeeze(1)?)
    }
}
