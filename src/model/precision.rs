//! [`Precision`]: the arithmetic of the CPU fast paths' convolutions, chosen by the user, and
//! the one place that decides whether this CPU can run it.

use crate::error::{Error, Result};
use crate::model::cpu::bf16::Kernel;
use std::fmt;
use std::str::FromStr;

/// The arithmetic of the convolutions of a CPU fast path ([`crate::model::FastResNetV2`],
/// [`crate::model::FastEfficientNetLite`], and through them [`crate::FractureClassifier`]).
///
/// * [`Precision::F32`] (the default): float32 throughout; the fast path matches candle's
///   ops (and Keras) to float32 rounding.
/// * [`Precision::Bf16`]: opt-in. The convolutions' inputs and weights are rounded to bfloat16
///   (8 significant bits, round to nearest even) and multiplied with the `vdpbf16ps`
///   instruction, two multiply-adds per lane and instruction, accumulating in float32; biases,
///   activations, the residual stream and the batch-norm folding stay float32. It needs a CPU
///   with AVX512_BF16 (AMD Zen 4 and later, Intel Cooper Lake, Sapphire Rapids and later):
///   elsewhere choosing it is an error, never a silent emulation. Outputs differ from float32
///   by about 1e-2 relative (bfloat16's rounding of each input), which moves probabilities in
///   their second or third decimal: measure a bundle's metrics with it before relying on it.
///   It pays where `vdpbf16ps` runs at the rate of an f32 FMA (AMD Zen 4 and later). On Intel
///   Xeons with AMX (Sapphire Rapids and later), where `vdpbf16ps` runs at a quarter of that
///   rate, the convolutions run on AMX tiles (`tdpbf16ps`) instead, when Linux grants the
///   process the tile data; their f32 sums round in another order (within a few float32 ulps).
///   See `docs/cpu_speed.md` for speeds.
///
/// ```
/// use fracture::model::Precision;
/// assert_eq!(Precision::default(), Precision::F32);
/// assert_eq!("bf16".parse::<Precision>()?, Precision::Bf16);
/// assert_eq!(Precision::Bf16.to_string(), "bf16");
/// assert!(Precision::F32.check_supported().is_ok());
/// // Bf16 is available exactly where the CPU has AVX512_BF16.
/// assert_eq!(Precision::Bf16.check_supported().is_ok(), Precision::Bf16.is_supported());
/// # Ok::<(), fracture::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Precision {
    /// Float32 convolutions (the default).
    #[default]
    F32,
    /// Bfloat16 inputs and weights, float32 accumulation, on AVX512_BF16.
    Bf16,
}

impl Precision {
    /// Whether this CPU runs this precision on the fast path (`F32` always; `Bf16` where the
    /// CPU has AVX512_BF16 and AVX-512F).
    ///
    /// ```
    /// use fracture::model::Precision;
    /// assert!(Precision::F32.is_supported());
    /// ```
    pub fn is_supported(self) -> bool {
        self.check_supported().is_ok()
    }

    /// `Ok` when this CPU runs this precision, else an error that names what is missing.
    ///
    /// ```
    /// use fracture::model::Precision;
    /// match Precision::Bf16.check_supported() {
    ///     Ok(()) => println!("bf16 convolutions on vdpbf16ps"),
    ///     Err(e) => assert!(e.to_string().contains("AVX512_BF16")),
    /// }
    /// ```
    pub fn check_supported(self) -> Result<()> {
        match self {
            Precision::F32 => Ok(()),
            Precision::Bf16 => Kernel::hardware().map(|_| ()).ok_or_else(|| {
                Error::Device(format!(
                    "precision bf16 needs a CPU with AVX512_BF16 (vdpbf16ps; AMD Zen 4 and \
                     later, Intel Cooper Lake, Sapphire Rapids and later), and this CPU ({}) \
                     lacks it; use precision f32",
                    cpu_model_name()
                ))
            }),
        }
    }

    /// The bf16 kernel this precision runs on (`None` for f32), or the error of
    /// [`Self::check_supported`]: the one place a fast path asks which kernel to plan for.
    pub(crate) fn bf16_kernel(self) -> Result<Option<Kernel>> {
        self.check_supported()?;
        match (self, Kernel::hardware()) {
            (Precision::F32, _) => Ok(None),
            (Precision::Bf16, Some(kernel)) => Ok(Some(kernel)),
            (Precision::Bf16, None) => Err(Error::Internal(
                "bf16 was reported supported without a kernel".into(),
            )),
        }
    }

    /// The name used on command lines and in reports: `f32` or `bf16`.
    ///
    /// ```
    /// assert_eq!(fracture::model::Precision::F32.name(), "f32");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Precision {
    type Err = Error;

    /// `f32` or `bf16` (any case; `fp32`, `float32`, `bfloat16` too).
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "fp32" | "float32" => Ok(Precision::F32),
            "bf16" | "bfloat16" => Ok(Precision::Bf16),
            _ => Err(Error::InvalidConfig(format!(
                "precision must be f32 or bf16, found {s:?}"
            ))),
        }
    }
}

/// The CPU's model name from `/proc/cpuinfo`, for error messages (`unknown CPU` elsewhere).
fn cpu_model_name() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_bad_names_are_refused() {
        for p in [Precision::F32, Precision::Bf16] {
            assert_eq!(p.name().parse::<Precision>().unwrap(), p);
            assert_eq!(
                p.to_string().to_uppercase().parse::<Precision>().unwrap(),
                p
            );
        }
        let err = "f16".parse::<Precision>().unwrap_err().to_string();
        assert!(err.contains("f32 or bf16") && err.contains("f16"), "{err}");
    }

    #[test]
    fn bf16_is_supported_exactly_where_the_cpu_has_avx512_bf16() {
        #[cfg(target_arch = "x86_64")]
        let has = is_x86_feature_detected!("avx512bf16") && is_x86_feature_detected!("avx512f");
        #[cfg(not(target_arch = "x86_64"))]
        let has = false;
        println!("this CPU has AVX512_BF16: {has}");
        assert_eq!(Precision::Bf16.is_supported(), has);
        if !has {
            let err = Precision::Bf16.check_supported().unwrap_err().to_string();
            assert!(err.contains("AVX512_BF16") && err.contains("f32"), "{err}");
        }
    }
}
