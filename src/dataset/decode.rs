//! Decoding one image file the way radiographs need it: the format is recognised from the
//! content (not the extension), EXIF orientation is applied (unless
//! [`ExifOrientation::Ignore`]), and a JPEG cut short before its end-of-image marker is read
//! leniently. DICOM files go to [`super::dicom`] (first frame, display pipeline applied,
//! 16-bit grayscale or RGB).
//!
//! What decoding noticed without refusing the file is said in [`Decoded::warnings`]:
//! - a malformed EXIF block (the image is then left as stored, unrotated);
//! - **12-bit data in a 16-bit image.** A 16-bit PNG or TIFF whose largest colour sample is
//!   at most 4095 is taken to hold 12-bit data (as detectors write it) and scaled by
//!   `65535 / 4095` (rounded), so that 4095 is white; read as 16-bit it would come out
//!   nearly black (at most 1/16 of the range). An image whose largest sample is 0 is left as
//!   it is. The rule cannot tell a genuinely dark 16-bit image from 12-bit data: the warning
//!   says that it applied.
//!
//! image 0.25's JPEG decoder (zune-jpeg) already decodes all 59 truncated FracAtlas files,
//! filling the missing tail itself. Should it reject a truncated file, the end-of-image
//! marker is appended and decoding retried once before the file is given up on.

use crate::error::{Error, Result};
use image::metadata::Orientation;
use image::{DynamicImage, ImageBuffer, ImageDecoder, ImageFormat, ImageReader, Pixel};
use std::io::Cursor;
use std::path::Path;

/// JPEG end-of-image marker.
const JPEG_EOI: [u8; 2] = [0xFF, 0xD9];

/// Largest sample of 12-bit data: a 16-bit image whose samples all lie in `1..=4095` at most
/// is read as 12-bit (see the module docs).
pub const TWELVE_BIT_MAX: u16 = 4095;

/// Whether the EXIF orientation of a file is applied when it is decoded.
///
/// ```
/// use fracture::dataset::decode::ExifOrientation;
/// assert_eq!(ExifOrientation::default(), ExifOrientation::Apply);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ExifOrientation {
    /// Rotate and flip the image as its EXIF orientation says (the crate's default).
    #[default]
    Apply,
    /// Keep the image as stored, as Keras's `load_img` (PIL) does.
    Ignore,
}

/// A decoded image, with what decoding noticed without refusing the file.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// The pixels.
    pub image: DynamicImage,
    /// Problems that changed or may have changed the pixels (a malformed EXIF block, 12-bit
    /// data widened to 16 bits), one sentence each, without the path.
    pub warnings: Vec<String>,
}

impl Decoded {
    /// The image, after writing each warning to standard error as one line naming `path`.
    pub fn into_image_warning(self, path: &Path) -> DynamicImage {
        for warning in &self.warnings {
            eprintln!("fracture: warning: {}: {warning}", path.display());
        }
        self.image
    }
}

/// Decode a file: format from content (DICOM included), EXIF orientation applied, truncated
/// JPEGs read leniently. Any failure is an [`Error::Image`] naming the file.
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("x.png");
/// image::GrayImage::new(5, 3).save(&path)?;
/// let img = fracture::dataset::decode::decode_file(&path)?;
/// assert_eq!((img.width(), img.height()), (5, 3));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// Warnings ([`Decoded::warnings`]) are written to standard error, one line each, naming the
/// file; [`decode_file_with`] returns them instead.
pub fn decode_file(path: impl AsRef<Path>) -> Result<DynamicImage> {
    let path = path.as_ref();
    Ok(decode_file_with(path, ExifOrientation::Apply)?.into_image_warning(path))
}

/// Decode a file as [`decode_file`] does, with or without its EXIF orientation, returning the
/// warnings with the image.
///
/// ```
/// use fracture::dataset::decode::{decode_file_with, ExifOrientation};
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("x.png");
/// image::GrayImage::new(5, 3).save(&path)?;
/// let decoded = decode_file_with(&path, ExifOrientation::Ignore)?;
/// assert_eq!((decoded.image.width(), decoded.warnings.len()), (5, 0));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn decode_file_with(path: impl AsRef<Path>, exif: ExifOrientation) -> Result<Decoded> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_bytes_with(&bytes, path, exif)
}

