//! CPU kernels of the depthwise convolution on NCHW `f32` slices: forward, gradient of the
//! input and gradient of the weights, each parallel over planes or channels.
//!
//! Each plane is first copied, zero-padded, into `stride²` phase planes (phase `(ry, rx)` holds
//! the padded pixels `(i * stride + ry, j * stride + rx)`) of `OW + (k - 1) / stride` columns.
//! In that layout output pixel `(oy, ox)` reads tap `(ky, kx)` at flat index
//! `(oy + ky / s) * cols + ox + kx / s` of phase `(ky % s, kx % s)`, so each tap is ONE
//! contiguous multiply-add (or dot product) over all `OH * cols` outputs of the plane: long
//! vectorized loops even for 7x7 planes. The extra `(k - 1) / s` columns per row are computed
//! and dropped (the output gradient is zero there).

use crate::model::efficientnet::simd::vectorized;
use rayon::prelude::*;

/// Kernel size, stride and the four paddings of one depthwise convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DepthwiseGeometry {
    pub(crate) kernel: usize,
    pub(crate) stride: usize,
    /// Rows of zeros above and below, columns left and right.
    pub(crate) top: usize,
    pub(crate) bottom: usize,
    pub(crate) left: usize,
    pub(crate) right: usize,
}

impl DepthwiseGeometry {
    /// Output rows and columns for an `h` x `w` input (`floor((h + pads - k) / s) + 1`), or
    /// `None` when the padded input is smaller than the kernel.
    pub(crate) fn out_size(&self, h: usize, w: usize) -> Option<(usize, usize)> {
        let side = |v: usize, a: usize, b: usize| {
            (v + a + b)
                .checked_sub(self.kernel)
                .map(|d| d / self.stride.max(1) + 1)
        };
        Some((
            side(h, self.top, self.bottom)?,
            side(w, self.left, self.right)?,
        ))
    }
}

/// The dimensions of one call: batch, channels, input and output sides.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dims {
    pub(crate) n: usize,
    pub(crate) c: usize,
    pub(crate) h: usize,
    pub(crate) w: usize,
    pub(crate) oh: usize,
    pub(crate) ow: usize,
}

/// The phase-plane layout of one plane (see the module docs).
#[derive(Debug, Clone, Copy)]
struct PhaseLayout {
    s: usize,
    k: usize,
    /// Columns and rows of each phase plane.
    cols: usize,
    rows: usize,
    /// `OH * cols`: the flat outputs of the plane, garbage columns included.
    flat: usize,
}

impl PhaseLayout {
    fn new(d: Dims, g: &DepthwiseGeometry) -> Self {
        let (s, k) = (g.stride.max(1), g.kernel);
        let reach = (k - 1) / s;
        let cols = d.ow + reach;
        // One more row than the taps reach: the garbage columns of the last output row read
        // up to `reach` values past it.
        let rows = d.oh + reach + 1;
        Self {
            s,
            k,
            cols,
            rows,
            flat: d.oh * cols,
        }
    }

    fn plane_len(&self) -> usize {
        self.rows * self.cols
    }

    /// Phase index and flat shift of tap `(ky, kx)`.
    #[inline(always)]
    fn tap(&self, ky: usize, kx: usize) -> (usize, usize) {
        let phase = (ky % self.s) * self.s + kx % self.s;
        (phase, (ky / self.s) * self.cols + kx / self.s)
    }

    /// For phase row `i` of phase `phase`: the input row it holds (`None`: padding) and the
    /// span `(j0, ix0, count)` of its columns that hold input columns `ix0, ix0 + s, ...`.
    #[inline(always)]
    fn span(
        &self,
        phase: usize,
        i: usize,
        d: Dims,
        g: &DepthwiseGeometry,
    ) -> Option<(usize, usize, usize, usize)> {
        let (ry, rx) = (phase / self.s, phase % self.s);
        let iy = (i * self.s + ry).checked_sub(g.top).filter(|&v| v < d.h)?;
        // Column j holds input column j * s + rx - left.
        let j0 = g.left.saturating_sub(rx).div_ceil(self.s);
        let ix0 = (j0 * self.s + rx).checked_sub(g.left)?;
        let count =
            d.w.checked_sub(ix0)
                .map_or(0, |rest| rest.div_ceil(self.s))
                .min(self.cols.saturating_sub(j0));
        Some((iy, j0, ix0, count))
    }

