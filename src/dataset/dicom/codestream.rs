//! Compressed frames: the checks each codestream passes before a decoder sees it, and the
//! JPEG DCT decoders.
//!
//! A decoder sizes its buffers from the codestream's own header, and dicom-rs's adapters copy
//! the result into a buffer sized from the DICOM tags, indexing without bounds checks: a JPEG
//! whose frame header disagrees with Rows/Columns makes them panic, a JPEG or JPEG 2000 header
//! declaring 65535 x 65535 pixels makes them allocate gigabytes, and an RLE segment that
//! decodes short makes them panic. So every JPEG frame header (`SOFn`) and JPEG 2000 size
//! marker (`SIZ`) must match the tags, and every RLE segment must be complete, before decoding.

use super::guard::guarded;
use super::header::DicomInfo;
use image::ImageFormat;
use std::io::Cursor;

/// Check a JPEG or JPEG 2000 frame against the image's tags (see the module docs; RLE frames
/// go through [`check_rle`]).
pub(crate) fn check(transfer_syntax: &str, stream: &[u8], info: &DicomInfo) -> Result<(), String> {
    if stream.starts_with(&[0xFF, 0xD8]) {
        return frame_header(stream, info).map(|_| ());
    }
    if transfer_syntax.starts_with("1.2.840.10008.1.2.4.9")
        || transfer_syntax.starts_with("1.2.840.10008.1.2.4.20")
    {
        return check_jpeg2000(stream, info);
    }
    Ok(())
}

/// A JPEG frame header: sample precision, lines, samples per line, components.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FrameHeader {
    pub precision: u8,
    pub height: u16,
    pub width: u16,
    pub components: u8,
}

/// The first frame header (`SOF0`..`SOF15`, not `DHT`/`JPG`/`DAC`) of a JPEG stream.
fn find_frame_header(bytes: &[u8]) -> Option<FrameHeader> {
    let mut pos = 2usize;
    loop {
        if *bytes.get(pos)? != 0xFF {
            return None;
        }
        let marker = *bytes.get(pos + 1)?;
        match marker {
            0xFF => pos += 1,
            0x01 | 0xD0..=0xD7 => pos += 2,
            0xD9 | 0xDA => return None,
            _ => {
                let length = usize::from(u16::from_be_bytes([
                    *bytes.get(pos + 2)?,
                    *bytes.get(pos + 3)?,
                ]));
                if matches!(marker, 0xC0..=0xCF) && !matches!(marker, 0xC4 | 0xC8 | 0xCC) {
                    let body = bytes.get(pos + 4..pos + 2 + length)?;
                    return Some(FrameHeader {
                        precision: *body.first()?,
                        height: u16::from_be_bytes([*body.get(1)?, *body.get(2)?]),
                        width: u16::from_be_bytes([*body.get(3)?, *body.get(4)?]),
                        components: *body.get(5)?,
                    });
                }
                pos += 2 + length;
            }
        }
    }
}

/// The JPEG frame header, checked against Rows, Columns and Samples per Pixel.
pub(crate) fn frame_header(stream: &[u8], info: &DicomInfo) -> Result<FrameHeader, String> {
    let header = find_frame_header(stream).ok_or("the JPEG stream has no frame header")?;
    let matches = u32::from(header.height) == info.rows
        && u32::from(header.width) == info.columns
        && u16::from(header.components) == info.samples_per_pixel
        && (2..=16).contains(&header.precision);
    if !matches {
        return Err(format!(
            "the JPEG frame is {} x {} x {} at {} bits but the tags say {} x {} x {}",
            header.width,
            header.height,
            header.components,
            header.precision,
            info.columns,
            info.rows,
            info.samples_per_pixel
        ));
    }
    Ok(header)
}