/// Decode bytes read from `path` (the path is only used in error messages), EXIF orientation
/// applied; warnings are dropped (use [`decode_bytes_with`] to see them).
pub fn decode_bytes(bytes: &[u8], path: &Path) -> Result<DynamicImage> {
    decode_bytes_with(bytes, path, ExifOrientation::Apply).map(|d| d.image)
}

/// Decode bytes read from `path` (the path is only used in error messages).
pub fn decode_bytes_with(bytes: &[u8], path: &Path, exif: ExifOrientation) -> Result<Decoded> {
    let image_error = |message: String| Error::Image {
        path: path.to_path_buf(),
        message,
    };
    if bytes.is_empty() {
        return Err(image_error("empty file (0 bytes)".into()));
    }
    if super::dicom::is_dicom(bytes) {
        return Ok(Decoded {
            image: super::dicom::decode_first_frame(bytes, path)?,
            warnings: Vec::new(),
        });
    }
    let format = image::guess_format(bytes).map_err(|_| {
        image_error("not an image (content matches no known image format, DICOM included)".into())
    })?;
    let mut decoded = match decode_oriented(bytes, format, exif) {
        Ok(decoded) => decoded,
        Err(first) if format == ImageFormat::Jpeg && is_truncated_jpeg(bytes) => {
            let mut patched = Vec::with_capacity(bytes.len() + 2);
            patched.extend_from_slice(bytes);
            patched.extend_from_slice(&JPEG_EOI);
            decode_oriented(&patched, format, exif).map_err(|second| {
                image_error(format!(
                    "truncated JPEG, unreadable even with an end marker appended: {first}; \
                     retry: {second}"
                ))
            })?
        }
        Err(e) => return Err(image_error(format!("cannot decode {format:?}: {e}"))),
    };
    if let Some(warning) = widen_12_bit(&mut decoded.image) {
        decoded.warnings.push(warning);
    }
    Ok(decoded)
}

/// Whether bytes are a JPEG whose compressed data is cut short: no end-of-image marker
/// (`FF D9`) after the start of the scan. Bytes after a real end marker (zero padding,
/// junk, as some FracAtlas files have) do not make a file truncated; an end marker inside
/// an EXIF thumbnail does not count as the image's own.
///
/// ```
/// use fracture::dataset::decode::is_truncated_jpeg;
/// let header = [0xFF, 0xD8, 0xFF, 0xDA, 0x00, 0x02, 0x12, 0x34];
/// assert!(is_truncated_jpeg(&header));
/// assert!(!is_truncated_jpeg(&[&header[..], &[0xFF, 0xD9, 0, 0, 7]].concat()));
/// assert!(!is_truncated_jpeg(b"\x89PNG"));
/// ```
pub fn is_truncated_jpeg(bytes: &[u8]) -> bool {
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return false;
    }
    match scan_start(bytes) {
        Some(start) => !bytes
            .get(start..)
            .is_some_and(|scan| scan.windows(2).any(|w| w == JPEG_EOI)),
        None => true,
    }
}

/// Offset of the first start-of-scan marker, walking the segments after SOI.
fn scan_start(bytes: &[u8]) -> Option<usize> {
    let mut pos = 2;
    loop {
        if *bytes.get(pos)? != 0xFF {
            return None;
        }
        let marker = *bytes.get(pos + 1)?;
        match marker {
            0xFF => pos += 1, // fill byte
            0xDA => return Some(pos),
            0x01 | 0xD0..=0xD7 => pos += 2,
            _ => {
                let length =
                    usize::from(*bytes.get(pos + 2)?) << 8 | usize::from(*bytes.get(pos + 3)?);
                pos += 2 + length;
            }
        }
    }
}

fn decode_oriented(
    bytes: &[u8],
    format: ImageFormat,
    exif: ExifOrientation,
) -> image::ImageResult<Decoded> {
    let mut decoder = ImageReader::with_format(Cursor::new(bytes), format).into_decoder()?;
    let mut warnings = Vec::new();
    let orientation =
        match exif {
            ExifOrientation::Ignore => Orientation::NoTransforms,
            ExifOrientation::Apply => {
                // A malformed EXIF block is not worth losing the image for: keep it unrotated,
                // and say so. (TIFF keeps its orientation in its own tags, not an EXIF block.)
                if matches!(
                    format,
                    ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::WebP
                ) {
                    let problem = match decoder.exif_metadata() {
                        Ok(Some(chunk)) => exif_problem(&chunk),
                        Ok(None) => None,
                        Err(e) => Some(format!("unreadable EXIF block ({e})")),
                    };
                    warnings.extend(problem.map(|p| {
                        format!("{p}: EXIF orientation not applied, image left as stored")
                    }));
                }
                decoder.orientation().unwrap_or_else(|e| {
                    if warnings.is_empty() {
                        warnings.push(format!(
                            "unreadable orientation ({e}): image left as stored"
                        ));
                    }
                    Orientation::NoTransforms
                })
            }
        };
    let mut image = DynamicImage::from_decoder(decoder)?;
    image.apply_orientation(orientation);
    Ok(Decoded { image, warnings })
}

