//! The depthwise convolution with TensorFlow "SAME" padding as one candle op with a backward
//! pass, and the two compositions of candle ops it falls back to.
//!
//! candle 0.11 runs a grouped convolution as one convolution per group (`chunk` + `cat`), in
//! the forward and the backward pass: thousands of tiny convolutions per Lite0 pass. Here:
//! * on the CPU in `f32`, [`DepthwiseConv`] is a [`CustomOp2`] over whole NCHW planes, with the
//!   gradients of the input and of the weights as two more CPU ops (`depthwise_kernels`);
//! * elsewhere (CUDA, Metal, other float types) the convolution is the sum over its k² taps of
//!   a shifted, strided view times the tap's per-channel weight: a few dozen elementwise candle
//!   ops that GPUs run well and that candle differentiates itself;
//! * [`LiteOps::Reference`] runs candle's own grouped `conv2d` (slow; the tests' reference).

use super::depthwise_kernels::{self, DepthwiseGeometry, Dims};
use super::{contiguous_f32, LiteOps};
use crate::error::{Error, Result};
use crate::model::efficientnet::arch::same_padding;
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Shape, Tensor};

impl DepthwiseGeometry {
    /// TensorFlow "SAME" padding for an `h` x `w` input.
    pub(crate) fn same(h: usize, w: usize, kernel: usize, stride: usize) -> Self {
        let (top, bottom) = same_padding(h, kernel, stride);
        let (left, right) = same_padding(w, kernel, stride);
        Self {
            kernel,
            stride,
            top,
            bottom,
            left,
            right,
        }
    }

    /// The call's dimensions for input `x_dims` `(N, C, H, W)` and kernel `w_dims` `(C, 1, k, k)`.
    fn dims(&self, x_dims: &[usize], w_dims: &[usize]) -> candle_core::Result<Dims> {
        let k = self.kernel;
        let (&[n, c, h, w], &[wc, 1, kh, kw]) = (x_dims, w_dims) else {
            candle_core::bail!(
                "depthwise convolution: input {x_dims:?} must be (N, C, H, W) and the kernel {w_dims:?} (C, 1, k, k)"
            )
        };
        if wc != c || kh != k || kw != k {
            candle_core::bail!(
                "depthwise convolution: kernel {w_dims:?} does not fit input {x_dims:?} with a {k}x{k} kernel"
            )
        }
        if self.stride == 0 || self.stride > 2 {
            candle_core::bail!(
                "depthwise convolution: stride {} is not 1 or 2",
                self.stride
            )
        }
        let Some((oh, ow)) = self.out_size(h, w) else {
            candle_core::bail!(
                "depthwise convolution: input {x_dims:?} is smaller than the {k}x{k} kernel"
            )
        };
        Ok(Dims { n, c, h, w, oh, ow })
    }
}

/// The forward op: `(x, weight) -> y`, NCHW `f32` on the CPU.
struct DepthwiseConv(DepthwiseGeometry);

