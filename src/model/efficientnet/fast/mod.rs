//! [`FastEfficientNetLite`]: an inference-only CPU path for EfficientNet-Lite.
//!
//! It computes what [`EfficientNetLite`] computes with BN in inference mode, planned once at
//! load time:
//! * activations are NHWC `f32` in buffers reused between calls, so a pointwise convolution is
//!   one matrix product (the `gemm` crate, AVX-512 when the CPU has it) with no copy;
//! * every batch norm is folded into the convolution before it (scaled weights plus a bias),
//!   and its ReLU6, or the block's residual add, is applied to each output tile while it is in
//!   cache;
//! * the depthwise and stem convolutions are direct NHWC kernels that keep 16 channels of
//!   accumulators in a register;
//! * the parallel loops run on the spinning thread team of the ResNetV2 fast path.
//!
//! At [`Precision::Bf16`] (opt-in, [`FastEfficientNetLite::set_precision`]; CPUs with
//! AVX512_BF16) the pointwise convolutions run on bf16 inputs and weights with f32
//! accumulation, and the depthwise ones compute in f32 on bf16 activations (see `bf16.rs`).
//!
//! There is no autograd through this path: use it for inference and for frozen-backbone
//! features; train with [`EfficientNetLite`].

mod bf16;
mod kernels;

use super::blocks::Layers;
use super::config::EfficientNetLiteConfig;
use super::lite::{EfficientNetLite, LiteTaps};
use super::ops::batch_norm::BatchNormAct;
use crate::error::{Error, Result};
use crate::model::cpu::bf16::Kernel;
use crate::model::cpu::{global_average_pool, Nhwc, ScaleShift};
use crate::model::Precision;
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Linear, VarBuilder};
use kernels::{Depthwise, Epilogue, Pointwise, Stem};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One block with its batch norms folded.
#[derive(Debug, Clone)]
struct FastBlock {
    /// timm's name, `blocks.S.I`.
    name: String,
    /// The expansion (`conv_pw` + `bn1` + ReLU6) of an inverted residual block.
    expand: Option<Pointwise>,
    depthwise: Depthwise,
    /// The projection (no activation).
    project: Pointwise,
    residual: bool,
}

/// The activation buffers of one pass, kept between calls.
#[derive(Debug, Default)]
struct Workspace {
    input: Vec<f32>,
    x: Vec<f32>,
    y: Vec<f32>,
    expanded: Vec<f32>,
    filtered: Vec<f32>,
    /// The bf16 activations at [`Precision::Bf16`].
    bf: bf16::Bf16Workspace,
}

/// What a pass records besides its output: the taps, and how long each kernel took.
struct Recorder<'a> {
    taps: Option<&'a mut Vec<(Vec<f32>, Nhwc)>>,
    log: Option<&'a mut Vec<(String, Duration)>>,
    last: Instant,
    /// Stop the pass once this many taps are recorded (the layers after them are not run).
    stop_after: Option<usize>,
}

impl Recorder<'_> {
    /// Record a tap; `true` when the pass may stop here.
    fn tap(&mut self, buf: &[f32], s: Nhwc) -> bool {
        if let Some(taps) = self.taps.as_mut() {
            taps.push((buf[..s.len()].to_vec(), s));
            return self.stop_after.is_some_and(|n| taps.len() >= n);
        }
        false
    }

    fn mark(&mut self, name: impl FnOnce() -> String) {
        if let Some(log) = self.log.as_mut() {
            let now = Instant::now();
            log.push((name(), now - self.last));
            self.last = now;
        }
    }
}

fn ensure(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    &mut buf[..len]
}

fn values(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
}

/// A batch norm's inference-mode scale and shift.
fn folded(bn: &BatchNormAct) -> Result<ScaleShift> {
    let b = bn.batch_norm();
    let (gamma, beta) = b
        .weight_and_bias()
        .ok_or_else(|| Error::InvalidConfig("the fast path needs affine batch norms".into()))?;
    Ok(ScaleShift::from_batch_norm(
        &values(gamma)?,
        &values(beta)?,
        &values(b.running_mean())?,
        &values(b.running_var())?,
        b.eps(),
    ))
}

