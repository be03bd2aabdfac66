//! NHWC `f32` kernels of the fast EfficientNet-Lite path: the stem convolution, the depthwise
//! convolution and the pointwise convolution (a matrix product), each with its folded batch
//! norm as a bias and ReLU6 (or the residual add) applied while the output is in cache.
//!
//! Pixel `p` of an `(N, H, W, C)` map occupies `[p * C, (p + 1) * C)`. The direct kernels keep
//! 16 channels of accumulators in registers (one AVX-512 vector) and are compiled for the best
//! instruction set the CPU has (`simd::vectorized`).

use crate::error::{Error, Result};
use crate::model::cpu::{team, Nhwc, SharedMut};
use crate::model::efficientnet::arch::same_padding;
use crate::model::efficientnet::simd::vectorized;
use gemm::Parallelism;

/// Channels per accumulator block of the direct kernels.
const LANES: usize = 16;
/// Output rows (pixels) per pointwise work item, at most.
const PW_ROWS: usize = 256;

/// What follows the product or the convolution: `+ bias`, then ReLU6 or the residual.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Epilogue<'a> {
    /// `min(max(v + bias, 0), 6)`.
    Relu6,
    /// `v + bias`.
    Linear,
    /// `v + bias + shortcut` (the shortcut has the output's geometry).
    Residual(&'a [f32]),
}

/// `epilogue(v + bias)` over the rows `m0..m1`, columns `n0..n1` of the `n`-column matrix `dst`.
#[inline(always)]
fn finish_kernel(
    dst: SharedMut,
    n: usize,
    (m0, m1): (usize, usize),
    (n0, n1): (usize, usize),
    bias: &[f32],
    epilogue: Epilogue<'_>,
) {
    let bias = &bias[n0..n1];
    for r in m0..m1 {
        // SAFETY: row r, columns n0..n1 of `dst` belong to the calling work item.
        let row = unsafe { dst.slice(r * n + n0, n1 - n0) };
        match epilogue {
            Epilogue::Relu6 => {
                for (v, &b) in row.iter_mut().zip(bias) {
                    *v = (*v + b).clamp(0.0, 6.0);
                }
            }
            Epilogue::Linear => {
                for (v, &b) in row.iter_mut().zip(bias) {
                    *v += b;
                }
            }
            Epilogue::Residual(shortcut) => {
                let s = &shortcut[r * n + n0..r * n + n1];
                for ((v, &b), &x) in row.iter_mut().zip(bias).zip(s) {
                    *v += b + x;
                }
            }
        }
    }
}

vectorized!(fn finish(
    dst: SharedMut,
    n: usize,
    rows: (usize, usize),
    cols: (usize, usize),
    bias: &[f32],
    epilogue: Epilogue<'_>,
) => finish_kernel);

/// Tile sizes `(rows, columns)` of an `m x n` product on `threads` threads: about four tiles
/// per thread; layers with few pixels (the late stages, small batches) are split by output
/// channels first, so that each tile packs only its share of the weights.
fn tiles(m: usize, n: usize, threads: usize) -> (usize, usize) {
    let target = 4 * threads;
    if m >= 64 * target {
        return (m.div_ceil(target).clamp(16, PW_ROWS), n);
    }
    let n_split = target.min(n / 64).max(1);
    let cols = n.div_ceil(n_split).next_multiple_of(16).min(n).max(1);
    let m_split = target.div_ceil(n.div_ceil(cols)).min(m).max(1);
    (m.div_ceil(m_split).max(1), cols)
}

fn too_short(what: &str, need: usize, have: usize) -> Error {
    Error::InvalidInput(format!(
        "fast EfficientNet-Lite kernel: {what} needs {need} values, found {have}"
    ))
}

fn check(what: &str, buf: &[f32], need: usize) -> Result<()> {
    if buf.len() < need {
        return Err(too_short(what, need, buf.len()));
    }
    Ok(())
}

/// A pointwise (1x1) convolution: weights `(C_in, C_out)` row-major, BN folded in.
#[derive(Debug, Clone)]
pub(crate) struct Pointwise {
    pub(crate) c_in: usize,
    pub(crate) c_out: usize,
    pub(crate) weight: Vec<f32>,
    pub(crate) bias: Vec<f32>,
}

