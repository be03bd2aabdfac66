//! The attributes of a DICOM image that decoding and display need, read from its tags.
//!
//! [`DicomInfo`] holds image geometry, pixel encoding and the display attributes (rescale,
//! modality LUT, windows, VOI LUT), plus `Modality` and `BodyPartExamined`. It holds nothing
//! that identifies the patient: names, IDs and birth dates are only ever read to be redacted
//! from error messages ([`PatientIdentifiers`], which has no `Debug`).

use dicom_core::value::{PrimitiveValue, Value};
use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::mem::InMemElement;
use dicom_object::InMemDicomObject;

/// How the stored samples are to be interpreted (Photometric Interpretation, (0028,0004)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Photometric {
    /// Grayscale, the lowest value is black.
    Monochrome2,
    /// Grayscale, the lowest value is white (inverted for display).
    Monochrome1,
    /// Red, green, blue.
    Rgb,
    /// Luma and chroma at full resolution.
    YbrFull,
    /// Luma and chroma with horizontally halved chroma (uncompressed: `Y Y Cb Cr` per pixel
    /// pair).
    YbrFull422,
    /// JPEG 2000 irreversible / reversible colour (the decoder returns RGB).
    YbrJpeg2000,
    /// Anything else (`PALETTE COLOR`, ...), kept by name for the error message when it is a
    /// valid code string, else described without quoting it.
    Other(String),
}

impl Photometric {
    fn parse(text: &str) -> Self {
        match text.trim() {
            "MONOCHROME2" => Photometric::Monochrome2,
            "MONOCHROME1" => Photometric::Monochrome1,
            "RGB" => Photometric::Rgb,
            "YBR_FULL" => Photometric::YbrFull,
            "YBR_FULL_422" => Photometric::YbrFull422,
            "YBR_ICT" | "YBR_RCT" => Photometric::YbrJpeg2000,
            other => Photometric::Other(code_string(other)),
        }
    }

    /// Whether the image is grayscale.
    ///
    /// ```
    /// use fracture::dataset::dicom::Photometric;
    /// assert!(Photometric::Monochrome1.is_grayscale());
    /// assert!(!Photometric::YbrFull422.is_grayscale());
    /// ```
    pub fn is_grayscale(&self) -> bool {
        matches!(self, Photometric::Monochrome1 | Photometric::Monochrome2)
    }
}

/// Rescale Slope (0028,1053) and Rescale Intercept (0028,1052): `slope * stored + intercept`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rescale {
    /// Multiplier (1 when absent).
    pub slope: f64,
    /// Offset (0 when absent).
    pub intercept: f64,
}

/// A window (Window Center (0028,1050) / Window Width (0028,1051), one pair).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    /// Centre of the window.
    pub center: f64,
    /// Width of the window.
    pub width: f64,
}

/// VOI LUT Function (0028,1056): how a window maps values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VoiFunction {
    /// The standard's default: a line from `c - 0.5 - (w - 1) / 2` to `c - 0.5 + (w - 1) / 2`.
    #[default]
    Linear,
    /// A line from `c - w / 2` to `c + w / 2`.
    LinearExact,
    /// `1 / (1 + exp(-4 (x - c) / w))`.
    Sigmoid,
}

/// A lookup table (Modality LUT or VOI LUT sequence item).
#[derive(Debug, Clone, PartialEq)]
pub struct Lut {
    /// The input value mapped to the first entry (LUT Descriptor, second value).
    pub first_mapped: i32,
    /// Bits of the output values (LUT Descriptor, third value).
    pub bits: u16,
    /// The entries (LUT Data).
    pub data: Vec<u16>,
}

impl Lut {
    /// The entry for `value`: inputs below the first mapped value take the first entry, above
    /// the last take the last; fractional inputs are truncated (as pydicom does).
    ///
    /// ```
    /// use fracture::dataset::dicom::Lut;
    /// let lut = Lut { first_mapped: 10, bits: 8, data: vec![5, 6, 7] };
    /// assert_eq!((lut.map(3.0), lut.map(11.7), lut.map(99.0)), (5, 6, 7));
    /// ```
    pub fn map(&self, value: f64) -> u16 {
        let last = self.data.len().saturating_sub(1);
        let index = (value - f64::from(self.first_mapped)).floor();
        let index = if index.is_nan() || index < 0.0 {
            0
        } else {
            (index as usize).min(last)
        };
        self.data.get(index).copied().unwrap_or(0)
    }

