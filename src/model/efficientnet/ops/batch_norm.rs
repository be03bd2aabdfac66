//! Batch normalization with an optional ReLU6, fused into one candle op with a backward pass.
//!
//! candle_nn's `BatchNorm` in training mode is a dozen tensor ops (transpose, mean, subtract,
//! square, mean, divide, scale, shift, transpose back), each a pass over the activation and
//! each with its own backward; ReLU6 adds two more. [`BatchNormAct`] does the same arithmetic
//! in two passes forward (statistics, then normalize-scale-shift-clip) and two backward, on the
//! CPU in `f32`; elsewhere, and with [`LiteOps::Reference`], it runs candle_nn's `BatchNorm`
//! and `clamp`.
//!
//! Training mode normalizes with the batch's mean and biased variance and moves the running
//! statistics by `momentum` towards the batch mean and the unbiased variance (candle's and
//! PyTorch's rule); inference mode uses the running statistics.

use super::{contiguous_f32, LiteOps};
use crate::error::Result;
use crate::model::efficientnet::simd::vectorized;
use candle_core::{CpuStorage, CustomOp3, DType, Layout, ModuleT, Shape, Tensor, Var};
use candle_nn::{BatchNorm, BatchNormConfig, VarBuilder};
use rayon::prelude::*;
use std::sync::{Arc, Mutex};

/// Per-channel statistics a forward pass used: mean and `1 / sqrt(var + eps)`.
#[derive(Debug, Clone, Default)]
struct ChannelStats {
    mean: Vec<f32>,
    inv_std: Vec<f32>,
    /// The batch's biased variance (training mode only), for the running statistics.
    var: Vec<f32>,
}

/// How the forward op gets its statistics.
#[derive(Debug, Clone)]
enum Statistics {
    /// From the batch (training mode).
    Batch,
    /// Given: the running statistics (inference mode).
    Running(ChannelStats),
}

/// Shape of one call: batch, channels, pixels per plane.
#[derive(Debug, Clone, Copy)]
struct Planes {
    n: usize,
    c: usize,
    hw: usize,
}

impl Planes {
    fn of(dims: &[usize]) -> candle_core::Result<Self> {
        match *dims {
            [n, c, ref rest @ ..] => Ok(Self {
                n,
                c,
                hw: rest.iter().product(),
            }),
            _ => candle_core::bail!("batch norm: input {dims:?} has no channel dimension"),
        }
    }

    /// The `hw` values of channel `ch` in image `b`.
    fn plane<'a>(&self, data: &'a [f32], b: usize, ch: usize) -> &'a [f32] {
        let at = (b * self.c + ch) * self.hw;
        &data[at..at + self.hw]
    }
}

/// `(x, gamma, beta) -> act(gamma * (x - mean) * inv_std + beta)`.
struct NormalizeOp {
    statistics: Statistics,
    eps: f64,
    relu6: bool,
    /// Filled by the forward pass: what it normalized with.
    used: Arc<Mutex<ChannelStats>>,
}

/// Values per block summed in `f32` lanes before the block's sum is added in `f64`.
const BLOCK: usize = 4096;
/// Independent `f32` accumulators (one AVX-512 vector), so that sums vectorize.
const LANES: usize = 16;

/// The sum of the lanes in `f64`.
#[inline(always)]
fn widen_sum(lanes: &[f32; LANES]) -> f64 {
    let mut total = 0f64;
    for &v in lanes {
        total += f64::from(v);
    }
    total
}

/// `sum(f(x))` over `xs`: 16 `f32` lanes per block of [`BLOCK`] values, blocks added in `f64`.
#[inline(always)]
fn lane_sum(xs: &[f32], f: impl Fn(f32) -> f32) -> f64 {
    let mut total = 0f64;
    for block in xs.chunks(BLOCK) {
        let mut acc = [0f32; LANES];
        let mut chunks = block.chunks_exact(LANES);
        for c in &mut chunks {
            for i in 0..LANES {
                acc[i] += f(c[i]);
            }
        }
        for &v in chunks.remainder() {
            acc[0] += f(v);
        }
        total += widen_sum(&acc);
    }
    total
}

