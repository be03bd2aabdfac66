//! EfficientNet-Lite's architecture as data: one short string per stage, decoded here, with the
//! width and depth multipliers applied in this one place.
//!
//! A stage string follows timm's notation: the block type (`ds`: depthwise-separable, `ir`:
//! inverted residual) then options joined by `_`: `r` repeats, `k` depthwise kernel, `s` stride
//! of the stage's first block, `e` expansion ratio, `c` output channels. Lite0's stages are
//! [`LITE_STAGES`]. The Lite family scales widths with [`round_channels`] (multiples of 8,
//! never more than 10 % below the exact value) and depths with [`scale_depth`] (rounded up),
//! and keeps the stem, the head and the depth of the first and last stages fixed.
//!
//! Convolutions pad like TensorFlow's `"SAME"` ([`same_padding`]): the output has
//! `ceil(size / stride)` pixels, and when the total padding is odd the extra row or column goes
//! to the bottom or right (timm's `Conv2dSame`).

use crate::error::{Error, Result};

/// The seven stages of EfficientNet-Lite0 (timm's `_gen_efficientnet_lite`; the same as
/// EfficientNet-B0 without squeeze-excitation).
pub const LITE_STAGES: [&str; 7] = [
    "ds_r1_k3_s1_e1_c16",
    "ir_r2_k3_s2_e6_c24",
    "ir_r2_k5_s2_e6_c40",
    "ir_r3_k3_s2_e6_c80",
    "ir_r3_k5_s1_e6_c112",
    "ir_r4_k5_s2_e6_c192",
    "ir_r1_k3_s1_e6_c320",
];

/// The two block types of EfficientNet-Lite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// `ds`: depthwise k x k conv, BN, ReLU6, pointwise conv, BN (timm's `DepthwiseSeparableConv`;
    /// variables `conv_dw`, `bn1`, `conv_pw`, `bn2`).
    DepthwiseSeparable,
    /// `ir`: pointwise expansion, BN, ReLU6, depthwise k x k conv, BN, ReLU6, pointwise
    /// projection, BN (timm's `InvertedResidual`; variables `conv_pw`, `bn1`, `conv_dw`, `bn2`,
    /// `conv_pwl`, `bn3`).
    InvertedResidual,
}

/// One stage string, decoded but not yet scaled.
///
/// ```
/// use fracture::model::{BlockKind, StageSpec};
/// let s = StageSpec::parse("ir_r3_k5_s2_e6_c80")?;
/// assert_eq!((s.kind, s.repeats, s.kernel, s.stride, s.out_channels), (BlockKind::InvertedResidual, 3, 5, 2, 80));
/// assert!(StageSpec::parse("ir_r2_k3_s2_e6_c24_se0.25").is_err()); // no squeeze-excitation in Lite
/// # Ok::<(), fracture::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct StageSpec {
    /// Block type.
    pub kind: BlockKind,
    /// Number of blocks before the depth multiplier.
    pub repeats: usize,
    /// Depthwise kernel size (odd).
    pub kernel: usize,
    /// Stride of the stage's first block (1 or 2); the others have stride 1.
    pub stride: usize,
    /// Expansion ratio of inverted residual blocks (1 for `ds`).
    pub expansion: f64,
    /// Output channels before the width multiplier.
    pub out_channels: usize,
}

