//! CPU kernels of the depthwise convolution on NCHW `f32` slices: forward, gradient of the
//! input and gradient of the weights, each parallel over planes or channels.
//!
//! Every loop is written over whole rows so that the compiler vectorizes it. A strided row is
//! first split into its `stride` phases (`phase r` holds the pixels `j * stride + r`), so a tap
//! of a strided convolution is a contiguous multiply-add too.

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

/// `dst[o] += weight * src[o + shift]` for every `o` with `0 <= o + shift < src.len()`.
#[inline(always)]
fn axpy_shifted(dst: &mut [f32], src: &[f32], shift: isize, weight: f32) {
    let (d0, s0) = if shift < 0 {
        (shift.unsigned_abs(), 0)
    } else {
        (0, shift as usize)
    };
    let len = dst
        .len()
        .saturating_sub(d0)
        .min(src.len().saturating_sub(s0));
    if len == 0 {
        return;
    }
    for (d, &s) in dst[d0..d0 + len].iter_mut().zip(&src[s0..s0 + len]) {
        *d += weight * s;
    }
}

/// `sum(a[o] * b[o + shift])` over the `o` where both exist.
#[inline(always)]
fn dot_shifted(a: &[f32], b: &[f32], shift: isize) -> f32 {
    let (a0, b0) = if shift < 0 {
        (shift.unsigned_abs(), 0)
    } else {
        (0, shift as usize)
    };
    let len = a.len().saturating_sub(a0).min(b.len().saturating_sub(b0));
    if len == 0 {
        return 0.0;
    }
    // Eight partial sums, so that the loop vectorizes without reassociating one long chain.
    let mut acc = [0f32; 8];
    let (a, b) = (&a[a0..a0 + len], &b[b0..b0 + len]);
    let mut ca = a.chunks_exact(8);
    let mut cb = b.chunks_exact(8);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    acc.iter().sum::<f32>() + tail
}

/// Where tap offset `d` (input column `o * s + d` for output column `o`) reads: phase
/// `d mod s` at shift `floor(d / s)`.
#[inline(always)]
fn phase_of(d: isize, s: usize) -> (usize, isize) {
    let s = s as isize;
    (d.rem_euclid(s) as usize, d.div_euclid(s))
}

/// The phases of `row` for stride `s` (1 or 2): the row itself, or its even and odd columns
/// copied into `buf`.
#[inline(always)]
fn phases<'a>(row: &'a [f32], s: usize, buf: &'a mut Vec<f32>) -> [&'a [f32]; 2] {
    if s == 1 {
        return [row, &[]];
    }
    buf.clear();
    buf.extend(row.iter().step_by(2));
    let even = buf.len();
    buf.extend(row.iter().skip(1).step_by(2));
    let (a, b) = buf.split_at(even);
    [a, b]
}

/// The output row that reads input row `iy` through tap row `ky`, if any:
/// `oy * s + ky - top == iy`.
#[inline(always)]
fn output_row(iy: usize, ky: usize, g: &DepthwiseGeometry, oh: usize) -> Option<usize> {
    let at = (iy + g.top).checked_sub(ky)?;
    (at % g.stride == 0)
        .then_some(at / g.stride)
        .filter(|&oy| oy < oh)
}

/// Forward: `out[n, c] = sum over taps of weight[c, tap] * padded x[n, c]`, `(N, C, OH, OW)`.
/// Each input row is split into phases once and added into every output row that reads it.
pub(crate) fn forward(x: &[f32], weight: &[f32], d: Dims, g: &DepthwiseGeometry) -> Vec<f32> {
    let (k, s) = (g.kernel, g.stride);
    let mut out = vec![0f32; d.n * d.c * d.oh * d.ow];
    let plane_out = (d.oh * d.ow).max(1);
    out.par_chunks_mut(plane_out)
        .enumerate()
        .for_each_init(Vec::new, |buf, (p, dst)| {
            let ch = p % d.c;
            let src = &x[p * d.h * d.w..(p + 1) * d.h * d.w];
            let taps = &weight[ch * k * k..(ch + 1) * k * k];
            crate::model::efficientnet::simd::vectorized(|| {
                for (iy, row) in src.chunks_exact(d.w).enumerate() {
                    let ph = phases(row, s, buf);
                    for ky in 0..k {
                        let Some(oy) = output_row(iy, ky, g, d.oh) else {
                            continue;
                        };
                        let out_row = &mut dst[oy * d.ow..(oy + 1) * d.ow];
                        for kx in 0..k {
                            let (r, shift) = phase_of(kx as isize - g.left as isize, s);
                            axpy_shifted(out_row, ph[r], shift, taps[ky * k + kx]);
                        }
                    }
                }
            });
        });
    out
}

