//! Writing small DICOM files for tests and benches, with dicom-object (the writer is not
//! part of the library: fracture only reads DICOM). Used by `tests/dicom.rs` and
//! `benches/dicom.rs` (through `#[path]`).
#![allow(dead_code)]

use dicom_core::value::{DataSetSequence, PixelFragmentSequence, PrimitiveValue, Value};
use dicom_core::{DataElement, Length, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};

/// Explicit VR Little Endian.
pub const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";
/// Implicit VR Little Endian.
pub const IMPLICIT_LE: &str = "1.2.840.10008.1.2";
/// RLE Lossless.
pub const RLE: &str = "1.2.840.10008.1.2.5";

/// A grayscale image to write: `frames` frames of `rows x columns` 16-bit stored values.
#[derive(Debug, Clone)]
pub struct Gray16 {
    pub rows: u16,
    pub columns: u16,
    pub bits_stored: u16,
    pub frames: Vec<Vec<u16>>,
    pub photometric: &'static str,
    /// Extra attributes (window, body part, patient data, ...).
    pub extra: Vec<(Tag, VR, PrimitiveValue)>,
}

impl Gray16 {
    /// One frame of a smooth 12-bit gradient with a pattern, `rows x columns`.
    pub fn gradient(rows: u16, columns: u16) -> Self {
        let values = (0..usize::from(rows) * usize::from(columns))
            .map(|i| {
                let (r, c) = (i / usize::from(columns), i % usize::from(columns));
                ((r * 4095 / usize::from(rows).max(1) + (c % 32) * 3) % 4096) as u16
            })
            .collect();
        Gray16 {
            rows,
            columns,
            bits_stored: 12,
            frames: vec![values],
            photometric: "MONOCHROME2",
            extra: Vec::new(),
        }
    }

    /// Add an attribute.
    pub fn with(mut self, tag: Tag, vr: VR, value: PrimitiveValue) -> Self {
        self.extra.push((tag, vr, value));
        self
    }

    /// Add a text attribute.
    pub fn with_text(self, tag: Tag, vr: VR, text: &str) -> Self {
        self.with(tag, vr, PrimitiveValue::from(text))
    }

    fn object(&self) -> InMemDicomObject {
        let mut obj = InMemDicomObject::new_empty();
        let us = |v: u16| PrimitiveValue::from(v);
        let text = |s: &str| PrimitiveValue::from(s);
        for (tag, vr, value) in [
            (
                tags::SOP_CLASS_UID,
                VR::UI,
                text("1.2.840.10008.5.1.4.1.1.1.1"),
            ),
            (tags::SOP_INSTANCE_UID, VR::UI, text("2.25.1234")),
            (tags::MODALITY, VR::CS, text("DX")),
            (tags::SAMPLES_PER_PIXEL, VR::US, us(1)),
            (
                tags::PHOTOMETRIC_INTERPRETATION,
                VR::CS,
                text(self.photometric),
            ),
            (tags::ROWS, VR::US, us(self.rows)),
            (tags::COLUMNS, VR::US, us(self.columns)),
            (tags::BITS_ALLOCATED, VR::US, us(16)),
            (tags::BITS_STORED, VR::US, us(self.bits_stored)),
            (tags::HIGH_BIT, VR::US, us(self.bits_stored - 1)),
            (tags::PIXEL_REPRESENTATION, VR::US, us(0)),
        ] {
            obj.put(DataElement::new(tag, vr, value));
        }
        if self.frames.len() > 1 {
            obj.put(DataElement::new(
                tags::NUMBER_OF_FRAMES,
                VR::IS,
                text(&self.frames.len().to_string()),
            ));
        }
        for (tag, vr, value) in &self.extra {
            obj.put(DataElement::new(*tag, *vr, value.clone()));
        }
        obj
    }

    /// A Part 10 file, native pixel data, in `transfer_syntax` (explicit or implicit VR LE).
    pub fn native(&self, transfer_syntax: &str) -> Vec<u8> {
        let mut obj = self.object();
        let words: Vec<u16> = self.frames.concat();
        obj.put(DataElement::new(
            tags::PIXEL_DATA,
            VR::OW,
            PrimitiveValue::U16(words.into()),
        ));
        write(obj, transfer_syntax)
    }

    /// A Part 10 file with RLE Lossless pixel data (one fragment per frame).
    pub fn rle(&self) -> Vec<u8> {
        let mut obj = self.object();
        let fragments: Vec<Vec<u8>> = self.frames.iter().map(|f| rle_frame(f)).collect();
        put_fragments(&mut obj, fragments);
        write(obj, RLE)
    }
}