impl StageSpec {
    /// Decode a timm-style stage string such as `ir_r2_k3_s2_e6_c24`.
    pub fn parse(text: &str) -> Result<Self> {
        let bad = |why: String| Error::InvalidConfig(format!("stage {text:?}: {why}"));
        let mut parts = text.split('_');
        let kind = match parts.next() {
            Some("ds") => BlockKind::DepthwiseSeparable,
            Some("ir") => BlockKind::InvertedResidual,
            other => {
                return Err(bad(format!(
                    "block type {other:?} is not `ds` or `ir` (EfficientNet-Lite has no others)"
                )))
            }
        };
        let (mut repeats, mut kernel, mut stride, mut expansion, mut out) =
            (None, None, None, None, None);
        for option in parts {
            let (key, value) = option.split_at(option.len().min(1));
            let int = || {
                value
                    .parse::<usize>()
                    .map_err(|_| bad(format!("option {option:?} needs a whole number")))
            };
            match key {
                "r" => repeats = Some(int()?),
                "k" => kernel = Some(int()?),
                "s" => stride = Some(int()?),
                "c" => out = Some(int()?),
                "e" => {
                    expansion = Some(
                        value
                            .parse::<f64>()
                            .map_err(|_| bad(format!("option {option:?} needs a number")))?,
                    )
                }
                _ => {
                    return Err(bad(format!(
                        "unknown option {option:?} (Lite stages take r, k, s, e and c only)"
                    )))
                }
            }
        }
        let need = |v: Option<usize>, what: &str| v.ok_or_else(|| bad(format!("missing {what}")));
        let spec = Self {
            kind,
            repeats: need(repeats, "the repeat count `r`")?,
            kernel: need(kernel, "the kernel size `k`")?,
            stride: need(stride, "the stride `s`")?,
            expansion: expansion.unwrap_or(1.0),
            out_channels: need(out, "the output channels `c`")?,
        };
        spec.validate().map_err(|e| bad(e.to_string()))?;
        Ok(spec)
    }

    fn validate(&self) -> Result<()> {
        if self.repeats == 0 || self.out_channels == 0 {
            return Err(Error::InvalidConfig(
                "repeats and channels must be positive".into(),
            ));
        }
        if self.kernel.is_multiple_of(2) || self.kernel > 15 {
            return Err(Error::InvalidConfig(format!(
                "kernel {} must be odd and at most 15",
                self.kernel
            )));
        }
        if self.stride != 1 && self.stride != 2 {
            return Err(Error::InvalidConfig(format!(
                "stride {} must be 1 or 2",
                self.stride
            )));
        }
        if !(self.expansion.is_finite() && (1.0..=16.0).contains(&self.expansion)) {
            return Err(Error::InvalidConfig(format!(
                "expansion {} must be between 1 and 16",
                self.expansion
            )));
        }
        Ok(())
    }
}

/// One block of a built network, with the multipliers applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockSpec {
    /// Block type.
    pub kind: BlockKind,
    /// Input channels.
    pub in_channels: usize,
    /// Channels of the depthwise convolution (`in_channels` for `ds`, the expanded width for `ir`).
    pub mid_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Depthwise kernel size.
    pub kernel: usize,
    /// Depthwise stride.
    pub stride: usize,
}

impl BlockSpec {
    /// Whether the block adds its input to its output (stride 1 and as many channels out as in).
    pub fn has_residual(&self) -> bool {
        self.stride == 1 && self.in_channels == self.out_channels
    }
}

/// `channels * multiplier` rounded to the nearest multiple of 8 (at least 8), one multiple more
/// when that is over 10 % below the exact value (timm's `round_channels` / `make_divisible`).
///
/// ```
/// use fracture::model::round_channels;
/// assert_eq!(round_channels(320, 1.0), 320);
/// assert_eq!(round_channels(320, 1.4), 448);
/// assert_eq!(round_channels(16, 1.1), 16);
/// assert_eq!(round_channels(24, 1.2), 32);
/// ```
pub fn round_channels(channels: usize, multiplier: f64) -> usize {
    make_divisible(channels as f64 * multiplier)
}

/// `value` rounded to a multiple of 8 as [`round_channels`] does.
pub(crate) fn make_divisible(value: f64) -> usize {
    const DIVISOR: usize = 8;
    let rounded = ((value + DIVISOR as f64 / 2.0) as usize / DIVISOR * DIVISOR).max(DIVISOR);
    if (rounded as f64) < 0.9 * value {
        rounded + DIVISOR
    } else {
        rounded
    }
}

