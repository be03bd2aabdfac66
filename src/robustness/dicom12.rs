//! A picture exported as a 12-bit DICOM file, as an archive or a modality gateway might store an
//! 8-bit radiograph: the only DICOM the crate writes (it reads every other kind).

use crate::error::{Error, Result};
use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use image::DynamicImage;
use std::path::Path;

/// Explicit VR Little Endian, the transfer syntax of the written file.
const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
/// Digital X-Ray Image Storage - For Presentation.
const DX_FOR_PRESENTATION: &str = "1.2.840.10008.5.1.4.1.1.1.1";

/// An 8-bit gray value widened to 12 bits: `16 v + 8`, the middle of the 16 twelve-bit values
/// that round to `v` (0 becomes 8, 255 becomes 4088).
///
/// ```
/// use fracture::robustness::widen_to_12_bits;
/// assert_eq!((widen_to_12_bits(0), widen_to_12_bits(1), widen_to_12_bits(255)), (8, 24, 4088));
/// ```
pub fn widen_to_12_bits(value: u8) -> u16 {
    u16::from(value) * 16 + 8
}

/// A DICOM Part 10 file (explicit VR little endian, Digital X-Ray) holding `image` as 12-bit
/// MONOCHROME2: its 8-bit gray values (colour pictures reduced to gray, 16-bit ones to 8 bits)
/// widened by [`widen_to_12_bits`], Bits Allocated 16, Bits Stored 12, and the window of the
/// whole 12-bit range (center 2048, width 4096), so that a reader shows stored value `x` as
/// `x / 4095`. `path` only names the picture in errors (too large for DICOM's 16-bit rows
/// and columns, or a writer failure).
///
/// ```
/// use fracture::dataset::dicom::{self, DicomOptions};
/// use fracture::robustness::twelve_bit_dicom;
/// let picture = image::DynamicImage::ImageLuma8(image::GrayImage::from_pixel(3, 2, image::Luma([10])));
/// let bytes = twelve_bit_dicom(&picture, "x.png".as_ref())?;
/// let read = dicom::read_bytes(&bytes, "x.dcm".as_ref(), &DicomOptions::default())?;
/// assert_eq!(read.info.bits_stored, 12);
/// assert_eq!(read.frames[0].values, vec![168; 6]);
/// # Ok::<(), fracture::Error>(())
/// ```
pub fn twelve_bit_dicom(image: &DynamicImage, path: &Path) -> Result<Vec<u8>> {
    let error = |message: String| Error::Image {
        path: path.to_path_buf(),
        message,
    };
    let gray = image.to_luma8();
    let side = |n: u32, what: &str| {
        u16::try_from(n).map_err(|_| {
            error(format!(
                "{what} {n} exceeds DICOM's 65535 for a 12-bit export"
            ))
        })
    };
    let (columns, rows) = (side(gray.width(), "width")?, side(gray.height(), "height")?);
    let words: Vec<u16> = gray.into_raw().into_iter().map(widen_to_12_bits).collect();
    let mut obj = InMemDicomObject::new_empty();
    let us = PrimitiveValue::from;
    let text = |s: &str| PrimitiveValue::from(s);
    for (tag, vr, value) in [
        (tags::SOP_CLASS_UID, VR::UI, text(DX_FOR_PRESENTATION)),
        // A fixed UID under 2.25 (UUID-derived UIDs): the file never leaves memory.
        (tags::SOP_INSTANCE_UID, VR::UI, text("2.25.24007")),
        (tags::MODALITY, VR::CS, text("DX")),
        (tags::SAMPLES_PER_PIXEL, VR::US, us(1u16)),
        (
            tags::PHOTOMETRIC_INTERPRETATION,
            VR::CS,
            text("MONOCHROME2"),
        ),
        (tags::ROWS, VR::US, us(rows)),
        (tags::COLUMNS, VR::US, us(columns)),
        (tags::BITS_ALLOCATED, VR::US, us(16u16)),
        (tags::BITS_STORED, VR::US, us(12u16)),
        (tags::HIGH_BIT, VR::US, us(11u16)),
        (tags::PIXEL_REPRESENTATION, VR::US, us(0u16)),
        (tags::WINDOW_CENTER, VR::DS, text("2048")),
        (tags::WINDOW_WIDTH, VR::DS, text("4096")),
        (tags::PIXEL_DATA, VR::OW, PrimitiveValue::U16(words.into())),
    ] {
        obj.put(DataElement::new(tag, vr, value));
    }
    let file = obj
        .with_meta(FileMetaTableBuilder::new().transfer_syntax(EXPLICIT_VR_LE))
        .map_err(|e| error(format!("writing the 12-bit DICOM meta group: {e}")))?;
    let mut bytes = Vec::new();
    file.write_all(&mut bytes)
        .map_err(|e| error(format!("writing the 12-bit DICOM file: {e}")))?;
    Ok(bytes)
}