    /// Copy plane `src` (H x W) into the zero-padded phase planes in `buf`.
    #[inline(always)]
    fn scatter(&self, src: &[f32], buf: &mut Vec<f32>, d: Dims, g: &DepthwiseGeometry) {
        let len = self.plane_len();
        buf.clear();
        buf.resize(self.s * self.s * len, 0.0);
        for (phase, plane) in buf.chunks_exact_mut(len).enumerate() {
            for (i, row) in plane.chunks_exact_mut(self.cols).enumerate() {
                let Some((iy, j0, ix0, count)) = self.span(phase, i, d, g) else {
                    continue;
                };
                let from = &src[iy * d.w + ix0..(iy + 1) * d.w];
                let to = &mut row[j0..j0 + count];
                if self.s == 1 {
                    to.copy_from_slice(&from[..count]);
                } else {
                    // Index arithmetic, not `step_by`: its run-time step costs a division.
                    for (t, v) in to.iter_mut().enumerate() {
                        *v = from[t * self.s];
                    }
                }
            }
        }
    }

    /// The inverse of [`scatter`](Self::scatter): phase planes back into an H x W plane,
    /// dropping the padding.
    #[inline(always)]
    fn gather(&self, phases: &[f32], dst: &mut [f32], d: Dims, g: &DepthwiseGeometry) {
        let len = self.plane_len();
        for (phase, plane) in phases.chunks_exact(len).enumerate() {
            for (i, row) in plane.chunks_exact(self.cols).enumerate() {
                let Some((iy, j0, ix0, count)) = self.span(phase, i, d, g) else {
                    continue;
                };
                let to = &mut dst[iy * d.w + ix0..(iy + 1) * d.w];
                let from = &row[j0..j0 + count];
                if self.s == 1 {
                    to[..count].copy_from_slice(from);
                } else {
                    for (t, &v) in from.iter().enumerate() {
                        to[t * self.s] = v;
                    }
                }
            }
        }
    }

    /// Lay an `OH x OW` plane out with `cols` columns (zeros in the extra ones).
    #[inline(always)]
    fn widen(&self, src: &[f32], buf: &mut Vec<f32>, d: Dims) {
        buf.clear();
        buf.resize(self.flat, 0.0);
        for (dst, row) in buf.chunks_exact_mut(self.cols).zip(src.chunks_exact(d.ow)) {
            dst[..d.ow].copy_from_slice(row);
        }
    }
}

/// `dst[o] += weight * src[o]` over the shorter of the two.
#[inline(always)]
fn axpy(dst: &mut [f32], src: &[f32], weight: f32) {
    for (d, &s) in dst.iter_mut().zip(src) {
        *d += weight * s;
    }
}

/// `sum(a[o] * b[o])` over the shorter of the two, in 16 independent lanes (so that it
/// vectorizes), accumulated in `f64` per block of 4096.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f64 {
    const LANES: usize = 16;
    let len = a.len().min(b.len());
    let mut total = 0f64;
    for (a, b) in a[..len].chunks(4096).zip(b[..len].chunks(4096)) {
        let mut acc = [0f32; LANES];
        let mut ca = a.chunks_exact(LANES);
        let mut cb = b.chunks_exact(LANES);
        for (x, y) in (&mut ca).zip(&mut cb) {
            for i in 0..LANES {
                acc[i] += x[i] * y[i];
            }
        }
        for (x, y) in ca.remainder().iter().zip(cb.remainder()) {
            acc[0] += x * y;
        }
        for v in acc {
            total += f64::from(v);
        }
    }
    total
}

/// Scratch buffers of one worker: the phase planes and a widened output plane.
#[derive(Default)]
struct Scratch {
    phases: Vec<f32>,
    flat: Vec<f32>,
}

/// Forward: `out[n, c] = sum over taps of weight[c, tap] * padded x[n, c]`, `(N, C, OH, OW)`.
pub(crate) fn forward(x: &[f32], weight: &[f32], d: Dims, g: &DepthwiseGeometry) -> Vec<f32> {
    let planes = (d.h * d.w, d.oh * d.ow);
    map_planes(x, weight, planes, d, g, |src, taps, dst, scratch| {
        forward_plane(src, taps, dst, scratch, d, g)
    })
}