/// A stage's block count under `multiplier`, rounded up (timm's `depth_trunc='ceil'`).
///
/// ```
/// use fracture::model::scale_depth;
/// assert_eq!(scale_depth(3, 1.1), 4);
/// assert_eq!(scale_depth(4, 1.8), 8);
/// assert_eq!(scale_depth(2, 1.0), 2);
/// ```
pub fn scale_depth(repeats: usize, multiplier: f64) -> usize {
    // The small tolerance keeps an exact product (2 x 1.0) from being pushed up by rounding.
    ((repeats as f64 * multiplier) - 1e-9).ceil().max(1.0) as usize
}

/// TensorFlow `"SAME"` padding of one side: `(before, after)` for an input of `size` pixels, so
/// that the output has `ceil(size / stride)` pixels; an odd total puts the extra pixel after.
///
/// ```
/// use fracture::model::same_padding;
/// assert_eq!(same_padding(224, 3, 2), (0, 1));
/// assert_eq!(same_padding(56, 5, 2), (1, 2));
/// assert_eq!(same_padding(57, 5, 2), (2, 2));
/// assert_eq!(same_padding(14, 5, 1), (2, 2));
/// ```
pub fn same_padding(size: usize, kernel: usize, stride: usize) -> (usize, usize) {
    let stride = stride.max(1);
    let out = size.div_ceil(stride);
    let total = ((out.saturating_sub(1)) * stride + kernel).saturating_sub(size);
    (total / 2, total - total / 2)
}

/// The blocks of every stage for the given multipliers, stem width and stage strings.
/// The first and last stages keep their depth (EfficientNet-Lite's rule).
pub(crate) fn build_stages(
    stages: &[StageSpec],
    stem_channels: usize,
    width: f64,
    depth: f64,
) -> Vec<Vec<BlockSpec>> {
    let last = stages.len().saturating_sub(1);
    let mut in_channels = stem_channels;
    stages
        .iter()
        .enumerate()
        .map(|(s, stage)| {
            let fixed = s == 0 || s == last;
            let repeats = if fixed {
                stage.repeats
            } else {
                scale_depth(stage.repeats, depth)
            };
            let out_channels = round_channels(stage.out_channels, width);
            (0..repeats)
                .map(|b| {
                    let mid_channels = match stage.kind {
                        BlockKind::DepthwiseSeparable => in_channels,
                        BlockKind::InvertedResidual => {
                            make_divisible(in_channels as f64 * stage.expansion)
                        }
                    };
                    let block = BlockSpec {
                        kind: stage.kind,
                        in_channels,
                        mid_channels,
                        out_channels,
                        kernel: stage.kernel,
                        stride: if b == 0 { stage.stride } else { 1 },
                    };
                    in_channels = out_channels;
                    block
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lite0_stages_decode_to_timms_widths() {
        let stages: Vec<StageSpec> = LITE_STAGES
            .iter()
            .map(|s| StageSpec::parse(s).unwrap())
            .collect();
        let blocks = build_stages(&stages, 32, 1.0, 1.0);
        let counts: Vec<usize> = blocks.iter().map(Vec::len).collect();
        assert_eq!(counts, vec![1, 2, 2, 3, 3, 4, 1]);
        let mids: Vec<usize> = blocks.iter().map(|s| s[0].mid_channels).collect();
        assert_eq!(mids, vec![32, 96, 144, 240, 480, 672, 1152]);
        assert!(!blocks[0][0].has_residual());
        assert!(blocks[1][1].has_residual());
        assert!(!blocks[4][0].has_residual(), "80 -> 112 channels");
    }

    #[test]
    fn stage_strings_are_checked() {
        for bad in [
            "xx_r1_k3_s1_c16",
            "ir_r1_k4_s1_e6_c16",
            "ir_r1_k3_s3_e6_c16",
            "ir_k3_s1_e6_c16",
            "ir_r1_k3_s1_e6_c16_noskip",
            "ir_r0_k3_s1_e6_c16",
            "ir_rX_k3_s1_e6_c16",
        ] {
            assert!(StageSpec::parse(bad).is_err(), "{bad}");
        }
    }
}
