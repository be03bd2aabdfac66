//! [`EfficientNetLiteConfig`]: the shape of an EfficientNet-Lite network, with timm's presets.

use super::arch::{build_stages, BlockKind, BlockSpec, StageSpec, LITE_STAGES};
use crate::error::{Error, Result};
use crate::model::VariableSpec;
use serde::{Deserialize, Serialize};

/// The shape of an EfficientNet-Lite network (Tan & Le, "EfficientNet: Rethinking Model Scaling
/// for Convolutional Neural Networks", 2019; the Lite variants drop squeeze-excitation, use
/// ReLU6, and fix the stem and head widths).
///
/// The architecture is data: [`stages`](Self::stages) holds one timm-style string per stage
/// (see [`StageSpec`]), and [`blocks`](Self::blocks) applies the multipliers. Variables carry
/// timm's names (`conv_stem`, `bn1`, `blocks.S.I.conv_dw`, ..., `conv_head`, `bn2`,
/// `classifier`) and PyTorch layouts, so timm's `tf_efficientnet_lite*` files load as they are.
///
/// ```
/// use fracture::model::EfficientNetLiteConfig;
/// let c = EfficientNetLiteConfig::lite0();
/// assert_eq!(c.feature_channels(), 1280);
/// assert_eq!(c.stage_count(), 7);
/// assert_eq!(c.parameter_count(), 3_413_024); // no classifier; BN moving statistics included
/// assert_eq!(c.feature_size(224, 224), (7, 7));
/// assert_eq!(c.with_imagenet_classifier().parameter_count(), 4_694_024);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EfficientNetLiteConfig {
    /// Channel multiplier of the stages ([`round_channels`](crate::model::round_channels));
    /// the stem and head keep their widths.
    pub width_multiplier: f64,
    /// Depth multiplier of the stages between the first and the last
    /// ([`scale_depth`](crate::model::scale_depth)).
    pub depth_multiplier: f64,
    /// One timm-style string per stage, e.g. `ir_r2_k3_s2_e6_c24` (see [`StageSpec`]).
    pub stages: Vec<String>,
    /// Output channels of the 3x3 stride-2 stem convolution (32).
    pub stem_channels: usize,
    /// Output channels of the 1x1 head convolution: the feature map's depth (1280).
    pub head_channels: usize,
    /// Input channels (3: RGB).
    pub in_channels: usize,
    /// Batch-normalization epsilon (TensorFlow's EfficientNet: 1e-3).
    pub bn_epsilon: f64,
    /// Batch-normalization momentum in Keras's sense: the share of the old moving statistic kept
    /// at each training step (TensorFlow's EfficientNet: 0.99).
    pub bn_momentum: f64,
    /// Classes of the ImageNet classifier (`classifier`, a linear layer on the pooled features),
    /// or `None` for the backbone alone.
    pub num_classes: Option<usize>,
    /// The input side the preset was trained at (timm's `input_size`); the network accepts
    /// any size from [`MIN_INPUT_SIZE`](Self::MIN_INPUT_SIZE).
    pub native_size: usize,
}

impl EfficientNetLiteConfig {
    /// Smallest input side accepted: the network's total stride, one feature pixel.
    pub const MIN_INPUT_SIZE: usize = 32;

    fn preset(width: f64, depth: f64, native_size: usize) -> Self {
        Self {
            width_multiplier: width,
            depth_multiplier: depth,
            stages: LITE_STAGES.iter().map(|s| s.to_string()).collect(),
            stem_channels: 32,
            head_channels: 1280,
            in_channels: 3,
            bn_epsilon: 1e-3,
            bn_momentum: 0.99,
            num_classes: None,
            native_size,
        }
    }

    /// EfficientNet-Lite0 (width 1.0, depth 1.0, 224 px), the backbone without classifier:
    /// the preset checked against timm with real ImageNet weights.
    pub fn lite0() -> Self {
        Self::preset(1.0, 1.0, 224)
    }

    /// EfficientNet-Lite1 (width 1.0, depth 1.1, 240 px).
    pub fn lite1() -> Self {
        Self::preset(1.0, 1.1, 240)
    }