/// Check a JPEG 2000 codestream's size marker against the tags.
fn check_jpeg2000(stream: &[u8], info: &DicomInfo) -> Result<(), String> {
    let head = stream.get(..stream.len().min(4096)).unwrap_or_default();
    let siz = head
        .windows(4)
        .position(|w| w == [0xFF, 0x4F, 0xFF, 0x51])
        .ok_or("the JPEG 2000 stream has no size marker (SIZ)")?;
    let word = |at: usize| -> Option<u32> {
        let b = stream.get(siz + at..siz + at + 4)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let size = (|| {
        let (x, y, x0, y0) = (word(8)?, word(12)?, word(16)?, word(20)?);
        let components = u16::from_be_bytes([*stream.get(siz + 40)?, *stream.get(siz + 41)?]);
        Some((x.checked_sub(x0)?, y.checked_sub(y0)?, components))
    })()
    .ok_or("the JPEG 2000 size marker (SIZ) is cut short or inconsistent")?;
    if size != (info.columns, info.rows, info.samples_per_pixel) {
        return Err(format!(
            "the JPEG 2000 image is {} x {} x {} but the tags say {} x {} x {}",
            size.0, size.1, size.2, info.columns, info.rows, info.samples_per_pixel
        ));
    }
    Ok(())
}

/// Check an RLE fragment: a 64-byte header naming one segment per byte of each sample, in
/// order within the fragment, each decoding to at least `rows * columns` bytes.
pub(crate) fn check_rle(fragment: &[u8], info: &DicomInfo) -> Result<(), String> {
    let word = |i: usize| -> Option<usize> {
        let b = fragment.get(4 * i..4 * i + 4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let count = word(0).ok_or("the RLE fragment has no header")?;
    let expected = usize::from(info.samples_per_pixel) * usize::from(info.bits_allocated / 8);
    if count != expected || count == 0 || fragment.len() < 64 {
        return Err(format!(
            "the RLE header names {count} segments, the image needs {expected}"
        ));
    }
    let pixels = info.rows as usize * info.columns as usize;
    for segment in 0..count {
        let start = word(segment + 1).unwrap_or(0);
        let end = if segment + 1 < count {
            word(segment + 2).unwrap_or(0)
        } else {
            fragment.len()
        };
        let bytes = fragment
            .get(start..end)
            .filter(|_| start >= 64)
            .ok_or_else(|| format!("RLE segment {segment} lies outside its fragment"))?;
        if packbits_length(bytes, pixels) < pixels {
            return Err(format!(
                "RLE segment {segment} decodes to fewer than the {pixels} bytes of a frame"
            ));
        }
    }
    Ok(())
}

/// How many bytes a PackBits segment decodes to, counting up to `enough`.
fn packbits_length(segment: &[u8], enough: usize) -> usize {
    let (mut pos, mut total) = (0usize, 0usize);
    while pos < segment.len() && total < enough {
        let header = segment[pos] as i8;
        pos += 1;
        if header >= 0 {
            let literal = header as usize + 1;
            total += literal.min(segment.len() - pos);
            pos += literal;
        } else if header != -128 {
            if pos >= segment.len() {
                break;
            }
            total += (1 - isize::from(header)) as usize;
            pos += 1;
        }
    }
    total
}

/// Decode a JPEG DCT frame (baseline or extended) to sample values, interleaved RGB for
/// colour: 8-bit streams with the `image` crate (the decoder of `.jpg` files, no EXIF
/// orientation: DICOM's rows and columns are the image), 12-bit with openreadout-codecs.
pub(crate) fn decode_dct(stream: &[u8], info: &DicomInfo) -> Result<Vec<i32>, String> {
    let header = frame_header(stream, info)?;
    match header.precision {
        8 => {
            let image = guarded("the JPEG decoder", || {
                image::ImageReader::with_format(Cursor::new(stream), ImageFormat::Jpeg).decode()
            })?
            .map_err(|e| format!("cannot decode the JPEG frame: {e}"))?;
            let raw = if info.samples_per_pixel == 1 {
                image.into_luma8().into_raw()
            } else {
                image.into_rgb8().into_raw()
            };
            Ok(raw.into_iter().map(i32::from).collect())
        }
        12 => {
            let limit = info.frame_bytes().unwrap_or(0);
            let raster = guarded("the 12-bit JPEG decoder", || {
                openreadout_codecs::jpeg_decode_limited(stream, limit)
            })?
            .map_err(|e| format!("cannot decode the 12-bit JPEG frame: {e}"))?;
            let mask = (1i32 << info.bits_stored.min(16)) - 1;
            Ok(raster
                .data
                .chunks_exact(2)
                .map(|c| i32::from(u16::from_le_bytes([c[0], c[1]])) & mask)
                .collect())
        }
        other => Err(format!(
            "a {other}-bit JPEG frame in the {} transfer syntax",
            info.transfer_syntax_name
        )),
    }
}
