//! From a parsed DICOM object to the stored sample values of one frame.
//!
//! Which decoder runs (chosen by transfer syntax, after checks that keep every decoder away
//! from input that would make it panic or allocate far more than the file holds):
//! - native (explicit/implicit VR, big endian, deflated) and RLE Lossless, JPEG Lossless and
//!   (feature `jpeg2000`) JPEG 2000: dicom-pixeldata's `decode_pixel_data_frame`;
//! - JPEG baseline and extended with 8-bit samples: the `image` crate's JPEG decoder, the one
//!   that reads `.jpg` files, so a JPEG wrapped in DICOM decodes to exactly the same pixels;
//! - JPEG extended with 12-bit samples (which neither jpeg-decoder nor zune-jpeg decode):
//!   `openreadout-codecs`'s sequential 12-bit decoder;
//! - uncompressed `YBR_FULL_422` (two luma samples sharing one chroma pair), which
//!   dicom-pixeldata does not expand: here.
//!
//! Colour becomes RGB: `YBR_FULL` samples (native, RLE) and expanded `YBR_FULL_422` are
//! converted with the ITU-R BT.601 full-range matrix in `f32`, rounded half up, as pydicom
//! does; JPEG and JPEG 2000 decoders already return RGB.
//!
//! As a last resort each third-party decoder call runs under `catch_unwind`
//! ([`super::guard::guarded`]), so that a panic
//! inside a decoder on input the checks did not foresee becomes an error (this does nothing
//! in a program built with `panic = "abort"`).

use super::codestream;
use super::guard::guarded;
use super::header::{DicomInfo, Photometric};
use dicom_core::value::Value;
use dicom_dictionary_std::tags;
use dicom_object::DefaultDicomObject;
use dicom_pixeldata::PixelDecoder;
use std::borrow::Cow;

/// Largest decoded frame accepted (1 GiB of samples).
pub const MAX_FRAME_BYTES: usize = 1 << 30;

/// The stored values of one frame, row-major, channels interleaved (RGB for colour).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredFrame {
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub columns: usize,
    /// 1 (grayscale) or 3 (RGB).
    pub channels: usize,
    /// `rows * columns * channels` values: the stored sample values (signed ones sign-extended
    /// from Bits Stored), before any LUT.
    pub values: Vec<i32>,
}

/// How the pixel data of a transfer syntax is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// Native samples, or a codec that dicom-pixeldata runs (RLE, JPEG Lossless, JPEG 2000).
    PixelData,
    /// JPEG with a DCT (baseline, extended): 8-bit by the image crate, 12-bit by openreadout.
    JpegDct,
    /// Known to dicom-rs but not decodable in this build.
    Unsupported,
}

fn route(transfer_syntax: &str) -> Route {
    use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
    match transfer_syntax {
        "1.2.840.10008.1.2.4.50" | "1.2.840.10008.1.2.4.51" => Route::JpegDct,
        uid => match dicom_transfer_syntax_registry::TransferSyntaxRegistry.get(uid) {
            Some(ts) if ts.can_decode_all() => Route::PixelData,
            _ => Route::Unsupported,
        },
    }
}

/// The error for a transfer syntax this build cannot decode.
pub(crate) fn unsupported_syntax(info: &DicomInfo) -> String {
    let hint = if jpeg2000_syntax(&info.transfer_syntax) {
        " (JPEG 2000 is read with the `jpeg2000` cargo feature of fracture)"
    } else {
        ""
    };
    format!(
        "unsupported transfer syntax {} ({}): its pixel data cannot be decoded by this \
         build{hint}",
        info.transfer_syntax_name, info.transfer_syntax
    )
}

/// Whether a transfer syntax is JPEG 2000 (Part 1 or Part 2, lossless or not).
fn jpeg2000_syntax(uid: &str) -> bool {
    matches!(
        uid,
        "1.2.840.10008.1.2.4.90"
            | "1.2.840.10008.1.2.4.91"
            | "1.2.840.10008.1.2.4.92"
            | "1.2.840.10008.1.2.4.93"
    )
}