    /// The largest output value the descriptor allows, `2^bits - 1`.
    ///
    /// ```
    /// use fracture::dataset::dicom::Lut;
    /// assert_eq!(Lut { first_mapped: 0, bits: 12, data: vec![0] }.max_output(), 4095.0);
    /// ```
    pub fn max_output(&self) -> f64 {
        2f64.powi(i32::from(self.bits)) - 1.0
    }
}

/// What a DICOM image is, read from its tags (no patient data).
#[derive(Debug, Clone, PartialEq)]
pub struct DicomInfo {
    /// Transfer Syntax UID.
    pub transfer_syntax: String,
    /// Its name, e.g. `RLE Lossless` (the UID when unknown to dicom-rs).
    pub transfer_syntax_name: String,
    /// Modality (0008,0060), e.g. `DX`, `CR`.
    pub modality: Option<String>,
    /// Body Part Examined (0018,0015), e.g. `HAND`.
    pub body_part_examined: Option<String>,
    /// Rows (0028,0010).
    pub rows: u32,
    /// Columns (0028,0011).
    pub columns: u32,
    /// Number of Frames (0028,0008); 1 when absent.
    pub frames: u32,
    /// Samples per Pixel (0028,0002): 1 or 3.
    pub samples_per_pixel: u16,
    /// Photometric Interpretation (0028,0004); MONOCHROME2 when absent.
    pub photometric: Photometric,
    /// Bits Allocated (0028,0100): 8, 16 or 32.
    pub bits_allocated: u16,
    /// Bits Stored (0028,0101); Bits Allocated when absent.
    pub bits_stored: u16,
    /// Pixel Representation (0028,0103) is 1: two's complement samples.
    pub signed: bool,
    /// Planar Configuration (0028,0006) is 1: colour planes one after the other.
    pub planar: bool,
    /// Rescale slope and intercept (identity when absent).
    pub rescale: Rescale,
    /// The first item of the Modality LUT Sequence (0028,3000), which replaces the rescale.
    pub modality_lut: Option<Lut>,
    /// The windows, in order (the first one applies).
    pub windows: Vec<Window>,
    /// VOI LUT Function (0028,1056).
    pub voi_function: VoiFunction,
    /// The first item of the VOI LUT Sequence (0028,3010).
    pub voi_lut: Option<Lut>,
    /// Presentation LUT Shape (2050,0020) is INVERSE: the display is to be inverted.
    pub presentation_inverse: bool,
    /// Stored values that are padding, not image: Pixel Padding Value (0028,0120) alone, or
    /// the inclusive range from it to Pixel Padding Range Limit (0028,0121), as (low, high).
    pub pixel_padding: Option<(i32, i32)>,
}

/// Patient Name, Patient ID and Patient's Birth Date (and other IDs), read only so that they
/// can be removed from messages. Deliberately without `Debug` or `Display`.
#[derive(Default)]
pub(crate) struct PatientIdentifiers(Vec<String>);

impl PatientIdentifiers {
    /// The identifying values present in `obj` (empty values are skipped).
    pub(crate) fn of(obj: &InMemDicomObject) -> Self {
        let mut values = Vec::new();
        for tag in [
            tags::PATIENT_NAME,
            tags::PATIENT_ID,
            tags::PATIENT_BIRTH_DATE,
            Tag(0x0010, 0x1000), // Other Patient IDs (retired, still written)
            tags::OTHER_PATIENT_NAMES,
        ] {
            if let Some(Ok(text)) = obj.get(tag).map(|e| e.value().to_str()) {
                for part in text.split(['\\', '^', '=']) {
                    let part = part.trim_matches([' ', '\0']);
                    if part.len() >= 2 {
                        values.push(part.to_string());
                    }
                }
            }
        }
        PatientIdentifiers(values)
    }