/// `n * c` planes of `dst_len` values in parallel, plane `p` made by
/// `f(plane p of src, its channel's taps, plane p of the result, scratch)`; `src` holds
/// `n * c` planes of `src_len` values.
fn map_planes(
    src: &[f32],
    weight: &[f32],
    (src_len, dst_len): (usize, usize),
    d: Dims,
    g: &DepthwiseGeometry,
    f: impl Fn(&[f32], &[f32], &mut [f32], &mut Scratch) + Sync,
) -> Vec<f32> {
    let taps = g.kernel * g.kernel;
    let mut out = vec![0f32; d.n * d.c * dst_len];
    out.par_chunks_mut(dst_len.max(1))
        .enumerate()
        .for_each_init(Scratch::default, |scratch, (p, dst)| {
            let ch = p % d.c;
            let plane = &src[p * src_len..(p + 1) * src_len];
            f(plane, &weight[ch * taps..(ch + 1) * taps], dst, scratch);
        });
    out
}

/// One plane of [`forward`].
#[inline(always)]
fn forward_plane_kernel(
    src: &[f32],
    taps: &[f32],
    dst: &mut [f32],
    scratch: &mut Scratch,
    d: Dims,
    g: &DepthwiseGeometry,
) {
    let l = PhaseLayout::new(d, g);
    l.scatter(src, &mut scratch.phases, d, g);
    let len = l.plane_len();
    let flat = &mut scratch.flat;
    flat.clear();
    flat.resize(l.flat, 0.0);
    for ky in 0..l.k {
        for kx in 0..l.k {
            let (phase, shift) = l.tap(ky, kx);
            let plane = &scratch.phases[phase * len..(phase + 1) * len];
            axpy(flat, &plane[shift..], taps[ky * l.k + kx]);
        }
    }
    for (row, wide) in dst.chunks_exact_mut(d.ow).zip(flat.chunks_exact(l.cols)) {
        row.copy_from_slice(&wide[..d.ow]);
    }
}

vectorized!(fn forward_plane(
    src: &[f32],
    taps: &[f32],
    dst: &mut [f32],
    scratch: &mut Scratch,
    d: Dims,
    g: &DepthwiseGeometry,
) => forward_plane_kernel);

/// Gradient of the input: every output gradient spread back over the pixels it read,
/// `(N, C, H, W)`.
pub(crate) fn backward_input(
    grad: &[f32],
    weight: &[f32],
    d: Dims,
    g: &DepthwiseGeometry,
) -> Vec<f32> {
    let planes = (d.oh * d.ow, d.h * d.w);
    map_planes(grad, weight, planes, d, g, |src, taps, dst, scratch| {
        backward_input_plane(src, taps, dst, scratch, d, g)
    })
}

/// One plane of [`backward_input`]: the output gradient spread into phase planes, which are
/// then read back without their padding.
#[inline(always)]
fn backward_input_plane_kernel(
    gp: &[f32],
    taps: &[f32],
    dst: &mut [f32],
    scratch: &mut Scratch,
    d: Dims,
    g: &DepthwiseGeometry,
) {
    let l = PhaseLayout::new(d, g);
    l.widen(gp, &mut scratch.flat, d);
    let len = l.plane_len();
    let phases = &mut scratch.phases;
    phases.clear();
    phases.resize(l.s * l.s * len, 0.0);
    for ky in 0..l.k {
        for kx in 0..l.k {
            let (phase, shift) = l.tap(ky, kx);
            let plane = &mut phases[phase * len..(phase + 1) * len];
            axpy(&mut plane[shift..], &scratch.flat, taps[ky * l.k + kx]);
        }
    }
    l.gather(phases, dst, d, g);
}

vectorized!(fn backward_input_plane(
    gp: &[f32],
    taps: &[f32],
    dst: &mut [f32],
    scratch: &mut Scratch,
    d: Dims,
    g: &DepthwiseGeometry,
) => backward_input_plane_kernel);

