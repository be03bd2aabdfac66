//! From stored values to display intensities in [0, 1]: the grayscale display pipeline.
//!
//! 1. **Modality LUT**: the first item of the Modality LUT Sequence if present, else
//!    `stored * RescaleSlope + RescaleIntercept` (1 and 0 when absent).
//! 2. **VOI**: the first window (Window Center / Width) with the VOI LUT Function (LINEAR
//!    unless the file says LINEAR_EXACT or SIGMOID); else the first VOI LUT Sequence item
//!    (divided by `2^bits - 1` of its descriptor); else min-max of the frame's modality
//!    values (all zeros when they are all equal). The window's output is normalised to
//!    [0, 1] directly: with LINEAR, `clamp((x - (c - 0.5)) / (w - 1) + 0.5, 0, 1)`.
//!    **Padding** (Pixel Padding Value (0028,0120), up to Pixel Padding Range Limit
//!    (0028,0121) when present, in stored values) takes no part in min-max: a border of
//!    padding at an extreme value would otherwise crush the image's contrast.
//! 3. **Inversion**, `1 - v`, at most once: a MONOCHROME1 image is inverted; a MONOCHROME2
//!    image is inverted when its Presentation LUT Shape (2050,0020) is INVERSE. (The DX
//!    module pairs MONOCHROME1 with INVERSE: both describe the one inversion.)
//! 4. **Padding pixels** are black (0), whatever the window and inversion.
//!
//! Computed in `f64`, returned as `f32`. This is the definition of the DICOM fixtures
//! (`display_definition` in their manifest: pydicom's `apply_modality_lut`, then
//! `apply_voi_lut`, normalised), except where pydicom's choices are artefacts of its output
//! range: when a file has both a window and a VOI LUT Sequence, pydicom prefers the LUT and
//! the issue asks for the window (this follows the issue); pydicom shifts a window's output
//! range by the rescale, which no fixture exercises and which this does not copy.
//! [`DisplayOptions`] selects other behaviours, in the spirit of dicom-pixeldata's
//! `ConvertOptions`.

use super::header::{DicomInfo, Photometric, VoiFunction, Window};
use super::pixels::StoredFrame;
use image::{DynamicImage, ImageBuffer, Luma, Rgb};

/// Which modality transform to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ModalityLut {
    /// The Modality LUT Sequence, else rescale slope and intercept (the default).
    #[default]
    FromTags,
    /// None: the stored values are the modality values.
    Identity,
}

/// Which values of interest become the display range.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Voi {
    /// The first window, else the first VOI LUT, else min-max (the default).
    #[default]
    FromTags,
    /// This window (with the file's VOI LUT Function).
    Window(Window),
    /// Min-max of the frame's modality values.
    MinMax,
    /// The whole range the stored bits can hold, through the modality transform.
    FullRange,
}

/// Options of the display pipeline (see the module docs for the default).
///
/// ```
/// use fracture::dataset::dicom::{DisplayOptions, Voi};
/// let options = DisplayOptions { voi: Voi::MinMax, ..DisplayOptions::default() };
/// assert!(options.invert_monochrome1);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DisplayOptions {
    /// The modality transform.
    pub modality_lut: ModalityLut,
    /// The values of interest.
    pub voi: Voi,
    /// Invert MONOCHROME1 images so that bone is bright as in MONOCHROME2 (default `true`).
    pub invert_monochrome1: bool,
    /// Invert MONOCHROME2 images whose Presentation LUT Shape is INVERSE (default `true`).
    pub presentation_lut_shape: bool,
    /// Leave padding pixels out of min-max and show them black (default `true`).
    pub pixel_padding: bool,
}

impl Default for DisplayOptions {
    fn default() -> Self {
        Self {
            modality_lut: ModalityLut::FromTags,
            voi: Voi::FromTags,
            invert_monochrome1: true,
            presentation_lut_shape: true,
            pixel_padding: true,
        }
    }
}

/// The display intensity of every pixel of a grayscale frame, row-major, in [0, 1].
pub(crate) fn display_gray(
    info: &DicomInfo,
    frame: &StoredFrame,
    options: &DisplayOptions,
) -> Result<Vec<f32>, String> {
    if frame.channels != 1 {
        return Err("the display pipeline applies to grayscale frames".into());
    }
    let modality = |stored: i32| -> f64 {
        match (&options.modality_lut, &info.modality_lut) {
            (ModalityLut::FromTags, Some(lut)) => f64::from(lut.map(f64::from(stored))),
            (ModalityLut::FromTags, None) => {
                f64::from(stored) * info.rescale.slope + info.rescale.intercept
            }
            (ModalityLut::Identity, _) => f64::from(stored),
        }
    };
    let padding = info.pixel_padding.filter(|_| options.pixel_padding);
    let is_padding =
        |stored: i32| padding.is_some_and(|(low, high)| (low..=high).contains(&stored));
    let image_values = || {
        frame
            .values
            .iter()
            .filter(|&&v| !is_padding(v))
            .map(|&v| modality(v))
    };
    let voi = match options.voi {
        Voi::FromTags => match (info.windows.first(), &info.voi_lut) {
            (Some(window), _) => Curve::window(*window, info.voi_function)?,
            (None, Some(lut)) => Curve::Lut(lut),
            (None, None) => Curve::min_max(image_values()),
        },
        Voi::Window(window) => Curve::window(window, info.voi_function)?,
        Voi::MinMax => Curve::min_max(image_values()),
        Voi::FullRange => {
            let (low, high) = stored_range(info);
            let ends = [modality(low), modality(high)];
            Curve::min_max(ends.into_iter())
        }
    };
    let invert = if info.photometric == Photometric::Monochrome1 {
        options.invert_monochrome1
    } else {
        options.presentation_lut_shape && info.presentation_inverse
    };
    Ok(frame
        .values
        .iter()
        .map(|&stored| {
            if is_padding(stored) {
                return 0.0;
            }
            let v = voi.apply(modality(stored)).clamp(0.0, 1.0);
            (if invert { 1.0 - v } else { v }) as f32
        })
        .collect())
}