impl Pointwise {
    /// `out = epilogue(x . W + bias)` over all pixels of `x` (geometry `xs`).
    pub(crate) fn run(
        &self,
        x: &[f32],
        xs: Nhwc,
        out: &mut [f32],
        epilogue: Epilogue<'_>,
    ) -> Result<Nhwc> {
        let os = Nhwc {
            c: self.c_out,
            ..xs
        };
        if xs.c != self.c_in
            || self.weight.len() != self.c_in * self.c_out
            || self.bias.len() != self.c_out
        {
            return Err(Error::InvalidInput(format!(
                "fast EfficientNet-Lite: a {}->{} pointwise convolution got {} channels",
                self.c_in, self.c_out, xs.c
            )));
        }
        check("pointwise input", x, xs.len())?;
        check("pointwise output", out, os.len())?;
        if let Epilogue::Residual(s) = epilogue {
            check("residual shortcut", s, os.len())?;
        }
        let (m, k, n) = (xs.pixels(), self.c_in, self.c_out);
        let (rows, cols) = tiles(m, n, rayon::current_num_threads().max(1));
        let (m_tiles, n_tiles) = (m.div_ceil(rows), n.div_ceil(cols));
        let dst = SharedMut(out.as_mut_ptr());
        team::for_each(m_tiles * n_tiles, |t| {
            let (m0, n0) = ((t / n_tiles) * rows, (t % n_tiles) * cols);
            let (m1, n1) = ((m0 + rows).min(m), (n0 + cols).min(n));
            // SAFETY: tile (m0..m1, n0..n1) of the `m x n` output belongs to this item; the
            // input holds `m x k` values and the weights `k x n` (checked above).
            unsafe {
                gemm::gemm(
                    m1 - m0,
                    n1 - n0,
                    k,
                    dst.0.add(m0 * n + n0),
                    1,
                    n as isize,
                    false,
                    x.as_ptr().add(m0 * k),
                    1,
                    k as isize,
                    self.weight.as_ptr().add(n0),
                    1,
                    n as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    Parallelism::None,
                );
            }
            finish(dst, n, (m0, m1), (n0, n1), &self.bias, epilogue);
        });
        Ok(os)
    }
}

/// A depthwise k x k convolution with "SAME" padding: weights `(k * k, C)`, BN folded in.
#[derive(Debug, Clone)]
pub(crate) struct Depthwise {
    pub(crate) channels: usize,
    pub(crate) kernel: usize,
    pub(crate) stride: usize,
    pub(crate) weight: Vec<f32>,
    pub(crate) bias: Vec<f32>,
}

impl Depthwise {
    pub(crate) fn out_shape(&self, xs: Nhwc) -> Nhwc {
        Nhwc {
            h: xs.h.div_ceil(self.stride),
            w: xs.w.div_ceil(self.stride),
            ..xs
        }
    }

    /// `out = relu6(depthwise(x) + bias)`, parallel over output rows.
    pub(crate) fn run(&self, x: &[f32], xs: Nhwc, out: &mut [f32]) -> Result<Nhwc> {
        let (c, k) = (self.channels, self.kernel);
        let os = self.out_shape(xs);
        if xs.c != c || self.weight.len() != k * k * c || self.bias.len() != c {
            return Err(Error::InvalidInput(format!(
                "fast EfficientNet-Lite: a depthwise convolution of {c} channels got {}",
                xs.c
            )));
        }
        check("depthwise input", x, xs.len())?;
        check("depthwise output", out, os.len())?;
        let (top, _) = same_padding(xs.h, k, self.stride);
        let (left, _) = same_padding(xs.w, k, self.stride);
        let dst = SharedMut(out.as_mut_ptr());
        team::for_each(os.n * os.h, |row| {
            let (b, oy) = (row / os.h, row % os.h);
            // SAFETY: output row `row` belongs to this item.
            let out_row = unsafe { dst.slice(row * os.w * c, os.w * c) };
            let rows: Vec<Option<&[f32]>> = (0..k)
                .map(|ky| {
                    (oy * self.stride + ky)
                        .checked_sub(top)
                        .filter(|&iy| iy < xs.h)
                        .map(|iy| &x[(b * xs.h + iy) * xs.w * c..(b * xs.h + iy + 1) * xs.w * c])
                })
                .collect();
            depthwise_row(self, &rows, xs.w, left, out_row);
        });
        Ok(os)
    }
}

vectorized!(fn depthwise_row(
    dw: &Depthwise,
    rows: &[Option<&[f32]>],
    w: usize,
    left: usize,
    out: &mut [f32],
) => Depthwise::row);