/// Gradient of the weights: for each channel and tap, the sum over the batch and the output
/// pixels of the output gradient times the input pixel the tap read, `(C, 1, k, k)`.
pub(crate) fn backward_weight(x: &[f32], grad: &[f32], d: Dims, g: &DepthwiseGeometry) -> Vec<f32> {
    let k = g.kernel;
    let mut dw = vec![0f32; d.c * k * k];
    dw.par_chunks_mut(k * k)
        .enumerate()
        .for_each_init(Scratch::default, |scratch, (ch, taps)| {
            let total = backward_weight_channel(x, grad, ch, scratch, d, g);
            for (t, v) in taps.iter_mut().zip(total) {
                *t = v as f32;
            }
        });
    dw
}

/// One channel of [`backward_weight`]: the `k * k` tap gradients summed over the batch.
#[inline(always)]
fn backward_weight_channel_kernel(
    x: &[f32],
    grad: &[f32],
    ch: usize,
    scratch: &mut Scratch,
    d: Dims,
    g: &DepthwiseGeometry,
) -> Vec<f64> {
    let l = PhaseLayout::new(d, g);
    let len = l.plane_len();
    let mut total = vec![0f64; l.k * l.k];
    for b in 0..d.n {
        let p = b * d.c + ch;
        l.scatter(
            &x[p * d.h * d.w..(p + 1) * d.h * d.w],
            &mut scratch.phases,
            d,
            g,
        );
        l.widen(
            &grad[p * d.oh * d.ow..(p + 1) * d.oh * d.ow],
            &mut scratch.flat,
            d,
        );
        for ky in 0..l.k {
            for kx in 0..l.k {
                let (phase, shift) = l.tap(ky, kx);
                let plane = &scratch.phases[phase * len..(phase + 1) * len];
                total[ky * l.k + kx] += dot(&scratch.flat, &plane[shift..]);
            }
        }
    }
    total
}

vectorized!(fn backward_weight_channel(
    x: &[f32],
    grad: &[f32],
    ch: usize,
    scratch: &mut Scratch,
    d: Dims,
    g: &DepthwiseGeometry,
) -> Vec<f64> => backward_weight_channel_kernel);

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition, one output pixel at a time.
    fn naive(x: &[f32], w: &[f32], d: Dims, g: &DepthwiseGeometry) -> Vec<f32> {
        let k = g.kernel;
        let mut out = vec![0f32; d.n * d.c * d.oh * d.ow];
        for p in 0..d.n * d.c {
            let ch = p % d.c;
            for oy in 0..d.oh {
                for ox in 0..d.ow {
                    let mut acc = 0f32;
                    for ky in 0..k {
                        for kx in 0..k {
                            let iy = (oy * g.stride + ky) as isize - g.top as isize;
                            let ix = (ox * g.stride + kx) as isize - g.left as isize;
                            if iy >= 0 && ix >= 0 && (iy as usize) < d.h && (ix as usize) < d.w {
                                acc += w[ch * k * k + ky * k + kx]
                                    * x[p * d.h * d.w + iy as usize * d.w + ix as usize];
                            }
                        }
                    }
                    out[p * d.oh * d.ow + oy * d.ow + ox] = acc;
                }
            }
        }
        out
    }

    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| {
                (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) % 1000) as f32
                    / 500.0
                    - 1.0
            })
            .collect()
    }

    #[test]
    fn forward_matches_the_definition_for_every_padding_and_stride() {
        for (h, w, k, s, pads) in [
            (7, 9, 3, 1, (1, 1, 1, 1)),
            (8, 8, 3, 2, (0, 1, 0, 1)),
            (9, 7, 5, 2, (2, 2, 1, 2)),
            (6, 11, 5, 1, (2, 2, 2, 2)),
            (5, 5, 3, 2, (3, 0, 0, 3)),
        ] {
            let g = DepthwiseGeometry {
                kernel: k,
                stride: s,
                top: pads.0,
                bottom: pads.1,
                left: pads.2,
                right: pads.3,
            };
            let (oh, ow) = g.out_size(h, w).unwrap();
            let d = Dims {
                n: 2,
                c: 3,
                h,
                w,
                oh,
                ow,
            };
            let x = values(d.n * d.c * h * w, 1);
            let wt = values(d.c * k * k, 2);
            let got = forward(&x, &wt, d, &g);
            let want = naive(&x, &wt, d, &g);
            for (a, b) in got.iter().zip(&want) {
                assert!(
                    (a - b).abs() < 1e-5,
                    "{h}x{w} k{k} s{s} {pads:?}: {a} vs {b}"
                );
            }
        }
    }
}
