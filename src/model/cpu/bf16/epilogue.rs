//! The epilogue of a block of accumulators: bias, activation or residual add and
//! pre-activation in f32, then the store as f32 or bf16 ([`super::Dst`]). The same Rust code for
//! every kernel, inlined into each kernel's work item (so vectorized with AVX-512 there).

use super::{to_bf16, Act, Job, Out, NR};

/// `v = act(v)` over a block row.
#[inline(always)]
fn activate(act: Act, v: &mut [f32; NR]) {
    match act {
        Act::Linear => {}
        Act::Relu => v.iter_mut().for_each(|v| *v = v.max(0.0)),
        Act::Relu6 => v.iter_mut().for_each(|v| *v = v.clamp(0.0, 6.0)),
    }
}

/// Store a block row rounded to bf16 as `d.len()` words of pairs.
#[inline(always)]
fn store_bf16(v: &[f32; NR], d: &mut [u32]) {
    let mut h = [0u16; NR];
    for (h, &v) in h.iter_mut().zip(v) {
        *h = to_bf16(v);
    }
    let mut words = [0u32; NR / 2];
    for (q, w) in words.iter_mut().enumerate() {
        *w = u32::from(h[2 * q]) | (u32::from(h[2 * q + 1]) << 16);
    }
    d.copy_from_slice(&words[..d.len()]);
}

/// Per-channel values `v[n0..n0 + cols]` in a block row's array (zeros past `cols`).
#[inline(always)]
fn row_of(v: &[f32], n0: usize, cols: usize) -> [f32; NR] {
    let mut out = [0f32; NR];
    out[..cols].copy_from_slice(&v[n0..n0 + cols]);
    out
}

/// The epilogue of one `MR x NR` block (rows `r0..r0 + rows`, columns `n0..n0 + NR`): bias,
/// activation or residual add and pre-activation, in f32, then the store. Columns past the
/// output's `n` come out 0 (zero weights and bias): the padding channel of bf16 outputs.
#[inline(always)]
pub(super) fn finish(job: &Job<'_>, block: &[f32], r0: usize, rows: usize, n0: usize) {
    let n = job.os.c;
    let cols = NR.min(n - n0);
    let (n2, q0) = (n.div_ceil(2), n0 / 2);
    let pairs = cols.div_ceil(2);
    let bias = row_of(&job.plan.bias, n0, NR);
    let preact = match job.out {
        Out::Residual(_, Some((ss, _))) => {
            Some((row_of(&ss.scale, n0, cols), row_of(&ss.shift, n0, cols)))
        }
        _ => None,
    };
    for (r, acc) in block.chunks_exact(NR).take(rows).enumerate() {
        let px = r0 + r;
        let mut v = [0f32; NR];
        for ((v, &a), &b) in v.iter_mut().zip(acc).zip(&bias) {
            *v = a + b;
        }
        match job.out {
            Out::F32(dst, act) => {
                activate(act, &mut v);
                // SAFETY: pixel `px`, channels n0..n0 + cols of the checked output belong to
                // this work item.
                unsafe { dst.slice(px * n + n0, cols) }.copy_from_slice(&v[..cols]);
            }
            Out::Bf16(dst, act) => {
                activate(act, &mut v);
                // SAFETY: as above, in words.
                store_bf16(&v, unsafe { dst.slice(px * n2 + q0, pairs) });
            }
            Out::Residual(dst, p) => {
                // SAFETY: as above.
                let d = unsafe { dst.slice(px * n + n0, cols) };
                for (d, v) in d.iter_mut().zip(v.iter_mut()) {
                    *d += *v;
                    *v = *d;
                }
                if let (Some(p), Some((s, t))) = (p, &preact) {
                    let mut y = [0f32; NR];
                    for (((y, &v), &s), &t) in y.iter_mut().zip(&v).zip(s).zip(t) {
                        *y = (v * s + t).max(0.0);
                    }
                    // SAFETY: as above, in words.
                    store_bf16(&y, unsafe { p.1.slice(px * n2 + q0, pairs) });
                }
            }
            Out::Stream(dst, add, copy) => {
                // SAFETY: as above.
                let d = unsafe { dst.slice(px * n + n0, cols) };
                for (d, v) in d.iter_mut().zip(v.iter_mut()) {
                    *d = if add { *d + *v } else { *v };
                    *v = *d;
                }
                // SAFETY: as above, in words.
                store_bf16(&v, unsafe { copy.slice(px * n2 + q0, pairs) });
            }
        }
    }
}