/// Check what decoding will need before any frame is decoded: a supported syntax, pixel data
/// present and long enough (native), a frame size within [`MAX_FRAME_BYTES`].
pub(crate) fn check(obj: &DefaultDicomObject, info: &DicomInfo) -> Result<(), String> {
    let pixel_data = obj
        .get(tags::PIXEL_DATA)
        .ok_or("no pixel data (7FE0,0010): not an image")?;
    if !(info.photometric.is_grayscale()
        || matches!(
            info.photometric,
            Photometric::Rgb
                | Photometric::YbrFull
                | Photometric::YbrFull422
                | Photometric::YbrJpeg2000
        ))
    {
        return Err(format!(
            "unsupported photometric interpretation {:?}",
            info.photometric
        ));
    }
    if info.photometric.is_grayscale() != (info.samples_per_pixel == 1) {
        return Err(format!(
            "photometric interpretation {:?} with {} samples per pixel",
            info.photometric, info.samples_per_pixel
        ));
    }
    let frame_bytes = info
        .frame_bytes()
        .filter(|&n| n <= MAX_FRAME_BYTES)
        .ok_or_else(|| {
            format!(
                "a {} x {} frame is larger than {} MiB",
                info.columns,
                info.rows,
                MAX_FRAME_BYTES >> 20
            )
        })?;
    match pixel_data.value() {
        Value::Primitive(value) => {
            let have = value.calculate_byte_len();
            let need = native_frame_bytes(info, frame_bytes)
                .checked_mul(info.frames as usize)
                .ok_or("the frames overflow the address space")?;
            if have < need {
                return Err(format!(
                    "pixel data shorter than the image: {have} bytes for {} frame(s) of {} x {} \
                     x {} samples at {} bits ({need} bytes)",
                    info.frames,
                    info.columns,
                    info.rows,
                    info.samples_per_pixel,
                    info.bits_allocated
                ));
            }
            Ok(())
        }
        Value::PixelSequence(_) => match route(&info.transfer_syntax) {
            Route::Unsupported => Err(unsupported_syntax(info)),
            _ => Ok(()),
        },
        Value::Sequence(_) => Err("pixel data (7FE0,0010) is a sequence".into()),
    }
}

/// Bytes of one uncompressed frame (`YBR_FULL_422` stores two samples per pixel).
fn native_frame_bytes(info: &DicomInfo, frame_bytes: usize) -> usize {
    if info.photometric == Photometric::YbrFull422 {
        frame_bytes / 3 * 2
    } else {
        frame_bytes
    }
}

/// Decode frame `frame` (0-based) to stored values. [`check`] must have passed.
pub(crate) fn decode_frame(
    obj: &DefaultDicomObject,
    info: &DicomInfo,
    frame: u32,
) -> Result<StoredFrame, String> {
    let pixel_data = obj
        .get(tags::PIXEL_DATA)
        .ok_or("no pixel data (7FE0,0010)")?;
    let (rows, columns) = (info.rows as usize, info.columns as usize);
    let channels = usize::from(info.samples_per_pixel);
    let (values, decoder_gave_rgb) = match pixel_data.value() {
        Value::Primitive(value) if info.photometric == Photometric::YbrFull422 => {
            let frame_bytes = native_frame_bytes(info, info.frame_bytes().unwrap_or(0));
            let start = frame_bytes.saturating_mul(frame as usize);
            let bytes = value.to_bytes();
            let bytes = bytes
                .get(start..start.saturating_add(frame_bytes))
                .ok_or("pixel data shorter than the image")?;
            (expand_422(&samples(bytes, info)?)?, false)
        }
        Value::PixelSequence(sequence) if route(&info.transfer_syntax) == Route::JpegDct => {
            let fragments = sequence.fragments();
            let stream = frame_stream(fragments, sequence.offset_table(), frame, info.frames)?;
            (codestream::decode_dct(&stream, info)?, channels == 3)
        }
        value => {
            if let Value::PixelSequence(sequence) = value {
                let fragments = sequence.fragments();
                if is_rle(&info.transfer_syntax) {
                    // dicom-pixeldata decodes RLE frame k from fragment k exactly.
                    let fragment = fragments
                        .get(frame as usize)
                        .ok_or_else(|| format!("no RLE fragment for frame {frame}"))?;
                    codestream::check_rle(fragment, info)?;
                } else {
                    let stream =
                        frame_stream(fragments, sequence.offset_table(), frame, info.frames)?;
                    codestream::check(&info.transfer_syntax, &stream, info)?;
                }
            }
            let encapsulated = matches!(value, Value::PixelSequence(_));
            let decoded = guarded("dicom-pixeldata", || obj.decode_pixel_data_frame(frame))?
                .map_err(|e| format!("cannot decode the pixel data: {e}"))?;
            let mut values = samples(decoded.data(), info)?;
            if info.planar && channels == 3 && !encapsulated {
                values = interleave(&values);
            }
            let jpeg_family = encapsulated && !is_rle(&info.transfer_syntax);
            (values, jpeg_family && channels == 3)
        }
    };
    let needed = rows * columns * channels;
    if values.len() < needed {
        return Err(format!(
            "the decoder returned {} samples for a {columns} x {rows} x {channels} frame",
            values.len()
        ));
    }
    let mut values = values;
    values.truncate(needed);
    if channels == 3 && !decoder_gave_rgb && info.photometric != Photometric::Rgb {
        ybr_to_rgb(&mut values, info.bits_stored);
    }
    Ok(StoredFrame {
        rows,
        columns,
        channels,
        values,
    })
}

fn is_rle(transfer_syntax: &str) -> bool {
    transfer_syntax == "1.2.840.10008.1.2.5"
}

