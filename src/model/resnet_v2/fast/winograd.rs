//! Winograd F(2x2, 3x3) for the stride-1, pad-1 3x3 convolutions of the fast path.
//!
//! A 2x2 block of output pixels of a 3x3 convolution is computed from the 4x4 input patch
//! around it with 16 multiplications per (input channel, output channel) pair instead of 36
//! (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016):
//!
//! ```text
//! Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A
//! ```
//!
//! where `g` is the 3x3 kernel, `d` the 4x4 input patch, and `⊙` an element-wise product
//! summed over input channels: 16 matrix products, one per position `ξ` of the 4x4 transformed
//! patch, of the `(tiles, C_in)` transformed inputs with the `(C_in, C_out)` transformed
//! kernels. The kernels are transformed once at load time (in f64); inputs and outputs per
//! chunk of tiles, on one thread, so that a chunk's transformed data stays in that core's
//! cache between the three steps.
//!
//! The transforms only add and subtract (and halve, for the kernels), so the result differs
//! from the direct convolution by float32 rounding only, a few units in the last place more
//! than im2col's (the fast-path tests bound it).

use crate::error::{Error, Result};
use crate::model::cpu::{length_error, team, with_thread_buffer, Nhwc, SharedMut};
use std::cell::RefCell;

/// Positions of the transformed 4x4 patch.
const XI: usize = 16;
/// Fewest tiles per work item worth a Winograd pass: fewer make matrix products too thin
/// for the `gemm` kernels, and the layer is left to im2col.
const MIN_CHUNK_TILES: usize = 16;
/// Tiles per work item when the layer has enough: fewer, and the kernel matrices are
/// streamed once per too few rows.
const LOW_CHUNK_TILES: usize = 32;
/// Most tiles per work item.
const MAX_CHUNK_TILES: usize = 256;
/// Bytes of transformed inputs and outputs a work item aims to keep in its core's cache.
const CHUNK_BYTES: usize = 1 << 20;

/// The kernel transform `G`.
const G: [[f64; 3]; 4] = [
    [1.0, 0.0, 0.0],
    [0.5, 0.5, 0.5],
    [0.5, -0.5, 0.5],
    [0.0, 0.0, 1.0],
];

/// The transformed kernels of one 3x3 convolution: `u[(ξ * C_in + ci) * C_out + co]` is
/// position `ξ` of `G g Gᵀ` for the kernel from input channel `ci` to output channel `co`.
#[derive(Debug, Clone)]
pub(crate) struct WinogradKernels {
    c_in: usize,
    c_out: usize,
    u: Vec<f32>,
}

impl WinogradKernels {
    /// Transform an HWIO-packed 3x3 kernel (`hwio[((ky * 3 + kx) * C_in + ci) * C_out + co]`,
    /// the layout of [`super::kernels::ConvPlan`]).
    pub(crate) fn from_hwio(hwio: &[f32], c_in: usize, c_out: usize) -> Option<Self> {
        if hwio.len() != 9 * c_in * c_out {
            return None;
        }
        let mut u = vec![0f32; XI * c_in * c_out];
        for ci in 0..c_in {
            for co in 0..c_out {
                let g = |ky: usize, kx: usize| {
                    f64::from(hwio[((ky * 3 + kx) * c_in + ci) * c_out + co])
                };
                // gg = G g (4x3), then U = gg Gᵀ (4x4).
                let mut gg = [[0f64; 3]; 4];
                for (i, row) in gg.iter_mut().enumerate() {
                    for (kx, v) in row.iter_mut().enumerate() {
                        *v = (0..3).map(|ky| G[i][ky] * g(ky, kx)).sum();
                    }
                }
                for i in 0..4 {
                    for j in 0..4 {
                        let v: f64 = (0..3).map(|kx| gg[i][kx] * G[j][kx]).sum();
                        u[((i * 4 + j) * c_in + ci) * c_out + co] = v as f32;
                    }
                }
            }
        }
        Some(Self { c_in, c_out, u })
    }

    /// Tiles per work item for an output of `tiles` 2x2 tiles on `threads` threads, or `None`
    /// when the layer is too small for Winograd to pay.
    fn chunk_tiles(&self, tiles: usize, threads: usize) -> Option<usize> {
        let by_cache = CHUNK_BYTES / (XI * 4 * (self.c_in + self.c_out)).max(1);
        let r = by_cache
            .clamp(LOW_CHUNK_TILES, MAX_CHUNK_TILES)
            .min(tiles.div_ceil(threads.max(1)));
        (r >= MIN_CHUNK_TILES).then_some(r)
    }

