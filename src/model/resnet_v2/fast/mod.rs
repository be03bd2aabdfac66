//! [`FastResNetV2`]: an inference-only CPU path for the ResNetV2 backbone.
//!
//! It computes what [`ResNetV2::forward_features`] computes (BN in inference mode), planned
//! once at load time for speed on CPUs:
//! * activations are NHWC `f32` in reused plain buffers, so a 1x1 convolution is one matrix
//!   product (the `gemm` crate) with no copy;
//! * every BN that directly follows a convolution (`_1_bn`, `_2_bn`) is folded into that
//!   convolution's weights and bias, and its ReLU applied as the product's epilogue;
//! * stride-1 3x3 convolutions with enough output pixels (at least 16 2x2 tiles per thread:
//!   on two threads, every such layer of ResNet152V2 at batch 8 and 224 px, all but the 7x7
//!   stack at batch 1) run as Winograd F(2x2, 3x3), 2.25x fewer multiplications, each thread
//!   transforming, multiplying and inverse-transforming its own chunk of tiles in cache;
//! * the other 3x3 convolutions and the 7x7 stem run as im2col + product: large layers on tiles of
//!   output pixels, each im2col'ed into a reused per-thread buffer; small layers (batch 1, deep
//!   stacks) im2col'ed once and tiled by output channels;
//! * matrix products use the `gemm` crate's AVX-512 kernels when the CPU has them (the
//!   default `avx512` feature), its AVX2/FMA kernels otherwise;
//! * the residual add is the accumulation of the `_3_conv` product onto the shortcut, and the
//!   next block's pre-activation BN + ReLU (or `post_bn` + ReLU) is applied to each output tile
//!   while it is still in cache;
//! * each layer's parallel loop runs on a small team of threads (the caller and
//!   `RAYON_NUM_THREADS - 1` helpers) that spin for 2 ms between loops instead of going to sleep,
//!   so a pass does not pay a thread wake-up per layer; a second pass started while the team is
//!   busy runs its loops on rayon.
//!
//! There is no autograd through this path: use it for inference and for training a head on a
//! frozen backbone; train the backbone itself with [`ResNetV2`].

mod kernels;
mod winograd;

use super::config::{block_name, ResNetV2Config};
use super::network::ResNetV2;
use crate::error::{Error, Result};
use crate::model::cpu::Nhwc;
use crate::model::cpu::ScaleShift;
use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use kernels::{ConvPlan, Epilogue};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How a block's shortcut is formed (see the default path's `Shortcut`).
#[derive(Debug, Clone)]
enum FastShortcut {
    /// `_0_conv` (1x1, bias) on the pre-activation.
    Projection(ConvPlan),
    /// `MaxPooling2D(1, strides)` on the raw block input.
    Subsample(usize),
    /// The raw block input.
    Identity,
}

/// One bottleneck block with `_1_bn` and `_2_bn` folded into `_1_conv` and `_2_conv`.
#[derive(Debug, Clone)]
struct FastBlock {
    preact: ScaleShift,
    shortcut: FastShortcut,
    conv1: ConvPlan,
    conv2: ConvPlan,
    conv3: ConvPlan,
}

/// The activation buffers of one forward pass, kept between calls.
#[derive(Debug, Default)]
struct Workspace {
    /// The raw block input (becomes the block output).
    x: Vec<f32>,
    /// The stem output, then the shortcut of non-identity blocks.
    alt: Vec<f32>,
    /// The pre-activation of the next consumer; the features at the end.
    p: Vec<f32>,
    t1: Vec<f32>,
    t2: Vec<f32>,
}

/// Records how long each kernel took, when asked to ([`FastResNetV2::forward_profiled`]).
struct Timer<'a> {
    log: Option<&'a mut Vec<(String, Duration)>>,
    last: Instant,
}

impl Timer<'_> {
    fn mark(&mut self, name: impl FnOnce() -> String) {
        if let Some(log) = self.log.as_mut() {
            let now = Instant::now();
            log.push((name(), now - self.last));
            self.last = now;
        }
    }
}

fn ensure(buf: &mut Vec<f32>, len: usize) {
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
}