/// The smallest and largest stored values Bits Stored allows.
fn stored_range(info: &DicomInfo) -> (i32, i32) {
    let bits = u32::from(info.bits_stored.min(31));
    if info.signed {
        (-(1i32 << (bits - 1)), (1i32 << (bits - 1)) - 1)
    } else {
        (0, ((1i64 << bits) - 1) as i32)
    }
}

/// A VOI transform, from modality values to [0, 1] (before clamping).
enum Curve<'a> {
    /// 0 up to `center - width / 2`, 1 above `center + width / 2`, a line between.
    Line {
        center: f64,
        width: f64,
    },
    Sigmoid {
        center: f64,
        width: f64,
    },
    Lut(&'a super::header::Lut),
    Range {
        low: f64,
        high: f64,
    },
}

impl Curve<'_> {
    fn window(window: Window, function: VoiFunction) -> Result<Self, String> {
        let Window { center, width } = window;
        match function {
            VoiFunction::Linear if width < 1.0 => Err(format!(
                "Window Width (0028,1051) is {width}, below 1 (invalid for LINEAR)"
            )),
            // PS3.3 C.11.2.1.2.1, as pydicom computes it: the line of LINEAR_EXACT for
            // (c - 0.5, w - 1). With w = 1 the line is a step at c - 0.5 (never divided by 0:
            // no value lies strictly inside an empty interval).
            VoiFunction::Linear => Ok(Curve::Line {
                center: center - 0.5,
                width: width - 1.0,
            }),
            _ if width <= 0.0 => Err(format!("Window Width (0028,1051) is {width}")),
            VoiFunction::LinearExact => Ok(Curve::Line { center, width }),
            VoiFunction::Sigmoid => Ok(Curve::Sigmoid { center, width }),
        }
    }

    fn min_max(values: impl Iterator<Item = f64>) -> Self {
        let (low, high) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
        Curve::Range { low, high }
    }

    fn apply(&self, x: f64) -> f64 {
        match *self {
            Curve::Line { center, width } => {
                if x <= center - width / 2.0 {
                    0.0
                } else if x > center + width / 2.0 {
                    1.0
                } else {
                    (x - center) / width + 0.5
                }
            }
            Curve::Sigmoid { center, width } => 1.0 / (1.0 + (-4.0 * (x - center) / width).exp()),
            Curve::Lut(lut) => f64::from(lut.map(x)) / lut.max_output(),
            Curve::Range { low, high } if high > low => (x - low) / (high - low),
            Curve::Range { .. } => 0.0,
        }
    }
}

/// A frame as an image the loader resizes: grayscale as 16-bit luma of the display intensity
/// (`round(v * 65535)`), colour as 8-bit RGB (16-bit when Bits Stored exceeds 8, scaled to
/// the full 16-bit range).
pub(crate) fn to_image(
    info: &DicomInfo,
    frame: &StoredFrame,
    options: &DisplayOptions,
) -> Result<DynamicImage, String> {
    let (width, height) = (frame.columns as u32, frame.rows as u32);
    let size_error = || "the frame does not fill its image".to_string();
    if frame.channels == 1 {
        let luma: Vec<u16> = display_gray(info, frame, options)?
            .into_iter()
            .map(|v| (f64::from(v) * 65535.0).round() as u16)
            .collect();
        let buffer = ImageBuffer::<Luma<u16>, _>::from_raw(width, height, luma);
        return buffer.map(DynamicImage::ImageLuma16).ok_or_else(size_error);
    }
    if info.bits_stored <= 8 {
        let rgb: Vec<u8> = frame
            .values
            .iter()
            .map(|&v| v.clamp(0, 255) as u8)
            .collect();
        let buffer = ImageBuffer::<Rgb<u8>, _>::from_raw(width, height, rgb);
        return buffer.map(DynamicImage::ImageRgb8).ok_or_else(size_error);
    }
    let max = ((1i64 << info.bits_stored.min(16)) - 1) as f64;
    let rgb: Vec<u16> = frame
        .values
        .iter()
        .map(|&v| (f64::from(v).clamp(0.0, max) / max * 65535.0).round() as u16)
        .collect();
    let buffer = ImageBuffer::<Rgb<u16>, _>::from_raw(width, height, rgb);
    buffer.map(DynamicImage::ImageRgb16).ok_or_else(size_error)
}
