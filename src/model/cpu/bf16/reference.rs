//! The plain-Rust bf16 arithmetic: rounding to bf16, and the reference microkernel, the
//! hardware kernel's arithmetic written out in the same order (compiled and tested on every
//! CPU; the hardware kernel is tested against it where the CPU has AVX512_BF16).

use super::{unpair, Microkernel, KC_MAX, MR, NR};

/// `x` rounded to bfloat16 (its upper 16 bits) to nearest, ties to even; denormals become a
/// zero of the same sign and NaNs stay (quiet) NaNs: the rounding of Intel's `vcvtneps2bf16`.
#[inline(always)]
pub(crate) fn to_bf16(x: f32) -> u16 {
    // Integer selects only, so that loops of it vectorize.
    let b = x.to_bits();
    let nan = (b & 0x7fff_ffff) > 0x7f80_0000;
    let tiny = b & 0x7f80_0000 == 0;
    let r = if nan {
        (b >> 16) | 0x40
    } else if tiny {
        (b & 0x8000_0000) >> 16
    } else {
        b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16
    };
    r as u16
}

/// The reference microkernel.
pub(crate) struct Micro;

impl Microkernel for Micro {
    const MR: usize = MR;

    /// Per output and pair `p`: `acc = (acc + a[2p+1] * b[2p+1]) + a[2p] * b[2p]`, the order
    /// of Intel's definition of `vdpbf16ps` (the products of two bf16 are exact in f32, so
    /// only the two sums round).
    unsafe fn run(kc: usize, a: *const u32, b: *const u32, c: *mut f32, accumulate: bool) {
        // SAFETY: the caller's contract (lengths `MR * KC_MAX`, `kc * NR`, `MR * NR`).
        let (a, b, c) = unsafe {
            (
                std::slice::from_raw_parts(a, MR * KC_MAX),
                std::slice::from_raw_parts(b, kc * NR),
                std::slice::from_raw_parts_mut(c, MR * NR),
            )
        };
        if !accumulate {
            c.fill(0.0);
        }
        for (p, bp) in b.chunks_exact(NR).enumerate() {
            for (arow, crow) in a.chunks_exact(KC_MAX).zip(c.chunks_exact_mut(NR)) {
                let (a0, a1) = unpair(arow[p]);
                for (acc, &bw) in crow.iter_mut().zip(bp) {
                    let (b0, b1) = unpair(bw);
                    *acc = (*acc + a1 * b1) + a0 * b0;
                }
            }
        }
    }
}
