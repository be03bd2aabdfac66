//! f32 activations rounded to bf16 activations: the network input, and a pre-activation batch
//! norm + ReLU written straight as bf16.

use super::{pair, words};
use crate::error::{Error, Result};
use crate::model::cpu::{length_error, team, Nhwc, ScaleShift, SharedMut};

/// `out = bf16(x)` for an f32 NHWC activation of geometry `xs`, odd channel counts padded.
pub(crate) fn to_bf16_activation(x: &[f32], xs: Nhwc, out: &mut [u32]) -> Result<()> {
    convert_pixels("bf16 conversion", x, xs, out, |s, _, d| pair_row(s, d))
}

/// `out = bf16(relu(x * scale + shift))` per channel (a pre-activation batch norm) for an
/// f32 NHWC activation of geometry `xs`.
pub(crate) fn scale_shift_relu_to_bf16(
    ss: &ScaleShift,
    x: &[f32],
    xs: Nhwc,
    out: &mut [u32],
) -> Result<()> {
    if ss.channels() != xs.c {
        return Err(Error::Internal(format!(
            "bf16 pre-activation: batch norm of {} channels applied to {} channels",
            ss.channels(),
            xs.c
        )));
    }
    convert_pixels("bf16 pre-activation", x, xs, out, |s, y, d| {
        ss.apply_row(s, y);
        pair_row(y, d);
    })
}

/// Write each pixel of the f32 NHWC activation `x` (geometry `xs`) into its bf16 pairs in
/// `out` by `row(source channels, scratch of as many f32, destination pairs)`, in parallel
/// over chunks of pixels.
fn convert_pixels(
    what: &str,
    x: &[f32],
    xs: Nhwc,
    out: &mut [u32],
    row: impl Fn(&[f32], &mut [f32], &mut [u32]) + Sync,
) -> Result<()> {
    let (c, cp) = (xs.c, xs.c.div_ceil(2));
    if x.len() < xs.len() || out.len() < words(xs) {
        return Err(length_error(what, words(xs), out.len()));
    }
    if c == 0 {
        return Ok(());
    }
    let chunk = 256;
    let dst = SharedMut(out.as_mut_ptr());
    team::for_each(xs.pixels().div_ceil(chunk), |i| {
        let (p0, p1) = (i * chunk, ((i + 1) * chunk).min(xs.pixels()));
        // SAFETY: pixels p0..p1 of the checked output belong to this work item.
        let d = unsafe { dst.slice(p0 * cp, (p1 - p0) * cp) };
        let mut scratch = vec![0f32; c];
        for (d, s) in d
            .chunks_exact_mut(cp)
            .zip(x[p0 * c..p1 * c].chunks_exact(c))
        {
            row(s, &mut scratch, d);
        }
    });
    Ok(())
}

/// One pixel's channels as bf16 pairs (a zero channel after an odd count).
#[inline]
fn pair_row(src: &[f32], dst: &mut [u32]) {
    let mut it = src.chunks(2);
    for d in dst.iter_mut() {
        *d = match it.next() {
            Some([lo, hi]) => pair(*lo, *hi),
            Some([lo]) => pair(*lo, 0.0),
            _ => 0,
        };
    }
}
