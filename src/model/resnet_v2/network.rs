//! [`ResNetV2`]: Keras's pre-activation ResNet in candle.
//!
//! The structure follows Keras's `resnet.py` exactly (see the crate's
//! `tests/fixtures/keras_resnet_v2/ARCHITECTURE.md`): zero-padded stem max-pool with no BN
//! before it, stride on the LAST block of each stack, `MaxPool(1, 2)` identity shortcut on
//! the raw block input, projection shortcut from the pre-activation, biases only on
//! `conv1_conv`, `_0_conv` and `_3_conv`, BN epsilon 1.001e-5, `post_bn` + ReLU.

use super::config::{block_name, ResNetV2Config};
use crate::error::{Error, Result};
use candle_core::{Module, ModuleT, Tensor};
use candle_nn::{BatchNorm, BatchNormConfig, Conv2d, Conv2dConfig, VarBuilder};

/// Smallest input side Keras accepts for ResNetV2.
pub const MIN_INPUT_SIZE: usize = 32;

/// Intermediate activations of one forward pass, for parity checks and inspection.
///
/// All tensors are NCHW.
#[derive(Debug, Clone)]
pub struct Taps {
    /// Output of the stem convolution (`conv1_conv`).
    pub conv1_conv: Tensor,
    /// Output of the zero-padded stem max-pool (`pool1_pool`).
    pub pool1_pool: Tensor,
    /// Output of each stack (`conv2_blockN_out`, `conv3_blockN_out`, ...).
    pub stacks: Vec<Tensor>,
    /// `post_relu`: the 4-D feature map (what Grad-CAM needs).
    pub features: Tensor,
}

/// BN settings shared by every layer of one backbone: epsilon and Keras-style momentum.
#[derive(Debug, Clone, Copy)]
struct BnSettings {
    eps: f64,
    keras_momentum: f64,
}

fn batch_norm(channels: usize, bn: BnSettings, vb: VarBuilder) -> Result<BatchNorm> {
    let config = BatchNormConfig {
        eps: bn.eps,
        remove_mean: true,
        affine: true,
        // Keras's momentum (0.99) is the share of the old statistic that is kept; candle's is
        // the share of the new batch statistic.
        momentum: 1.0 - bn.keras_momentum,
    };
    Ok(candle_nn::batch_norm(channels, config, vb)?)
}

fn conv(
    c_in: usize,
    c_out: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
    bias: bool,
    vb: VarBuilder,
) -> Result<Conv2d> {
    let config = Conv2dConfig {
        padding,
        stride,
        ..Default::default()
    };
    Ok(if bias {
        candle_nn::conv2d(c_in, c_out, kernel, config, vb)?
    } else {
        candle_nn::conv2d_no_bias(c_in, c_out, kernel, config, vb)?
    })
}

/// How a block's shortcut is formed.
#[derive(Debug, Clone)]
enum Shortcut {
    /// `_0_conv` (1x1, bias) applied to the pre-activation (first block of a stack).
    Projection(Conv2d),
    /// `MaxPooling2D(1, strides=2)` on the raw input: plain subsampling.
    Subsample,
    /// The raw input.
    Identity,
}

/// One pre-activation bottleneck block (`residual_block_v2`).
#[derive(Debug, Clone)]
pub(crate) struct BlockV2 {
    pub(crate) preact_bn: BatchNorm,
    shortcut: Shortcut,
    pub(crate) conv1: Conv2d,
    pub(crate) bn1: BatchNorm,
    pub(crate) conv2: Conv2d,
    pub(crate) bn2: BatchNorm,
    pub(crate) conv3: Conv2d,
    pub(crate) stride: usize,
}