/// A Part 10 file holding `fragments` as encapsulated pixel data in `transfer_syntax`.
pub fn encapsulated(
    transfer_syntax: &str,
    rows: u16,
    columns: u16,
    samples: u16,
    photometric: &str,
    bits: u16,
    fragments: Vec<Vec<u8>>,
) -> Vec<u8> {
    let mut obj = InMemDicomObject::new_empty();
    let us = |v: u16| PrimitiveValue::from(v);
    for (tag, vr, value) in [
        (
            tags::SOP_CLASS_UID,
            VR::UI,
            PrimitiveValue::from("1.2.840.10008.5.1.4.1.1.7"),
        ),
        (
            tags::SOP_INSTANCE_UID,
            VR::UI,
            PrimitiveValue::from("2.25.99"),
        ),
        (tags::SAMPLES_PER_PIXEL, VR::US, us(samples)),
        (
            tags::PHOTOMETRIC_INTERPRETATION,
            VR::CS,
            PrimitiveValue::from(photometric),
        ),
        (tags::ROWS, VR::US, us(rows)),
        (tags::COLUMNS, VR::US, us(columns)),
        (
            tags::BITS_ALLOCATED,
            VR::US,
            us(if bits > 8 { 16 } else { 8 }),
        ),
        (tags::BITS_STORED, VR::US, us(bits)),
        (tags::HIGH_BIT, VR::US, us(bits - 1)),
        (tags::PIXEL_REPRESENTATION, VR::US, us(0)),
    ] {
        obj.put(DataElement::new(tag, vr, value));
    }
    put_fragments(&mut obj, fragments);
    write(obj, transfer_syntax)
}

/// Encapsulated pixel data: one item per fragment, an empty offset table.
fn put_fragments(obj: &mut InMemDicomObject, fragments: Vec<Vec<u8>>) {
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OB,
        Value::from(PixelFragmentSequence::new(Vec::<u32>::new(), fragments)),
    ));
}

/// A VOI LUT Sequence item value (for `.with(tags::VOILUT_SEQUENCE, VR::SQ, ...)` use
/// [`voi_lut_element`] instead).
pub fn voi_lut_element(
    first_mapped: u16,
    bits: u16,
    data: &[u16],
) -> DataElement<InMemDicomObject> {
    let mut item = InMemDicomObject::new_empty();
    item.put(DataElement::new(
        tags::LUT_DESCRIPTOR,
        VR::US,
        PrimitiveValue::U16([data.len() as u16, first_mapped, bits].as_slice().into()),
    ));
    item.put(DataElement::new(
        tags::LUT_DATA,
        VR::OW,
        PrimitiveValue::U16(data.into()),
    ));
    DataElement::new(
        tags::VOILUT_SEQUENCE,
        VR::SQ,
        DataSetSequence::new(vec![item], Length::UNDEFINED),
    )
}

fn write(obj: InMemDicomObject, transfer_syntax: &str) -> Vec<u8> {
    let file = obj
        .with_meta(FileMetaTableBuilder::new().transfer_syntax(transfer_syntax))
        .expect("meta group");
    let mut out = Vec::new();
    file.write_all(&mut out).expect("write DICOM");
    out
}

/// The data set of `bytes` (a Part 10 file in implicit VR LE) without preamble, magic and
/// meta group: what older archives store.
pub fn bare_data_set(gray: &Gray16) -> Vec<u8> {
    let mut obj = gray.object();
    obj.put(DataElement::new(
        tags::PIXEL_DATA,
        VR::OW,
        PrimitiveValue::U16(gray.frames.concat().into()),
    ));
    let ts = dicom_transfer_syntax_registry::entries::IMPLICIT_VR_LITTLE_ENDIAN.erased();
    let mut out = Vec::new();
    obj.write_dataset_with_ts(&mut out, &ts)
        .expect("write data set");
    out
}

/// One RLE Lossless frame of 16-bit samples: the 64-byte header, then the high-byte and the
/// low-byte segments, each PackBits-coded (runs of equal bytes as replicate runs, the rest as
/// literals), each padded to an even length.
pub fn rle_frame(values: &[u16]) -> Vec<u8> {
    let high: Vec<u8> = values.iter().map(|v| (v >> 8) as u8).collect();
    let low: Vec<u8> = values.iter().map(|v| (v & 0xFF) as u8).collect();
    let segments = [packbits(&high), packbits(&low)];
    let mut out = vec![0u8; 64];
    out[0..4].copy_from_slice(&2u32.to_le_bytes());
    let mut offset = 64u32;
    for (i, segment) in segments.iter().enumerate() {
        out[4 + 4 * i..8 + 4 * i].copy_from_slice(&offset.to_le_bytes());
        offset += segment.len() as u32;
    }
    for segment in segments {
        out.extend_from_slice(&segment);
    }
    out
}

/// PackBits, per row-independent byte stream (DICOM RLE allows runs across rows).
fn packbits(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let mut run = 1;
        while i + run < bytes.len() && run < 128 && bytes[i + run] == bytes[i] {
            run += 1;
        }
        if run >= 2 {
            out.push((1i16 - run as i16) as i8 as u8);
            out.push(bytes[i]);
            i += run;
            continue;
        }
        let start = i;
        while i < bytes.len() && i - start < 128 {
            if i + 1 < bytes.len() && bytes[i + 1] == bytes[i] {
                break;
            }
            i += 1;
        }
        if i == start {
            i += 1;
        }
        out.push((i - start - 1) as u8);
        out.extend_from_slice(&bytes[start..i]);
    }
    if out.len() % 2 == 1 {
        out.push(0x80); // no-op, keeps the segment even
    }
    out
}