/// An `(O, I, 1, 1)` kernel as a `(I, O)` matrix scaled by its batch norm.
fn pointwise(kernel: &Tensor, bn: &BatchNormAct) -> Result<Pointwise> {
    let (c_out, c_in, _, _) = kernel.dims4()?;
    let (w, ss) = (values(kernel)?, folded(bn)?);
    let mut weight = vec![0f32; c_in * c_out];
    for (o, row) in w.chunks_exact(c_in).enumerate() {
        for (i, &v) in row.iter().enumerate() {
            weight[i * c_out + o] = v * ss.scale[o];
        }
    }
    Ok(Pointwise {
        c_in,
        c_out,
        weight,
        bias: ss.shift,
    })
}

/// A `(C, 1, k, k)` kernel as `(k * k, C)` scaled by its batch norm.
fn depthwise(kernel: &Tensor, bn: &BatchNormAct, stride: usize) -> Result<Depthwise> {
    let (channels, _, k, _) = kernel.dims4()?;
    let (w, ss) = (values(kernel)?, folded(bn)?);
    let mut weight = vec![0f32; k * k * channels];
    for (c, taps) in w.chunks_exact(k * k).enumerate() {
        for (tap, &v) in taps.iter().enumerate() {
            weight[tap * channels + c] = v * ss.scale[c];
        }
    }
    Ok(Depthwise {
        channels,
        kernel: k,
        stride,
        weight,
        bias: ss.shift,
    })
}

/// The `(O, I, 3, 3)` stem kernel as `(9 * I, O)` scaled by its batch norm.
fn stem(kernel: &Tensor, bn: &BatchNormAct) -> Result<Stem> {
    let (c_out, c_in, kh, kw) = kernel.dims4()?;
    if (kh, kw) != (3, 3) {
        return Err(Error::InvalidConfig(format!(
            "the fast path's stem is 3x3, found {kh}x{kw}"
        )));
    }
    let (w, ss) = (values(kernel)?, folded(bn)?);
    let mut weight = vec![0f32; 9 * c_in * c_out];
    for (o, filter) in w.chunks_exact(c_in * 9).enumerate() {
        for (i, plane) in filter.chunks_exact(9).enumerate() {
            for (tap, &v) in plane.iter().enumerate() {
                weight[(tap * c_in + i) * c_out + o] = v * ss.scale[o];
            }
        }
    }
    Ok(Stem {
        c_in,
        c_out,
        weight,
        bias: ss.shift,
    })
}

/// An inference-only, CPU-optimised copy of an [`EfficientNetLite`].
///
/// Build it from a network ([`FastEfficientNetLite::from_model`], its current weights and
/// running statistics) or from the same variables ([`FastEfficientNetLite::new`]); its outputs
/// match the network's in inference mode to float32 rounding. Inputs on another device or in
/// another float type are copied to the CPU as `f32`; outputs go back to the input's device.
///
/// ```
/// use fracture::model::{EfficientNetLite, EfficientNetLiteConfig, FastEfficientNetLite};
/// use candle_core::{Device, DType, Tensor};
/// let varmap = candle_nn::VarMap::new();
/// let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
/// let net = EfficientNetLite::new(&EfficientNetLiteConfig::lite0(), vb)?;
/// let fast = FastEfficientNetLite::from_model(&net)?;
/// let x = Tensor::randn(0f32, 1., (2, 3, 64, 48), &Device::Cpu)?;
/// let diff = (fast.forward_pooled(&x)? - net.forward_pooled(&x)?)?.abs()?.max_all()?;
/// assert!(diff.to_scalar::<f32>()? < 1e-4);
/// # Ok::<(), fracture::Error>(())
/// ```
pub struct FastEfficientNetLite {
    config: EfficientNetLiteConfig,
    stem: Stem,
    blocks: Vec<FastBlock>,
    /// Last block index of each stage (for the taps).
    stage_ends: Vec<usize>,
    head: Pointwise,
    classifier: Option<Linear>,
    /// The bf16 weights and kernel at [`Precision::Bf16`].
    bf16: Option<bf16::Bf16Plan>,
    workspace: Mutex<Workspace>,
}

impl std::fmt::Debug for FastEfficientNetLite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FastEfficientNetLite")
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

impl Clone for FastEfficientNetLite {
    fn clone(&self) -> Self {
        Self {
            config: self.config.clone(),
            stem: self.stem.clone(),
            blocks: self.blocks.clone(),
            stage_ends: self.stage_ends.clone(),
            head: self.head.clone(),
            classifier: self.classifier.clone(),
            bf16: self.bf16.clone(),
            workspace: Mutex::new(Workspace::default()),
        }
    }
}

