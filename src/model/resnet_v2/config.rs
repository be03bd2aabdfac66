//! [`ResNetV2Config`]: block counts and widths of a pre-activation ResNet, with the Keras presets.

use super::MIN_INPUT_SIZE;
use crate::error::{Error, Result};
use crate::model::VariableSpec;
use serde::{Deserialize, Serialize};

/// The shape of a Keras-style pre-activation ResNet (ResNetV2).
///
/// Stack `i` (named `conv{i+2}`) has `blocks[i]` bottleneck blocks of width `filters[i]`
/// (output `expansion * filters[i]` channels); its LAST block has stride `strides[i]`.
///
/// ```
/// use fracture::model::ResNetV2Config;
/// let c = ResNetV2Config::resnet152v2();
/// assert_eq!(c.blocks, vec![3, 8, 36, 3]);
/// assert_eq!(c.parameter_count(), 58_331_648);
/// assert_eq!(c.feature_channels(), 2048);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResNetV2Config {
    /// Blocks per stack (each at least 2, as in Keras).
    pub blocks: Vec<usize>,
    /// Bottleneck width per stack.
    pub filters: Vec<usize>,
    /// Stride of the last block of each stack (Keras: 2, 2, ..., 2, 1).
    pub strides: Vec<usize>,
    /// Output channels of the stem convolution (64 in Keras, hard-coded there).
    pub stem_filters: usize,
    /// Output width of a block relative to its bottleneck width (4).
    pub expansion: usize,
    /// Input channels (3: RGB).
    pub in_channels: usize,
    /// Batch-normalization epsilon (Keras: 1.001e-5).
    pub bn_epsilon: f64,
    /// Batch-normalization momentum in Keras's sense: the share of the old moving statistic
    /// kept at each training step (Keras: 0.99). Only training uses it; a lower value (0.9)
    /// lets the moving statistics follow the data faster when training from scratch on
    /// little data.
    #[serde(default = "keras_bn_momentum")]
    pub bn_momentum: f64,
}

fn keras_bn_momentum() -> f64 {
    0.99
}

impl ResNetV2Config {
    /// Keras `ResNet50V2`: blocks 3, 4, 6, 3.
    pub fn resnet50v2() -> Self {
        Self::custom(vec![3, 4, 6, 3], vec![64, 128, 256, 512])
    }

    /// Keras `ResNet101V2`: blocks 3, 4, 23, 3.
    pub fn resnet101v2() -> Self {
        Self::custom(vec![3, 4, 23, 3], vec![64, 128, 256, 512])
    }

    /// Keras `ResNet152V2`: blocks 3, 8, 36, 3 (the reference notebook's backbone).
    pub fn resnet152v2() -> Self {
        Self::custom(vec![3, 8, 36, 3], vec![64, 128, 256, 512])
    }

    /// Any block counts and widths, with Keras's strides (2 on every stack but the last).
    ///
    /// ```
    /// use fracture::model::ResNetV2Config;
    /// let tiny = ResNetV2Config::custom(vec![2, 2, 2, 2], vec![4, 8, 16, 32]);
    /// assert_eq!(tiny.strides, vec![2, 2, 2, 1]);
    /// assert_eq!(tiny.parameter_count(), 68_848); // the Keras tiny fixture
    /// ```
    pub fn custom(blocks: Vec<usize>, filters: Vec<usize>) -> Self {
        let n = blocks.len();
        let strides = (0..n).map(|i| if i + 1 == n { 1 } else { 2 }).collect();
        Self {
            blocks,
            filters,
            strides,
            stem_filters: 64,
            expansion: 4,
            in_channels: 3,
            bn_epsilon: 1.001e-5,
            bn_momentum: keras_bn_momentum(),
        }
    }