    /// Whether a layer whose input has geometry `xs` runs through Winograd on `threads`
    /// threads.
    pub(crate) fn applies(&self, xs: Nhwc, threads: usize) -> bool {
        self.chunk_tiles(tiles(xs).0, threads).is_some()
    }
}

/// Number of 2x2 output tiles of a same-size convolution of `xs`, and the tile grid's height
/// and width.
fn tiles(xs: Nhwc) -> (usize, usize, usize) {
    let (th, tw) = (xs.h.div_ceil(2), xs.w.div_ceil(2));
    (xs.n * th * tw, th, tw)
}

thread_local! {
    /// Per-thread transformed inputs, products and transform scratch of one work item.
    static BUFFERS: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `y = Bᵀ x` along one direction, for four rows of channels:
/// `y0 = x0 - x2, y1 = x1 + x2, y2 = x2 - x1, y3 = x1 - x3`.
#[inline]
fn input_1d(x: [&[f32]; 4], y: &mut [f32], c: usize) {
    let (y0, rest) = y.split_at_mut(c);
    let (y1, rest) = rest.split_at_mut(c);
    let (y2, y3) = rest.split_at_mut(c);
    for ((o, a), b) in y0.iter_mut().zip(x[0]).zip(x[2]) {
        *o = a - b;
    }
    for ((o, a), b) in y1.iter_mut().zip(x[1]).zip(x[2]) {
        *o = a + b;
    }
    for ((o, a), b) in y2.iter_mut().zip(x[2]).zip(x[1]) {
        *o = a - b;
    }
    for ((o, a), b) in y3.iter_mut().zip(x[1]).zip(x[3]) {
        *o = a - b;
    }
}

/// `z = Aᵀ x` along one direction, plus `bias` (then ReLU when `relu`):
/// `z0 = x0 + x1 + x2, z1 = x1 - x2 - x3`. `z1` may be empty (a tile cut by the image edge).
#[inline]
fn output_1d(x: [&[f32]; 4], z0: &mut [f32], z1: &mut [f32], bias: &[f32], relu: bool) {
    let post = |v: f32| if relu { v.max(0.0) } else { v };
    for ((((o, a), b), d), bi) in z0.iter_mut().zip(x[0]).zip(x[1]).zip(x[2]).zip(bias) {
        *o = post(a + b + d + bi);
    }
    for ((((o, a), b), d), bi) in z1.iter_mut().zip(x[1]).zip(x[2]).zip(x[3]).zip(bias) {
        *o = post(a - b - d + bi);
    }
}

/// Run the 3x3, stride-1, pad-1 convolution `k` (plus `bias`, then ReLU when `relu`) on `x`
/// (geometry `xs`) into `out`; returns the output geometry (that of `xs` with `C_out`
/// channels). Callers check [`WinogradKernels::applies`] first; on a layer too small it
/// returns an error.
pub(crate) fn conv3x3(
    k: &WinogradKernels,
    bias: &[f32],
    relu: bool,
    x: &[f32],
    xs: Nhwc,
    out: &mut [f32],
) -> Result<Nhwc> {
    let (ci, co) = (k.c_in, k.c_out);
    let os = xs.with_channels(co);
    if xs.c != ci {
        return Err(Error::Internal(format!(
            "fast ResNetV2 kernel: Winograd convolution expects {ci} input channels, found {}",
            xs.c
        )));
    }
    if x.len() < xs.len() {
        return Err(length_error("Winograd input", xs.len(), x.len()));
    }
    if out.len() < os.len() {
        return Err(length_error("Winograd output", os.len(), out.len()));
    }
    if bias.len() != co {
        return Err(length_error("Winograd bias", co, bias.len()));
    }
    let threads = rayon::current_num_threads().max(1);
    let n_tiles = tiles(xs).0;
    let r = k.chunk_tiles(n_tiles, threads).ok_or_else(|| {
        Error::Internal(format!(
            "fast ResNetV2 kernel: {n_tiles} tiles are too few for a Winograd convolution"
        ))
    })?;
    run(k, bias, relu, x, xs, out, r);
    Ok(os)
}

/// The body of [`conv3x3`] on checked inputs, with `r` tiles per work item.
fn run(
    k: &WinogradKernels,
    bias: &[f32],
    relu: bool,
    x: &[f32],
    xs: Nhwc,
    out: &mut [f32],
    r: usize,
) {
    let (ci, co) = (k.c_in, k.c_out);
    let (n_tiles, th, tw) = tiles(xs);
    let r = r.max(1);
    // Image, tile row and tile column of tile number `tile`.
    let tile_at = |tile: usize| (tile / (th * tw), (tile / tw) % th, tile % tw);
    let dst = SharedMut(out.as_mut_ptr());
    let zeros = vec![0f32; ci.max(co)];
    team::for_each(n_tiles.div_ceil(r), |chunk| {
        let t0 = chunk * r;
        let rows = r.min(n_tiles - t0);
        let (v_len, m_len, s_len) = (rows * XI * ci, rows * XI * co, XI * ci.max(co));
        with_thread_buffer(&BUFFERS, v_len + m_len + s_len, |buf| {
            let (v, rest) = buf.split_at_mut(v_len);
            let (m, rest) = rest.split_at_mut(m_len);
            let scratch = &mut rest[..s_len];

            // 1. Transformed inputs, tile-major: v[(t * 16 + ξ) * C_in + c].
            for (t, vt) in v.chunks_exact_mut(XI * ci).enumerate() {
                let (b, ty, tx) = tile_at(t0 + t);
                let pixel = |i: usize, j: usize| -> &[f32] {
                    let iy = (2 * ty + i).checked_sub(1).filter(|&v| v < xs.h);
                    let ix = (2 * tx + j).checked_sub(1).filter(|&v| v < xs.w);
                    match (iy, ix) {
                        (Some(iy), Some(ix)) => {
                            let at = ((b * xs.h + iy) * xs.w + ix) * ci;
                            x.get(at..at + ci).unwrap_or(&zeros[..ci])
                        }
                        _ => &zeros[..ci],
                    }
                };
                // Down the columns: scratch[(j * 4 + i) * C_in + c] = (Bᵀ d)[i][j].
                for (j, col) in scratch.chunks_exact_mut(4 * ci).take(4).enumerate() {
                    input_1d(
                        [pixel(0, j), pixel(1, j), pixel(2, j), pixel(3, j)],
                        col,
                        ci,
                    );
                }
                // Along the rows: vt[(i * 4 + j) * C_in + c] = (Bᵀ d B)[i][j].
                let s: &[f32] = scratch;
                let at = |j: usize, i: usize| &s[(j * 4 + i) * ci..(j * 4 + i + 1) * ci];
                for (i, row) in vt.chunks_exact_mut(4 * ci).enumerate() {
                    input_1d([at(0, i), at(1, i), at(2, i), at(3, i)], row, ci);
                }
            }

            // 2. One product per position ξ: m[(t * 16 + ξ) * C_out + o].
            for xi in 0..XI {
                // SAFETY: `v` holds `rows` tiles of 16 rows of `ci` values (row stride
                // 16 * ci from offset xi * ci), `k.u` holds 16 `ci x co` matrices and `m`
                // has the shape of `v` with `co` columns; all are owned by this work item.
                unsafe {
                    gemm::gemm(
                        rows,
                        co,
                        ci,
                        m.as_mut_ptr().add(xi * co),
                        1,
                        (XI * co) as isize,
                        false,
                        v.as_ptr().add(xi * ci),
                        1,
                        (XI * ci) as isize,
                        k.u.as_ptr().add(xi * ci * co),
                        1,
                        co as isize,
                        1.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
            }

            // 3. Inverse transform, bias and ReLU into the output pixels.
            for (t, mt) in m.chunks_exact(XI * co).enumerate() {
                let (b, ty, tx) = tile_at(t0 + t);
                let at = |i: usize, j: usize| &mt[(i * 4 + j) * co..(i * 4 + j + 1) * co];
                // Down the columns: scratch[(j * 2 + i) * C_out + o] = (Aᵀ M)[i][j].
                for (j, col) in scratch.chunks_exact_mut(2 * co).take(4).enumerate() {
                    let (z0, z1) = col.split_at_mut(co);
                    let x = [at(0, j), at(1, j), at(2, j), at(3, j)];
                    output_1d(x, z0, z1, &zeros[..co], false);
                }
                let s: &[f32] = scratch;
                let at = |j: usize, i: usize| &s[(j * 2 + i) * co..(j * 2 + i + 1) * co];
                // Along the rows: the tile's (up to) two output pixels of each output row.
                for i in 0..2 {
                    let oy = 2 * ty + i;
                    if oy >= xs.h {
                        break;
                    }
                    let row_base = ((b * xs.h + oy) * xs.w + 2 * tx) * co;
                    let cols = if 2 * tx + 1 < xs.w { 2 } else { 1 };
                    // SAFETY: pixels (oy, 2tx) and (oy, 2tx + 1) of image `b` lie inside
                    // `out` (checked to hold `os.len()` values) and belong to this tile only.
                    let px = unsafe {
                        std::slice::from_raw_parts_mut(dst.ptr().add(row_base), cols * co)
                    };
                    let (p0, p1) = px.split_at_mut(co);
                    output_1d([at(0, i), at(1, i), at(2, i), at(3, i)], p0, p1, bias, relu);
                }
            }
        });
    });
}

#[cfg(test)]
mod tests {
    use super::super::kernels::{conv, ConvPlan, Epilogue};
    use super::*;
    use crate::model::testing::seeded_values as values;

    /// Winograd against im2col on the same packed kernel, for even and odd sizes, chunk sizes
    /// that do and do not divide the tile count, with and without ReLU.
    #[test]
    fn winograd_equals_im2col_on_odd_and_even_sizes_and_chunkings() {
        for (n, h, w, ci, co, r, relu) in [
            (1, 4, 4, 3, 5, 1, false),
            (2, 7, 5, 8, 16, 3, true),
            (3, 9, 10, 16, 7, 7, true),
            (1, 1, 1, 4, 4, 1, false),
            (2, 14, 13, 32, 24, 64, false),
        ] {
            let oihw = values(co * ci * 9, 1);
            let bias = values(co, 2);
            let mut plan = ConvPlan::pack(&oihw, [co, ci, 3, 3], 1, 1, None, bias.clone());
            let wk = plan
                .winograd
                .take()
                .expect("3x3 stride-1 kernels get a Winograd form");
            let xs = Nhwc { n, h, w, c: ci };
            let x = values(xs.len(), 3);
            let mut want = vec![0f32; xs.with_channels(co).len()];
            let epilogue = if relu {
                Epilogue::BiasRelu
            } else {
                Epilogue::Bias
            };
            conv(&plan, &x, xs, &mut want, epilogue).unwrap();
            // NaN marks outputs Winograd never wrote: any left must fail, so the maximum
            // below (which would drop a NaN) only ever sees finite values.
            let mut got = vec![f32::NAN; want.len()];
            run(&wk, &bias, relu, &x, xs, &mut got, r);
            for (what, values) in [("Winograd", &got), ("im2col", &want)] {
                if let Some(i) = values.iter().position(|v| !v.is_finite()) {
                    panic!(
                        "{n}x{h}x{w}x{ci}->{co}, r={r}: {what} output {i} is {}",
                        values[i]
                    );
                }
            }
            let worst = got
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            // Float32 rounding of sums of up to 9 * C_in products: relative to the largest
            // output.
            let scale = want.iter().fold(1f32, |m, v| m.max(v.abs()));
            assert!(
                worst < 1e-5 * scale,
                "{n}x{h}x{w}x{ci}->{co}, r={r}: worst difference {worst} for outputs up to {scale}"
            );
        }
    }

    #[test]
    fn only_stride_1_pad_1_3x3_kernels_get_a_winograd_form() {
        let k = values(4 * 4 * 9, 1);
        assert!(ConvPlan::pack(&k, [4, 4, 3, 3], 2, 1, None, vec![0.; 4])
            .winograd
            .is_none());
        assert!(ConvPlan::pack(&k, [4, 4, 3, 3], 1, 0, None, vec![0.; 4])
            .winograd
            .is_none());
        let k1 = values(4 * 4, 1);
        assert!(ConvPlan::pack(&k1, [4, 4, 1, 1], 1, 0, None, vec![0.; 4])
            .winograd
            .is_none());
    }

    #[test]
    fn small_layers_are_left_to_im2col_and_an_error_says_so() {
        let wk = WinogradKernels::from_hwio(&values(9 * 8 * 8, 1), 8, 8).unwrap();
        // 7x7: 16 tiles, enough for one thread, not for two (8 each); 5x5: 9 tiles.
        let xs = Nhwc {
            n: 1,
            h: 7,
            w: 7,
            c: 8,
        };
        assert!(wk.applies(xs, 1));
        assert!(!wk.applies(xs, 2));
        let small = Nhwc {
            n: 1,
            h: 5,
            w: 5,
            c: 8,
        };
        assert!(!wk.applies(small, 1));
        let mut out = vec![0f32; small.len()];
        let err = conv3x3(
            &wk,
            &[0.; 8],
            false,
            &values(small.len(), 2),
            small,
            &mut out,
        );
        assert!(err.unwrap_err().to_string().contains("too few"));
        assert!(wk.applies(
            Nhwc {
                n: 8,
                h: 14,
                w: 14,
                c: 8
            },
            2
        ));
    }
}
