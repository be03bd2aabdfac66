//! The layers of EfficientNet-Lite's candle path where candle's generic ops are slow, each
//! with a fused CPU form and a plain candle form.
//!
//! * `depthwise`: the depthwise convolution (a [`candle_core::CustomOp2`] with its backward);
//! * `batch_norm`: batch normalization + ReLU6 (a [`candle_core::CustomOp3`] with its backward);
//! * [`pointwise`]: a 1x1 convolution as a batched matrix product, whose backward is two
//!   matrix products (candle's 1x1 `conv2d` backward goes through a direct `conv_transpose2d`);
//! * [`conv_same`]: a convolution with TensorFlow "SAME" padding (the stem).

pub(crate) mod batch_norm;
pub(crate) mod depthwise;
mod depthwise_kernels;

use super::arch::same_padding;
use crate::error::Result;
use candle_core::{CpuStorage, Layout, Tensor};

/// Which implementation runs EfficientNet-Lite's depthwise convolutions and batch norms.
///
/// ```
/// use fracture::model::LiteOps;
/// assert_eq!(LiteOps::default(), LiteOps::Fused);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LiteOps {
    /// Fused ops on the CPU in `f32`: the depthwise convolution and batch norm + ReLU6 as
    /// single candle ops with hand-written backward passes. On CUDA, Metal or in other float
    /// types: the depthwise convolution as k² shifted products of candle ops (fast on GPUs) and
    /// candle_nn's batch norm.
    #[default]
    Fused,
    /// candle's own layers only: grouped `conv2d` for the depthwise convolutions (one
    /// convolution per channel), candle_nn's `BatchNorm` and `clamp`. Slow; the reference the
    /// fused ops are checked against.
    Reference,
}

/// The values of a contiguous `f32` CPU tensor.
pub(crate) fn contiguous_f32<'a>(
    storage: &'a CpuStorage,
    layout: &Layout,
    what: &str,
) -> candle_core::Result<&'a [f32]> {
    let data = storage.as_slice::<f32>()?;
    match layout.contiguous_offsets() {
        Some((start, end)) if end <= data.len() => Ok(&data[start..end]),
        _ => {
            candle_core::bail!("{what}: expected a contiguous f32 tensor, found layout {layout:?}")
        }
    }
}

/// A 1x1 convolution without bias: `(N, C, H, W)` with an `(O, C, 1, 1)` kernel gives
/// `(N, O, H, W)`, computed as the matrix product `(O, C) x (C, H*W)` for every image.
pub(crate) fn pointwise(x: &Tensor, weight: &Tensor) -> Result<Tensor> {
    let (n, c, h, w) = x.dims4()?;
    let o = weight.dim(0)?;
    let kernel = weight.reshape((o, c))?.broadcast_left(n)?;
    let y = kernel.matmul(&x.contiguous()?.reshape((n, c, h * w))?)?;
    Ok(y.reshape((n, o, h, w))?)
}

/// A convolution without bias and with TensorFlow "SAME" padding (zeros added explicitly,
/// the extra one at the bottom/right).
pub(crate) fn conv_same(x: &Tensor, weight: &Tensor, stride: usize) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let (_, _, kh, kw) = weight.dims4()?;
    let (top, bottom) = same_padding(h, kh, stride);
    let (left, right) = same_padding(w, kw, stride);
    let padded = x
        .pad_with_zeros(2, top, bottom)?
        .pad_with_zeros(3, left, right)?;
    Ok(padded.conv2d(weight, 0, stride, 1, 1)?)
}