/// `(sum(m), sum(m * xhat))` with `m` the masked gradient and `xhat = (x - mean) * inv_std`,
/// summed as [`lane_sum`] does.
#[inline(always)]
fn gradient_sums(
    x: &[f32],
    y: &[f32],
    g: &[f32],
    (mean, inv_std): (f32, f32),
    relu6: bool,
) -> (f64, f64) {
    let (mut sg, mut sgx) = (0f64, 0f64);
    for ((xb, yb), gb) in x.chunks(BLOCK).zip(y.chunks(BLOCK)).zip(g.chunks(BLOCK)) {
        let (mut a, mut c) = ([0f32; LANES], [0f32; LANES]);
        let mut xc = xb.chunks_exact(LANES);
        let mut yc = yb.chunks_exact(LANES);
        let mut gc = gb.chunks_exact(LANES);
        for ((xv, yv), gv) in (&mut xc).zip(&mut yc).zip(&mut gc) {
            for i in 0..LANES {
                let m = masked(gv[i], yv[i], relu6);
                a[i] += m;
                c[i] += m * (xv[i] - mean) * inv_std;
            }
        }
        for ((&xv, &yv), &gv) in xc
            .remainder()
            .iter()
            .zip(yc.remainder())
            .zip(gc.remainder())
        {
            let m = masked(gv, yv, relu6);
            a[0] += m;
            c[0] += m * (xv - mean) * inv_std;
        }
        sg += widen_sum(&a);
        sgx += widen_sum(&c);
    }
    (sg, sgx)
}

/// Mean, `1 / sqrt(var + eps)` and biased variance of channel `ch`.
#[inline(always)]
fn channel_statistics_kernel(x: &[f32], p: Planes, ch: usize, eps: f64) -> (f32, f32, f32) {
    let count = (p.n * p.hw).max(1) as f64;
    // Plain loops, not iterator adapters: everything here must inline into the SIMD copies.
    let mut sum = 0f64;
    for b in 0..p.n {
        sum += lane_sum(p.plane(x, b, ch), |v| v);
    }
    let mean = sum / count;
    let m = mean as f32;
    // Centred second pass: the variance without cancellation.
    let mut sq = 0f64;
    for b in 0..p.n {
        sq += lane_sum(p.plane(x, b, ch), |v| (v - m) * (v - m));
    }
    let var = sq / count;
    (m, (1.0 / (var + eps).sqrt()) as f32, var as f32)
}

vectorized!(fn channel_statistics(x: &[f32], p: Planes, ch: usize, eps: f64) -> (f32, f32, f32) => channel_statistics_kernel);

fn batch_statistics(x: &[f32], p: Planes, eps: f64) -> ChannelStats {
    let per_channel: Vec<(f32, f32, f32)> = (0..p.c)
        .into_par_iter()
        .map(|ch| channel_statistics(x, p, ch, eps))
        .collect();
    let mut stats = ChannelStats::default();
    for (m, s, v) in per_channel {
        stats.mean.push(m);
        stats.inv_std.push(s);
        stats.var.push(v);
    }
    stats
}

/// `dst = clamp(src * scale + shift, lo, hi)`.
#[inline(always)]
fn normalize_plane_kernel(
    dst: &mut [f32],
    src: &[f32],
    scale: f32,
    shift: f32,
    (lo, hi): (f32, f32),
) {
    for (d, &v) in dst.iter_mut().zip(src) {
        *d = (v * scale + shift).clamp(lo, hi);
    }
}

vectorized!(fn normalize_plane(dst: &mut [f32], src: &[f32], scale: f32, shift: f32, range: (f32, f32)) => normalize_plane_kernel);

/// The output gradient with ReLU6's mask applied (zero where the output was clipped).
#[inline(always)]
fn masked(g: f32, y: f32, relu6: bool) -> f32 {
    if !relu6 || (y > 0.0 && y < 6.0) {
        g
    } else {
        0.0
    }
}

