//! Decoding one image file the way radiographs need it: the format is recognised from the
//! content (not the extension), EXIF orientation is applied, and a JPEG cut short before its
//! end-of-image marker is read leniently. DICOM files go to [`super::dicom`] (first frame,
//! display pipeline applied, 16-bit grayscale or RGB).
//!
//! image 0.25's JPEG decoder (zune-jpeg) already decodes all 59 truncated FracAtlas files,
//! filling the missing tail itself. Should it reject a truncated file, the end-of-image
//! marker is appended and decoding retried once before the file is given up on.

use crate::error::{Error, Result};
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader};
use std::io::Cursor;
use std::path::Path;

/// JPEG end-of-image marker.
const JPEG_EOI: [u8; 2] = [0xFF, 0xD9];

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
pub fn decode_file(path: impl AsRef<Path>) -> Result<DynamicImage> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    decode_bytes(&bytes, path)
}

/// Decode bytes read from `path` (the path is only used in error messages).
pub fn decode_bytes(bytes: &[u8], path: &Path) -> Result<DynamicImage> {
    let image_error = |message: String| Error::Image {
        path: path.to_path_buf(),
        message,
    };
    if bytes.is_empty() {
        return Err(image_error("empty file (0 bytes)".into()));
    }
    if super::dicom::is_dicom(bytes) {
        return super::dicom::decode_first_frame(bytes, path);
    }
    let format = image::guess_format(bytes).map_err(|_| {
        image_error("not an image (content matches no known image format, DICOM included)".into())
    })?;
    match decode_oriented(bytes, format) {
        Ok(img) => Ok(img),
        Err(first) if format == ImageFormat::Jpeg && is_truncated_jpeg(bytes) => {
            let mut patched = Vec::with_capacity(bytes.len() + 2);
            patched.extend_from_slice(bytes);
            patched.extend_from_slice(&JPEG_EOI);
            decode_oriented(&patched, format).map_err(|second| {
                image_error(format!(
                    "truncated JPEG, unreadable even with an end marker appended: {first}; \
                     retry: {second}"
                ))
            })
        }
        Err(e) => Err(image_error(format!("cannot decode {format:?}: {e}"))),
    }
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

fn decode_oriented(bytes: &[u8], format: ImageFormat) -> image::ImageResult<DynamicImage> {
    let mut decoder = ImageReader::with_format(Cursor::new(bytes), format).into_decoder()?;
    // A malformed EXIF block is not worth losing the image for: keep it unrotated.
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut image = DynamicImage::from_decoder(decoder)?;
    image.apply_orientation(orientation);
    Ok(image)
}
