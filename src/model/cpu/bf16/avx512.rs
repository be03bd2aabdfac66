//! The AVX512_BF16 microkernel: `MR` rows by two vectors of 16 output channels of f32
//! accumulators (24 of the 32 vector registers), one `vdpbf16ps` per row and vector and
//! channel pair, the row's pair broadcast as one 32-bit word.

use super::{Job, Microkernel, KC_MAX, MR, NR};
use std::arch::x86_64::{
    __m512, __m512bh, __m512i, _mm512_dpbf16_ps, _mm512_loadu_ps, _mm512_loadu_si512,
    _mm512_set1_epi32, _mm512_setzero_ps, _mm512_storeu_ps,
};

/// The `vdpbf16ps` microkernel.
pub(crate) struct Micro;

impl Microkernel for Micro {
    const MR: usize = MR;

    unsafe fn run(kc: usize, a: *const u32, b: *const u32, c: *mut f32, accumulate: bool) {
        // SAFETY: the caller's contract (lengths, and a CPU with AVX512_BF16 and AVX-512F).
        unsafe { micro(kc, a, b, c, accumulate) }
    }
}

/// Reinterpret 32 bf16 values held as integers.
#[inline(always)]
fn bh(v: __m512i) -> __m512bh {
    // SAFETY: both are 512 bits of plain data.
    unsafe { std::mem::transmute::<__m512i, __m512bh>(v) }
}

/// # Safety
/// `a` holds `MR` rows of `KC_MAX` words, `b` `kc * NR` words, `c` `MR * NR` values,
/// `kc <= KC_MAX`; the CPU has AVX512_BF16 and AVX-512F.
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn micro(kc: usize, a: *const u32, b: *const u32, c: *mut f32, accumulate: bool) {
    const _: () = assert!(
        NR == 32,
        "the kernel holds two vectors of 16 output channels"
    );
    let mut acc: [[__m512; 2]; MR] = [[_mm512_setzero_ps(); 2]; MR];
    if accumulate {
        for (r, row) in acc.iter_mut().enumerate() {
            // SAFETY: row r of the `MR x NR` block `c`.
            unsafe {
                row[0] = _mm512_loadu_ps(c.add(r * NR));
                row[1] = _mm512_loadu_ps(c.add(r * NR + 16));
            }
        }
    }
    let (mut a, mut b) = (a, b);
    for _ in 0..kc {
        // SAFETY: `b` points at the pair's NR words and `a` at its MR words, inside the panels.
        unsafe {
            let b0 = bh(_mm512_loadu_si512(b.cast()));
            let b1 = bh(_mm512_loadu_si512(b.add(16).cast()));
            for (r, row) in acc.iter_mut().enumerate() {
                let av = bh(_mm512_set1_epi32(a.add(r * KC_MAX).read() as i32));
                row[0] = _mm512_dpbf16_ps(row[0], av, b0);
                row[1] = _mm512_dpbf16_ps(row[1], av, b1);
            }
            a = a.add(1);
            b = b.add(NR);
        }
    }
    for (r, row) in acc.iter().enumerate() {
        // SAFETY: row r of the `MR x NR` block `c`.
        unsafe {
            _mm512_storeu_ps(c.add(r * NR), row[0]);
            _mm512_storeu_ps(c.add(r * NR + 16), row[1]);
        }
    }
}

/// [`super::run_item`] with the hardware microkernel, compiled with AVX-512 (packing and
/// epilogue vectorized).
///
/// # Safety
/// The CPU has AVX512_BF16 and AVX-512F.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
pub(super) unsafe fn run_item(
    job: &Job<'_>,
    item: usize,
    n_tiles: usize,
    a: &mut [u32],
    c: &mut [f32],
) {
    super::run_item::<Micro>(job, item, n_tiles, a, c)
}