impl BlockV2 {
    /// The `_0_conv` projection of the shortcut, if this block has one (read by the fast path).
    pub(crate) fn projection(&self) -> Option<&Conv2d> {
        match &self.shortcut {
            Shortcut::Projection(conv0) => Some(conv0),
            _ => None,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn new(
        c_in: usize,
        filters: usize,
        expansion: usize,
        stride: usize,
        first: bool,
        eps: BnSettings,
        prefix: &str,
        vb: &VarBuilder,
    ) -> Result<Self> {
        let out = expansion * filters;
        let shortcut = if first {
            Shortcut::Projection(conv(
                c_in,
                out,
                1,
                1,
                0,
                true,
                vb.pp(format!("{prefix}_0_conv")),
            )?)
        } else if stride > 1 {
            Shortcut::Subsample
        } else {
            Shortcut::Identity
        };
        Ok(Self {
            preact_bn: batch_norm(c_in, eps, vb.pp(format!("{prefix}_preact_bn")))?,
            shortcut,
            conv1: conv(
                c_in,
                filters,
                1,
                1,
                0,
                false,
                vb.pp(format!("{prefix}_1_conv")),
            )?,
            bn1: batch_norm(filters, eps, vb.pp(format!("{prefix}_1_bn")))?,
            conv2: conv(
                filters,
                filters,
                3,
                stride,
                1,
                false,
                vb.pp(format!("{prefix}_2_conv")),
            )?,
            bn2: batch_norm(filters, eps, vb.pp(format!("{prefix}_2_bn")))?,
            conv3: conv(
                filters,
                out,
                1,
                1,
                0,
                true,
                vb.pp(format!("{prefix}_3_conv")),
            )?,
            stride,
        })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let preact = self.preact_bn.forward_t(x, train)?.relu()?;
        let shortcut = match &self.shortcut {
            Shortcut::Projection(conv0) => conv0.forward(&preact)?,
            Shortcut::Subsample => subsample(x, self.stride)?,
            Shortcut::Identity => x.clone(),
        };
        let t = self.conv1.forward(&preact)?;
        let t = self.bn1.forward_t(&t, train)?.relu()?;
        let t = self.conv2.forward(&t)?;
        let t = self.bn2.forward_t(&t, train)?.relu()?;
        let t = self.conv3.forward(&t)?;
        Ok((shortcut + t)?)
    }
}

/// Keras's ResNetV2 backbone without top: stem, stacks, `post_bn` + ReLU.
///
/// ```
/// use fracture::model::{ResNetV2, ResNetV2Config};
/// use candle_core::{Device, DType, Tensor};
/// let varmap = candle_nn::VarMap::new();
/// let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
/// let net = ResNetV2::new(&ResNetV2Config::custom(vec![2, 2], vec![4, 8]), vb)?;
/// let x = Tensor::zeros((2, 3, 40, 48), DType::F32, &Device::Cpu)?;
/// assert_eq!(net.forward_features(&x)?.dims(), &[2, 32, 5, 6]);
/// assert!(net.forward_features(&Tensor::zeros((2, 1, 40, 48), DType::F32, &Device::Cpu)?).is_err());
/// # Ok::<(), fracture::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct ResNetV2 {
    config: ResNetV2Config,
    pub(crate) conv1: Conv2d,
    pub(crate) stacks: Vec<Vec<BlockV2>>,
    pub(crate) post_bn: BatchNorm,
}

impl ResNetV2 {
    /// Build the backbone, taking every variable from `vb` under its Keras layer name.
    pub fn new(config: &ResNetV2Config, vb: VarBuilder) -> Result<Self> {
        config.validate()?;
        let eps = BnSettings {
            eps: config.bn_epsilon,
            keras_momentum: config.bn_momentum,
        };
        let conv1 = conv(
            config.in_channels,
            config.stem_filters,
            7,
            2,
            3,
            true,
            vb.pp("conv1_conv"),
        )?;
        let mut c_in = config.stem_filters;
        let mut stacks = Vec::with_capacity(config.blocks.len());
        for (s, (&blocks, &filters)) in config.blocks.iter().zip(&config.filters).enumerate() {
            let mut stack = Vec::with_capacity(blocks);
            for b in 1..=blocks {
                let stride = if b == blocks { config.strides[s] } else { 1 };
                let block = BlockV2::new(
                    c_in,
                    filters,
                    config.expansion,
                    stride,
                    b == 1,
                    eps,
                    &block_name(s, b),
                    &vb,
                )?;
                stack.push(block);
                c_in = config.expansion * filters;
            }
            stacks.push(stack);
        }
        let post_bn = batch_norm(c_in, eps, vb.pp("post_bn"))?;
        Ok(Self {
            config: config.clone(),
            conv1,
            stacks,
            post_bn,
        })
    }

