//! The classification head the reference notebook put on ResNet152V2:
//! global average pool → Dense(256, ReLU) → Dropout(0.5) → Dense(1) logit.
//!
//! Dropout is drawn here, from a seeded generator the caller passes (candle's CPU dropout
//! cannot be seeded, and training must be reproducible).

use super::localization::{LocalizationHead, LocalizationHeadConfig};
use super::{global_average_pool, VariableSpec};
use crate::error::{Error, Result};
use candle_core::{Module, Tensor};
use candle_nn::{Linear, VarBuilder};
use rand::Rng;
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
    /// A [`LocalizationHead`] beside the classifier (variables under `head.loc.`): a map of
    /// where the fracture is, trained from boxes. `None` (the default, and every bundle
    /// written before it existed) has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub localization: Option<LocalizationHeadConfig>,
}

impl HeadConfig {
    /// The head's variables for `in_features` backbone channels, under `head.`.
    ///
    /// ```
    /// use fracture::model::HeadConfig;
    /// let vars = HeadConfig::default().variables(2048);
    /// assert_eq!(vars[0].name, "head.dense.weight");
    /// assert_eq!(vars[0].shape, vec![256, 2048]);
    /// assert_eq!(vars.len(), 4);
    /// ```
    pub fn variables(&self, in_features: usize) -> Vec<VariableSpec> {
        let spec = |name: &str, shape: Vec<usize>| VariableSpec {
            name: format!("head.{name}"),
            shape,
        };
        let mut vars = vec![
            spec("dense.weight", vec![self.hidden, in_features]),
            spec("dense.bias", vec![self.hidden]),
            spec("logit.weight", vec![1, self.hidden]),
            spec("logit.bias", vec![1]),
        ];
        if let Some(localization) = &self.localization {
            vars.extend(localization.variables(in_features));
        }
        vars
    }
}

impl Default for HeadConfig {
    fn default() -> Self {
        Self {
            hidden: 256,
            dropout: 0.5,
            localization: None,
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
/// assert_eq!(head.forward(&features)?.dims(), &[4]);
/// # Ok::<(), fracture::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct ClassifierHead {
    dense: Linear,
    dropout: f32,
    logit: Linear,
    in_features: usize,
    localization: Option<LocalizationHead>,
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
            dropout: config.dropout,
            logit: candle_nn::linear(config.hidden, 1, vb.pp("logit"))?,
            in_features,
            localization: config
                .localization
                .as_ref()
                .map(|c| LocalizationHead::new(c, in_features, vb.pp("loc")))
                .transpose()?,
        })
    }

    /// Logits `(N,)` from a 4-D feature map `(N, C, H, W)` or pooled features `(N, C)`, in
    /// inference mode (no dropout).
    pub fn forward(&self, features: &Tensor) -> Result<Tensor> {
        let hidden = self.hidden(features)?;
        Ok(self.logit.forward(&hidden)?.squeeze(1)?)
    }

    /// Logits in training mode: dropout with a mask drawn from `rng` (each unit kept with
    /// probability `1 - dropout` and scaled by `1 / (1 - dropout)`, as Keras does).
    ///
    /// ```
    /// use fracture::model::{ClassifierHead, HeadConfig};
    /// use candle_core::{Device, DType, Tensor};
    /// use rand::SeedableRng;
    /// let varmap = candle_nn::VarMap::new();
    /// let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    /// let head = ClassifierHead::new(16, &HeadConfig { hidden: 32, dropout: 0.5, localization: None }, vb)?;
    /// let x = Tensor::ones((2, 16), DType::F32, &Device::Cpu)?;
    /// let mut a = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    /// let mut b = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    /// let (ya, yb) = (head.forward_train(&x, &mut a)?, head.forward_train(&x, &mut b)?);
    /// assert_eq!(ya.to_vec1::<f32>()?, yb.to_vec1::<f32>()?);
    /// # Ok::<(), fracture::Error>(())
    /// ```
    pub fn forward_train(&self, features: &Tensor, rng: &mut impl Rng) -> Result<Tensor> {
        let hidden = self.hidden(features)?;
        let p = self.dropout;
        let hidden = if p > 0.0 {
            let keep_scale = 1.0 / (1.0 - p);
            let mask: Vec<f32> = (0..hidden.elem_count())
                .map(|_| {
                    if rng.random::<f32>() >= p {
                        keep_scale
                    } else {
                        0.0
                    }
                })
                .collect();
            let mask = Tensor::from_vec(mask, hidden.shape(), hidden.device())?;
            (hidden * mask)?
        } else {
            hidden
        };
        Ok(self.logit.forward(&hidden)?.squeeze(1)?)
    }

    /// Pool (for a 4-D input), check the width, dense + ReLU.
    fn hidden(&self, features: &Tensor) -> Result<Tensor> {
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
        Ok(self.dense.forward(&pooled)?.relu()?)
    }

    /// The hidden dense layer (`head.dense`).
    pub fn dense(&self) -> &Linear {
        &self.dense
    }

    /// The output layer (`head.logit`).
    pub fn logit(&self) -> &Linear {
        &self.logit
    }

    /// The localization head (`head.loc`), when the configuration has one.
    pub fn localization(&self) -> Option<&LocalizationHead> {
        self.localization.as_ref()
    }
}
