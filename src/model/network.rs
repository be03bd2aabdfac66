//! [`FractureNet`]: the backbone and the head as one network.

use super::{Backbone, BackboneConfig, ClassifierHead, HeadConfig};
use crate::error::Result;
use candle_core::Tensor;
use candle_nn::VarBuilder;
use rand::Rng;

/// A backbone with a [`ClassifierHead`]: images in, one fracture logit per image out.
///
/// ```
/// use fracture::model::{FractureNet, HeadConfig, ResNetV2Config};
/// use candle_core::{Device, DType, Tensor};
/// let varmap = candle_nn::VarMap::new();
/// let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
/// let net = FractureNet::new(ResNetV2Config::custom(vec![2, 2], vec![4, 8]), &HeadConfig::default(), vb)?;
/// let x = Tensor::zeros((3, 3, 64, 64), DType::F32, &Device::Cpu)?;
/// let p = net.probabilities(&x)?;
/// assert_eq!(p.dims(), &[3]);
/// # Ok::<(), fracture::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct FractureNet {
    /// The feature extractor (its own variable names at the root of the variable tree).
    pub backbone: Backbone,
    /// The classifier (variables under `head.`).
    pub head: ClassifierHead,
}

impl FractureNet {
    /// Build both parts from one variable tree: backbone at the root, head under `head`.
    pub fn new(
        backbone: impl Into<BackboneConfig>,
        head: &HeadConfig,
        vb: VarBuilder,
    ) -> Result<Self> {
        let backbone = &backbone.into();
        let backbone_net = Backbone::new(backbone, vb.clone())?;
        let head = ClassifierHead::new(backbone.feature_channels(), head, vb.pp("head"))?;
        Ok(Self {
            backbone: backbone_net,
            head,
        })
    }

    /// Put together a backbone and a head built from separate variable trees (for example a
    /// frozen backbone from a weights file and a trainable head from a `VarMap`).
    pub fn from_parts(backbone: Backbone, head: ClassifierHead) -> Self {
        Self { backbone, head }
    }

    /// Logits `(N,)` in inference mode (BN moving statistics, no dropout).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let features = self.backbone.forward_features(x)?;
        self.head.forward(&features)
    }

    /// Logits `(N,)` in training mode: BN batch statistics in the whole backbone, dropout in
    /// the head with a mask drawn from `rng`.
    pub fn forward_train(&self, x: &Tensor, rng: &mut impl Rng) -> Result<Tensor> {
        let features = self.backbone.forward_features_t(x, true)?;
        self.head.forward_train(&features, rng)
    }

    /// Fracture probabilities `(N,)` in inference mode.
    pub fn probabilities(&self, x: &Tensor) -> Result<Tensor> {
        Ok(candle_nn::ops::sigmoid(&self.forward(x)?)?)
    }
}