    /// `message` with every identifying value replaced by `[redacted]`.
    pub(crate) fn redact(&self, message: String) -> String {
        self.0.iter().fold(message, |text, value| {
            if text.contains(value.as_str()) {
                text.replace(value.as_str(), "[redacted]")
            } else {
                text
            }
        })
    }
}

/// A code-string value as messages may quote it: the value itself when it is a valid Code
/// String (at most 16 of `A-Z 0-9 _` and space, as every defined term is), else a
/// description that quotes nothing of it. Free text from a header (a name put where a code
/// belongs) never reaches a message, so no message can carry a patient's name, whatever tag
/// it was written in.
pub(crate) fn code_string(text: &str) -> String {
    let valid = text.len() <= 16
        && text
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_' || b == b' ');
    if valid {
        text.to_string()
    } else {
        format!("<not a code string, {} characters>", text.chars().count())
    }
}

/// The attribute's keyword and tag, as error messages name attributes.
fn attribute(name: &str, tag: Tag) -> String {
    format!("{name} ({:04X},{:04X})", tag.0, tag.1)
}

fn text(obj: &InMemDicomObject, tag: Tag) -> Option<String> {
    let value = obj.get(tag)?.value().to_str().ok()?;
    let value = value.trim_matches([' ', '\0']);
    (!value.is_empty()).then(|| value.to_string())
}

/// Whether an element holds no value (absent value or only padding).
fn is_empty(element: &InMemElement) -> bool {
    match element.value() {
        Value::Primitive(PrimitiveValue::Empty) => true,
        Value::Primitive(p) => p.to_str().trim_matches([' ', '\0']).is_empty(),
        _ => false,
    }
}

fn integer(obj: &InMemDicomObject, name: &str, tag: Tag) -> Result<Option<i64>, String> {
    match obj.get(tag) {
        None => Ok(None),
        Some(e) if is_empty(e) => Ok(None),
        Some(e) => e
            .value()
            .to_int::<i64>()
            .map(Some)
            .map_err(|_| format!("{} is not an integer", attribute(name, tag))),
    }
}

fn required_u16(obj: &InMemDicomObject, name: &str, tag: Tag) -> Result<u16, String> {
    let value = integer(obj, name, tag)?.ok_or_else(|| format!("no {}", attribute(name, tag)))?;
    u16::try_from(value).map_err(|_| format!("{} is {value}", attribute(name, tag)))
}

fn floats(obj: &InMemDicomObject, name: &str, tag: Tag) -> Result<Vec<f64>, String> {
    match obj.get(tag) {
        None => Ok(Vec::new()),
        Some(e) if is_empty(e) => Ok(Vec::new()),
        Some(e) => {
            let values = e
                .value()
                .to_multi_float64()
                .map_err(|_| format!("{} is not a number", attribute(name, tag)))?;
            if values.iter().any(|v| !v.is_finite()) {
                return Err(format!("{} is not finite", attribute(name, tag)));
            }
            Ok(values)
        }
    }
}

fn single_float(obj: &InMemDicomObject, name: &str, tag: Tag) -> Result<Option<f64>, String> {
    Ok(floats(obj, name, tag)?.first().copied())
}