    /// EfficientNet-Lite2 (width 1.1, depth 1.2, 260 px).
    pub fn lite2() -> Self {
        Self::preset(1.1, 1.2, 260)
    }

    /// EfficientNet-Lite3 (width 1.2, depth 1.4, 300 px).
    pub fn lite3() -> Self {
        Self::preset(1.2, 1.4, 300)
    }

    /// EfficientNet-Lite4 (width 1.4, depth 1.8, 380 px).
    ///
    /// ```
    /// use fracture::model::EfficientNetLiteConfig;
    /// let c = EfficientNetLiteConfig::lite4();
    /// assert_eq!(c.blocks()?.iter().map(Vec::len).collect::<Vec<_>>(), vec![1, 4, 4, 6, 6, 8, 1]);
    /// # Ok::<(), fracture::Error>(())
    /// ```
    pub fn lite4() -> Self {
        Self::preset(1.4, 1.8, 380)
    }

    /// The same network with timm's 1000-class ImageNet classifier (`classifier.weight`
    /// `(1000, 1280)`, `classifier.bias`), as in `tf_efficientnet_lite0.in1k`.
    pub fn with_imagenet_classifier(mut self) -> Self {
        self.num_classes = Some(1000);
        self
    }

    /// Every block of every stage, multipliers applied.
    ///
    /// ```
    /// use fracture::model::EfficientNetLiteConfig;
    /// let blocks = EfficientNetLiteConfig::lite0().blocks()?;
    /// assert_eq!(blocks[6][0].mid_channels, 1152);
    /// # Ok::<(), fracture::Error>(())
    /// ```
    pub fn blocks(&self) -> Result<Vec<Vec<BlockSpec>>> {
        let stages = self
            .stages
            .iter()
            .map(|s| StageSpec::parse(s))
            .collect::<Result<Vec<_>>>()?;
        Ok(build_stages(
            &stages,
            self.stem_channels,
            self.width_multiplier,
            self.depth_multiplier,
        ))
    }

    /// Check that the configuration can be built.
    ///
    /// ```
    /// use fracture::model::EfficientNetLiteConfig;
    /// let mut c = EfficientNetLiteConfig::lite0();
    /// c.stages[1] = "ir_r2_k3_s2_e6_c24_se0.25".into();
    /// assert!(c.validate().unwrap_err().to_string().contains("se0.25"));
    /// ```
    pub fn validate(&self) -> Result<()> {
        if self.stages.is_empty() {
            return Err(Error::InvalidConfig(
                "EfficientNet-Lite needs at least one stage".into(),
            ));
        }
        let positive = |v: f64| v.is_finite() && v > 0.0 && v <= 8.0;
        if !positive(self.width_multiplier) || !positive(self.depth_multiplier) {
            return Err(Error::InvalidConfig(format!(
                "width and depth multipliers must be in (0, 8], found {} and {}",
                self.width_multiplier, self.depth_multiplier
            )));
        }
        if self.stem_channels == 0 || self.head_channels == 0 || self.in_channels == 0 {
            return Err(Error::InvalidConfig(
                "stem, head and input channels must be positive".into(),
            ));
        }
        if self.num_classes == Some(0) {
            return Err(Error::InvalidConfig(
                "a classifier needs at least one class".into(),
            ));
        }
        if !(0.0..1.0).contains(&self.bn_momentum) {
            return Err(Error::InvalidConfig(format!(
                "BN momentum must be in [0, 1), found {}",
                self.bn_momentum
            )));
        }
        if self.bn_epsilon.is_nan() || self.bn_epsilon <= 0.0 {
            return Err(Error::InvalidConfig(format!(
                "BN epsilon must be positive, found {}",
                self.bn_epsilon
            )));
        }
        self.blocks().map(|_| ())
    }