    /// Check that the configuration can be built, within sizes no real network exceeds (a
    /// configuration read from a damaged file must not make the crate build a billion
    /// layers).
    ///
    /// ```
    /// use fracture::model::ResNetV2Config;
    /// assert!(ResNetV2Config::custom(vec![1, 2], vec![4, 8]).validate().is_err());
    /// assert!(ResNetV2Config::custom(vec![2, 99_999], vec![4, 8]).validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<()> {
        /// Far beyond any ResNet (ResNet152V2: 4 stacks of at most 36 blocks, 2048 channels).
        const MAX_STACKS: usize = 64;
        const MAX_BLOCKS: usize = 1024;
        const MAX_CHANNELS: usize = 1 << 16;
        let n = self.blocks.len();
        if n == 0 {
            return Err(Error::InvalidConfig(
                "ResNetV2 needs at least one stack".into(),
            ));
        }
        let widest = self
            .filters
            .iter()
            .map(|&f| f.checked_mul(self.expansion))
            .chain([Some(self.stem_filters), Some(self.in_channels)])
            .try_fold(0usize, |m, c| c.map(|c| m.max(c)));
        if n > MAX_STACKS
            || self.blocks.iter().any(|&b| b > MAX_BLOCKS)
            || widest.is_none_or(|c| c > MAX_CHANNELS)
        {
            return Err(Error::InvalidConfig(format!(
                "ResNetV2 of {n} stacks with {:?} blocks and widths {:?} x {} is too large \
                 (at most {MAX_STACKS} stacks of {MAX_BLOCKS} blocks and {MAX_CHANNELS} channels)",
                self.blocks, self.filters, self.expansion
            )));
        }
        if self.filters.len() != n || self.strides.len() != n {
            return Err(Error::InvalidConfig(format!(
                "ResNetV2 has {} block counts, {} filter widths and {} strides: they must match",
                n,
                self.filters.len(),
                self.strides.len()
            )));
        }
        if let Some(i) = self.blocks.iter().position(|&b| b < 2) {
            return Err(Error::InvalidConfig(format!(
                "stack conv{} has {} block(s): Keras stacks need at least 2",
                i + 2,
                self.blocks[i]
            )));
        }
        if self.filters.contains(&0) || self.stem_filters == 0 || self.expansion == 0 {
            return Err(Error::InvalidConfig(
                "filter widths must be positive".into(),
            ));
        }
        if self.strides.iter().any(|&s| s != 1 && s != 2) {
            return Err(Error::InvalidConfig(format!(
                "stack strides must be 1 or 2, found {:?}",
                self.strides
            )));
        }
        if !(0.0..1.0).contains(&self.bn_momentum) {
            return Err(Error::InvalidConfig(format!(
                "BN momentum must be in [0, 1), found {}",
                self.bn_momentum
            )));
        }
        if self.in_channels == 0 || self.bn_epsilon.is_nan() || self.bn_epsilon <= 0.0 {
            return Err(Error::InvalidConfig(
                "input channels and BN epsilon must be positive".into(),
            ));
        }
        Ok(())
    }

    /// Check that a batch of shape `dims` is `(N, C, H, W)` with this config's channel count
    /// and H, W >= 32 (Keras's minimum); the error names the expected and the found shape.
    ///
    /// ```
    /// use fracture::model::ResNetV2Config;
    /// let c = ResNetV2Config::resnet50v2();
    /// assert!(c.check_input_dims(&[2, 3, 224, 224]).is_ok());
    /// assert!(c.check_input_dims(&[2, 1, 224, 224]).unwrap_err().to_string().contains("[2, 1, 224, 224]"));
    /// ```
    pub fn check_input_dims(&self, dims: &[usize]) -> Result<()> {
        crate::model::backbone::check_nchw("ResNetV2", dims, self.in_channels, MIN_INPUT_SIZE)
    }

    /// Number of output channels of the backbone (`expansion * last filters`).
    pub fn feature_channels(&self) -> usize {
        self.expansion * self.filters.last().copied().unwrap_or(0)
    }

    /// Every variable of the backbone (no top), in Keras's `model.weights` order within
    /// each block, with candle names and shapes. Moving statistics are included.
    pub fn variables(&self) -> Vec<VariableSpec> {
        let mut vars = Vec::new();
        let mut push = |name: String, shape: Vec<usize>| vars.push(VariableSpec { name, shape });
        let conv = |push: &mut dyn FnMut(String, Vec<usize>),
                    layer: &str,
                    o: usize,
                    i: usize,
                    k: usize,
                    bias: bool| {
            push(format!("{layer}.weight"), vec![o, i, k, k]);
            if bias {
                push(format!("{layer}.bias"), vec![o]);
            }
        };
        let bn = |push: &mut dyn FnMut(String, Vec<usize>), layer: &str, c: usize| {
            for v in ["weight", "bias", "running_mean", "running_var"] {
                push(format!("{layer}.{v}"), vec![c]);
            }
        };
        conv(
            &mut push,
            "conv1_conv",
            self.stem_filters,
            self.in_channels,
            7,
            true,
        );
        let mut c_in = self.stem_filters;
        for (s, (&blocks, &f)) in self.blocks.iter().zip(&self.filters).enumerate() {
            let out = self.expansion * f;
            for b in 1..=blocks {
                let p = block_name(s, b);
                bn(&mut push, &format!("{p}_preact_bn"), c_in);
                if b == 1 {
                    conv(&mut push, &format!("{p}_0_conv"), out, c_in, 1, true);
                }
                conv(&mut push, &format!("{p}_1_conv"), f, c_in, 1, false);
                bn(&mut push, &format!("{p}_1_bn"), f);
                conv(&mut push, &format!("{p}_2_conv"), f, f, 3, false);
                bn(&mut push, &format!("{p}_2_bn"), f);
                conv(&mut push, &format!("{p}_3_conv"), out, f, 1, true);
                c_in = out;
            }
        }
        bn(&mut push, "post_bn", c_in);
        vars
    }

    /// Total number of scalars in the backbone, moving statistics included (Keras's
    /// `count_params()` for `include_top=False`).
    pub fn parameter_count(&self) -> usize {
        self.variables()
            .iter()
            .map(|v| v.shape.iter().product::<usize>())
            .sum()
    }

    /// Spatial size of the feature map for an input of `height` x `width`
    /// (every reduction is `h -> ceil(h / 2)`).
    ///
    /// ```
    /// use fracture::model::ResNetV2Config;
    /// assert_eq!(ResNetV2Config::resnet152v2().feature_size(224, 224), (7, 7));
    /// assert_eq!(ResNetV2Config::resnet152v2().feature_size(97, 75), (4, 3));
    /// ```
    pub fn feature_size(&self, height: usize, width: usize) -> (usize, usize) {
        let halvings = 2 + self.strides.iter().filter(|&&s| s == 2).count();
        (0..halvings).fold((height, width), |(h, w), _| (h.div_ceil(2), w.div_ceil(2)))
    }
}

/// Keras's name for block `b` (1-based) of stack index `s` (0-based): `conv{s+2}_block{b}`.
pub(crate) fn block_name(stack: usize, block: usize) -> String {
    format!("conv{}_block{}", stack + 2, block)
}