/// Per-channel sums of the backward pass over every image of channel `ch`.
#[inline(always)]
fn channel_gradient_sums_kernel(
    (x, y, g): (&[f32], &[f32], &[f32]),
    p: Planes,
    ch: usize,
    stat: (f32, f32),
    relu6: bool,
) -> (f64, f64) {
    let (mut sg, mut sgx) = (0f64, 0f64);
    for b in 0..p.n {
        let planes = (p.plane(x, b, ch), p.plane(y, b, ch), p.plane(g, b, ch));
        let (a, c) = gradient_sums(planes.0, planes.1, planes.2, stat, relu6);
        sg += a;
        sgx += c;
    }
    (sg, sgx)
}

vectorized!(fn channel_gradient_sums(
    tensors: (&[f32], &[f32], &[f32]),
    p: Planes,
    ch: usize,
    stat: (f32, f32),
    relu6: bool,
) -> (f64, f64) => channel_gradient_sums_kernel);

/// One plane of the input gradient: `scale * (m - mean_g - xhat * mean_gx)` with batch
/// statistics, `scale * m` with running ones (`m` the masked output gradient).
#[inline(always)]
fn gradient_plane_kernel(
    dst: &mut [f32],
    (xs, ys, gs): (&[f32], &[f32], &[f32]),
    scale: f32,
    (mean, inv_std): (f32, f32),
    means: Option<(f32, f32)>,
    relu6: bool,
) {
    match means {
        Some((mean_g, mean_gx)) => {
            for (((d, &xv), &yv), &gv) in dst.iter_mut().zip(xs).zip(ys).zip(gs) {
                let xhat = (xv - mean) * inv_std;
                *d = scale * (masked(gv, yv, relu6) - mean_g - xhat * mean_gx);
            }
        }
        None => {
            for ((d, &yv), &gv) in dst.iter_mut().zip(ys).zip(gs) {
                *d = scale * masked(gv, yv, relu6);
            }
        }
    }
}

vectorized!(fn gradient_plane(
    dst: &mut [f32],
    planes: (&[f32], &[f32], &[f32]),
    scale: f32,
    stat: (f32, f32),
    means: Option<(f32, f32)>,
    relu6: bool,
) => gradient_plane_kernel);

impl CustomOp3 for NormalizeOp {
    fn name(&self) -> &'static str {
        "efficientnet-batch-norm-relu6"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let p = Planes::of(l1.dims())?;
        let x = contiguous_f32(s1, l1, "batch norm input")?;
        let gamma = contiguous_f32(s2, l2, "batch norm weight")?;
        let beta = contiguous_f32(s3, l3, "batch norm bias")?;
        if gamma.len() != p.c || beta.len() != p.c {
            candle_core::bail!(
                "batch norm: {} channels, weight {:?} and bias {:?}",
                p.c,
                l2.dims(),
                l3.dims()
            )
        }
        let stats = match &self.statistics {
            Statistics::Batch => batch_statistics(x, p, self.eps),
            Statistics::Running(s) if s.mean.len() == p.c && s.inv_std.len() == p.c => s.clone(),
            Statistics::Running(s) => {
                candle_core::bail!(
                    "batch norm: {} running statistics for {} channels",
                    s.mean.len(),
                    p.c
                )
            }
        };
        let (lo, hi) = if self.relu6 {
            (0.0, 6.0)
        } else {
            (f32::NEG_INFINITY, f32::INFINITY)
        };
        let mut y = vec![0f32; x.len()];
        y.par_chunks_mut(p.hw.max(1))
            .zip(x.par_chunks(p.hw.max(1)))
            .enumerate()
            .for_each(|(plane, (dst, src))| {
                let ch = plane % p.c;
                let scale = gamma[ch] * stats.inv_std[ch];
                let shift = beta[ch] - stats.mean[ch] * scale;
                normalize_plane(dst, src, scale, shift, (lo, hi));
            });
        if let Ok(mut used) = self.used.lock() {
            *used = stats;
        }
        Ok((CpuStorage::F32(y), Shape::from(l1.dims())))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        _beta: &Tensor,
        y: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let stats =
            self.used.lock().map(|s| s.clone()).map_err(|_| {
                candle_core::Error::Msg("batch norm statistics lock poisoned".into())
            })?;
        let sums = Arc::new(Mutex::new((Vec::new(), Vec::new())));
        let op = GradientOp {
            gamma: gamma.to_dtype(DType::F32)?.to_vec1::<f32>()?,
            stats,
            batch: matches!(self.statistics, Statistics::Batch),
            relu6: self.relu6,
            sums: Arc::clone(&sums),
        };
        let dx = x.apply_op3_no_bwd(y, &grad.contiguous()?, &op)?;
        let (dgamma, dbeta) = sums
            .lock()
            .map(|s| s.clone())
            .map_err(|_| candle_core::Error::Msg("batch norm gradient lock poisoned".into()))?;
        let dgamma = Tensor::from_vec(dgamma, gamma.shape(), gamma.device())?;
        let dbeta = Tensor::from_vec(dbeta, gamma.shape(), gamma.device())?;
        Ok((Some(dx), Some(dgamma), Some(dbeta)))
    }
}