/// The compressed bytes of one frame: all fragments for a single frame, one fragment per
/// frame when the counts match, else the Basic Offset Table.
pub(crate) fn frame_stream<'a, F: AsRef<[u8]>>(
    fragments: &'a [F],
    offset_table: &[u32],
    frame: u32,
    frames: u32,
) -> Result<Cow<'a, [u8]>, String> {
    let frame = frame as usize;
    if frames == 1 {
        return Ok(match fragments {
            [single] => Cow::Borrowed(single.as_ref()),
            many => Cow::Owned(
                many.iter()
                    .flat_map(|f| f.as_ref().iter().copied())
                    .collect(),
            ),
        });
    }
    if fragments.len() == frames as usize {
        return fragments
            .get(frame)
            .map(|f| Cow::Borrowed(f.as_ref()))
            .ok_or_else(|| format!("no fragment for frame {frame}"));
    }
    if offset_table.len() != frames as usize {
        return Err(format!(
            "{} fragments for {frames} frames and no usable offset table: cannot tell which \
             belong to frame {frame}",
            fragments.len()
        ));
    }
    let start = u64::from(offset_table.get(frame).copied().unwrap_or(0));
    let end = offset_table
        .get(frame + 1)
        .map_or(u64::MAX, |&e| u64::from(e));
    let mut offset = 0u64;
    let mut out = Vec::new();
    for fragment in fragments {
        let bytes = fragment.as_ref();
        if offset >= start && offset < end {
            out.extend_from_slice(bytes);
        }
        offset += 8 + bytes.len() as u64;
    }
    Ok(Cow::Owned(out))
}

/// Stored values from decoded sample bytes (native byte order, as dicom-pixeldata returns
/// them): masked to Bits Stored, sign-extended when signed.
pub(crate) fn samples(bytes: &[u8], info: &DicomInfo) -> Result<Vec<i32>, String> {
    let bits = u32::from(info.bits_stored);
    let mask = if bits >= 32 {
        u32::MAX
    } else {
        (1u32 << bits) - 1
    };
    let sign_bit = 1u64 << (bits - 1);
    let convert = |raw: u32| -> Option<i32> {
        let value = u64::from(raw & mask);
        if info.signed && value & sign_bit != 0 {
            i32::try_from(value as i64 - (1i64 << bits)).ok()
        } else {
            i32::try_from(value).ok()
        }
    };
    let values: Option<Vec<i32>> = match info.bits_allocated {
        8 => bytes.iter().map(|&b| convert(u32::from(b))).collect(),
        16 => bytes
            .chunks_exact(2)
            .map(|c| convert(u32::from(u16::from_ne_bytes([c[0], c[1]]))))
            .collect(),
        32 => bytes
            .chunks_exact(4)
            .map(|c| convert(u32::from_ne_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
        other => return Err(format!("Bits Allocated {other} is not read")),
    };
    values.ok_or_else(|| "32-bit unsigned samples above 2^31 are not read".to_string())
}

/// `R..R G..G B..B` planes to interleaved `RGB RGB ...`.
fn interleave(planar: &[i32]) -> Vec<i32> {
    let plane = planar.len() / 3;
    let (red, rest) = planar.split_at(plane);
    let (green, blue) = rest.split_at(plane);
    red.iter()
        .zip(green)
        .zip(blue)
        .flat_map(|((&r, &g), &b)| [r, g, b])
        .collect()
}

/// Uncompressed `YBR_FULL_422`: every 4 samples `Y1 Y2 Cb Cr` are two pixels sharing chroma.
fn expand_422(samples: &[i32]) -> Result<Vec<i32>, String> {
    if !samples.len().is_multiple_of(4) {
        return Err("YBR_FULL_422 pixel data is not a whole number of pixel pairs".into());
    }
    let mut out = Vec::with_capacity(samples.len() / 2 * 3);
    for group in samples.chunks_exact(4) {
        let (y1, y2, cb, cr) = (group[0], group[1], group[2], group[3]);
        out.extend_from_slice(&[y1, cb, cr, y2, cb, cr]);
    }
    Ok(out)
}

/// Full-range YCbCr to RGB in place: the BT.601 matrix in `f32`, `floor(x + 0.5)`, clipped.
fn ybr_to_rgb(values: &mut [i32], bits_stored: u16) {
    let max = ((1i64 << bits_stored) - 1) as f32;
    let offset = (1i64 << (bits_stored - 1)) as f32;
    // The matrix entries as pydicom builds them: computed in f64, stored as f32.
    let cb_to_g = (-0.114f64 * 1.772 / 0.587) as f32;
    let cr_to_g = (-0.299f64 * 1.402 / 0.587) as f32;
    for pixel in values.chunks_exact_mut(3) {
        let y = pixel[0] as f32;
        let cb = pixel[1] as f32 - offset;
        let cr = pixel[2] as f32 - offset;
        let rgb = [
            y + 1.402 * cr,
            y + cb_to_g * cb + cr_to_g * cr,
            y + 1.772 * cb,
        ];
        for (out, value) in pixel.iter_mut().zip(rgb) {
            *out = (value + 0.5).floor().clamp(0.0, max) as i32;
        }
    }
}