impl FastEfficientNetLite {
    /// Plan the fast path from the variables [`EfficientNetLite::new`] reads (timm names).
    pub fn new(config: &EfficientNetLiteConfig, vb: VarBuilder) -> Result<Self> {
        Self::from_model(&EfficientNetLite::new(config, vb)?)
    }

    /// Plan the fast path from a built network (its current weights and running statistics).
    pub fn from_model(model: &EfficientNetLite) -> Result<Self> {
        let mut blocks = Vec::new();
        let mut stage_ends = Vec::new();
        for (s, stage) in model.stages.iter().enumerate() {
            for (i, block) in stage.iter().enumerate() {
                let stride = block.spec.stride;
                let name = format!("blocks.{s}.{i}");
                blocks.push(match &block.layers {
                    Layers::DepthwiseSeparable {
                        conv_dw,
                        bn1,
                        conv_pw,
                        bn2,
                    } => FastBlock {
                        name,
                        expand: None,
                        depthwise: depthwise(conv_dw, bn1, stride)?,
                        project: pointwise(conv_pw, bn2)?,
                        residual: block.spec.has_residual(),
                    },
                    Layers::InvertedResidual {
                        conv_pw,
                        bn1,
                        conv_dw,
                        bn2,
                        conv_pwl,
                        bn3,
                    } => FastBlock {
                        name,
                        expand: Some(pointwise(conv_pw, bn1)?),
                        depthwise: depthwise(conv_dw, bn2, stride)?,
                        project: pointwise(conv_pwl, bn3)?,
                        residual: block.spec.has_residual(),
                    },
                });
            }
            stage_ends.push(blocks.len().saturating_sub(1));
        }
        Ok(Self {
            config: model.config().clone(),
            stem: stem(&model.conv_stem, &model.bn1)?,
            blocks,
            stage_ends,
            head: pointwise(&model.conv_head, &model.bn2)?,
            classifier: model.classifier().cloned(),
            bf16: None,
            workspace: Mutex::new(Workspace::default()),
        })
    }

    /// The precision of the convolutions ([`FastEfficientNetLite::set_precision`]).
    pub fn precision(&self) -> Precision {
        match &self.bf16 {
            Some(_) => Precision::Bf16,
            None => Precision::F32,
        }
    }

    /// Run the convolutions at `precision` ([`Precision::F32`], the default, or
    /// [`Precision::Bf16`]); an error, naming what is missing, when this CPU cannot run it,
    /// and then the path stays as it was. Choosing bf16 rounds and packs the pointwise
    /// weights once (kept beside the f32 ones).
    ///
    /// ```
    /// use fracture::model::{EfficientNetLiteConfig, FastEfficientNetLite, Precision};
    /// use candle_core::{Device, DType, Tensor};
    /// let varmap = candle_nn::VarMap::new();
    /// let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    /// let mut fast = FastEfficientNetLite::new(&EfficientNetLiteConfig::lite0(), vb)?;
    /// match fast.set_precision(Precision::Bf16) {
    ///     Ok(()) => {
    ///         let x = Tensor::ones((1, 3, 64, 64), DType::F32, &Device::Cpu)?;
    ///         assert_eq!(fast.forward_pooled(&x)?.dims(), &[1, 1280]);
    ///     }
    ///     Err(e) => assert!(e.to_string().contains("AVX512_BF16")),
    /// }
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

    /// The kernel of the bf16 convolutions, when the precision is bf16.
    #[cfg(test)]
    pub(crate) fn bf16_kernel(&self) -> Option<Kernel> {
        self.bf16.as_ref().map(bf16::Bf16Plan::kernel)
    }

    /// The configuration this path was planned from.
    pub fn config(&self) -> &EfficientNetLiteConfig {
        &self.config
    }

    /// Run the network; returns the NHWC feature map and its geometry.
    fn run(&self, x: &Tensor, rec: &mut Recorder<'_>) -> Result<(Vec<f32>, Nhwc)> {
        self.config.check_input_dims(x.dims())?;
        let (n, c, h, w) = x.dims4()?;
        // Take the buffers out so that concurrent callers never wait for each other.
        let mut ws = self
            .workspace
            .try_lock()
            .map(|mut g| std::mem::take(&mut *g))
            .unwrap_or_default();
        ws.input = x
            .to_device(&Device::Cpu)?
            .to_dtype(DType::F32)?
            .permute((0, 2, 3, 1))?
            .contiguous()?
            .flatten_all()?
            .to_vec1::<f32>()?;
        rec.mark(|| "input_to_nhwc".into());
        let xs = Nhwc { n, h, w, c };
        let result = match &self.bf16 {
            Some(plan) => plan.run(self, &mut ws, xs, rec),
            None => self.run_f32(&mut ws, xs, rec),
        };
        if let Ok(mut g) = self.workspace.try_lock() {
            *g = ws;
        }
        result
    }