/// Gradient of the input: every output gradient spread back over the pixels it read,
/// `(N, C, H, W)`.
pub(crate) fn backward_input(
    grad: &[f32],
    weight: &[f32],
    d: Dims,
    g: &DepthwiseGeometry,
) -> Vec<f32> {
    let k = g.kernel;
    let mut dx = vec![0f32; d.n * d.c * d.h * d.w];
    let plane_in = (d.h * d.w).max(1);
    dx.par_chunks_mut(plane_in).enumerate().for_each_init(
        Vec::new,
        |acc: &mut Vec<f32>, (p, dst)| {
            let ch = p % d.c;
            let gp = &grad[p * d.oh * d.ow..(p + 1) * d.oh * d.ow];
            let taps = &weight[ch * k * k..(ch + 1) * k * k];
            crate::model::efficientnet::simd::vectorized(|| {
                backward_input_plane(gp, taps, dst, acc, d, g)
            });
        },
    );
    dx
}

/// One plane of [`backward_input`]: `acc` collects an input row's phases before they are
/// interleaved into `dst`.
#[inline(always)]
fn backward_input_plane(
    gp: &[f32],
    taps: &[f32],
    dst: &mut [f32],
    acc: &mut Vec<f32>,
    d: Dims,
    g: &DepthwiseGeometry,
) {
    let (k, s) = (g.kernel, g.stride);
    // Phase r of an input row holds columns j * s + r: ceil((w - r) / s) of them.
    let lens: Vec<usize> = (0..s).map(|r| d.w.saturating_sub(r).div_ceil(s)).collect();
    let starts: Vec<usize> = (0..s).map(|r| lens[..r].iter().sum()).collect();
    for (iy, dst_row) in dst.chunks_exact_mut(d.w).enumerate() {
        // The output rows that read input row iy: oy * s + ky - top == iy with ky < k.
        let last = ((iy + g.top) / s).min(d.oh.saturating_sub(1));
        let first = (iy + g.top + 1).saturating_sub(k).div_ceil(s);
        if first > last || d.oh == 0 {
            continue;
        }
        acc.clear();
        acc.resize(d.w, 0.0);
        for oy in first..=last {
            let ky = iy + g.top - oy * s;
            let g_row = &gp[oy * d.ow..(oy + 1) * d.ow];
            for kx in 0..k {
                let (r, shift) = phase_of(kx as isize - g.left as isize, s);
                let phase = &mut acc[starts[r]..starts[r] + lens[r]];
                // phase[o + shift] += w * g[o]  <=>  phase[j] += w * g[j - shift].
                axpy_shifted(phase, g_row, -shift, taps[ky * k + kx]);
            }
        }
        if s == 1 {
            dst_row.copy_from_slice(acc);
        } else {
            for (r, (&start, &len)) in starts.iter().zip(&lens).enumerate() {
                for (j, &v) in acc[start..start + len].iter().enumerate() {
                    dst_row[j * s + r] = v;
                }
            }
        }
    }
}

/// Gradient of the weights: for each channel and tap, the sum over the batch and the output
/// pixels of the output gradient times the input pixel the tap read, `(C, 1, k, k)`.
pub(crate) fn backward_weight(x: &[f32], grad: &[f32], d: Dims, g: &DepthwiseGeometry) -> Vec<f32> {
    let (k, s) = (g.kernel, g.stride);
    let mut dw = vec![0f32; d.c * k * k];
    dw.par_chunks_mut(k * k)
        .enumerate()
        .for_each_init(Vec::new, |buf, (ch, taps)| {
            let total = crate::model::efficientnet::simd::vectorized(|| {
                let mut total = vec![0f64; k * k];
                for b in 0..d.n {
                    let p = b * d.c + ch;
                    let src = &x[p * d.h * d.w..(p + 1) * d.h * d.w];
                    let gp = &grad[p * d.oh * d.ow..(p + 1) * d.oh * d.ow];
                    let mut plane = vec![0f32; k * k];
                    for (iy, row) in src.chunks_exact(d.w).enumerate() {
                        let ph = phases(row, s, buf);
                        for ky in 0..k {
                            let Some(oy) = output_row(iy, ky, g, d.oh) else {
                                continue;
                            };
                            let g_row = &gp[oy * d.ow..(oy + 1) * d.ow];
                            for kx in 0..k {
                                let (r, shift) = phase_of(kx as isize - g.left as isize, s);
                                plane[ky * k + kx] += dot_shifted(g_row, ph[r], shift);
                            }
                        }
                    }
                    for (t, v) in total.iter_mut().zip(&plane) {
                        *t += f64::from(*v);
                    }
                }
                total
            });
            for (t, v) in taps.iter_mut().zip(total) {
                *t = v as f32;
            }
        });
    dw
}

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