impl FastBlock {
    /// Run the block on `x` (geometry `xs`); `p` holds the block's pre-activation on entry and
    /// `next`'s on exit; the block output replaces `x`.
    #[allow(clippy::too_many_arguments)]
    fn forward(
        &self,
        x: &mut Vec<f32>,
        alt: &mut Vec<f32>,
        p: &mut Vec<f32>,
        t1: &mut Vec<f32>,
        t2: &mut Vec<f32>,
        xs: Nhwc,
        next: &ScaleShift,
        timer: &mut Timer<'_>,
        name: &str,
    ) -> Result<Nhwc> {
        let s1 = self.conv1.out_shape(xs);
        ensure(t1, s1.len());
        kernels::conv(&self.conv1, p, xs, t1, Epilogue::BiasRelu)?;
        timer.mark(|| format!("{name}/conv1x1_bn_relu"));
        let s2 = self.conv2.out_shape(s1);
        ensure(t2, s2.len());
        kernels::conv(&self.conv2, t1, s1, t2, Epilogue::BiasRelu)?;
        timer.mark(|| format!("{name}/conv3x3_s{}_bn_relu", self.conv2.stride));
        let os = self.conv3.out_shape(s2);
        let shortcut = match &self.shortcut {
            FastShortcut::Projection(conv0) => {
                ensure(alt, conv0.out_shape(xs).len());
                kernels::conv(conv0, p, xs, alt, Epilogue::Bias)?
            }
            FastShortcut::Subsample(stride) => {
                ensure(alt, xs.len());
                kernels::subsample(x, xs, *stride, alt)?
            }
            FastShortcut::Identity => xs,
        };
        timer.mark(|| format!("{name}/shortcut"));
        if shortcut != os {
            return Err(Error::Internal(format!(
                "fast ResNetV2: shortcut geometry {shortcut:?} does not match the residual {os:?}"
            )));
        }
        ensure(p, os.len());
        let identity = matches!(self.shortcut, FastShortcut::Identity);
        let dst = if identity { &mut *x } else { &mut *alt };
        kernels::conv(
            &self.conv3,
            t2,
            s2,
            dst,
            Epilogue::Residual(Some((next, p.as_mut_slice()))),
        )?;
        timer.mark(|| format!("{name}/conv1x1_residual_preact"));
        if !identity {
            std::mem::swap(x, alt);
        }
        Ok(os)
    }
}

/// An inference-only, CPU-optimised copy of a [`ResNetV2`] backbone.
///
/// Build it once from a model ([`FastResNetV2::from_model`]) or from the same variables
/// ([`FastResNetV2::new`]); its outputs match [`ResNetV2::forward_features`] and
/// [`ResNetV2::forward_pooled`] to float32 rounding. Inputs on another device or in another
/// float type are copied to the CPU as `f32`; outputs are returned on the input's device.
///
/// ```
/// use fracture::model::{FastResNetV2, ResNetV2, ResNetV2Config};
/// use candle_core::{Device, DType, Tensor};
/// let varmap = candle_nn::VarMap::new();
/// let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
/// let net = ResNetV2::new(&ResNetV2Config::custom(vec![2, 2], vec![4, 8]), vb)?;
/// let fast = FastResNetV2::from_model(&net)?;
/// let x = Tensor::randn(0f32, 1., (2, 3, 40, 48), &Device::Cpu)?;
/// let diff = (fast.forward_pooled(&x)? - net.forward_pooled(&x)?)?.abs()?.max_all()?;
/// assert!(diff.to_scalar::<f32>()? < 1e-4);
/// # Ok::<(), fracture::Error>(())
/// ```
pub struct FastResNetV2 {
    config: ResNetV2Config,
    stem: ConvPlan,
    blocks: Vec<FastBlock>,
    post: ScaleShift,
    workspace: Mutex<Workspace>,
}

impl std::fmt::Debug for FastResNetV2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FastResNetV2")
            .field("config", &self.config)
            .field("blocks", &self.blocks.len())
            .finish_non_exhaustive()
    }
}

impl Clone for FastResNetV2 {
    fn clone(&self) -> Self {
        Self {
            config: self.config.clone(),
            stem: self.stem.clone(),
            blocks: self.blocks.clone(),
            post: self.post.clone(),
            workspace: Mutex::new(Workspace::default()),
        }
    }
}

/// Reads one variable by its full name and expected shape as `f32` values.
type Getter<'a> = dyn Fn(&str, &[usize]) -> Result<Vec<f32>> + 'a;

fn tensor_values(t: &Tensor, name: &str, shape: &[usize], source: &str) -> Result<Vec<f32>> {
    if t.dims() != shape {
        return Err(Error::Weights {
            source_name: source.to_string(),
            message: format!(
                "tensor {name} has shape {:?}, the fast path expects {shape:?}",
                t.dims()
            ),
        });
    }
    Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
}

