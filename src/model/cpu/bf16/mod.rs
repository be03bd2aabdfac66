//! Convolutions in bfloat16 with float32 accumulation, the arithmetic of
//! [`Precision::Bf16`](crate::model::Precision).
//!
//! * **Values.** A bf16 activation is NHWC in `u32` words, each holding two neighbouring
//!   channels (channel `2q` in the low half, `2q + 1` in the high half); an odd channel count is
//!   padded with a zero channel, so a pixel of `C` channels is `C.div_ceil(2)` words. Rounding
//!   from f32 is to nearest even, with denormals flushed to zero ([`to_bf16`]), the rounding of
//!   Intel's `vcvtneps2bf16`.
//! * **Weights** ([`Bf16Conv`]) are rounded and packed once, at build time: panels of [`NR`]
//!   output channels, each a `K/2 x NR` array of words that pair the weights of input channels
//!   `2q` and `2q + 1` (reduction index `k = tap * C_pad + c`, HWIO order), padded with zero
//!   pairs to a multiple of [`KPAD`] pairs. That is the pair-interleaved ("VNNI") layout of an
//!   AMX `B` tile, so the AMX kernel reads 16 x 16-word tiles straight from the panels.
//! * **Product.** Output tile by output tile (in parallel on the fast paths' thread team), the
//!   im2col rows of the input are packed, `kc` channel pairs at a time, into rows of a fixed
//!   stride ([`KC_MAX`] words, so that one pointer and constant offsets address [`MR`] rows), and
//!   a microkernel keeps an `MR x NR` block of f32 accumulators in registers (`MR` is the
//!   kernel's [`Microkernel::MR`]; the AMX kernel keeps 32 x 32 in four tiles). For each pair
//!   `p` it does, per output, `acc = (acc + a[2p+1] * b[2p+1]) + a[2p] * b[2p]` (each product
//!   exact in f32, each sum rounded to nearest even): what `vdpbf16ps` does, and what the
//!   plain-Rust [`reference`] microkernel does in the same order, so the two agree to the last
//!   bit on normal numbers. AMX's `tdpbf16ps` sums 16 pairs per instruction in an order of its own
//!   (see [`amx`]): within a few f32 ulps of the reference, not to the bit.
//! * **Epilogue.** On the last block of the reduction, the bias, the activation, the residual
//!   add and the next layer's pre-activation are applied in f32 while the block is in registers
//!   or L1, and stored as f32 or rounded to bf16 ([`Dst`]). It is the same Rust code for every
//!   kernel, compiled with AVX-512 for the hardware ones.
//!
//! [`Kernel::hardware`] is the one place that decides which kernel runs on this CPU.

#[cfg(target_arch = "x86_64")]
mod amx;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod convert;
mod epilogue;
mod reference;
#[cfg(test)]
pub(crate) mod tests;

use super::{length_error, team, with_thread_buffer, Nhwc, ScaleShift, SharedMut};
use crate::error::{Error, Result};
use epilogue::finish;
use std::cell::RefCell;

pub(crate) use convert::{scale_shift_relu_to_bf16, to_bf16_activation};
pub(crate) use reference::to_bf16;

/// Output channels per panel (two AVX-512 vectors of f32 accumulators).
pub(crate) const NR: usize = 32;
/// Pixels (rows) per call of the `vdpbf16ps` and reference microkernels.
pub(crate) const MR: usize = 12;
/// The most rows of any microkernel (the AMX kernel's two tiles of 16).
const MR_MAX: usize = 32;
/// The reduction is padded with zero pairs to a multiple of this many, in the packed weights
/// and in the packed inputs: an AMX tile row holds 16 pairs.
pub(crate) const KPAD: usize = 16;
/// Most channel pairs per reduction block: a block's `kc x NR` weights (16 KiB) stay in L1
/// while the microkernel runs over the tile's pixel panels; also the row stride of the packed
/// inputs.
pub(crate) const KC_MAX: usize = 128;
/// Most pixels per work item (its packed inputs, `MC_MAX x kc` words, stay in L2); a multiple
/// of every kernel's `MR`.
const MC_MAX: usize = 192;
const _: () = assert!(
    MC_MAX.is_multiple_of(MR) && MC_MAX.is_multiple_of(MR_MAX) && KC_MAX.is_multiple_of(KPAD)
);
/// Most output channels per work item.
const NT_MAX: usize = 256;
/// Work items per thread aimed at.
const ITEMS_PER_THREAD: usize = 4;