/// `(x, y, grad_y) -> grad_x`, leaving the gradients of gamma and beta in `sums`.
struct GradientOp {
    gamma: Vec<f32>,
    stats: ChannelStats,
    /// Whether the forward pass used batch statistics (whose gradient then flows too).
    batch: bool,
    relu6: bool,
    sums: Arc<Mutex<(Vec<f32>, Vec<f32>)>>,
}

impl CustomOp3 for GradientOp {
    fn name(&self) -> &'static str {
        "efficientnet-batch-norm-relu6-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let p = Planes::of(l1.dims())?;
        if l2.dims() != l1.dims() || l3.dims() != l1.dims() || self.gamma.len() != p.c {
            candle_core::bail!(
                "batch norm gradient: input {:?}, output {:?}, gradient {:?}, {} channels",
                l1.dims(),
                l2.dims(),
                l3.dims(),
                self.gamma.len()
            )
        }
        let x = contiguous_f32(s1, l1, "batch norm input")?;
        let y = contiguous_f32(s2, l2, "batch norm output")?;
        let g = contiguous_f32(s3, l3, "batch norm output gradient")?;
        let s = &self.stats;
        // Pass 1, per channel: sum of the masked gradient and of its product with x-hat.
        let sums: Vec<(f64, f64)> = (0..p.c)
            .into_par_iter()
            .map(|ch| {
                let stat = (s.mean[ch], s.inv_std[ch]);
                channel_gradient_sums((x, y, g), p, ch, stat, self.relu6)
            })
            .collect();
        let count = (p.n * p.hw).max(1) as f64;
        // Pass 2, per plane: the input gradient.
        let mut dx = vec![0f32; x.len()];
        dx.par_chunks_mut(p.hw.max(1))
            .enumerate()
            .for_each(|(plane, dst)| {
                let (b, ch) = (plane / p.c, plane % p.c);
                let (mean, inv_std) = (s.mean[ch], s.inv_std[ch]);
                let scale = self.gamma[ch] * inv_std;
                let (ys, gs) = (p.plane(y, b, ch), p.plane(g, b, ch));
                let means = self
                    .batch
                    .then(|| ((sums[ch].0 / count) as f32, (sums[ch].1 / count) as f32));
                let planes = (p.plane(x, b, ch), ys, gs);
                gradient_plane(dst, planes, scale, (mean, inv_std), means, self.relu6);
            });
        if let Ok(mut out) = self.sums.lock() {
            *out = (
                sums.iter().map(|s| s.1 as f32).collect(),
                sums.iter().map(|s| s.0 as f32).collect(),
            );
        }
        Ok((CpuStorage::F32(dx), Shape::from(l1.dims())))
    }
}

