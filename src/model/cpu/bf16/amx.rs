//! The AMX microkernel: a 32 x 32 block of f32 accumulators in four tiles (`tmm0`-`tmm3`, 16
//! rows of 16 values each), fed per step of 16 channel pairs by two tiles of inputs (`tmm4`,
//! `tmm5`: pixels 0-15 and 16-31) and two of weights (`tmm6`, `tmm7`: output channels 0-15
//! and 16-31), four `tdpbf16ps` per step. The packed inputs (rows at a stride of `KC_MAX`
//! words) and the weight panels (16 pairs of `NR` words per step, pair-interleaved: AMX's
//! "VNNI" layout of `B`) are read as they are; the reduction is padded with zero pairs to a
//! multiple of 16 ([`super::KPAD`]).
//!
//! AMX intrinsics are unstable in Rust, so the instructions are written with `asm!`. Linux
//! hands a process the tile data (8 KiB of state per thread) only when asked
//! (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`), once per process: [`usable`]
//! asks on first use and reports a refusal through [`refused`], and the `vdpbf16ps` kernel
//! runs instead. `FRACTURE_AMX=off` ([`AMX_VAR`], read once per process) rules AMX out the
//! same way: a way to time or check the `vdpbf16ps` kernel on an AMX CPU.
//!
//! **Arithmetic.** `tdpbf16ps` multiplies bf16 pairs exactly and sums in f32, but not in the
//! order of Intel's pseudo-code (the reference's `acc + a1 b1 + a0 b0`, pair after pair):
//! on 51,200 random sums of 16 pairs (Sapphire Rapids-class Xeon, 2026-12-06) no candidate
//! matched it in more than 42 % of cases (pair after pair with either element first, rounding
//! to nearest or down, pairs fused, the exact sum rounded once), and it was within 5.4 f32
//! ulps (2^-24) of the exact sum relative to the sum of the terms' magnitudes (the sequential
//! reference order: 8.5). The tests therefore hold it to a bound, not to the
//! bit.

use super::{Job, Microkernel, KC_MAX, KPAD, MR_MAX, NR};
use std::arch::asm;
use std::sync::OnceLock;

const _: () = assert!(
    NR == 32 && MR_MAX == 32 && KPAD == 16,
    "the kernel holds 2 x 2 tiles of 16 x 16 f32 and steps 16 pairs"
);

/// Bytes between rows of the packed inputs, of the weight panels and of the block.
const A_STRIDE: usize = KC_MAX * 4;
const B_STRIDE: usize = NR * 4;
const C_STRIDE: usize = NR * 4;
/// Byte offsets of the second tile of inputs (row 16), weights and block (column 16, row 16).
const A_TILE1: usize = 16 * A_STRIDE;
const HALF: usize = 64;
const C_ROW16: usize = 16 * C_STRIDE;

/// The environment variable that turns AMX off (`off` or `0`; `on`, `1` or empty: used where
/// it runs). Another value is reported on stderr and ignored.
pub(crate) const AMX_VAR: &str = "FRACTURE_AMX";

/// What the CPU and the OS allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Grant {
    /// The CPU lacks AMX-BF16, AMX-TILE or AVX-512F/BW/VL.
    NoCpu,
    /// Turned off by [`AMX_VAR`].
    TurnedOff,
    /// The CPU has them but the OS refused the tile data.
    Refused,
    /// Tile data granted to this process.
    Granted,
}

fn grant() -> Grant {
    static GRANT: OnceLock<Grant> = OnceLock::new();
    *GRANT.get_or_init(|| {
        if !cpu_has_amx() {
            Grant::NoCpu
        } else if turned_off() {
            Grant::TurnedOff
        } else if request_tile_data() {
            Grant::Granted
        } else {
            Grant::Refused
        }
    })
}

/// Whether the AMX kernel runs here: the CPU has it and the OS granted the tile data (asked
/// once per process, on the first call).
pub(super) fn usable() -> bool {
    grant() == Grant::Granted
}

/// Whether the CPU has AMX but the OS refused this process the tile data.
pub(super) fn refused() -> bool {
    grant() == Grant::Refused
}

/// Whether the CPU has AMX but [`AMX_VAR`] turned it off.
pub(super) fn turned_off_here() -> bool {
    grant() == Grant::TurnedOff
}

/// Whether [`AMX_VAR`] says `off` (a value it does not know is reported and ignored).
fn turned_off() -> bool {
    let value = std::env::var_os(AMX_VAR);
    let value = value.as_deref().map(|v| v.to_str().unwrap_or("not UTF-8"));
    parse_switch(value).unwrap_or_else(|message| {
        eprintln!("fracture: {message}; ignored");
        false
    })
}

/// `Ok(true)` for `off`/`0`, `Ok(false)` for `on`/`1`/empty/unset, else an error naming the
/// variable and the value.
pub(super) fn parse_switch(value: Option<&str>) -> Result<bool, String> {
    match value.map(str::trim) {
        None | Some("" | "on" | "1") => Ok(false),
        Some("off" | "0") => Ok(true),
        Some(other) => Err(format!("{AMX_VAR}={other:?} is neither on (1) nor off (0)")),
    }
}

/// AMX-BF16 and AMX-TILE (CPUID leaf 7, EDX bits 22 and 24; their detection macros are
/// unstable in Rust), and AVX-512F/BW/VL for the packing and the epilogue.
fn cpu_has_amx() -> bool {
    use std::arch::x86_64::{__cpuid, __cpuid_count};
    #[allow(unused_unsafe)]
    // SAFETY: CPUID exists on every x86-64 CPU; leaf 7 is read only where leaf 0 lists it.
    let edx = unsafe {
        if __cpuid(0).eax < 7 {
            return false;
        }
        __cpuid_count(7, 0).edx
    };
    let amx = edx & (1 << 22) != 0 && edx & (1 << 24) != 0;
    amx && std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vl")
}