impl FastResNetV2 {
    /// Plan the fast path from the same variables [`ResNetV2::new`] reads (Keras layer names,
    /// candle layouts).
    ///
    /// ```
    /// use fracture::model::{FastResNetV2, ResNetV2Config};
    /// use candle_core::{Device, DType, Tensor};
    /// let varmap = candle_nn::VarMap::new();
    /// let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    /// let fast = FastResNetV2::new(&ResNetV2Config::custom(vec![2, 2], vec![4, 8]), vb)?;
    /// let x = Tensor::zeros((1, 3, 64, 64), DType::F32, &Device::Cpu)?;
    /// assert_eq!(fast.forward_features(&x)?.dims(), &[1, 32, 8, 8]);
    /// # Ok::<(), fracture::Error>(())
    /// ```
    pub fn new(config: &ResNetV2Config, vb: VarBuilder) -> Result<Self> {
        let get = |name: &str, shape: &[usize]| -> Result<Vec<f32>> {
            let t = vb.get(shape, name)?;
            tensor_values(&t, name, shape, "VarBuilder")
        };
        Self::build(config, &get)
    }

    /// Plan the fast path from a built [`ResNetV2`] (its current weights and BN statistics).
    pub fn from_model(model: &ResNetV2) -> Result<Self> {
        let config = model.config();
        let mut map: HashMap<String, Tensor> = HashMap::new();
        let mut conv = |layer: &str, c: &candle_nn::Conv2d| {
            map.insert(format!("{layer}.weight"), c.weight().clone());
            if let Some(b) = c.bias() {
                map.insert(format!("{layer}.bias"), b.clone());
            }
        };
        conv("conv1_conv", &model.conv1);
        for (s, stack) in model.stacks.iter().enumerate() {
            for (b, block) in stack.iter().enumerate() {
                let name = block_name(s, b + 1);
                if let Some(c0) = block.projection() {
                    conv(&format!("{name}_0_conv"), c0);
                }
                conv(&format!("{name}_1_conv"), &block.conv1);
                conv(&format!("{name}_2_conv"), &block.conv2);
                conv(&format!("{name}_3_conv"), &block.conv3);
            }
        }
        let mut bn = |layer: String, b: &candle_nn::BatchNorm| {
            if let Some((w, bias)) = b.weight_and_bias() {
                map.insert(format!("{layer}.weight"), w.clone());
                map.insert(format!("{layer}.bias"), bias.clone());
            }
            map.insert(format!("{layer}.running_mean"), b.running_mean().clone());
            map.insert(format!("{layer}.running_var"), b.running_var().clone());
        };
        for (s, stack) in model.stacks.iter().enumerate() {
            for (b, block) in stack.iter().enumerate() {
                let name = block_name(s, b + 1);
                bn(format!("{name}_preact_bn"), &block.preact_bn);
                bn(format!("{name}_1_bn"), &block.bn1);
                bn(format!("{name}_2_bn"), &block.bn2);
            }
        }
        bn("post_bn".to_string(), &model.post_bn);
        let get = |name: &str, shape: &[usize]| -> Result<Vec<f32>> {
            let t = map.get(name).ok_or_else(|| Error::Weights {
                source_name: "ResNetV2 model".into(),
                message: format!(
                    "the model has no tensor {name} (affine BN and conv biases are required)"
                ),
            })?;
            tensor_values(t, name, shape, "ResNetV2 model")
        };
        Self::build(config, &get)
    }

