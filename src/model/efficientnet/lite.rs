//! [`EfficientNetLite`]: the network in candle, trainable end to end or by stages.

use super::blocks::{bn, kernel, Block};
use super::config::EfficientNetLiteConfig;
use super::ops::batch_norm::BatchNormAct;
use super::ops::{conv_same, pointwise, LiteOps};
use crate::error::{Error, Result};
use crate::model::global_average_pool;
use candle_core::{Module, Tensor};
use candle_nn::{Linear, VarBuilder};

/// Intermediate activations of one forward pass (timm's stage outputs), all NCHW.
#[derive(Debug, Clone)]
pub struct LiteTaps {
    /// `conv_stem` + `bn1` + ReLU6.
    pub stem: Tensor,
    /// The output of each stage `blocks.S`.
    pub stages: Vec<Tensor>,
    /// `conv_head` + `bn2` + ReLU6: the feature map (what pooling and Grad-CAM take).
    pub head: Tensor,
}

/// EfficientNet-Lite in candle, with timm's variable names and layouts.
///
/// Stem (3x3 stride-2 convolution, BN, ReLU6), the stages of depthwise-separable and
/// inverted-residual blocks, head (1x1 convolution to 1280 channels, BN, ReLU6), and the
/// ImageNet classifier when the config has one. Convolutions pad like TensorFlow's "SAME".
/// Inputs are RGB scaled to `x / 127.5 - 1`. The depthwise convolutions and batch norms run
/// as fused ops on the CPU (see [`LiteOps`]).
///
/// ```
/// use fracture::model::{EfficientNetLite, EfficientNetLiteConfig};
/// use candle_core::{Device, DType, Tensor};
/// let varmap = candle_nn::VarMap::new();
/// let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
/// let net = EfficientNetLite::new(&EfficientNetLiteConfig::lite0(), vb)?;
/// let x = Tensor::zeros((1, 3, 64, 96), DType::F32, &Device::Cpu)?;
/// assert_eq!(net.forward_features(&x)?.dims(), &[1, 1280, 2, 3]);
/// assert!(net.forward_logits(&x).is_err()); // no classifier in this config
/// # Ok::<(), fracture::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct EfficientNetLite {
    config: EfficientNetLiteConfig,
    ops: LiteOps,
    pub(crate) conv_stem: Tensor,
    pub(crate) bn1: BatchNormAct,
    pub(crate) stages: Vec<Vec<Block>>,
    pub(crate) conv_head: Tensor,
    pub(crate) bn2: BatchNormAct,
    classifier: Option<Linear>,
}

impl EfficientNetLite {
    /// Build the network, taking every variable from `vb` under its timm name (see
    /// [`EfficientNetLiteConfig::variables`]).
    pub fn new(config: &EfficientNetLiteConfig, vb: VarBuilder) -> Result<Self> {
        config.validate()?;
        let stem = config.stem_channels;
        let conv_stem = kernel(&vb, "conv_stem", [stem, config.in_channels, 3, 3])?;
        let bn1 = bn(config, &vb, "bn1", stem, true)?;
        let mut stages = Vec::new();
        let mut last = stem;
        for (s, specs) in config.blocks()?.into_iter().enumerate() {
            let mut stage = Vec::with_capacity(specs.len());
            for (i, spec) in specs.into_iter().enumerate() {
                stage.push(Block::new(spec, config, &vb.pp(format!("blocks.{s}.{i}")))?);
                last = spec.out_channels;
            }
            stages.push(stage);
        }
        let head = config.head_channels;
        let conv_head = kernel(&vb, "conv_head", [head, last, 1, 1])?;
        let bn2 = bn(config, &vb, "bn2", head, true)?;
        let classifier = match config.num_classes {
            Some(classes) => Some(candle_nn::linear(head, classes, vb.pp("classifier"))?),
            None => None,
        };
        Ok(Self {
            config: config.clone(),
            ops: LiteOps::default(),
            conv_stem,
            bn1,
            stages,
            conv_head,
            bn2,
            classifier,
        })
    }