    /// Check that a batch of shape `dims` is `(N, C, H, W)` with this config's channel count,
    /// N >= 1 and H, W >= [`MIN_INPUT_SIZE`](Self::MIN_INPUT_SIZE); the error names the
    /// expected and the found shape.
    ///
    /// ```
    /// use fracture::model::EfficientNetLiteConfig;
    /// let c = EfficientNetLiteConfig::lite0();
    /// assert!(c.check_input_dims(&[2, 3, 224, 224]).is_ok());
    /// assert!(c.check_input_dims(&[2, 1, 224, 224]).unwrap_err().to_string().contains("[2, 1, 224, 224]"));
    /// assert!(c.check_input_dims(&[2, 3, 16, 224]).is_err());
    /// ```
    pub fn check_input_dims(&self, dims: &[usize]) -> Result<()> {
        crate::model::backbone::check_nchw(
            "EfficientNet-Lite",
            dims,
            self.in_channels,
            Self::MIN_INPUT_SIZE,
        )
    }

    /// A short human-readable name: the preset's (`EfficientNet-Lite0`) or the multipliers.
    ///
    /// ```
    /// use fracture::model::EfficientNetLiteConfig;
    /// assert_eq!(EfficientNetLiteConfig::lite0().describe(), "EfficientNet-Lite0");
    /// let mut c = EfficientNetLiteConfig::lite0();
    /// c.width_multiplier = 0.5;
    /// assert_eq!(c.describe(), "EfficientNet-Lite (width 0.5, depth 1)");
    /// ```
    pub fn describe(&self) -> String {
        match self.preset_index() {
            Some(i) => format!("EfficientNet-Lite{i}"),
            None => format!(
                "EfficientNet-Lite (width {}, depth {})",
                self.width_multiplier, self.depth_multiplier
            ),
        }
    }

    /// Which preset this is (`Some(0)` for [`lite0`](Self::lite0), ..., `Some(4)`), with or
    /// without the ImageNet classifier; `None` for a custom shape.
    ///
    /// ```
    /// use fracture::model::EfficientNetLiteConfig;
    /// assert_eq!(EfficientNetLiteConfig::lite2().with_imagenet_classifier().preset_index(), Some(2));
    /// ```
    pub fn preset_index(&self) -> Option<usize> {
        let mut plain = self.clone();
        plain.num_classes = None;
        [
            Self::lite0(),
            Self::lite1(),
            Self::lite2(),
            Self::lite3(),
            Self::lite4(),
        ]
        .iter()
        .position(|p| *p == plain)
    }

    /// Depth of the feature map (`head_channels`, 1280 for every preset).
    pub fn feature_channels(&self) -> usize {
        self.head_channels
    }

    /// Number of stages (timm's `blocks.S`), the units of "fine-tune the last N stages": 7 for
    /// the presets. The stem is not one of them; `conv_head` + `bn2` train with any of them
    /// (see [`EfficientNetLite::forward_features_partial`](crate::model::EfficientNetLite::forward_features_partial)).
    pub fn stage_count(&self) -> usize {
        self.stages.len()
    }

    /// Variable-name prefixes of what trains when the stages from `first_trainable_stage`
    /// (0-based) on are fine-tuned: `blocks.S.` for those stages, then `conv_head.` and `bn2.`.
    ///
    /// ```
    /// use fracture::model::EfficientNetLiteConfig;
    /// let c = EfficientNetLiteConfig::lite0();
    /// assert_eq!(c.trainable_prefixes(6), vec!["blocks.6.", "conv_head.", "bn2."]);
    /// assert_eq!(c.trainable_prefixes(7), vec!["conv_head.", "bn2."]);
    /// ```
    pub fn trainable_prefixes(&self, first_trainable_stage: usize) -> Vec<String> {
        let mut prefixes: Vec<String> = (first_trainable_stage..self.stage_count())
            .map(|s| format!("blocks.{s}."))
            .collect();
        prefixes.extend(["conv_head.".to_string(), "bn2.".to_string()]);
        prefixes
    }