impl CustomOp2 for DepthwiseConv {
    fn name(&self) -> &'static str {
        "efficientnet-depthwise-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let d = self.0.dims(l1.dims(), l2.dims())?;
        let x = contiguous_f32(s1, l1, "depthwise input")?;
        let w = contiguous_f32(s2, l2, "depthwise kernel")?;
        let y = depthwise_kernels::forward(x, w, d, &self.0);
        Ok((CpuStorage::F32(y), Shape::from((d.n, d.c, d.oh, d.ow))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _y: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let grad = grad.contiguous()?;
        let (_, _, h, w) = x.dims4()?;
        let dx = grad.apply_op2_no_bwd(weight, &BackwardInput(self.0, h, w))?;
        let dw = x.apply_op2_no_bwd(&grad, &BackwardWeight(self.0))?;
        Ok((Some(dx), Some(dw)))
    }
}

/// `(grad_y, weight) -> grad_x` for an input of the given height and width.
struct BackwardInput(DepthwiseGeometry, usize, usize);

impl CustomOp2 for BackwardInput {
    fn name(&self) -> &'static str {
        "efficientnet-depthwise-conv2d-grad-input"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let &[n, c, ..] = l1.dims() else {
            candle_core::bail!(
                "depthwise gradient: output gradient {:?} is not 4-D",
                l1.dims()
            )
        };
        let d = self.0.dims(&[n, c, self.1, self.2], l2.dims())?;
        if l1.dims() != [n, c, d.oh, d.ow] {
            candle_core::bail!(
                "depthwise gradient: output gradient {:?}, expected {:?}",
                l1.dims(),
                [n, c, d.oh, d.ow]
            )
        }
        let g = contiguous_f32(s1, l1, "depthwise output gradient")?;
        let w = contiguous_f32(s2, l2, "depthwise kernel")?;
        let dx = depthwise_kernels::backward_input(g, w, d, &self.0);
        Ok((CpuStorage::F32(dx), Shape::from((n, c, d.h, d.w))))
    }
}

/// `(x, grad_y) -> grad_weight`.
struct BackwardWeight(DepthwiseGeometry);

impl CustomOp2 for BackwardWeight {
    fn name(&self) -> &'static str {
        "efficientnet-depthwise-conv2d-grad-weight"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let k = self.0.kernel;
        let c = l1.dims().get(1).copied().unwrap_or(0);
        let d = self.0.dims(l1.dims(), &[c, 1, k, k])?;
        if l2.dims() != [d.n, c, d.oh, d.ow] {
            candle_core::bail!(
                "depthwise gradient: output gradient {:?}, expected {:?}",
                l2.dims(),
                [d.n, c, d.oh, d.ow]
            )
        }
        let x = contiguous_f32(s1, l1, "depthwise input")?;
        let g = contiguous_f32(s2, l2, "depthwise output gradient")?;
        let dw = depthwise_kernels::backward_weight(x, g, d, &self.0);
        Ok((CpuStorage::F32(dw), Shape::from((c, 1, k, k))))
    }
}

/// Depthwise convolution of an NCHW batch with a `(C, 1, k, k)` kernel, TensorFlow "SAME"
/// padding (output `ceil(side / stride)`; an odd total padding puts the extra pixel at the
/// bottom/right, as timm's `Conv2dSame`), no bias; differentiable in both arguments.
///
/// On the CPU in `f32` this is one fused op (forward and backward); elsewhere it is a sum of k²
/// shifted products of candle ops. `stride` is 1 or 2.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use fracture::model::depthwise_conv2d_same;
/// let x = Tensor::randn(0f32, 1., (2, 4, 9, 8), &Device::Cpu)?;
/// let w = Tensor::randn(0f32, 1., (4, 1, 3, 3), &Device::Cpu)?;
/// let y = depthwise_conv2d_same(&x, &w, 2)?;
/// assert_eq!(y.dims(), &[2, 4, 5, 4]);
/// // The same as candle's grouped convolution on the explicitly padded input.
/// let padded = x.pad_with_zeros(2, 1, 1)?.pad_with_zeros(3, 0, 1)?;
/// let reference = padded.conv2d(&w, 0, 2, 1, 4)?;
/// let diff = (y - reference)?.abs()?.max_all()?.to_scalar::<f32>()?;
/// assert!(diff < 1e-5);
/// # Ok::<(), fracture::Error>(())
/// ```
pub fn depthwise_conv2d_same(x: &Tensor, weight: &Tensor, stride: usize) -> Result<Tensor> {
    depthwise(x, weight, stride, LiteOps::Fused)
}