    /// The same network running its depthwise convolutions and batch norms with `ops`
    /// (the weights are shared, not copied).
    pub fn with_ops(mut self, ops: LiteOps) -> Self {
        self.ops = ops;
        self
    }

    /// The implementation of the depthwise convolutions and batch norms.
    pub fn ops(&self) -> LiteOps {
        self.ops
    }

    /// The ImageNet classifier, when the config has one.
    pub(crate) fn classifier(&self) -> Option<&Linear> {
        self.classifier.as_ref()
    }

    /// The configuration this network was built from.
    pub fn config(&self) -> &EfficientNetLiteConfig {
        &self.config
    }

    /// Check that `x` is an `(N, C, H, W)` batch this network accepts.
    pub fn check_input(&self, x: &Tensor) -> Result<()> {
        self.config.check_input_dims(x.dims())
    }

    fn stem(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = conv_same(x, &self.conv_stem, 2)?;
        self.bn1.forward_t(&y, train, self.ops)
    }

    fn stage(&self, s: usize, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut h = x.clone();
        for block in self.stages.get(s).into_iter().flatten() {
            h = block.forward_t(&h, train, self.ops)?;
        }
        Ok(h)
    }

    fn head(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.bn2
            .forward_t(&pointwise(x, &self.conv_head)?, train, self.ops)
    }

    /// The feature map from the output of stage `first_stage - 1` (the stem's output when
    /// `first_stage` is 0, as in [`LiteTaps`]): the stages from `first_stage` on and the head,
    /// BN in inference mode. With [`forward_taps`](Self::forward_taps) it explains an earlier,
    /// finer feature map: the taps give that map, this gives the rest of the network as a
    /// function of it.
    ///
    /// ```
    /// use fracture::model::{EfficientNetLite, EfficientNetLiteConfig};
    /// use candle_core::{Device, DType, Tensor};
    /// let varmap = candle_nn::VarMap::new();
    /// let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    /// let net = EfficientNetLite::new(&EfficientNetLiteConfig::lite0(), vb)?;
    /// let x = Tensor::randn(0f32, 1., (1, 3, 64, 64), &Device::Cpu)?;
    /// let taps = net.forward_taps(&x, false)?;
    /// let rest = net.forward_from_stage(&taps.stages[4], 5)?;
    /// let all = net.forward_features(&x)?;
    /// assert_eq!(rest.flatten_all()?.to_vec1::<f32>()?, all.flatten_all()?.to_vec1::<f32>()?);
    /// assert!(net.forward_from_stage(&taps.stages[4], 8).is_err());
    /// # Ok::<(), fracture::Error>(())
    /// ```
    pub fn forward_from_stage(&self, h: &Tensor, first_stage: usize) -> Result<Tensor> {
        self.forward_from_stage_t(h, first_stage, false)
    }

    /// [`forward_from_stage`](Self::forward_from_stage), BN with batch statistics when
    /// `train`: training the last stages on their cached input.
    pub fn forward_from_stage_t(
        &self,
        h: &Tensor,
        first_stage: usize,
        train: bool,
    ) -> Result<Tensor> {
        if first_stage > self.stages.len() {
            return Err(Error::InvalidConfig(format!(
                "stage {first_stage} does not exist: this network has {} stages",
                self.stages.len()
            )));
        }
        self.stages_and_head(h, first_stage, train)
    }

    /// The stages from `first_stage` on, then the head.
    fn stages_and_head(&self, h: &Tensor, first_stage: usize, train: bool) -> Result<Tensor> {
        let mut h = h.clone();
        for s in first_stage..self.stages.len() {
            h = self.stage(s, &h, train)?;
        }
        self.head(&h, train)
    }

    /// Forward pass keeping every tap: the stem, each stage's output and the feature map.
    /// BN uses batch statistics when `train` (and then updates the running ones).
    pub fn forward_taps(&self, x: &Tensor, train: bool) -> Result<LiteTaps> {
        self.check_input(x)?;
        let stem = self.stem(x, train)?;
        let mut stages = Vec::with_capacity(self.stages.len());
        let mut h = stem.clone();
        for s in 0..self.stages.len() {
            h = self.stage(s, &h, train)?;
            stages.push(h.clone());
        }
        let head = self.head(&h, train)?;
        Ok(LiteTaps { stem, stages, head })
    }