/// The first item of a LUT sequence, as a [`Lut`].
fn lut(obj: &InMemDicomObject, name: &str, tag: Tag, signed: bool) -> Result<Option<Lut>, String> {
    let Some(item) = obj.get(tag).and_then(|e| e.items()?.first()) else {
        return Ok(None);
    };
    let what = attribute(name, tag);
    let descriptor = item
        .get(tags::LUT_DESCRIPTOR)
        .ok_or_else(|| format!("{what} has no LUT Descriptor"))?
        .value()
        .to_multi_int::<i64>()
        .map_err(|_| format!("{what}: LUT Descriptor is not three integers"))?;
    let [entries, first, bits] = descriptor[..] else {
        return Err(format!("{what}: LUT Descriptor is not three integers"));
    };
    let entries = if entries == 0 { 65536 } else { entries };
    // US 0..65535 in the file; a signed image reads the first mapped value as SS.
    let first = if signed && first >= 32768 {
        first - 65536
    } else {
        first
    };
    let data = lut_data(item.get(tags::LUT_DATA), &what)?;
    if !(1..=65536).contains(&entries)
        || usize::try_from(entries).ok() != Some(data.len())
        || !(1..=16).contains(&bits)
    {
        return Err(format!(
            "{what}: LUT Descriptor ({entries} entries, {bits} bits) does not match its {} \
             data values",
            data.len()
        ));
    }
    Ok(Some(Lut {
        first_mapped: i32::try_from(first).map_err(|_| format!("{what}: bad first value"))?,
        bits: bits as u16,
        data,
    }))
}

fn lut_data(element: Option<&InMemElement>, what: &str) -> Result<Vec<u16>, String> {
    let value = element
        .map(InMemElement::value)
        .ok_or_else(|| format!("{what} has no LUT Data"))?;
    match value {
        Value::Primitive(PrimitiveValue::U16(v)) => Ok(v.to_vec()),
        Value::Primitive(PrimitiveValue::I16(v)) => Ok(v.iter().map(|&x| x as u16).collect()),
        Value::Primitive(PrimitiveValue::U8(bytes)) => Ok(bytes
            .chunks_exact(2)
            .map(|pair| u16::from_le_bytes([pair[0], pair[1]]))
            .collect()),
        other => other
            .to_multi_int::<u16>()
            .map_err(|_| format!("{what}: LUT Data is not 16-bit values")),
    }
}

