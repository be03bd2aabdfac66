//! The CPU kernels of the fast path: convolution as tiled matrix products (the `gemm` crate),
//! per-channel scale-shift-ReLU, the zero-padded stem max-pool and strided subsampling.
//!
//! Activations are NHWC `f32` in plain slices: pixel `p` of an `(N, H, W, C)` map occupies
//! `[p * C, (p + 1) * C)`, so a 1x1 convolution is the product of the `(N*H*W, C_in)` activation
//! with a `(C_in, C_out)` weight matrix, with no copy at all.

use super::winograd::{self, WinogradKernels};
use crate::error::{Error, Result};
use crate::model::cpu::{length_error, team, with_thread_buffer, Nhwc, ScaleShift, SharedMut};
use gemm::Parallelism;
use rayon::prelude::*;
use std::cell::RefCell;

/// Bounds on the output rows (pixels) per convolution work item.
const M_TILE_MIN: usize = 64;
const M_TILE_MAX: usize = 1024;
/// Convolution work items per thread aimed at (load balance vs. per-item overhead).
const TILES_PER_THREAD: usize = 4;

/// Tile sizes `(rows, columns)` for a large layer: equal tiles of output pixels, as many as a
/// multiple of the thread count so that no thread idles at the end, split by output channels
/// too when there are too few.
fn pixel_tiles(m: usize, n: usize, threads: usize) -> (usize, usize) {
    let m_tiles = m
        .div_ceil(m_tile(m, threads))
        .next_multiple_of(threads)
        .min(m);
    let m_tile = m.div_ceil(m_tiles.max(1));
    let m_tiles = m.div_ceil(m_tile);
    let n_split = if m_tiles >= 2 * threads {
        1
    } else {
        (2 * threads).div_ceil(m_tiles).min(n.div_ceil(64)).max(1)
    };
    (
        m_tile,
        n.div_ceil(n_split).next_multiple_of(16).min(n).max(1),
    )
}

/// Tile sizes `(rows, columns)` for a small layer: split the output channels (each tile then
/// packs only its share of the weights), then the pixels, into about two tiles per thread.
fn channel_tiles(m: usize, n: usize, threads: usize) -> (usize, usize) {
    let target = 2 * threads;
    let n_split = target.min(n / 64).max(1);
    let n_tile = n.div_ceil(n_split).next_multiple_of(16).min(n).max(1);
    let m_split = target.div_ceil(n.div_ceil(n_tile)).min(m).max(1);
    (m.div_ceil(m_split).max(1), n_tile)
}

/// Output rows per work item for `m` rows on `threads` threads.
fn m_tile(m: usize, threads: usize) -> usize {
    (m / (TILES_PER_THREAD * threads).max(1))
        .clamp(M_TILE_MIN, M_TILE_MAX)
        .min(m)
        .max(1)
}
/// Rows per work item of the elementwise passes.
const ROW_CHUNK: usize = 256;

/// A convolution with its weights packed for the matrix product: row `(ky * k + kx) * C_in + ci`,
/// column `co` (HWIO flattened), plus a bias (the conv bias and any folded BN shift).
#[derive(Debug, Clone)]
pub(crate) struct ConvPlan {
    pub(crate) c_in: usize,
    pub(crate) c_out: usize,
    pub(crate) kernel: usize,
    pub(crate) stride: usize,
    pub(crate) pad: usize,
    pub(crate) weight: Vec<f32>,
    pub(crate) bias: Vec<f32>,
    /// The Winograd F(2x2, 3x3) form of a stride-1, pad-1 3x3 kernel, used for layers large
    /// enough to pay (see [`WinogradKernels::applies`]).
    pub(crate) winograd: Option<WinogradKernels>,
}