    /// The feature map `(N, 1280, h, w)` (`conv_head` + `bn2` + ReLU6), BN in inference mode.
    pub fn forward_features(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_features_t(x, false)
    }

    /// The feature map, BN with batch statistics when `train` (the whole network trains).
    pub fn forward_features_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.check_input(x)?;
        self.stages_and_head(&self.stem(x, train)?, 0, train)
    }

    /// The feature map for fine-tuning the last stages: the stem and the stages before
    /// `first_trainable_stage` (0-based, at most [`EfficientNetLiteConfig::stage_count`]) run
    /// with BN in inference mode and their output is detached from the autograd graph; the
    /// later stages and the head (`conv_head`, `bn2`) run with BN in training mode.
    /// `first_trainable_stage == stage_count` trains the head only. The variables that train
    /// are those under [`EfficientNetLiteConfig::trainable_prefixes`].
    ///
    /// ```
    /// use fracture::model::{EfficientNetLite, EfficientNetLiteConfig};
    /// use candle_core::{Device, DType, Tensor};
    /// let varmap = candle_nn::VarMap::new();
    /// let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    /// let net = EfficientNetLite::new(&EfficientNetLiteConfig::lite0(), vb)?;
    /// let x = Tensor::ones((2, 3, 32, 32), DType::F32, &Device::Cpu)?;
    /// assert_eq!(net.forward_features_partial(&x, 5)?.dims(), &[2, 1280, 1, 1]);
    /// assert!(net.forward_features_partial(&x, 8).is_err());
    /// # Ok::<(), fracture::Error>(())
    /// ```
    pub fn forward_features_partial(
        &self,
        x: &Tensor,
        first_trainable_stage: usize,
    ) -> Result<Tensor> {
        let stages = self.stages.len();
        if first_trainable_stage > stages {
            return Err(Error::InvalidConfig(format!(
                "cannot train from stage {first_trainable_stage}: EfficientNet-Lite has {stages} stages"
            )));
        }
        self.check_input(x)?;
        let mut h = self.stem(x, false)?;
        for s in 0..stages {
            if s == first_trainable_stage {
                h = h.detach();
            }
            h = self.stage(s, &h, s >= first_trainable_stage)?;
        }
        if first_trainable_stage == stages {
            h = h.detach();
        }
        self.head(&h, true)
    }

    /// The globally average-pooled features `(N, 1280)`, BN in inference mode.
    pub fn forward_pooled(&self, x: &Tensor) -> Result<Tensor> {
        global_average_pool(&self.forward_features(x)?)
    }

    /// ImageNet logits `(N, classes)` (inference mode) when the config has the classifier;
    /// an error otherwise.
    ///
    /// ```
    /// use fracture::model::{EfficientNetLite, EfficientNetLiteConfig};
    /// use candle_core::{Device, DType, Tensor};
    /// let varmap = candle_nn::VarMap::new();
    /// let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    /// let config = EfficientNetLiteConfig::lite0().with_imagenet_classifier();
    /// let net = EfficientNetLite::new(&config, vb)?;
    /// let x = Tensor::zeros((1, 3, 32, 32), DType::F32, &Device::Cpu)?;
    /// assert_eq!(net.forward_logits(&x)?.dims(), &[1, 1000]);
    /// # Ok::<(), fracture::Error>(())
    /// ```
    pub fn forward_logits(&self, x: &Tensor) -> Result<Tensor> {
        let classifier = self.classifier.as_ref().ok_or_else(|| {
            Error::InvalidConfig(
                "this EfficientNet-Lite has no classifier: build it from a config with \
                 `num_classes` (e.g. `with_imagenet_classifier()`)"
                    .into(),
            )
        })?;
        Ok(classifier.forward(&self.forward_pooled(x)?)?)
    }
}