/// [`depthwise_conv2d_same`] with a choice of implementation.
pub(crate) fn depthwise(
    x: &Tensor,
    weight: &Tensor,
    stride: usize,
    ops: LiteOps,
) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let (_, _, k, _) = weight.dims4()?;
    let g = DepthwiseGeometry::same(h, w, k, stride);
    // Checks the shapes and the stride for every implementation alike.
    g.dims(x.dims(), weight.dims())
        .map_err(|e| Error::InvalidInput(e.to_string()))?;
    let cpu_f32 = x.device().is_cpu() && x.dtype() == DType::F32 && weight.dtype() == DType::F32;
    Ok(match ops {
        LiteOps::Reference => grouped_conv(x, weight, &g)?,
        LiteOps::Fused if cpu_f32 => x
            .contiguous()?
            .apply_op2(&weight.contiguous()?, DepthwiseConv(g))?,
        LiteOps::Fused => tap_sum(x, weight, &g)?,
    })
}

/// candle's grouped convolution on the explicitly padded input (one convolution per channel).
fn grouped_conv(x: &Tensor, weight: &Tensor, g: &DepthwiseGeometry) -> candle_core::Result<Tensor> {
    let channels = x.dim(1)?;
    x.pad_with_zeros(2, g.top, g.bottom)?
        .pad_with_zeros(3, g.left, g.right)?
        .conv2d(weight, 0, g.stride, 1, channels)
}

/// The sum over the k² taps of the strided view of the padded input that the tap reads, times
/// the tap's weight per channel.
fn tap_sum(x: &Tensor, weight: &Tensor, g: &DepthwiseGeometry) -> candle_core::Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let (k, s) = (g.kernel, g.stride);
    let (oh, ow) = g
        .out_size(h, w)
        .ok_or_else(|| candle_core::Error::Msg("depthwise input smaller than its kernel".into()))?;
    // Pad so that every tap's window of `s * oh` rows (`s * ow` columns) fits; the extra rows
    // and columns only ever land in the phases a strided view drops.
    let extra_h = (k - 1 + s * oh).saturating_sub(h + g.top + g.bottom);
    let extra_w = (k - 1 + s * ow).saturating_sub(w + g.left + g.right);
    let padded = x
        .pad_with_zeros(2, g.top, g.bottom + extra_h)?
        .pad_with_zeros(3, g.left, g.right + extra_w)?;
    let mut sum: Option<Tensor> = None;
    for ky in 0..k {
        for kx in 0..k {
            let window = padded.narrow(2, ky, s * oh)?.narrow(3, kx, s * ow)?;
            let window = if s == 1 {
                window
            } else {
                window
                    .reshape((n, c, oh, s, ow, s))?
                    .narrow(3, 0, 1)?
                    .narrow(5, 0, 1)?
                    .reshape((n, c, oh, ow))?
            };
            let tap = weight
                .narrow(2, ky, 1)?
                .narrow(3, kx, 1)?
                .reshape((1, c, 1, 1))?;
            let term = window.broadcast_mul(&tap)?;
            sum = Some(match sum {
                None => term,
                Some(acc) => (acc + term)?,
            });
        }
    }
    sum.ok_or_else(|| candle_core::Error::Msg("depthwise kernel without taps".into()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn seeded(shape: (usize, usize, usize, usize), seed: u64) -> Tensor {
        let values =
            crate::model::testing::seeded_values(shape.0 * shape.1 * shape.2 * shape.3, seed);
        Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
    }

    #[test]
    fn the_gpu_composition_matches_the_grouped_convolution() {
        for (seed, (h, w, k, s)) in [(7, 9, 3, 1), (8, 8, 3, 2), (9, 7, 5, 2), (6, 11, 5, 1)]
            .into_iter()
            .enumerate()
        {
            let x = seeded((2, 3, h, w), 2 * seed as u64);
            let wt = seeded((3, 1, k, k), 2 * seed as u64 + 1);
            let g = DepthwiseGeometry::same(h, w, k, s);
            let a = tap_sum(&x, &wt, &g).unwrap();
            let b = grouped_conv(&x, &wt, &g).unwrap();
            let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap();
            assert!(diff.to_scalar::<f32>().unwrap() < 1e-5, "{h}x{w} k{k} s{s}");
        }
    }
}