impl ConvPlan {
    /// Pack an OIHW kernel, scaling output channel `co` by `scale[co]` and using `bias`.
    pub(crate) fn pack(
        oihw: &[f32],
        dims: [usize; 4],
        stride: usize,
        pad: usize,
        scale: Option<&[f32]>,
        bias: Vec<f32>,
    ) -> Self {
        let [c_out, c_in, kh, kw] = dims;
        let mut weight = vec![0f32; c_out * c_in * kh * kw];
        for (co, filter) in oihw.chunks_exact(c_in * kh * kw).enumerate() {
            let s = scale.and_then(|s| s.get(co)).copied().unwrap_or(1.0);
            for (ci, plane) in filter.chunks_exact(kh * kw).enumerate() {
                for (tap, &v) in plane.iter().enumerate() {
                    if let Some(dst) = weight.get_mut((tap * c_in + ci) * c_out + co) {
                        *dst = v * s;
                    }
                }
            }
        }
        let winograd = (kh == 3 && kw == 3 && stride == 1 && pad == 1)
            .then(|| WinogradKernels::from_hwio(&weight, c_in, c_out))
            .flatten();
        Self {
            c_in,
            c_out,
            kernel: kh,
            stride,
            pad,
            weight,
            bias,
            winograd,
        }
    }

    /// Output geometry for an input of geometry `x` (`floor((h + 2p - k) / s) + 1`).
    pub(crate) fn out_shape(&self, x: Nhwc) -> Nhwc {
        let side = |v: usize| (v + 2 * self.pad).saturating_sub(self.kernel) / self.stride + 1;
        Nhwc {
            n: x.n,
            h: side(x.h),
            w: side(x.w),
            c: self.c_out,
        }
    }

    fn depth(&self) -> usize {
        self.kernel * self.kernel * self.c_in
    }

    fn is_pointwise(&self) -> bool {
        self.kernel == 1 && self.stride == 1 && self.pad == 0
    }
}

/// What happens to each output tile after its matrix product.
pub(crate) enum Epilogue<'a> {
    /// `out = conv(x) + bias`.
    Bias,
    /// `out = max(conv(x) + bias, 0)`.
    BiasRelu,
    /// `out += conv(x) + bias` (the residual add), then optionally `preact = relu(out * s + t)`
    /// for the consumer of `out` (the next block's pre-activation, or `post_bn` + ReLU).
    Residual(Option<(&'a ScaleShift, &'a mut [f32])>),
}