/// Ask Linux for the AMX tile data (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`);
/// `true` when granted.
#[cfg(target_os = "linux")]
fn request_tile_data() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: this arch_prctl takes two integers and touches no memory of the process.
    let r = unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        )
    };
    r == 0
}

/// Other systems: not asked, so not used.
#[cfg(not(target_os = "linux"))]
fn request_tile_data() -> bool {
    false
}

/// The tile configuration: palette 1, all eight tiles 16 rows of 64 bytes.
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

static CONFIG: TileConfig = {
    let mut c = [0u8; 64];
    c[0] = 1;
    let mut t = 0;
    while t < 8 {
        c[16 + 2 * t] = 64; // colsb, little-endian u16
        c[48 + t] = 16; // rows
        t += 1;
    }
    TileConfig(c)
};

/// The `tdpbf16ps` microkernel (the tiles configured by [`run_item`]).
pub(crate) struct Micro;

impl Microkernel for Micro {
    const MR: usize = MR_MAX;

    unsafe fn run(kc: usize, a: *const u32, b: *const u32, c: *mut f32, accumulate: bool) {
        // The accumulator tiles tmm0-tmm3 live from one asm! block to the next: sound because
        // rustc never emits AMX instructions itself and nothing else is called in between.
        // SAFETY (every block): the caller's contract: `c` holds 32 x 32 f32 (rows of
        // C_STRIDE bytes); `a` 32 rows at A_STRIDE bytes with pairs to kc rounded up to 16;
        // `b` that many pairs of NR words; the tiles configured as `CONFIG`.
        unsafe {
            if accumulate {
                asm!(
                    "tileloadd tmm0, [{c} + {s}]",
                    "tileloadd tmm1, [{c} + {s} + {half}]",
                    "tileloadd tmm2, [{c} + {s} + {row16}]",
                    "tileloadd tmm3, [{c} + {s} + {row16} + {half}]",
                    c = in(reg) c,
                    s = in(reg) C_STRIDE,
                    half = const HALF,
                    row16 = const C_ROW16,
                    options(nostack, readonly, preserves_flags),
                );
            } else {
                asm!(
                    "tilezero tmm0",
                    "tilezero tmm1",
                    "tilezero tmm2",
                    "tilezero tmm3",
                    options(nostack, nomem, preserves_flags),
                );
            }
            for step in 0..kc.div_ceil(KPAD) {
                asm!(
                    "tileloadd tmm4, [{a} + {sa}]",
                    "tileloadd tmm6, [{b} + {sb}]",
                    "tileloadd tmm7, [{b} + {sb} + {half}]",
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    "tileloadd tmm5, [{a} + {sa} + {a1}]",
                    "tdpbf16ps tmm1, tmm4, tmm7",
                    "tdpbf16ps tmm2, tmm5, tmm6",
                    "tdpbf16ps tmm3, tmm5, tmm7",
                    a = in(reg) a.add(step * KPAD),
                    b = in(reg) b.add(step * KPAD * NR),
                    sa = in(reg) A_STRIDE,
                    sb = in(reg) B_STRIDE,
                    half = const HALF,
                    a1 = const A_TILE1,
                    options(nostack, readonly, preserves_flags),
                );
            }
            asm!(
                "tilestored [{c} + {s}], tmm0",
                "tilestored [{c} + {s} + {half}], tmm1",
                "tilestored [{c} + {s} + {row16}], tmm2",
                "tilestored [{c} + {s} + {row16} + {half}], tmm3",
                c = in(reg) c,
                s = in(reg) C_STRIDE,
                half = const HALF,
                row16 = const C_ROW16,
                options(nostack, preserves_flags),
            );
        }
    }
}

/// [`super::run_item`] with the AMX microkernel between a tile configuration and its
/// release, compiled with AVX-512 (packing and epilogue vectorized).
///
/// # Safety
/// [`usable`] is true (AMX granted, AVX-512F/BW/VL present).
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(super) unsafe fn run_item(
    job: &Job<'_>,
    item: usize,
    n_tiles: usize,
    a: &mut [u32],
    c: &mut [f32],
) {
    // SAFETY: AMX is usable (the caller's contract); CONFIG is a valid palette-1 configuration.
    unsafe {
        asm!(
            "ldtilecfg [{cfg}]",
            cfg = in(reg) CONFIG.0.as_ptr(),
            options(nostack, readonly, preserves_flags),
        );
    }
    /// Releases the tiles when dropped, also when the work item panics (a long-lived worker
    /// thread must not keep them configured).
    struct Release;
    impl Drop for Release {
        fn drop(&mut self) {
            // SAFETY: the tiles were configured above and are not used after this.
            unsafe { asm!("tilerelease", options(nostack, nomem, preserves_flags)) };
        }
    }
    let _release = Release;
    super::run_item::<Micro>(job, item, n_tiles, a, c);
}

/// `f` with the tiles configured for [`Micro`], for the microkernel's measurement.
///
/// # Safety
/// [`usable`] is true.
#[cfg(test)]
pub(super) unsafe fn with_tiles<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: the caller's contract; CONFIG is a valid palette-1 configuration.
    unsafe {
        asm!(
            "ldtilecfg [{cfg}]",
            cfg = in(reg) CONFIG.0.as_ptr(),
            options(nostack, readonly, preserves_flags),
        );
    }
    let r = f();
    // SAFETY: as above.
    unsafe { asm!("tilerelease", options(nostack, nomem, preserves_flags)) };
    r
}