/// What is wrong with an EXIF block (a TIFF structure) as far as its orientation goes:
/// `None` when its first IFD is readable up to its Orientation (0x0112) entry, if any, and
/// that entry holds 1 to 8.
///
/// ```
/// use fracture::dataset::decode::exif_problem;
/// let mut tiff = b"II*\0\x08\0\0\0".to_vec();
/// tiff.extend_from_slice(&1u16.to_le_bytes()); // one entry
/// tiff.extend_from_slice(&[0x12, 0x01, 3, 0, 1, 0, 0, 0, 6, 0, 0, 0]); // Orientation = 6
/// assert_eq!(exif_problem(&tiff), None);
/// tiff[18] = 9;
/// assert!(exif_problem(&tiff).unwrap().contains("orientation value 9"));
/// assert!(exif_problem(b"II*\0\xff\0\0\0").unwrap().contains("past the end"));
/// ```
pub fn exif_problem(chunk: &[u8]) -> Option<String> {
    let little = match chunk.get(..4) {
        Some([0x49, 0x49, 42, 0]) => true,
        Some([0x4D, 0x4D, 0, 42]) => false,
        _ => return Some("malformed EXIF block (no TIFF header)".into()),
    };
    let u16_at = |at: usize| -> Option<u16> {
        let b = [*chunk.get(at)?, *chunk.get(at + 1)?];
        Some(if little {
            u16::from_le_bytes(b)
        } else {
            u16::from_be_bytes(b)
        })
    };
    let u32_at = |at: usize| -> Option<u32> {
        let b = [
            *chunk.get(at)?,
            *chunk.get(at + 1)?,
            *chunk.get(at + 2)?,
            *chunk.get(at + 3)?,
        ];
        Some(if little {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    };
    let past_end = || Some("malformed EXIF block (its first IFD runs past the end)".to_string());
    let Some(ifd) = u32_at(4).and_then(|o| usize::try_from(o).ok()) else {
        return past_end();
    };
    let Some(entries) = u16_at(ifd) else {
        return past_end();
    };
    for k in 0..usize::from(entries) {
        let entry = ifd + 2 + 12 * k;
        let (Some(tag), Some(value)) = (u16_at(entry), u16_at(entry + 8)) else {
            return past_end();
        };
        if tag == 0x0112 {
            // The entries after it do not matter: the orientation was read.
            return (!(1..=8).contains(&value))
                .then(|| format!("malformed EXIF block (orientation value {value}, not 1 to 8)"));
        }
    }
    None
}

/// Widen 12-bit data held in a 16-bit image to the 16-bit range (see the module docs);
/// the warning when it did.
fn widen_12_bit(image: &mut DynamicImage) -> Option<String> {
    fn widen<P: Pixel<Subpixel = u16>>(buffer: &mut ImageBuffer<P, Vec<u16>>) -> Option<String> {
        let colour = usize::from(P::CHANNEL_COUNT) - usize::from(P::HAS_ALPHA);
        let max = buffer
            .pixels()
            .flat_map(|p| p.channels()[..colour].iter().copied())
            .max()
            .unwrap_or(0);
        if max == 0 || max > TWELVE_BIT_MAX {
            return None;
        }
        let top = u32::from(TWELVE_BIT_MAX);
        for pixel in buffer.pixels_mut() {
            for v in &mut pixel.channels_mut()[..colour] {
                *v = ((u32::from(*v) * 65535 + top / 2) / top) as u16;
            }
        }
        Some(format!(
            "16-bit image holds 12-bit data (largest value {max} <= {TWELVE_BIT_MAX}): \
             scaled by 65535/{TWELVE_BIT_MAX}"
        ))
    }
    match image {
        DynamicImage::ImageLuma16(b) => widen(b),
        DynamicImage::ImageLumaA16(b) => widen(b),
        DynamicImage::ImageRgb16(b) => widen(b),
        DynamicImage::ImageRgba16(b) => widen(b),
        _ => None,
    }
}