    /// The f32 network on `ws.input` (geometry `xs`): the features and their geometry.
    fn run_f32(
        &self,
        ws: &mut Workspace,
        xs: Nhwc,
        rec: &mut Recorder<'_>,
    ) -> Result<(Vec<f32>, Nhwc)> {
        let Workspace {
            input,
            x: cur,
            y: next,
            expanded,
            filtered,
            ..
        } = ws;
        let mut shape = self.stem.out_shape(xs);
        self.stem.run(input, xs, ensure(cur, shape.len()))?;
        rec.mark(|| "stem/conv3x3_s2_relu6".into());
        if rec.tap(cur, shape) {
            return Ok((Vec::new(), shape));
        }
        let mut stage = 0;
        for (i, block) in self.blocks.iter().enumerate() {
            let expanded_shape = match &block.expand {
                Some(pw) => {
                    let es = Nhwc {
                        c: pw.c_out,
                        ..shape
                    };
                    let s = pw.run(cur, shape, ensure(expanded, es.len()), Epilogue::Relu6)?;
                    rec.mark(|| format!("{}/expand_relu6", block.name));
                    s
                }
                None => shape,
            };
            let source: &[f32] = if block.expand.is_some() {
                expanded
            } else {
                cur
            };
            let ds = block.depthwise.out_shape(expanded_shape);
            block
                .depthwise
                .run(source, expanded_shape, ensure(filtered, ds.len()))?;
            rec.mark(|| {
                let d = &block.depthwise;
                format!(
                    "{}/dw{}x{}_s{}_relu6",
                    block.name, d.kernel, d.kernel, d.stride
                )
            });
            let os = Nhwc {
                c: block.project.c_out,
                ..ds
            };
            let epilogue = if block.residual {
                Epilogue::Residual(cur)
            } else {
                Epilogue::Linear
            };
            block
                .project
                .run(filtered, ds, ensure(next, os.len()), epilogue)?;
            rec.mark(|| format!("{}/project", block.name));
            std::mem::swap(cur, next);
            shape = os;
            if self.stage_ends.get(stage) == Some(&i) {
                if rec.tap(cur, shape) {
                    return Ok((Vec::new(), shape));
                }
                stage += 1;
            }
        }
        let fs = Nhwc {
            c: self.head.c_out,
            ..shape
        };
        self.head
            .run(cur, shape, ensure(next, fs.len()), Epilogue::Relu6)?;
        rec.mark(|| "head/conv1x1_relu6".into());
        Ok((next[..fs.len()].to_vec(), fs))
    }

    fn run_plain(&self, x: &Tensor) -> Result<(Vec<f32>, Nhwc)> {
        self.run(
            x,
            &mut Recorder {
                taps: None,
                log: None,
                last: Instant::now(),
                stop_after: None,
            },
        )
    }

    /// An NHWC buffer as an NCHW tensor on `device`.
    fn to_nchw(values: Vec<f32>, s: Nhwc, device: &Device) -> Result<Tensor> {
        Ok(
            Tensor::from_vec(values, (s.n, s.h, s.w, s.c), &Device::Cpu)?
                .permute((0, 3, 1, 2))?
                .contiguous()?
                .to_device(device)?,
        )
    }

    /// The feature map `(N, 1280, h, w)` (`conv_head` + `bn2` + ReLU6).
    pub fn forward_features(&self, x: &Tensor) -> Result<Tensor> {
        let (features, s) = self.run_plain(x)?;
        Self::to_nchw(features, s, x.device())
    }

    /// Every tap of one pass (stem, each stage, feature map), NCHW, as
    /// [`EfficientNetLite::forward_taps`] in inference mode gives them.
    pub fn forward_taps(&self, x: &Tensor) -> Result<LiteTaps> {
        let mut taps = Vec::new();
        let mut rec = Recorder {
            taps: Some(&mut taps),
            log: None,
            last: Instant::now(),
            stop_after: None,
        };
        let (features, s) = self.run(x, &mut rec)?;
        let mut tensors = taps
            .into_iter()
            .map(|(v, s)| Self::to_nchw(v, s, x.device()))
            .collect::<Result<Vec<_>>>()?;
        if tensors.is_empty() {
            return Err(Error::InvalidInput(
                "fast EfficientNet-Lite recorded no stem".into(),
            ));
        }
        let stem = tensors.remove(0);
        Ok(LiteTaps {
            stem,
            stages: tensors,
            head: Self::to_nchw(features, s, x.device())?,
        })
    }