thread_local! {
    /// The per-thread im2col buffer of one tile, reused across tiles, layers and calls.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// The calling thread's im2col buffer of a whole (small) layer, shared by its tiles.
    static WHOLE: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Layers with at most this many output pixels share one im2col buffer and are tiled by output
/// channels first ([`channel_tiles`]); larger ones are tiled by pixels ([`pixel_tiles`]).
const WHOLE_MAX_PIXELS: usize = 4096;

/// Write the im2col rows `m0..m1` of `x` (geometry `xs`) for `plan` into `dst` (row length
/// `plan.depth()`), with zeros where a tap falls into the padding.
fn im2col_rows(
    plan: &ConvPlan,
    x: &[f32],
    xs: Nhwc,
    os: Nhwc,
    m0: usize,
    m1: usize,
    dst: &mut [f32],
) {
    let (k, c) = (plan.kernel, plan.c_in);
    let depth = plan.depth();
    for (m, row) in (m0..m1).zip(dst.chunks_exact_mut(depth)) {
        let ox = m % os.w;
        let oy = (m / os.w) % os.h;
        let b = m / (os.w * os.h);
        for ky in 0..k {
            let iy = (oy * plan.stride + ky)
                .checked_sub(plan.pad)
                .filter(|&v| v < xs.h);
            for kx in 0..k {
                let ix = (ox * plan.stride + kx)
                    .checked_sub(plan.pad)
                    .filter(|&v| v < xs.w);
                let tap = (ky * k + kx) * c;
                let Some(d) = row.get_mut(tap..tap + c) else {
                    continue;
                };
                match (iy, ix) {
                    (Some(iy), Some(ix)) => {
                        let at = ((b * xs.h + iy) * xs.w + ix) * c;
                        match x.get(at..at + c) {
                            Some(s) => d.copy_from_slice(s),
                            None => d.fill(0.0),
                        }
                    }
                    _ => d.fill(0.0),
                }
            }
        }
    }
}

/// Run `plan` on `x` (geometry `xs`) into `out`, applying `epilogue`; returns the output
/// geometry. The output is split into tiles run in parallel; each tile is one single-threaded
/// matrix product followed by its epilogue while the tile is still in cache. Small layers (at
/// most [`WHOLE_MAX_PIXELS`] output pixels) are im2col'ed once into a buffer shared by the
/// tiles; larger ones im2col each tile into a per-thread buffer.
pub(crate) fn conv(
    plan: &ConvPlan,
    x: &[f32],
    xs: Nhwc,
    out: &mut [f32],
    epilogue: Epilogue<'_>,
) -> Result<Nhwc> {
    let os = plan.out_shape(xs);
    if xs.c != plan.c_in {
        return Err(Error::Internal(format!(
            "fast ResNetV2 kernel: convolution expects {} input channels, found {}",
            plan.c_in, xs.c
        )));
    }
    if x.len() < xs.len() {
        return Err(length_error("convolution input", xs.len(), x.len()));
    }
    if out.len() < os.len() {
        return Err(length_error("convolution output", os.len(), out.len()));
    }
    let depth = plan.depth();
    if plan.weight.len() != depth * plan.c_out || plan.bias.len() != plan.c_out {
        return Err(length_error(
            "convolution weights",
            depth * plan.c_out,
            plan.weight.len(),
        ));
    }
    let threads = rayon::current_num_threads().max(1);
    if let (Some(wk), Epilogue::Bias | Epilogue::BiasRelu) = (&plan.winograd, &epilogue)
        && wk.applies(xs, threads)
    {
        let relu = matches!(epilogue, Epilogue::BiasRelu);
        return winograd::conv3x3(wk, &plan.bias, relu, x, xs, out);
    }
    let (read_dst, relu, preact) = match epilogue {
        Epilogue::Bias => (false, false, None),
        Epilogue::BiasRelu => (false, true, None),
        Epilogue::Residual(p) => (true, false, p),
    };
    let preact = match preact {
        Some((ss, buf)) => {
            if buf.len() < os.len() || ss.channels() != os.c {
                return Err(length_error("pre-activation output", os.len(), buf.len()));
            }
            Some((ss, SharedMut(buf.as_mut_ptr())))
        }
        None => None,
    };

    let (m, n) = (os.pixels(), os.c);
    let dst = SharedMut(out.as_mut_ptr());
    let pointwise = plan.is_pointwise();
    // Small layers (batch 1, deep stacks): one im2col for the whole layer, shared by the
    // tiles, which split the output channels first so that each packs only its share of the
    // weights. Large layers: tiles of output pixels, each with its own im2col.
    let shared = m <= WHOLE_MAX_PIXELS;
    let (m_tile, n_tile) = if shared {
        channel_tiles(m, n, threads)
    } else {
        pixel_tiles(m, n, threads)
    };
    let (m_tiles, n_tiles) = (m.div_ceil(m_tile), n.div_ceil(n_tile));
    let run_tiles = |shared_lhs: Option<SharedMut>| {
        team::for_each(m_tiles * n_tiles, |t| {
            let (mt, nt) = (t / n_tiles, t % n_tiles);
            let (m0, n0) = (mt * m_tile, nt * n_tile);
            let (m1, n1) = ((m0 + m_tile).min(m), (n0 + n_tile).min(n));
            let rows = m1 - m0;
            let run = |lhs: *const f32| {
                // SAFETY: `lhs` holds `rows` rows of `depth` values (row stride `depth`), the
                // weight matrix is `depth x n`, and tile (m0..m1, n0..n1) of `out` (checked
                // above to hold `m * n` values) is written by this work item only.
                unsafe {
                    gemm::gemm(
                        rows,
                        n1 - n0,
                        depth,
                        dst.ptr().add(m0 * n + n0),
                        1,
                        n as isize,
                        read_dst,
                        lhs,
                        1,
                        depth as isize,
                        plan.weight.as_ptr().add(n0),
                        1,
                        n as isize,
                        1.0,
                        1.0,
                        false,
                        false,
                        false,
                        Parallelism::None,
                    );
                }
            };
            if pointwise {
                // SAFETY: rows m0..m1 of the input exist (x.len() >= m * depth checked above).
                run(unsafe { x.as_ptr().add(m0 * depth) });
            } else if let Some(lhs) = shared_lhs {
                // SAFETY: the shared im2col buffer holds `m * depth` values.
                run(unsafe { lhs.ptr().add(m0 * depth) });
            } else {
                with_thread_buffer(&SCRATCH, rows * depth, |buf| {
                    im2col_rows(plan, x, xs, os, m0, m1, buf);
                    run(buf.as_ptr());
                });
            }
            epilogue_rows(dst, n, (m0, m1), (n0, n1), &plan.bias, relu, preact);
        });
    };
    if shared && !pointwise {
        with_thread_buffer(&WHOLE, m * depth, |buf| {
            let lhs = SharedMut(buf.as_mut_ptr());
            team::for_each(m.div_ceil(ROW_CHUNK), |i| {
                let (m0, m1) = (i * ROW_CHUNK, ((i + 1) * ROW_CHUNK).min(m));
                // SAFETY: rows m0..m1 of the `m * depth` buffer belong to this item only.
                let rows = unsafe {
                    std::slice::from_raw_parts_mut(lhs.ptr().add(m0 * depth), (m1 - m0) * depth)
                };
                im2col_rows(plan, x, xs, os, m0, m1, rows)
            });
            run_tiles(Some(lhs));
        });
    } else {
        run_tiles(None);
    }
    Ok(os)
}

/// Add the bias (and apply ReLU, or write the pre-activation) to rows `m0..m1`, columns
/// `n0..n1` of the `n`-column matrix at `dst`.
fn epilogue_rows(
    dst: SharedMut,
    n: usize,
    (m0, m1): (usize, usize),
    (n0, n1): (usize, usize),
    bias: &[f32],
    relu: bool,
    preact: Option<(&ScaleShift, SharedMut)>,
) {
    let bias = &bias[n0..n1];
    for r in m0..m1 {
        // SAFETY: row r, columns n0..n1 of `dst` belong to the calling work item.
        let row = unsafe { std::slice::from_raw_parts_mut(dst.ptr().add(r * n + n0), n1 - n0) };
        if let Some((ss, p)) = preact {
            // SAFETY: the pre-activation buffer has the geometry of `dst` (checked by `conv`).
            let prow = unsafe { std::slice::from_raw_parts_mut(p.ptr().add(r * n + n0), n1 - n0) };
            // One pass: the residual sum with its bias, and the consumer's pre-activation.
            for ((((v, d), &b), &s), &t) in row
                .iter_mut()
                .zip(prow.iter_mut())
                .zip(bias)
                .zip(&ss.scale[n0..n1])
                .zip(&ss.shift[n0..n1])
            {
                let sum = if relu { (*v + b).max(0.0) } else { *v + b };
                *v = sum;
                *d = (sum * s + t).max(0.0);
            }
            continue;
        }
        if relu {
            for (v, &b) in row.iter_mut().zip(bias) {
                *v = (*v + b).max(0.0);
            }
        } else {
            for (v, &b) in row.iter_mut().zip(bias) {
                *v += b;
            }
        }
    }
}

/// `dst = max(src * scale + shift, 0)` per channel over an NHWC activation.
pub(crate) fn scale_shift_relu(
    ss: &ScaleShift,
    src: &[f32],
    xs: Nhwc,
    dst: &mut [f32],
) -> Result<()> {
    if ss.channels() != xs.c {
        return Err(Error::Internal(format!(
            "fast ResNetV2 kernel: batch norm of {} channels applied to {} channels",
            ss.channels(),
            xs.c
        )));
    }
    let (src, dst) = match (src.get(..xs.len()), dst.get_mut(..xs.len())) {
        (Some(s), Some(d)) => (s, d),
        _ => {
            return Err(length_error(
                "batch norm",
                xs.len(),
                src.len().min(dst.len()),
            ))
        }
    };
    let chunk = ROW_CHUNK * xs.c.max(1);
    dst.par_chunks_mut(chunk)
        .zip(src.par_chunks(chunk))
        .for_each(|(d, s)| {
            for (d, s) in d.chunks_exact_mut(xs.c).zip(s.chunks_exact(xs.c)) {
                ss.apply_row(s, d);
            }
        });
    Ok(())
}

/// Keras's stem pool: `ZeroPadding2D(1)` then `MaxPooling2D(3, strides=2)`; the zero border
/// takes part in the maximum.
pub(crate) fn max_pool_3x3s2_zero_pad(x: &[f32], xs: Nhwc, out: &mut [f32]) -> Result<Nhwc> {
    let os = Nhwc {
        h: (xs.h + 2 - 3) / 2 + 1,
        w: (xs.w + 2 - 3) / 2 + 1,
        ..xs
    };
    if x.len() < xs.len() {
        return Err(length_error("max-pool input", xs.len(), x.len()));
    }
    let have = out.len();
    let out = out
        .get_mut(..os.len())
        .ok_or_else(|| length_error("max-pool output", os.len(), have))?;
    let c = xs.c;
    let row_len = os.w * c;
    out.par_chunks_mut(row_len.max(1))
        .enumerate()
        .for_each(|(row, dst)| {
            let (b, oy) = (row / os.h, row % os.h);
            for ox in 0..os.w {
                let d = &mut dst[ox * c..(ox + 1) * c];
                d.fill(f32::NEG_INFINITY);
                let mut padded = false;
                for ky in 0..3 {
                    for kx in 0..3 {
                        let iy = (2 * oy + ky).checked_sub(1).filter(|&v| v < xs.h);
                        let ix = (2 * ox + kx).checked_sub(1).filter(|&v| v < xs.w);
                        let src = match (iy, ix) {
                            (Some(iy), Some(ix)) => {
                                let at = ((b * xs.h + iy) * xs.w + ix) * c;
                                x.get(at..at + c)
                            }
                            _ => None,
                        };
                        match src {
                            Some(s) => {
                                for (d, &v) in d.iter_mut().zip(s) {
                                    *d = d.max(v);
                                }
                            }
                            None => padded = true,
                        }
                    }
                }
                if padded {
                    for d in d.iter_mut() {
                        *d = d.max(0.0);
                    }
                }
            }
        });
    Ok(os)
}

/// `MaxPooling2D(1, strides=stride)`: keep every `stride`-th pixel in each direction.
pub(crate) fn subsample(x: &[f32], xs: Nhwc, stride: usize, out: &mut [f32]) -> Result<Nhwc> {
    let stride = stride.max(1);
    let os = Nhwc {
        h: xs.h.saturating_sub(1) / stride + 1,
        w: xs.w.saturating_sub(1) / stride + 1,
        ..xs
    };
    if x.len() < xs.len() {
        return Err(length_error("subsample input", xs.len(), x.len()));
    }
    let have = out.len();
    let out = out
        .get_mut(..os.len())
        .ok_or_else(|| length_error("subsample output", os.len(), have))?;
    let c = xs.c;
    out.par_chunks_mut((os.w * c).max(1))
        .enumerate()
        .for_each(|(row, dst)| {
            let (b, oy) = (row / os.h, row % os.h);
            for (ox, d) in dst.chunks_exact_mut(c).enumerate() {
                let at = ((b * xs.h + oy * stride) * xs.w + ox * stride) * c;
                if let Some(s) = x.get(at..at + c) {
                    d.copy_from_slice(s);
                }
            }
        });
    Ok(os)
}
