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
//! At [`Precision::Bf16`] (opt-in, [`FastResNetV2::with_precision`]; CPUs with AVX512_BF16)
//! every convolution runs on bf16 inputs and weights with f32 accumulation instead, as
//! im2col + a `vdpbf16ps` or AMX (`tdpbf16ps`) microkernel (no Winograd), the weights rounded
//! and packed once when the precision is chosen and the residual stream kept in f32
//! ([`crate::model::cpu::bf16`]).
//!
//! There is no autograd through this path: use it for inference and for training a head on a
//! frozen backbone; train the backbone itself with [`ResNetV2`].

mod bf16;
mod kernels;
mod load;
mod winograd;

use super::config::{block_name, ResNetV2Config};
#[cfg(doc)]
use super::network::ResNetV2;
use crate::error::{Error, Result};
use crate::model::cpu::bf16::Kernel;
use crate::model::cpu::Nhwc;
use crate::model::cpu::ScaleShift;
use crate::model::Precision;
use candle_core::{DType, Device, Tensor};
use kernels::{ConvPlan, Epilogue};
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
    /// The bf16 activations at [`Precision::Bf16`].
    bf: bf16::Bf16Workspace,
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
    /// The bf16 weights and kernel at [`Precision::Bf16`].
    bf16: Option<bf16::Bf16Plan>,
    workspace: Mutex<Workspace>,
}

impl std::fmt::Debug for FastResNetV2 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FastResNetV2")
            .field("config", &self.config)
            .field("blocks", &self.blocks.len())
            .field("precision", &self.precision())
            .field(
                "bf16_kernel",
                &self.bf16.as_ref().map(|b| b.kernel().describe()),
            )
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
            bf16: self.bf16.clone(),
            workspace: Mutex::new(Workspace::default()),
        }
    }
}

impl FastResNetV2 {
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

    /// The same backbone running its convolutions at `precision` ([`Precision::F32`], the
    /// default, or [`Precision::Bf16`]); an error, naming what is missing, when this CPU
    /// cannot run it. Choosing bf16 rounds and packs every convolution's weights once (half
    /// the f32 weights' memory, kept beside them).
    ///
    /// ```
    /// use fracture::model::{FastResNetV2, Precision, ResNetV2Config};
    /// use candle_core::{Device, DType, Tensor};
    /// let varmap = candle_nn::VarMap::new();
    /// let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    /// let fast = FastResNetV2::new(&ResNetV2Config::custom(vec![2, 2], vec![4, 8]), vb)?;
    /// match fast.clone().with_precision(Precision::Bf16) {
    ///     Ok(bf16) => {
    ///         assert_eq!(bf16.precision(), Precision::Bf16);
    ///         let x = Tensor::ones((2, 3, 64, 64), DType::F32, &Device::Cpu)?;
    ///         assert_eq!(bf16.forward_pooled(&x)?.dims(), &[2, 32]);
    ///     }
    ///     Err(e) => assert!(e.to_string().contains("AVX512_BF16")),
    /// }
    /// # Ok::<(), fracture::Error>(())
    /// ```
    pub fn with_precision(mut self, precision: Precision) -> Result<Self> {
        self.set_precision(precision)?;
        Ok(self)
    }

    /// [`FastResNetV2::with_precision`] in place; on an error the backbone stays as it was.
    ///
    /// ```
    /// use fracture::model::{FastResNetV2, Precision, ResNetV2Config};
    /// let varmap = candle_nn::VarMap::new();
    /// let vb = candle_nn::VarBuilder::from_varmap(&varmap, candle_core::DType::F32, &candle_core::Device::Cpu);
    /// let mut fast = FastResNetV2::new(&ResNetV2Config::custom(vec![2, 2], vec![4, 8]), vb)?;
    /// let bf16 = fast.set_precision(Precision::Bf16);
    /// assert_eq!(fast.precision() == Precision::Bf16, bf16.is_ok());
    /// fast.set_precision(Precision::F32)?;
    /// assert_eq!(fast.precision(), Precision::F32);
    /// # Ok::<(), fracture::Error>(())
    /// ```
    pub fn set_precision(&mut self, precision: Precision) -> Result<()> {
        match precision.bf16_kernel()? {
            None => self.bf16 = None,
            Some(kernel) => self.set_bf16_kernel(kernel)?,
        }
        Ok(())
    }

    /// Bf16 convolutions on `kernel` (tests choose the reference kernel on any CPU).
    pub(crate) fn set_bf16_kernel(&mut self, kernel: Kernel) -> Result<()> {
        self.bf16 = Some(bf16::Bf16Plan::new(self, kernel)?);
        Ok(())
    }

    /// The precision of the convolutions ([`FastResNetV2::with_precision`]).
    pub fn precision(&self) -> Precision {
        match &self.bf16 {
            Some(_) => Precision::Bf16,
            None => Precision::F32,
        }
    }

    /// The kernel of the bf16 convolutions, when the precision is bf16.
    #[cfg(test)]
    pub(crate) fn bf16_kernel(&self) -> Option<Kernel> {
        self.bf16.as_ref().map(bf16::Bf16Plan::kernel)
    }

    /// The configuration this backbone was planned from.
    pub fn config(&self) -> &ResNetV2Config {
        &self.config
    }

    /// Keras's names of the blocks, in order (`conv2_block1`, ...).
    fn block_names(&self) -> Vec<String> {
        self.config
            .blocks
            .iter()
            .enumerate()
            .flat_map(|(s, &count)| (1..=count).map(move |b| block_name(s, b)))
            .collect()
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
        if let Some(plan) = &self.bf16 {
            return plan.run_nhwc(self, input, xs, ws, timer);
        }
        let names = self.block_names();
        let Workspace {
            x, alt, p, t1, t2, ..
        } = ws;
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
        for (i, block) in self.blocks.iter().enumerate() {
            let next = self.blocks.get(i + 1).map_or(&self.post, |b| &b.preact);
            let name = names.get(i).map_or("", String::as_str);
            shape = block.forward(x, alt, p, t1, t2, shape, next, timer, name)?;
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