    /// The output of stage `stage` (0-based, timm's `blocks.S`), NCHW, as
    /// [`forward_taps`](Self::forward_taps) gives it, without running the layers after it.
    ///
    /// ```
    /// use fracture::model::{EfficientNetLiteConfig, FastEfficientNetLite};
    /// use candle_core::{Device, DType, Tensor};
    /// let varmap = candle_nn::VarMap::new();
    /// let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    /// let fast = FastEfficientNetLite::new(&EfficientNetLiteConfig::lite0(), vb)?;
    /// let x = Tensor::ones((1, 3, 64, 64), DType::F32, &Device::Cpu)?;
    /// let s4 = fast.forward_stage(&x, 4)?;
    /// let taps = fast.forward_taps(&x)?;
    /// assert_eq!(s4.flatten_all()?.to_vec1::<f32>()?, taps.stages[4].flatten_all()?.to_vec1::<f32>()?);
    /// assert!(fast.forward_stage(&x, 7).is_err());
    /// # Ok::<(), fracture::Error>(())
    /// ```
    pub fn forward_stage(&self, x: &Tensor, stage: usize) -> Result<Tensor> {
        let mut taps = Vec::new();
        let mut rec = Recorder {
            taps: Some(&mut taps),
            log: None,
            last: Instant::now(),
            // The stem's tap, then stages 0..=stage.
            stop_after: Some(stage + 2),
        };
        self.run(x, &mut rec)?;
        let (values, s) = taps.into_iter().nth(stage + 1).ok_or_else(|| {
            Error::InvalidConfig(format!(
                "stage {stage} does not exist: this network has {}",
                self.stage_ends.len()
            ))
        })?;
        Self::to_nchw(values, s, x.device())
    }

    /// The globally average-pooled features `(N, 1280)`.
    pub fn forward_pooled(&self, x: &Tensor) -> Result<Tensor> {
        let (features, s) = self.run_plain(x)?;
        let pooled = global_average_pool(&features, s);
        Ok(Tensor::from_vec(pooled, (s.n, s.c), &Device::Cpu)?.to_device(x.device())?)
    }

    /// ImageNet logits `(N, classes)` when the network has the classifier; an error otherwise.
    pub fn forward_logits(&self, x: &Tensor) -> Result<Tensor> {
        let classifier = self.classifier.as_ref().ok_or_else(|| {
            Error::InvalidConfig("this EfficientNet-Lite has no classifier".into())
        })?;
        let pooled = self.forward_pooled(x)?;
        Ok(classifier
            .forward(&pooled.to_device(&classifier.weight().device().clone())?)?
            .to_device(x.device())?)
    }

    /// Run one pass and return how long each kernel took, in order, named `layer/kernel`
    /// (`stem/conv3x3_s2_relu6`, `blocks.1.0/expand_relu6`, `blocks.1.0/dw3x3_s2_relu6`, ...).
    ///
    /// ```
    /// use fracture::model::{EfficientNetLiteConfig, FastEfficientNetLite};
    /// use candle_core::{Device, DType, Tensor};
    /// let varmap = candle_nn::VarMap::new();
    /// let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    /// let fast = FastEfficientNetLite::new(&EfficientNetLiteConfig::lite0(), vb)?;
    /// let times = fast.forward_profiled(&Tensor::zeros((1, 3, 64, 64), DType::F32, &Device::Cpu)?)?;
    /// assert_eq!(times[1].0, "stem/conv3x3_s2_relu6");
    /// assert_eq!(times[3].0, "blocks.0.0/project");
    /// # Ok::<(), fracture::Error>(())
    /// ```
    pub fn forward_profiled(&self, x: &Tensor) -> Result<Vec<(String, Duration)>> {
        let mut log = Vec::new();
        let mut rec = Recorder {
            taps: None,
            log: Some(&mut log),
            last: Instant::now(),
            stop_after: None,
        };
        self.run(x, &mut rec)?;
        Ok(log)
    }
}