    fn build(config: &ResNetV2Config, get: &Getter<'_>) -> Result<Self> {
        config.validate()?;
        let eps = config.bn_epsilon;
        let bn = |layer: &str, c: usize| -> Result<ScaleShift> {
            Ok(ScaleShift::from_batch_norm(
                &get(&format!("{layer}.weight"), &[c])?,
                &get(&format!("{layer}.bias"), &[c])?,
                &get(&format!("{layer}.running_mean"), &[c])?,
                &get(&format!("{layer}.running_var"), &[c])?,
                eps,
            ))
        };
        let kernel = |layer: &str, dims: [usize; 4]| get(&format!("{layer}.weight"), &dims);
        let bias = |layer: &str, c: usize| get(&format!("{layer}.bias"), &[c]);

        let stem_dims = [config.stem_filters, config.in_channels, 7, 7];
        let stem = ConvPlan::pack(
            &kernel("conv1_conv", stem_dims)?,
            stem_dims,
            2,
            3,
            None,
            bias("conv1_conv", config.stem_filters)?,
        );
        let mut c_in = config.stem_filters;
        let mut blocks = Vec::new();
        for (s, (&count, &f)) in config.blocks.iter().zip(&config.filters).enumerate() {
            let out = config.expansion * f;
            for b in 1..=count {
                let name = block_name(s, b);
                let stride = if b == count {
                    config.strides.get(s).copied().unwrap_or(1)
                } else {
                    1
                };
                let shortcut = if b == 1 {
                    let dims = [out, c_in, 1, 1];
                    let layer = format!("{name}_0_conv");
                    FastShortcut::Projection(ConvPlan::pack(
                        &kernel(&layer, dims)?,
                        dims,
                        stride,
                        0,
                        None,
                        bias(&layer, out)?,
                    ))
                } else if stride > 1 {
                    FastShortcut::Subsample(stride)
                } else {
                    FastShortcut::Identity
                };
                let bn1 = bn(&format!("{name}_1_bn"), f)?;
                let bn2 = bn(&format!("{name}_2_bn"), f)?;
                let (d1, d2, d3) = ([f, c_in, 1, 1], [f, f, 3, 3], [out, f, 1, 1]);
                let layer3 = format!("{name}_3_conv");
                blocks.push(FastBlock {
                    preact: bn(&format!("{name}_preact_bn"), c_in)?,
                    shortcut,
                    conv1: ConvPlan::pack(
                        &kernel(&format!("{name}_1_conv"), d1)?,
                        d1,
                        1,
                        0,
                        Some(&bn1.scale),
                        bn1.shift.clone(),
                    ),
                    conv2: ConvPlan::pack(
                        &kernel(&format!("{name}_2_conv"), d2)?,
                        d2,
                        stride,
                        1,
                        Some(&bn2.scale),
                        bn2.shift.clone(),
                    ),
                    conv3: ConvPlan::pack(
                        &kernel(&layer3, d3)?,
                        d3,
                        1,
                        0,
                        None,
                        bias(&layer3, out)?,
                    ),
                });
                c_in = out;
            }
        }
        let post = bn("post_bn", c_in)?;
        Ok(Self {
            config: config.clone(),
            stem,
            blocks,
            post,
            workspace: Mutex::new(Workspace::default()),
        })
    }

    /// The same backbone with every 3x3 convolution run as im2col + matrix product, dropping
    /// the Winograd F(2x2, 3x3) kernels of the stride-1 ones.
    ///
    /// By default a stride-1 3x3 convolution whose output is large enough (see the module
    /// docs) runs as Winograd F(2x2, 3x3): 16 multiplications per output tile and channel
    /// pair instead of 36, at the cost of keeping 16/9 of those kernels beside them (205 MB
    /// more for the 28.8 M weights of ResNet152V2's stride-1 3x3 convolutions). This drops
    /// them, to save that memory or to compare the two; outputs agree to float32 rounding.
    ///
    /// ```
    /// use fracture::model::{FastResNetV2, ResNetV2, ResNetV2Config};
    /// use candle_core::{Device, DType, Tensor};
    /// let varmap = candle_nn::VarMap::new();
    /// let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    /// let net = ResNetV2::new(&ResNetV2Config::custom(vec![2, 2], vec![4, 8]), vb)?;
    /// let fast = FastResNetV2::from_model(&net)?;
    /// let plain = fast.clone().without_winograd();
    /// let x = Tensor::randn(0f32, 1., (4, 3, 96, 96), &Device::Cpu)?;
    /// let diff = (fast.forward_pooled(&x)? - plain.forward_pooled(&x)?)?.abs()?.max_all()?;
    /// assert!(diff.to_scalar::<f32>()? < 1e-4);
    /// # Ok::<(), fracture::Error>(())
    /// ```
    pub fn without_winograd(mut self) -> Self {
        // Only the blocks' `_2_conv` can have one: the stem is 7x7 with stride 2.
        for block in &mut self.blocks {
            block.conv2.winograd = None;
        }
        self
    }

    /// The configuration this backbone was planned from.
    pub fn config(&self) -> &ResNetV2Config {
        &self.config
    }

    /// Check that `x` is an `(N, C, H, W)` batch this model accepts (the same checks and
    /// messages as [`ResNetV2::check_input`]).
    pub fn check_input(&self, x: &Tensor) -> Result<()> {
        self.config.check_input_dims(x.dims())
    }