    /// The configuration this backbone was built from.
    pub fn config(&self) -> &ResNetV2Config {
        &self.config
    }

    /// Check that `x` is an `(N, C, H, W)` batch this model accepts.
    pub fn check_input(&self, x: &Tensor) -> Result<()> {
        self.config.check_input_dims(x.dims())
    }

    /// The stem: `conv1_conv` (7x7/2, pad 3, bias) then a 3x3/2 max-pool over a ZERO border.
    /// With `train`, the max-pool is built from differentiable ops (same values), as
    /// candle's max-pool has no backward pass when its kernel differs from its stride.
    fn stem(&self, x: &Tensor, train: bool) -> Result<(Tensor, Tensor)> {
        let conv1 = self.conv1.forward(x)?;
        let padded = conv1.pad_with_zeros(2, 1, 1)?.pad_with_zeros(3, 1, 1)?;
        let pool = if train {
            max_pool_3x3_stride_2(&padded)?
        } else {
            padded.max_pool2d_with_stride(3, 2)?
        };
        Ok((conv1, pool))
    }

    /// Forward pass keeping every tap (stem, each stack output, features).
    pub fn forward_taps(&self, x: &Tensor, train: bool) -> Result<Taps> {
        self.check_input(x)?;
        let (conv1_conv, pool1_pool) = self.stem(x, train)?;
        let mut h = pool1_pool.clone();
        let mut stacks = Vec::with_capacity(self.stacks.len());
        for stack in &self.stacks {
            for block in stack {
                h = block.forward_t(&h, train)?;
            }
            stacks.push(h.clone());
        }
        let features = self.post_bn.forward_t(&h, train)?.relu()?;
        Ok(Taps {
            conv1_conv,
            pool1_pool,
            stacks,
            features,
        })
    }

    /// The 4-D feature map (`post_relu`), BN in inference mode.
    pub fn forward_features(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_features_t(x, false)
    }

    /// The 4-D feature map, BN in training mode when `train` is true.
    pub fn forward_features_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.check_input(x)?;
        let (_, mut h) = self.stem(x, train)?;
        for block in self.stacks.iter().flatten() {
            h = block.forward_t(&h, train)?;
        }
        Ok(self.post_bn.forward_t(&h, train)?.relu()?)
    }

    /// The 4-D feature map for fine-tuning the last stacks: the stem and the stacks before
    /// `first_trainable_stack` (0-based) run with BN in inference mode and their output is
    /// detached from the autograd graph; the later stacks and `post_bn` run with BN in
    /// training mode. `first_trainable_stack == number of stacks` trains `post_bn` only.
    ///
    /// ```
    /// use fracture::model::{ResNetV2, ResNetV2Config};
    /// use candle_core::{Device, DType, Tensor};
    /// let varmap = candle_nn::VarMap::new();
    /// let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    /// let net = ResNetV2::new(&ResNetV2Config::custom(vec![2, 2], vec![4, 8]), vb)?;
    /// let x = Tensor::ones((2, 3, 32, 32), DType::F32, &Device::Cpu)?;
    /// assert_eq!(net.forward_features_partial(&x, 1)?.dims(), &[2, 32, 4, 4]);
    /// assert!(net.forward_features_partial(&x, 3).is_err());
    /// # Ok::<(), fracture::Error>(())
    /// ```
    pub fn forward_features_partial(
        &self,
        x: &Tensor,
        first_trainable_stack: usize,
    ) -> Result<Tensor> {
        if first_trainable_stack > self.stacks.len() {
            return Err(Error::InvalidConfig(format!(
                "cannot train from stack index {first_trainable_stack}: the backbone has {} stacks",
                self.stacks.len()
            )));
        }
        self.check_input(x)?;
        let (_, mut h) = self.stem(x, false)?;
        for (s, stack) in self.stacks.iter().enumerate() {
            let train = s >= first_trainable_stack;
            if s == first_trainable_stack {
                h = h.detach();
            }
            for block in stack {
                h = block.forward_t(&h, train)?;
            }
        }
        if first_trainable_stack == self.stacks.len() {
            h = h.detach();
        }
        Ok(self.post_bn.forward_t(&h, true)?.relu()?)
    }