/// Which microkernel runs the products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kernel {
    /// Plain Rust, the same arithmetic in the same order: compiled and tested everywhere
    /// (chosen by the tests; `Precision::Bf16` runs only on the hardware).
    #[cfg_attr(not(test), allow(dead_code))]
    Reference,
    /// `vdpbf16ps` (AVX512_BF16 with AVX-512F).
    Avx512Bf16,
    /// AMX tiles, `tdpbf16ps` (AMX-BF16 and AMX-TILE with the OS's grant of tile data, and
    /// AVX-512F/BW/VL for the packing and the epilogue).
    Amx,
}

impl Kernel {
    /// The kernel `Precision::Bf16` runs on this CPU: AMX where it is usable, else
    /// `vdpbf16ps` where the CPU has AVX512_BF16 and AVX-512F, else `None`.
    pub(crate) fn hardware() -> Option<Self> {
        Kernel::available().last().copied()
    }

    /// Every hardware kernel that runs on this CPU, slowest first.
    pub(crate) fn available() -> Vec<Self> {
        [Kernel::Avx512Bf16, Kernel::Amx]
            .into_iter()
            .filter(|k| k.runs_here())
            .collect()
    }

    /// Whether this CPU (and OS) runs the kernel.
    fn runs_here(self) -> bool {
        match self {
            Kernel::Reference => true,
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Bf16 => {
                std::arch::is_x86_feature_detected!("avx512bf16")
                    && std::arch::is_x86_feature_detected!("avx512f")
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::Amx => amx::usable(),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The kernels to test on this CPU: the reference always, the hardware ones where they run.
    #[cfg(test)]
    pub(crate) fn testable() -> Vec<Self> {
        std::iter::once(Kernel::Reference)
            .chain(Kernel::available())
            .collect()
    }

    /// Whether the kernel sums in the reference's order (so equals it to the bit).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn sums_like_the_reference(self) -> bool {
        self != Kernel::Amx
    }

    /// What the kernel is, for logs and test output. The `vdpbf16ps` kernel says so when the
    /// CPU has AMX but the OS refused this process the tile data.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Kernel::Reference => "plain-Rust reference kernel",
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Bf16 if amx::refused() => {
                "AVX512_BF16 kernel (vdpbf16ps; the CPU has AMX but the OS refused tile data)"
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512Bf16 if amx::turned_off_here() => {
                "AVX512_BF16 kernel (vdpbf16ps; AMX turned off by FRACTURE_AMX)"
            }
            Kernel::Avx512Bf16 => "AVX512_BF16 kernel (vdpbf16ps)",
            Kernel::Amx => "AMX kernel (tdpbf16ps)",
        }
    }

    fn check(self) -> Result<()> {
        if self.runs_here() {
            Ok(())
        } else {
            Err(Error::Internal(format!(
                "bf16 convolution: the {} was chosen on a CPU that does not run it",
                self.describe()
            )))
        }
    }

    /// Rows of the kernel's blocks (its [`Microkernel::MR`]).
    fn mr(self) -> usize {
        match self {
            #[cfg(target_arch = "x86_64")]
            Kernel::Amx => <amx::Micro as Microkernel>::MR,
            _ => MR,
        }
    }
}

/// The activation applied to `conv + bias`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Act {
    Linear,
    Relu,
    Relu6,
}

/// Two f32 values rounded to bf16 and paired in one word (`lo` in the low half).
#[inline(always)]
pub(crate) fn pair(lo: f32, hi: f32) -> u32 {
    u32::from(to_bf16(lo)) | (u32::from(to_bf16(hi)) << 16)
}