    /// Run the network on an NCHW batch; returns the NHWC features and their geometry.
    fn run(
        &self,
        x: &Tensor,
        log: Option<&mut Vec<(String, Duration)>>,
    ) -> Result<(Vec<f32>, Nhwc)> {
        self.check_input(x)?;
        let started = Instant::now();
        let (n, c, h, w) = x.dims4()?;
        let input = x
            .to_device(&Device::Cpu)?
            .to_dtype(DType::F32)?
            .permute((0, 2, 3, 1))?
            .contiguous()?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let xs = Nhwc { n, h, w, c };
        // Take the buffers out so that concurrent callers never wait for each other.
        let mut ws = self
            .workspace
            .try_lock()
            .map(|mut g| std::mem::take(&mut *g))
            .unwrap_or_default();
        let mut timer = Timer { log, last: started };
        timer.mark(|| "input_to_nhwc".into());
        let shape = self.run_nhwc(&input, xs, &mut ws, &mut timer)?;
        let features = ws
            .p
            .get(..shape.len())
            .map(<[f32]>::to_vec)
            .ok_or_else(|| {
                Error::Internal("fast ResNetV2: feature buffer shorter than the features".into())
            })?;
        if let Ok(mut g) = self.workspace.try_lock() {
            *g = ws;
        }
        Ok((features, shape))
    }

    fn run_nhwc(
        &self,
        input: &[f32],
        xs: Nhwc,
        ws: &mut Workspace,
        timer: &mut Timer<'_>,
    ) -> Result<Nhwc> {
        let Workspace { x, alt, p, t1, t2 } = ws;
        ensure(alt, self.stem.out_shape(xs).len());
        let stem_shape = kernels::conv(&self.stem, input, xs, alt, Epilogue::Bias)?;
        timer.mark(|| "stem/conv7x7_s2".into());
        ensure(x, stem_shape.len());
        let mut shape = kernels::max_pool_3x3s2_zero_pad(alt, stem_shape, x)?;
        timer.mark(|| "stem/max_pool".into());
        ensure(p, shape.len());
        let first = self.blocks.first().map_or(&self.post, |b| &b.preact);
        kernels::scale_shift_relu(first, x, shape, p)?;
        timer.mark(|| "stem/first_preact".into());
        let mut names = self
            .config
            .blocks
            .iter()
            .enumerate()
            .flat_map(|(s, &count)| (1..=count).map(move |b| block_name(s, b)));
        for (i, block) in self.blocks.iter().enumerate() {
            let next = self.blocks.get(i + 1).map_or(&self.post, |b| &b.preact);
            let name = names.next().unwrap_or_default();
            shape = block.forward(x, alt, p, t1, t2, shape, next, timer, &name)?;
        }
        Ok(shape.with_channels(self.post.scale.len()))
    }

    /// The 4-D feature map `(N, C, H, W)` (`post_relu`), BN in inference mode.
    pub fn forward_features(&self, x: &Tensor) -> Result<Tensor> {
        let (features, s) = self.run(x, None)?;
        Ok(
            Tensor::from_vec(features, (s.n, s.h, s.w, s.c), &Device::Cpu)?
                .permute((0, 3, 1, 2))?
                .contiguous()?
                .to_device(x.device())?,
        )
    }

    /// The globally average-pooled features `(N, C)` (Keras `pooling='avg'`), what a
    /// [`crate::model::ClassifierHead`] takes.
    pub fn forward_pooled(&self, x: &Tensor) -> Result<Tensor> {
        let (features, s) = self.run(x, None)?;
        let pooled = crate::model::cpu::global_average_pool(&features, s);
        Ok(Tensor::from_vec(pooled, (s.n, s.c), &Device::Cpu)?.to_device(x.device())?)
    }

    /// Run one forward pass and return how long each kernel took, in order, named
    /// `layer/kernel` (`stem/conv7x7_s2`, `conv2_block1/conv3x3_s1_bn_relu`, ...).
    ///
    /// ```
    /// use fracture::model::{FastResNetV2, ResNetV2Config};
    /// use candle_core::{Device, DType, Tensor};
    /// let varmap = candle_nn::VarMap::new();
    /// let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    /// let fast = FastResNetV2::new(&ResNetV2Config::custom(vec![2, 2], vec![4, 8]), vb)?;
    /// let x = Tensor::zeros((1, 3, 64, 64), DType::F32, &Device::Cpu)?;
    /// let times = fast.forward_profiled(&x)?;
    /// assert_eq!(times[1].0, "stem/conv7x7_s2");
    /// # Ok::<(), fracture::Error>(())
    /// ```
    pub fn forward_profiled(&self, x: &Tensor) -> Result<Vec<(String, Duration)>> {
        let mut log = Vec::new();
        self.run(x, Some(&mut log))?;
        Ok(log)
    }
}