    /// The globally average-pooled feature vector `(N, feature_channels)` (Keras `pooling='avg'`).
    pub fn forward_pooled(&self, x: &Tensor) -> Result<Tensor> {
        crate::model::global_average_pool(&self.forward_features(x)?)
    }
}

/// `MaxPooling2D(1, strides=stride)`: every `stride`-th row and column, starting at 0
/// (output `ceil(h / stride)`). Written with `index_select` because candle has no backward
/// pass for a max-pool whose kernel is smaller than its stride, and training the stacks
/// with a strided last block needs one.
fn subsample(x: &Tensor, stride: usize) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let rows: Vec<u32> = (0..h).step_by(stride).map(|i| i as u32).collect();
    let cols: Vec<u32> = (0..w).step_by(stride).map(|i| i as u32).collect();
    let rows = Tensor::new(rows, x.device())?;
    let cols = Tensor::new(cols, x.device())?;
    Ok(x.index_select(&rows, 2)?.index_select(&cols, 3)?)
}

/// `MaxPool(3, stride 2)` (valid) as the maximum of nine strided views, which candle can
/// differentiate.
fn max_pool_3x3_stride_2(x: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    if h < 3 || w < 3 {
        return Err(Error::InvalidInput(format!(
            "max-pool 3x3 needs at least 3x3 inputs, found shape {:?}",
            x.dims()
        )));
    }
    let (out_h, out_w) = ((h - 3) / 2 + 1, (w - 3) / 2 + 1);
    let strided = |offset: usize, len: usize| -> Result<Tensor> {
        let idx: Vec<u32> = (0..len).map(|k| (offset + 2 * k) as u32).collect();
        Ok(Tensor::new(idx, x.device())?)
    };
    let mut pooled: Option<Tensor> = None;
    for di in 0..3 {
        let rows = x.index_select(&strided(di, out_h)?, 2)?;
        for dj in 0..3 {
            let view = rows.index_select(&strided(dj, out_w)?, 3)?;
            pooled = Some(match pooled {
                None => view,
                Some(p) => p.maximum(&view)?,
            });
        }
    }
    pooled.ok_or_else(|| Error::Internal("empty max-pool window".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn subsample_equals_a_one_pixel_max_pool_and_has_a_gradient() {
        for (h, w) in [(7, 6), (8, 5)] {
            let x = Tensor::randn(0f32, 1., (2, 3, h, w), &Device::Cpu).unwrap();
            let pooled = x.max_pool2d_with_stride(1, 2).unwrap();
            let ours = subsample(&x, 2).unwrap();
            assert_eq!(ours.dims(), pooled.dims());
            assert_eq!(
                ours.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                pooled.flatten_all().unwrap().to_vec1::<f32>().unwrap()
            );
        }
        let v = Var::new(&[[[[1f32, 2.], [3., 4.]]]], &Device::Cpu).unwrap();
        let grads = subsample(v.as_tensor(), 2)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let g = grads.get(v.as_tensor()).unwrap().flatten_all().unwrap();
        assert_eq!(g.to_vec1::<f32>().unwrap(), vec![1., 0., 0., 0.]);
    }

    #[test]
    fn differentiable_stem_pool_equals_candle_max_pool() {
        for (h, w) in [(9, 10), (18, 17)] {
            let x = Tensor::randn(0f32, 1., (2, 3, h, w), &Device::Cpu).unwrap();
            let ours = max_pool_3x3_stride_2(&x).unwrap();
            let candle = x.max_pool2d_with_stride(3, 2).unwrap();
            assert_eq!(ours.dims(), candle.dims());
            assert_eq!(
                ours.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
                candle.flatten_all().unwrap().to_vec1::<f32>().unwrap()
            );
        }
    }
}
