//! Kernels compiled for the widest vector instructions the CPU has.
//!
//! The crate is built for the baseline x86-64 (SSE2), so plain loops vectorize to 4 lanes.
//! [`vectorized!`](crate::model::efficientnet::simd) defines a function that calls an
//! `#[inline(always)]` kernel from copies compiled with AVX-512 or AVX2 + FMA enabled, and
//! picks the widest one this CPU has at run time, capped by `FRACTURE_SIMD` ([`level`], read
//! once per process); elsewhere it calls the kernel as it is. The kernel must be
//! `#[inline(always)]` so that its loops are compiled inside the copies (a closure would stay a
//! separate, baseline function).

/// `vectorized!(pub(crate) fn name(a: A, b: B) -> R => kernel);` defines `name`, which runs
/// `kernel(a, b)` compiled for AVX-512 or AVX2 + FMA when [`level`] allows them.
macro_rules! vectorized {
    ($vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? => $kernel:path) => {
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                unsafe fn avx512($($arg: $ty),*) $(-> $ret)? {
                    $kernel($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                    $kernel($($arg),*)
                }
                match $crate::model::efficientnet::simd::level() {
                    // SAFETY: `level` returns Avx512 only when the CPU has AVX-512F.
                    $crate::model::efficientnet::simd::Level::Avx512 => {
                        return unsafe { avx512($($arg),*) };
                    }
                    // SAFETY: `level` returns Avx2 only when the CPU has AVX2 and FMA.
                    $crate::model::efficientnet::simd::Level::Avx2 => {
                        return unsafe { avx2($($arg),*) };
                    }
                    $crate::model::efficientnet::simd::Level::Baseline => {}
                }
            }
            $kernel($($arg),*)
        }
    };
}

/// The environment variable that caps the instruction set of the kernels: `avx512`, `avx2` or
/// `baseline` (any case). It is a cap, not a demand: `avx512` on a CPU without AVX-512 gives
/// AVX2. CI runs the EfficientNet tests under each value, so the narrower copies, which this
/// project's AVX-512 machines would otherwise never run, are tested; a user can set it to rule
/// the wide copies out when chasing a numerical difference.
pub(crate) const SIMD_VAR: &str = "FRACTURE_SIMD";

/// The instruction sets a kernel is compiled for, narrowest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Level {
    /// The crate's build target as it is (SSE2 on x86-64; anything on other architectures).
    Baseline,
    /// AVX2 and FMA.
    Avx2,
    /// AVX-512F.
    Avx512,
}

/// The widest level this CPU has, capped by [`SIMD_VAR`]; read once per process. An empty value
/// counts as unset; one that is not one of the names is reported on stderr (once) and ignored.
pub(crate) fn level() -> Level {
    static LEVEL: std::sync::OnceLock<Level> = std::sync::OnceLock::new();
    *LEVEL.get_or_init(|| {
        let cap = match std::env::var(SIMD_VAR) {
            Err(std::env::VarError::NotPresent) => Level::Avx512,
            Err(std::env::VarError::NotUnicode(_)) => {
                eprintln!("fracture: {SIMD_VAR} is not UTF-8; ignored");
                Level::Avx512
            }
            Ok(value) => parse_level(&value).unwrap_or_else(|message| {
                eprintln!("fracture: {message}; ignored");
                Level::Avx512
            }),
        };
        detected().min(cap)
    })
}

/// The cap a value sets: `avx512`, `avx2` or `baseline`, in any case and with surrounding
/// spaces; empty is no cap (as if unset).
fn parse_level(value: &str) -> Result<Level, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "" | "avx512" => Ok(Level::Avx512),
        "avx2" => Ok(Level::Avx2),
        "baseline" => Ok(Level::Baseline),
        _ => Err(format!(
            "{SIMD_VAR}={value:?} is not one of avx512, avx2, baseline"
        )),
    }
}

/// The widest level the CPU running this process has.
fn detected() -> Level {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            return Level::Avx512;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            return Level::Avx2;
        }
    }
    Level::Baseline
}

pub(crate) use vectorized;

#[cfg(test)]
mod tests {
    use super::*;

    #[inline(always)]
    fn sum_kernel(xs: &[f32]) -> f32 {
        xs.iter().sum()
    }

    vectorized!(fn sum(xs: &[f32]) -> f32 => sum_kernel);

    #[test]
    fn the_dispatched_kernel_returns_the_kernels_value() {
        let xs: Vec<f32> = (0..100).map(|i| i as f32).collect();
        assert_eq!(sum(&xs), 4950.0);
    }

    #[test]
    fn levels_parse_in_any_case_and_others_are_refused_by_name() {
        assert_eq!(parse_level("AVX512"), Ok(Level::Avx512));
        assert_eq!(parse_level(" avx2 "), Ok(Level::Avx2));
        assert_eq!(parse_level("Baseline"), Ok(Level::Baseline));
        let message = parse_level("sse4").unwrap_err();
        assert!(
            message.contains("FRACTURE_SIMD") && message.contains("sse4"),
            "{message}"
        );
        assert_eq!(parse_level(" "), Ok(Level::Avx512), "empty is no cap");
    }

    /// The widest level the CPU offers according to the kernel's `/proc/cpuinfo` flags: a
    /// source independent of [`detected`]'s CPUID probe.
    #[cfg(target_os = "linux")]
    fn level_from_cpuinfo() -> Level {
        let text = std::fs::read_to_string("/proc/cpuinfo").expect("/proc/cpuinfo is readable");
        let flags: Vec<&str> = text
            .lines()
            .find(|line| line.starts_with("flags"))
            .and_then(|line| line.split(':').nth(1))
            .map(|flags| flags.split_whitespace().collect())
            .unwrap_or_default();
        let has = |flag: &str| flags.contains(&flag);
        if has("avx512f") {
            Level::Avx512
        } else if has("avx2") && has("fma") {
            Level::Avx2
        } else {
            Level::Baseline
        }
    }

    /// With `FRACTURE_SIMD` set (as CI does), the kernels run at most at that level; without it
    /// (or empty, or not a level name), at the CPU's widest, as `/proc/cpuinfo` lists it.
    #[cfg(target_os = "linux")]
    #[test]
    fn the_level_honours_the_environment() {
        let cap = match std::env::var(SIMD_VAR).map(|v| v.trim().to_ascii_lowercase()) {
            Ok(v) if v == "baseline" => Level::Baseline,
            Ok(v) if v == "avx2" => Level::Avx2,
            _ => Level::Avx512,
        };
        let cpu = level_from_cpuinfo();
        let expected = cpu.min(cap);
        assert_eq!(
            level(),
            expected,
            "CPU offers {cpu:?}, {SIMD_VAR} caps at {cap:?}"
        );
    }
}