impl Depthwise {
    /// One output row from the `k` input rows it reads (`None`: padding).
    #[inline(always)]
    fn row(&self, rows: &[Option<&[f32]>], w: usize, left: usize, out: &mut [f32]) {
        let (c, k, s) = (self.channels, self.kernel, self.stride);
        for (ox, px) in out.chunks_exact_mut(c).enumerate() {
            // Input columns ox * s + kx - left that exist.
            let kx0 = left.saturating_sub(ox * s);
            let kx1 = (w + left).saturating_sub(ox * s).min(k);
            let mut c0 = 0;
            while c0 + LANES <= c {
                let mut acc = [0f32; LANES];
                acc.copy_from_slice(&self.bias[c0..c0 + LANES]);
                for (ky, row) in rows.iter().enumerate() {
                    let Some(row) = row else { continue };
                    for kx in kx0..kx1 {
                        let ix = ox * s + kx - left;
                        let xin = &row[ix * c + c0..ix * c + c0 + LANES];
                        let wt =
                            &self.weight[(ky * k + kx) * c + c0..(ky * k + kx) * c + c0 + LANES];
                        for i in 0..LANES {
                            acc[i] += wt[i] * xin[i];
                        }
                    }
                }
                for (o, a) in px[c0..c0 + LANES].iter_mut().zip(acc) {
                    *o = a.clamp(0.0, 6.0);
                }
                c0 += LANES;
            }
            if c0 < c {
                let tail = &mut px[c0..];
                tail.copy_from_slice(&self.bias[c0..]);
                for (ky, row) in rows.iter().enumerate() {
                    let Some(row) = row else { continue };
                    for kx in kx0..kx1 {
                        let ix = ox * s + kx - left;
                        let xin = &row[ix * c + c0..(ix + 1) * c];
                        let wt = &self.weight[(ky * k + kx) * c + c0..(ky * k + kx + 1) * c];
                        for ((o, &a), &b) in tail.iter_mut().zip(wt).zip(xin) {
                            *o += a * b;
                        }
                    }
                }
                for o in tail.iter_mut() {
                    *o = o.clamp(0.0, 6.0);
                }
            }
        }
    }
}

/// The stem: a dense 3x3 stride-2 "SAME" convolution, weights `(9 * C_in, C_out)`, BN folded,
/// ReLU6.
#[derive(Debug, Clone)]
pub(crate) struct Stem {
    pub(crate) c_in: usize,
    pub(crate) c_out: usize,
    pub(crate) weight: Vec<f32>,
    pub(crate) bias: Vec<f32>,
}

impl Stem {
    const K: usize = 3;
    const STRIDE: usize = 2;

    pub(crate) fn out_shape(&self, xs: Nhwc) -> Nhwc {
        Nhwc {
            n: xs.n,
            h: xs.h.div_ceil(Self::STRIDE),
            w: xs.w.div_ceil(Self::STRIDE),
            c: self.c_out,
        }
    }

    pub(crate) fn run(&self, x: &[f32], xs: Nhwc, out: &mut [f32]) -> Result<Nhwc> {
        let (k, ci, co) = (Self::K, self.c_in, self.c_out);
        let os = self.out_shape(xs);
        if xs.c != ci || self.weight.len() != k * k * ci * co || self.bias.len() != co {
            return Err(Error::InvalidInput(format!(
                "fast EfficientNet-Lite: the stem expects {ci} input channels, found {}",
                xs.c
            )));
        }
        check("stem input", x, xs.len())?;
        check("stem output", out, os.len())?;
        let (top, _) = same_padding(xs.h, k, Self::STRIDE);
        let (left, _) = same_padding(xs.w, k, Self::STRIDE);
        let dst = SharedMut(out.as_mut_ptr());
        team::for_each(os.n * os.h, |row| {
            let (b, oy) = (row / os.h, row % os.h);
            // SAFETY: output row `row` belongs to this item.
            let out_row = unsafe { dst.slice(row * os.w * co, os.w * co) };
            stem_row(self, x, xs, (b, oy), (top, left), out_row);
        });
        Ok(os)
    }
}

vectorized!(fn stem_row(
    stem: &Stem,
    x: &[f32],
    xs: Nhwc,
    at: (usize, usize),
    pads: (usize, usize),
    out_row: &mut [f32],
) => Stem::row);

impl Stem {
    /// Output row `oy` of image `b` (`at`), with the "SAME" padding's `(top, left)`.
    #[inline(always)]
    fn row(
        &self,
        x: &[f32],
        xs: Nhwc,
        (b, oy): (usize, usize),
        (top, left): (usize, usize),
        out_row: &mut [f32],
    ) {
        let (k, ci, co) = (Self::K, self.c_in, self.c_out);
        for (ox, px) in out_row.chunks_exact_mut(co).enumerate() {
            px.copy_from_slice(&self.bias);
            for ky in 0..k {
                let Some(iy) = (oy * Self::STRIDE + ky)
                    .checked_sub(top)
                    .filter(|&v| v < xs.h)
                else {
                    continue;
                };
                for kx in 0..k {
                    let Some(ix) = (ox * Self::STRIDE + kx)
                        .checked_sub(left)
                        .filter(|&v| v < xs.w)
                    else {
                        continue;
                    };
                    let at = ((b * xs.h + iy) * xs.w + ix) * ci;
                    for (j, &v) in x[at..at + ci].iter().enumerate() {
                        let w0 = ((ky * k + kx) * ci + j) * co;
                        for (o, &wt) in px.iter_mut().zip(&self.weight[w0..w0 + co]) {
                            *o += v * wt;
                        }
                    }
                }
            }
            for o in px.iter_mut() {
                *o = o.clamp(0.0, 6.0);
            }
        }
    }
}