/// A batch normalization (timm's `bnN`: `weight`, `bias`, `running_mean`, `running_var`)
/// followed by ReLU6 or by nothing.
#[derive(Debug, Clone)]
pub(crate) struct BatchNormAct {
    bn: BatchNorm,
    running_mean: Var,
    running_var: Var,
    relu6: bool,
}

impl BatchNormAct {
    /// `eps` and Keras-style `momentum` (the share of the old running statistic kept).
    pub(crate) fn new(
        channels: usize,
        eps: f64,
        keras_momentum: f64,
        relu6: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        let config = BatchNormConfig {
            eps,
            remove_mean: true,
            affine: true,
            momentum: 1.0 - keras_momentum,
        };
        let bn = candle_nn::batch_norm(channels, config, vb)?;
        // Both are variables already (candle_nn made them so): these share their storage.
        let running_mean = Var::from_tensor(bn.running_mean())?;
        let running_var = Var::from_tensor(bn.running_var())?;
        Ok(Self {
            bn,
            running_mean,
            running_var,
            relu6,
        })
    }

    /// The underlying candle_nn layer (its weights and running statistics).
    pub(crate) fn batch_norm(&self) -> &BatchNorm {
        &self.bn
    }

    /// Normalize with the batch's statistics (`train`, updating the running ones) or the
    /// running ones, then apply ReLU6 if this layer has it.
    pub(crate) fn forward_t(&self, x: &Tensor, train: bool, ops: LiteOps) -> Result<Tensor> {
        let fused = ops == LiteOps::Fused && x.device().is_cpu() && x.dtype() == DType::F32;
        match (fused, self.bn.weight_and_bias()) {
            (true, Some((gamma, beta))) => self.fused(x, gamma, beta, train),
            _ => {
                let y = self.bn.forward_t(x, train)?;
                Ok(if self.relu6 { y.clamp(0f32, 6f32)? } else { y })
            }
        }
    }

    fn fused(&self, x: &Tensor, gamma: &Tensor, beta: &Tensor, train: bool) -> Result<Tensor> {
        let eps = self.bn.eps();
        let statistics = if train {
            Statistics::Batch
        } else {
            let mean = self.running_mean.as_tensor().to_vec1::<f32>()?;
            let inv_std = self
                .running_var
                .as_tensor()
                .to_vec1::<f32>()?
                .iter()
                .map(|&v| (1.0 / (f64::from(v) + eps).sqrt()) as f32)
                .collect();
            Statistics::Running(ChannelStats {
                mean,
                inv_std,
                var: Vec::new(),
            })
        };
        let used = Arc::new(Mutex::new(ChannelStats::default()));
        let op = NormalizeOp {
            statistics,
            eps,
            relu6: self.relu6,
            used: Arc::clone(&used),
        };
        let y = x.contiguous()?.apply_op3(gamma, beta, op)?;
        if train {
            let stats = used.lock().map(|s| s.clone()).map_err(|_| {
                candle_core::Error::Msg("batch norm statistics lock poisoned".into())
            })?;
            self.update_running(&stats, x.elem_count() / stats.mean.len().max(1))?;
        }
        Ok(y)
    }

    /// `running = (1 - m) * running + m * batch`, with the unbiased batch variance.
    fn update_running(&self, stats: &ChannelStats, count: usize) -> Result<()> {
        let m = self.bn.momentum() as f32;
        let unbias = if count > 1 {
            count as f32 / (count as f32 - 1.0)
        } else {
            1.0
        };
        let update = |var: &Var, batch: &[f32], factor: f32| -> Result<()> {
            let old = var.as_tensor().to_vec1::<f32>()?;
            let new: Vec<f32> = old
                .iter()
                .zip(batch)
                .map(|(&o, &b)| (1.0 - m) * o + m * factor * b)
                .collect();
            var.set(&Tensor::from_vec(new, old.len(), var.device())?)?;
            Ok(())
        };
        update(&self.running_mean, &stats.mean, 1.0)?;
        update(&self.running_var, &stats.var, unbias)
    }
}