/// The two f32 values of a word of bf16 pair.
#[inline(always)]
pub(crate) fn unpair(w: u32) -> (f32, f32) {
    (f32::from_bits(w << 16), f32::from_bits(w & 0xffff_0000))
}

/// A convolution with its weights rounded to bf16 and packed for the microkernel.
#[derive(Debug, Clone)]
pub(crate) struct Bf16Conv {
    pub(crate) c_in: usize,
    pub(crate) c_out: usize,
    pub(crate) kernel: usize,
    pub(crate) stride: usize,
    pub(crate) pad: usize,
    /// Channel pairs of the reduction: `kernel² * c_in.div_ceil(2)`.
    k2: usize,
    /// `c_out.div_ceil(NR)` panels of `k2.next_multiple_of(KPAD) x NR` words (zero past `k2`).
    packed: Vec<u32>,
    /// The bias, zero-padded to the panels' width.
    bias: Vec<f32>,
}

impl Bf16Conv {
    /// Round and pack an HWIO-flattened f32 kernel (`hwio[(tap * c_in + ci) * c_out + co]`, the
    /// layout of the f32 fast path's plans) and its bias.
    pub(crate) fn from_hwio(
        hwio: &[f32],
        [c_out, c_in, kernel]: [usize; 3],
        stride: usize,
        pad: usize,
        bias: &[f32],
    ) -> Result<Self> {
        let taps = kernel * kernel;
        if hwio.len() != taps * c_in * c_out || bias.len() != c_out {
            return Err(Error::Internal(format!(
                "bf16 convolution {c_out}x{c_in}x{kernel}x{kernel}: {} weights and {} biases",
                hwio.len(),
                bias.len()
            )));
        }
        let cp = c_in.div_ceil(2);
        let k2 = taps * cp;
        let panels = c_out.div_ceil(NR);
        let w = |tap: usize, ci: usize, co: usize| -> f32 {
            if ci < c_in && co < c_out {
                hwio[(tap * c_in + ci) * c_out + co]
            } else {
                0.0
            }
        };
        let mut packed = vec![0u32; panels * k2.next_multiple_of(KPAD) * NR];
        for (j, panel) in packed
            .chunks_exact_mut(k2.next_multiple_of(KPAD) * NR)
            .enumerate()
        {
            for (p, words) in panel.chunks_exact_mut(NR).take(k2).enumerate() {
                let (tap, q) = (p / cp, p % cp);
                for (jj, word) in words.iter_mut().enumerate() {
                    let co = j * NR + jj;
                    *word = pair(w(tap, 2 * q, co), w(tap, 2 * q + 1, co));
                }
            }
        }
        let mut padded = bias.to_vec();
        padded.resize(panels * NR, 0.0);
        Ok(Self {
            c_in,
            c_out,
            kernel,
            stride,
            pad,
            k2,
            packed,
            bias: padded,
        })
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

    fn panels(&self) -> usize {
        self.c_out.div_ceil(NR)
    }

    /// The words of panel `j`'s pairs `p0..p0 + kc.next_multiple_of(KPAD)`.
    fn panel(&self, j: usize, p0: usize, kc: usize) -> &[u32] {
        let len = self.k2.next_multiple_of(KPAD);
        &self.packed[(j * len + p0) * NR..][..kc.next_multiple_of(KPAD) * NR]
    }
}

/// Words of a bf16 activation of geometry `s`.
pub(crate) fn words(s: Nhwc) -> usize {
    s.pixels() * s.c.div_ceil(2)
}

/// Where a convolution's output goes, and what is applied to `conv + bias` on the way.
pub(crate) enum Dst<'a> {
    /// `out = act(conv + bias)` as f32 (`C_out` values per pixel).
    F32(&'a mut [f32], Act),
    /// `out = act(conv + bias)` rounded to a bf16 activation.
    Bf16(&'a mut [u32], Act),
    /// `out += conv + bias` in f32 (the residual add), then, when given,
    /// `preact = relu(out * scale + shift)` rounded to a bf16 activation (the next consumer's
    /// pre-activation).
    Residual(&'a mut [f32], Option<(&'a ScaleShift, &'a mut [u32])>),
    /// `out = conv + bias` in f32 (`out += conv + bias` when the flag is set: the residual
    /// add), and `copy = bf16(out)`: a block output that the next block reads as bf16 and may
    /// add as f32.
    Stream(&'a mut [f32], bool, &'a mut [u32]),
}

/// [`Dst`] as shared pointers, for the work items (each writes its own rows and columns).
#[derive(Clone, Copy)]
enum Out<'a> {
    F32(SharedMut<f32>, Act),
    Bf16(SharedMut<u32>, Act),
    Residual(SharedMut<f32>, Option<(&'a ScaleShift, SharedMut<u32>)>),
    Stream(SharedMut<f32>, bool, SharedMut<u32>),
}

/// One convolution call: what every work item reads.
struct Job<'a> {
    plan: &'a Bf16Conv,
    x: &'a [u32],
    xs: Nhwc,
    os: Nhwc,
    out: Out<'a>,
    /// Pixels and output channels per work item (multiples of the kernel's MR and of NR).
    mc: usize,
    nt: usize,
    /// Channel pairs per reduction block (a multiple of KPAD), and the number of blocks.
    kc: usize,
    kblocks: usize,
}

thread_local! {
    /// The packed input panels of one work item.
    static PACKED_A: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
    /// The partial sums of one work item when the reduction has several blocks.
    static PARTIAL: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Tile sizes `(mc, nt)` for `m` pixels and `n` output channels on `threads` threads, for a
/// kernel of `mr` rows: output channels split until there are enough work items, pixels into
/// about [`ITEMS_PER_THREAD`] items per thread.
fn tiles(m: usize, n: usize, threads: usize, mr: usize) -> (usize, usize) {
    let target = ITEMS_PER_THREAD * threads.max(1);
    let n_pad = n.next_multiple_of(NR).max(NR);
    let mut nt = n_pad.min(NT_MAX);
    loop {
        let n_tiles = n_pad.div_ceil(nt);
        let mc = m
            .div_ceil(target.div_ceil(n_tiles).max(1))
            .next_multiple_of(mr)
            .clamp(mr, MC_MAX);
        let items = m.div_ceil(mc) * n_tiles;
        if items >= 2 * threads || nt == NR {
            return (mc, nt);
        }
        nt = (nt / 2 / NR * NR).max(NR);
    }
}

/// Run `plan` on the bf16 activation `x` (geometry `xs`, `C_in` channels) into `dst`; returns
/// the output geometry.
pub(crate) fn conv(
    kernel: Kernel,
    plan: &Bf16Conv,
    x: &[u32],
    xs: Nhwc,
    dst: Dst<'_>,
) -> Result<Nhwc> {
    kernel.check()?;
    if xs.c != plan.c_in {
        return Err(Error::Internal(format!(
            "bf16 convolution expects {} input channels, found {}",
            plan.c_in, xs.c
        )));
    }
    if x.len() < words(xs) {
        return Err(length_error("bf16 convolution input", words(xs), x.len()));
    }
    let os = plan.out_shape(xs);
    let out = match dst {
        Dst::F32(buf, act) => {
            if buf.len() < os.len() {
                return Err(length_error("bf16 convolution output", os.len(), buf.len()));
            }
            Out::F32(SharedMut(buf.as_mut_ptr()), act)
        }
        Dst::Bf16(buf, act) => {
            if buf.len() < words(os) {
                return Err(length_error(
                    "bf16 convolution output",
                    words(os),
                    buf.len(),
                ));
            }
            Out::Bf16(SharedMut(buf.as_mut_ptr()), act)
        }
        Dst::Residual(buf, preact) => {
            if buf.len() < os.len() {
                return Err(length_error("residual output", os.len(), buf.len()));
            }
            let preact = match preact {
                Some((ss, p)) => {
                    if ss.channels() != os.c || p.len() < words(os) {
                        return Err(length_error("bf16 pre-activation", words(os), p.len()));
                    }
                    Some((ss, SharedMut(p.as_mut_ptr())))
                }
                None => None,
            };
            Out::Residual(SharedMut(buf.as_mut_ptr()), preact)
        }
        Dst::Stream(buf, add, copy) => {
            if buf.len() < os.len() || copy.len() < words(os) {
                return Err(length_error("bf16 block output", os.len(), buf.len()));
            }
            Out::Stream(
                SharedMut(buf.as_mut_ptr()),
                add,
                SharedMut(copy.as_mut_ptr()),
            )
        }
    };
    let m = os.pixels();
    if m == 0 || os.c == 0 {
        return Ok(os);
    }
    let threads = rayon::current_num_threads().max(1);
    let (mc, nt) = tiles(m, os.c, threads, kernel.mr());
    let kblocks = plan.k2.div_ceil(KC_MAX).max(1);
    // At most KC_MAX (a multiple of KPAD), and (kblocks - 1) * kc < k2 as k2 > (kblocks - 1) *
    // KC_MAX: every block has pairs.
    let kc = plan.k2.div_ceil(kblocks).next_multiple_of(KPAD);
    let job = Job {
        plan,
        x,
        xs,
        os,
        out,
        mc,
        nt,
        kc,
        kblocks,
    };
    let n_tiles = (plan.panels() * NR).div_ceil(nt);
    let partial_len = if kblocks > 1 { mc * nt } else { 0 };
    team::for_each(m.div_ceil(mc) * n_tiles, |item| {
        with_thread_buffer(&PACKED_A, mc * KC_MAX, |a| {
            with_thread_buffer(&PARTIAL, partial_len, |c| match kernel {
                Kernel::Reference => run_item::<reference::Micro>(&job, item, n_tiles, a, c),
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `kernel.check()` above found AVX512_BF16 and AVX-512F on this CPU.
                Kernel::Avx512Bf16 => unsafe { avx512::run_item(&job, item, n_tiles, a, c) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: `kernel.check()` above found AMX usable (tile data granted) and
                // AVX-512F/BW/VL.
                Kernel::Amx => unsafe { amx::run_item(&job, item, n_tiles, a, c) },
                #[cfg(not(target_arch = "x86_64"))]
                Kernel::Avx512Bf16 | Kernel::Amx => unreachable!("refused by Kernel::check"),
            })
        })
    });
    Ok(os)
}

/// A microkernel: `c = (accumulate ? c : 0) + A B` for an `MR x NR` block `c` (row-major
/// f32), `A` a packed panel of `MR` rows of `kc` words at a stride of [`KC_MAX`] words (row
/// `r`'s pair `p` at `a[r * KC_MAX + p]`: a constant offset per row, so the kernel addresses
/// every row from one pointer), `B` a panel of `kc x NR` words. Both are zero from pair `kc`
/// to `kc.next_multiple_of(KPAD)`, which a kernel may read.
pub(crate) trait Microkernel {
    /// Rows of the block (pixels), at most `MR_MAX`.
    const MR: usize;
    /// # Safety
    /// `a` holds `MR * KC_MAX` words, `b` `kc.next_multiple_of(KPAD) * NR` words and `c`
    /// `MR * NR` values, `kc <= KC_MAX`; the pairs past `kc` are zero; the CPU has the
    /// instructions the kernel uses (for AMX, with the tiles configured).
    unsafe fn run(kc: usize, a: *const u32, b: *const u32, c: *mut f32, accumulate: bool);
}

/// Work item `item` of `job`: one tile of pixels and output channels, every reduction block.
/// Inlined into a copy compiled with AVX-512 for the hardware kernel, so that the packing
/// and the epilogue are vectorized there.
#[inline(always)]
fn run_item<M: Microkernel>(
    job: &Job<'_>,
    item: usize,
    n_tiles: usize,
    a: &mut [u32],
    c: &mut [f32],
) {
    let plan = job.plan;
    let m = job.os.pixels();
    let (mt, nt_i) = (item / n_tiles, item % n_tiles);
    let m0 = mt * job.mc;
    let rows = job.mc.min(m - m0);
    let mr = M::MR;
    let m_panels = rows.div_ceil(mr);
    let j0 = nt_i * job.nt / NR;
    let j1 = ((nt_i + 1) * job.nt / NR).min(plan.panels());
    let mut local = [0f32; MR_MAX * NR];
    for kb in 0..job.kblocks {
        let p0 = kb * job.kc;
        let kc = job.kc.min(plan.k2 - p0);
        pack_a(job, m0, m_panels * mr, p0, kc, a);
        let (first, last) = (kb == 0, kb + 1 == job.kblocks);
        for j in j0..j1 {
            let b = plan.panel(j, p0, kc);
            for i in 0..m_panels {
                let block: &mut [f32] = if job.kblocks == 1 {
                    &mut local[..mr * NR]
                } else {
                    &mut c[((j - j0) * m_panels + i) * mr * NR..][..mr * NR]
                };
                let ap = &a[i * mr * KC_MAX..][..mr * KC_MAX];
                // SAFETY: the slices have the lengths `run` needs (kc <= KC_MAX); the caller
                // chose `M` for this CPU.
                unsafe { M::run(kc, ap.as_ptr(), b.as_ptr(), block.as_mut_ptr(), !first) };
                if last {
                    let r0 = m0 + i * mr;
                    finish(job, block, r0, (m - r0).min(mr), j * NR);
                }
            }
        }
    }
}

/// Pack pairs `p0..p0 + kc` of the im2col rows of pixels `m0..m0 + rows` into `a` (row `rr`
/// at `a[rr * KC_MAX..][..kc]`, then zeros to `kc.next_multiple_of(KPAD)`); rows past the
/// last pixel are zeros.
#[inline(always)]
fn pack_a(job: &Job<'_>, m0: usize, rows: usize, p0: usize, kc: usize, a: &mut [u32]) {
    let (plan, xs, os) = (job.plan, job.xs, job.os);
    let cp = xs.c.div_ceil(2);
    let (k, stride, pad) = (plan.kernel, plan.stride, plan.pad);
    let m = os.pixels();
    let pointwise = k == 1 && stride == 1 && pad == 0;
    for (rr, row) in a.chunks_exact_mut(KC_MAX).take(rows).enumerate() {
        let (row, zeros) = row[..kc.next_multiple_of(KPAD)].split_at_mut(kc);
        zeros.fill(0);
        let px = m0 + rr;
        if px >= m {
            row.fill(0);
            continue;
        }
        if pointwise {
            row.copy_from_slice(&job.x[px * cp + p0..][..kc]);
            continue;
        }
        let (ox, oy, b) = (px % os.w, (px / os.w) % os.h, px / (os.w * os.h));
        let mut p = p0;
        while p < p0 + kc {
            let (tap, q0) = (p / cp, p % cp);
            let (ky, kx) = (tap / k, tap % k);
            let iy = (oy * stride + ky).checked_sub(pad).filter(|&v| v < xs.h);
            let ix = (ox * stride + kx).checked_sub(pad).filter(|&v| v < xs.w);
            // Taps kx..kx + r of row ky read input pixels ix..ix + r, neighbours in memory:
            // one copy for all of them that are inside the input (and the block); one tap of
            // zeros outside.
            let taps = match (iy, ix) {
                (Some(_), Some(ix)) => (k - kx).min(xs.w - ix),
                _ => 1,
            };
            let end = (p - q0 + taps * cp).min(p0 + kc);
            let dst = &mut row[p - p0..end - p0];
            match (iy, ix) {
                (Some(iy), Some(ix)) => {
                    let at = ((b * xs.h + iy) * xs.w + ix) * cp + q0;
                    dst.copy_from_slice(&job.x[at..at + (end - p)]);
                }
                _ => dst.fill(0),
            }
            p = end;
        }
    }
}