    /// Every tensor of the network by timm name with its PyTorch shape, in timm's `state_dict`
    /// order: convolution kernels OIHW (depthwise `(C, 1, k, k)`), BN `weight`, `bias`,
    /// `running_mean`, `running_var`, and `classifier.weight` `(classes, 1280)` and
    /// `classifier.bias` when the config has a classifier. An invalid config gives the
    /// variables of its valid prefix of stages (call [`validate`](Self::validate) first).
    ///
    /// ```
    /// use fracture::model::EfficientNetLiteConfig;
    /// let vars = EfficientNetLiteConfig::lite0().variables();
    /// assert_eq!(vars[0].name, "conv_stem.weight");
    /// assert_eq!(vars[0].shape, vec![32, 3, 3, 3]);
    /// assert!(vars.iter().any(|v| v.name == "blocks.6.0.conv_dw.weight" && v.shape == vec![1152, 1, 3, 3]));
    /// assert_eq!(vars.len(), 247 - 2);
    /// ```
    pub fn variables(&self) -> Vec<VariableSpec> {
        let mut vars = Vec::new();
        let conv = |vars: &mut Vec<VariableSpec>, name: String, shape: [usize; 4]| {
            vars.push(VariableSpec {
                name: format!("{name}.weight"),
                shape: shape.to_vec(),
            })
        };
        let bn = |vars: &mut Vec<VariableSpec>, name: String, c: usize| {
            for v in ["weight", "bias", "running_mean", "running_var"] {
                vars.push(VariableSpec {
                    name: format!("{name}.{v}"),
                    shape: vec![c],
                });
            }
        };
        let stem = self.stem_channels;
        conv(
            &mut vars,
            "conv_stem".into(),
            [stem, self.in_channels, 3, 3],
        );
        bn(&mut vars, "bn1".into(), stem);
        let blocks = self.blocks().unwrap_or_default();
        let mut last = stem;
        for (s, stage) in blocks.iter().enumerate() {
            for (i, b) in stage.iter().enumerate() {
                let p = format!("blocks.{s}.{i}");
                let (k, mid) = (b.kernel, b.mid_channels);
                match b.kind {
                    BlockKind::DepthwiseSeparable => {
                        conv(&mut vars, format!("{p}.conv_dw"), [mid, 1, k, k]);
                        bn(&mut vars, format!("{p}.bn1"), mid);
                        conv(
                            &mut vars,
                            format!("{p}.conv_pw"),
                            [b.out_channels, mid, 1, 1],
                        );
                        bn(&mut vars, format!("{p}.bn2"), b.out_channels);
                    }
                    BlockKind::InvertedResidual => {
                        conv(
                            &mut vars,
                            format!("{p}.conv_pw"),
                            [mid, b.in_channels, 1, 1],
                        );
                        bn(&mut vars, format!("{p}.bn1"), mid);
                        conv(&mut vars, format!("{p}.conv_dw"), [mid, 1, k, k]);
                        bn(&mut vars, format!("{p}.bn2"), mid);
                        conv(
                            &mut vars,
                            format!("{p}.conv_pwl"),
                            [b.out_channels, mid, 1, 1],
                        );
                        bn(&mut vars, format!("{p}.bn3"), b.out_channels);
                    }
                }
                last = b.out_channels;
            }
        }
        let head = self.head_channels;
        conv(&mut vars, "conv_head".into(), [head, last, 1, 1]);
        bn(&mut vars, "bn2".into(), head);
        if let Some(classes) = self.num_classes {
            vars.push(VariableSpec {
                name: "classifier.weight".into(),
                shape: vec![classes, head],
            });
            vars.push(VariableSpec {
                name: "classifier.bias".into(),
                shape: vec![classes],
            });
        }
        vars
    }

    /// Total number of scalars, BN moving statistics included (timm's `state_dict` without
    /// `num_batches_tracked`).
    pub fn parameter_count(&self) -> usize {
        self.variables()
            .iter()
            .map(|v| v.shape.iter().product::<usize>())
            .sum()
    }

    /// Spatial size of the feature map for an input of `height` x `width`: every stride-2
    /// layer (the stem and the first block of stages with `s2`) maps `h` to `ceil(h / 2)`.
    ///
    /// ```
    /// use fracture::model::EfficientNetLiteConfig;
    /// assert_eq!(EfficientNetLiteConfig::lite0().feature_size(97, 75), (4, 3));
    /// ```
    pub fn feature_size(&self, height: usize, width: usize) -> (usize, usize) {
        let strides = self
            .blocks()
            .unwrap_or_default()
            .iter()
            .flatten()
            .map(|b| b.stride)
            .collect::<Vec<_>>();
        std::iter::once(2)
            .chain(strides)
            .fold((height, width), |(h, w), s| (h.div_ceil(s), w.div_ceil(s)))
    }
}