impl DicomInfo {
    /// Read the image attributes of `obj`; an error names the attribute that is missing or
    /// unreadable.
    pub(crate) fn read(
        obj: &InMemDicomObject,
        transfer_syntax: &str,
        transfer_syntax_name: &str,
    ) -> Result<Self, String> {
        let rows = required_u16(obj, "Rows", tags::ROWS)?;
        let columns = required_u16(obj, "Columns", tags::COLUMNS)?;
        if rows == 0 || columns == 0 {
            return Err(format!("the image is {columns} x {rows} pixels"));
        }
        let samples_per_pixel =
            integer(obj, "Samples per Pixel", tags::SAMPLES_PER_PIXEL)?.unwrap_or(1);
        let bits_allocated = required_u16(obj, "Bits Allocated", tags::BITS_ALLOCATED)?;
        let bits_stored = integer(obj, "Bits Stored", tags::BITS_STORED)?
            .map_or(Ok(bits_allocated), |b| {
                u16::try_from(b).map_err(|_| format!("Bits Stored is {b}"))
            })?;
        if ![8, 16, 32].contains(&bits_allocated) {
            return Err(format!(
                "{} is {bits_allocated} (8, 16 or 32 are read)",
                attribute("Bits Allocated", tags::BITS_ALLOCATED)
            ));
        }
        if bits_stored == 0 || bits_stored > bits_allocated {
            return Err(format!(
                "{} is {bits_stored} with {bits_allocated} bits allocated",
                attribute("Bits Stored", tags::BITS_STORED)
            ));
        }
        let samples_per_pixel = match samples_per_pixel {
            1 => 1,
            3 => 3,
            n => {
                return Err(format!(
                    "{} is {n} (1 or 3 are read)",
                    attribute("Samples per Pixel", tags::SAMPLES_PER_PIXEL)
                ))
            }
        };
        let photometric = text(obj, tags::PHOTOMETRIC_INTERPRETATION)
            .map_or(Photometric::Monochrome2, |t| Photometric::parse(&t));
        let frames = match integer(obj, "Number of Frames", tags::NUMBER_OF_FRAMES)? {
            None | Some(0) => 1,
            Some(n) => u32::try_from(n).map_err(|_| format!("Number of Frames is {n}"))?,
        };
        let signed = integer(obj, "Pixel Representation", tags::PIXEL_REPRESENTATION)? == Some(1);
        let planar = integer(obj, "Planar Configuration", tags::PLANAR_CONFIGURATION)? == Some(1);
        let rescale = Rescale {
            slope: single_float(obj, "Rescale Slope", tags::RESCALE_SLOPE)?.unwrap_or(1.0),
            intercept: single_float(obj, "Rescale Intercept", tags::RESCALE_INTERCEPT)?
                .unwrap_or(0.0),
        };
        let centers = floats(obj, "Window Center", tags::WINDOW_CENTER)?;
        let widths = floats(obj, "Window Width", tags::WINDOW_WIDTH)?;
        let windows = centers
            .iter()
            .zip(&widths)
            .map(|(&center, &width)| Window { center, width })
            .collect();
        let voi_function = match text(obj, tags::VOILUT_FUNCTION).as_deref() {
            None | Some("LINEAR") => VoiFunction::Linear,
            Some("LINEAR_EXACT") => VoiFunction::LinearExact,
            Some("SIGMOID") => VoiFunction::Sigmoid,
            Some(other) => {
                return Err(format!(
                    "{} is {:?} (LINEAR, LINEAR_EXACT or SIGMOID are read)",
                    attribute("VOI LUT Function", tags::VOILUT_FUNCTION),
                    code_string(other)
                ))
            }
        };
        let presentation_inverse = match text(obj, tags::PRESENTATION_LUT_SHAPE).as_deref() {
            None | Some("IDENTITY") => false,
            Some("INVERSE") => true,
            Some(other) => {
                return Err(format!(
                    "{} is {other:?} (IDENTITY or INVERSE are read)",
                    attribute("Presentation LUT Shape", tags::PRESENTATION_LUT_SHAPE)
                ))
            }
        };
        let padding_value = |name: &str, tag: Tag| -> Result<Option<i32>, String> {
            // US or SS as the pixels are: a signed image's value may have been read as US.
            let value =
                integer(obj, name, tag)?.map(|v| if signed && v >= 32768 { v - 65536 } else { v });
            value
                .map(|v| i32::try_from(v).map_err(|_| format!("{} is {v}", attribute(name, tag))))
                .transpose()
        };
        let padding = padding_value("Pixel Padding Value", tags::PIXEL_PADDING_VALUE)?;
        let limit = padding_value("Pixel Padding Range Limit", tags::PIXEL_PADDING_RANGE_LIMIT)?;
        let pixel_padding = padding.map(|value| {
            let other = limit.unwrap_or(value);
            (value.min(other), value.max(other))
        });
        Ok(DicomInfo {
            transfer_syntax: transfer_syntax.to_string(),
            transfer_syntax_name: transfer_syntax_name.to_string(),
            modality: text(obj, tags::MODALITY),
            body_part_examined: text(obj, tags::BODY_PART_EXAMINED),
            rows: u32::from(rows),
            columns: u32::from(columns),
            frames,
            samples_per_pixel,
            photometric,
            bits_allocated,
            bits_stored,
            signed,
            planar,
            rescale,
            modality_lut: lut(
                obj,
                "Modality LUT Sequence",
                tags::MODALITY_LUT_SEQUENCE,
                signed,
            )?,
            windows,
            voi_function,
            voi_lut: lut(obj, "VOI LUT Sequence", tags::VOILUT_SEQUENCE, false)?,
            presentation_inverse,
            pixel_padding,
        })
    }

    /// Bytes of one frame as stored uncompressed (`rows * columns * samples * bits / 8`),
    /// `None` on overflow.
    ///
    /// ```
    /// use fracture::dataset::dicom;
    /// let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/dicom/files/MR_small.dcm");
    /// let info = dicom::read_header(&std::fs::read(path)?, path.as_ref())?;
    /// assert_eq!(info.frame_bytes(), Some(64 * 64 * 2));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn frame_bytes(&self) -> Option<usize> {
        (self.rows as usize)
            .checked_mul(self.columns as usize)?
            .checked_mul(usize::from(self.samples_per_pixel))?
            .checked_mul(usize::from(self.bits_allocated / 8))
    }
}
