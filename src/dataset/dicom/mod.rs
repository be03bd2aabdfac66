//! DICOM radiographs, the format hospitals archive them in, read into the same pipeline as
//! JPEGs.
//!
//! [`decode::decode_bytes`](super::decode::decode_bytes) recognises DICOM by content
//! ([`is_dicom`]: `DICM` at offset 128, or a valid start without the preamble) and calls
//! [`decode_first_frame`], so class folders, manifests, `FracAtlas::open`, `classify_path` and
//! `classify_dir` read `.dcm` files (and files without extension) like any image.
//!
//! The steps, each in its own file:
//! 1. **sniff**: what the bytes are; **guard**: every declared length checked against the
//!    bytes before dicom-rs parses (see the guard's docs for why); then dicom-object parses.
//! 2. **header**: the image attributes ([`DicomInfo`]); patient name, ID and birth date are
//!    read only to be redacted from every error message.
//! 3. **pixels** / **codestream**: the stored values of the first frame (or of every frame
//!    with [`Frames::All`]) through dicom-pixeldata (native, deflate, RLE, JPEG Lossless;
//!    JPEG 2000 with the `jpeg2000` feature), the image crate (8-bit JPEG) or
//!    openreadout-codecs (12-bit JPEG). Any other transfer syntax is an error naming it.
//! 4. **display**: modality LUT, then VOI (first window, else VOI LUT, else min-max), then
//!    MONOCHROME1 inversion, to an intensity in [0, 1] ([`DisplayOptions`]). Colour (RGB,
//!    YBR) becomes RGB.
//!
//! The result is a `DynamicImage` the loader resizes like any other: grayscale as 16-bit luma
//! (the display intensity times 65535, so 12- and 16-bit detail survives; the loader resizes
//! 16-bit images in floating point), 8-bit colour as RGB8 (an encapsulated JPEG gives exactly
//! the pixels of the `.jpg` it came from). Every failure is an [`Error::Image`] naming the
//! file and the reason: not DICOM, unreadable tags, no pixel data, pixel data shorter than
//! the image, unsupported syntax. Nothing here panics or allocates more than a bounded
//! multiple of the file on malformed input (see the fuzz test in `tests/dicom.rs`).
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use fracture::dataset::dicom;
//! let err = dicom::read_bytes(b"not DICOM", "x.dcm".as_ref(), &Default::default()).unwrap_err();
//! assert!(err.to_string().contains("x.dcm"));
//! # Ok(())
//! # }
//! ```

mod codestream;
mod display;
mod guard;
mod header;
mod pixels;
mod sniff;

pub use display::{DisplayOptions, ModalityLut, Voi};
pub use header::{DicomInfo, Lut, Photometric, Rescale, VoiFunction, Window};
pub use pixels::{StoredFrame, MAX_FRAME_BYTES};
pub use sniff::{is_dicom, SNIFF_LEN};

use super::{BodyPart, Label, Metadata, Views};
use crate::error::{Error, Result};
use dicom_encoding::transfer_syntax::TransferSyntaxIndex;
use dicom_object::{DefaultDicomObject, FileMetaTableBuilder, InMemDicomObject};
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;
use header::PatientIdentifiers;
use image::DynamicImage;
use sniff::Layout;
use std::path::Path;

/// Which frames of a multi-frame image to decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Frames {
    /// The first frame only (what the classifier uses; the default).
    #[default]
    First,
    /// Every frame, in order.
    All,
}

/// How to read a DICOM file.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct DicomOptions {
    /// Which frames to decode.
    pub frames: Frames,
    /// How stored values become display intensities.
    pub display: DisplayOptions,
}

/// A decoded DICOM image: its attributes and the stored values of the decoded frames.
#[derive(Debug, Clone, PartialEq)]
pub struct DicomImage {
    /// The image attributes (no patient data).
    pub info: DicomInfo,
    /// The decoded frames (one with [`Frames::First`]).
    pub frames: Vec<StoredFrame>,
    display: DisplayOptions,
}

impl DicomImage {
    /// Display intensities in [0, 1] of grayscale frame `index` (see [`DisplayOptions`]).
    ///
    /// ```
    /// use fracture::dataset::dicom::{self, DicomOptions};
    /// let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/dicom/files/MR_small.dcm");
    /// let image = dicom::read_file(path, &DicomOptions::default())?;
    /// let display = image.display(0)?;
    /// assert_eq!(display.len(), 64 * 64);
    /// assert!(display.iter().all(|v| (0.0..=1.0).contains(v)));
    /// # Ok::<(), fracture::Error>(())
    /// ```
    pub fn display(&self, index: usize) -> Result<Vec<f32>> {
        let frame = self.frame(index)?;
        display::display_gray(&self.info, frame, &self.display).map_err(Error::InvalidInput)
    }

    /// Frame `index` as an image: grayscale as 16-bit display intensity, colour as RGB.
    ///
    /// ```
    /// use fracture::dataset::dicom::{self, DicomOptions};
    /// let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/dicom/files/MR_small.dcm");
    /// let image = dicom::read_file(path, &DicomOptions::default())?.to_image(0)?;
    /// assert!(matches!(image, image::DynamicImage::ImageLuma16(_)));
    /// # Ok::<(), fracture::Error>(())
    /// ```
    pub fn to_image(&self, index: usize) -> Result<DynamicImage> {
        let frame = self.frame(index)?;
        display::to_image(&self.info, frame, &self.display).map_err(Error::InvalidInput)
    }

    fn frame(&self, index: usize) -> Result<&StoredFrame> {
        self.frames.get(index).ok_or_else(|| {
            Error::InvalidInput(format!(
                "frame {index} was not decoded ({} decoded)",
                self.frames.len()
            ))
        })
    }
}

/// Read and decode a DICOM file.
///
/// ```no_run
/// use fracture::dataset::dicom::{self, DicomOptions, Frames};
/// let image = dicom::read_file("chest.dcm", &DicomOptions { frames: Frames::All, ..Default::default() })?;
/// println!("{} frames of {} x {}", image.frames.len(), image.info.columns, image.info.rows);
/// # Ok::<(), fracture::Error>(())
/// ```
pub fn read_file(path: impl AsRef<Path>, options: &DicomOptions) -> Result<DicomImage> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    read_bytes(&bytes, path, options)
}

/// Decode DICOM bytes read from `path` (the path only names the file in errors).
///
/// ```
/// use fracture::dataset::dicom::{self, DicomOptions};
/// let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/dicom/files/CT_small.dcm");
/// let bytes = std::fs::read(path)?;
/// let image = dicom::read_bytes(&bytes, path.as_ref(), &DicomOptions::default())?;
/// assert_eq!((image.info.rows, image.info.columns, image.info.signed), (128, 128, true));
/// assert_eq!(image.info.rescale.intercept, -1024.0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn read_bytes(bytes: &[u8], path: &Path, options: &DicomOptions) -> Result<DicomImage> {
    let (obj, info, identifiers) = open(bytes, path)?;
    let count = match options.frames {
        Frames::First => 1,
        Frames::All => info.frames,
    };
    let frames = (0..count)
        .map(|frame| pixels::decode_frame(&obj, &info, frame))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|message| image_error(path, &identifiers, message))?;
    Ok(DicomImage {
        info,
        frames,
        display: options.display,
    })
}

/// Read the attributes of a DICOM file without decoding its pixels; fails as decoding would
/// for missing or short pixel data and unsupported transfer syntaxes.
///
/// ```
/// use fracture::dataset::dicom;
/// let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/dicom/files/rtplan.dcm");
/// let err = dicom::read_header(&std::fs::read(path)?, path.as_ref()).unwrap_err();
/// assert!(err.to_string().contains("no pixel data"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn read_header(bytes: &[u8], path: &Path) -> Result<DicomInfo> {
    open(bytes, path).map(|(_, info, _)| info)
}

/// Decode the first frame with the default display pipeline, as the loader wants it
/// ([`decode_bytes`](super::decode::decode_bytes) calls this for DICOM content).
///
/// ```
/// use fracture::dataset::dicom;
/// let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/dicom/files/MR_small_RLE.dcm");
/// let image = dicom::decode_first_frame(&std::fs::read(path)?, path.as_ref())?;
/// assert_eq!((image.width(), image.height()), (64, 64));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn decode_first_frame(bytes: &[u8], path: &Path) -> Result<DynamicImage> {
    let (obj, info, identifiers) = open(bytes, path)?;
    let image = pixels::decode_frame(&obj, &info, 0)
        .and_then(|frame| display::to_image(&info, &frame, &DisplayOptions::default()));
    image.map_err(|message| image_error(path, &identifiers, message))
}

/// Parse, read the attributes and check the pixel data is decodable.
fn open(bytes: &[u8], path: &Path) -> Result<(DefaultDicomObject, DicomInfo, PatientIdentifiers)> {
    let none = PatientIdentifiers::default();
    let obj = parse(bytes).map_err(|message| image_error(path, &none, message))?;
    let identifiers = PatientIdentifiers::of(&obj);
    let transfer_syntax = obj.meta().transfer_syntax().to_string();
    let name = TransferSyntaxRegistry
        .get(&transfer_syntax)
        .map_or_else(|| transfer_syntax.clone(), |ts| ts.name().to_string());
    if obj.get(dicom_dictionary_std::tags::PIXEL_DATA).is_none() {
        let message = "no pixel data (7FE0,0010): not an image".to_string();
        return Err(image_error(path, &identifiers, message));
    }
    let info = DicomInfo::read(&obj, &transfer_syntax, &name)
        .and_then(|info| pixels::check(&obj, &info).map(|()| info))
        .map_err(|message| image_error(path, &identifiers, message))?;
    Ok((obj, info, identifiers))
}

/// The error for `path`, with patient identifiers removed from the message.
fn image_error(path: &Path, identifiers: &PatientIdentifiers, message: String) -> Error {
    Error::Image {
        path: path.to_path_buf(),
        message: identifiers.redact(format!("DICOM: {message}")),
    }
}

/// Parse the bytes as a DICOM object, after the structural check of [`guard`].
fn parse(bytes: &[u8]) -> std::result::Result<DefaultDicomObject, String> {
    let read_error = |e: dicom_object::ReadError| format!("unreadable DICOM: {e}");
    match sniff::layout(bytes) {
        None if bytes.is_empty() => Err("empty file (0 bytes)".into()),
        None => Err("not a DICOM file (no DICM magic and no valid data set start)".into()),
        Some(Layout::Magic(offset)) => {
            let stream = bytes.get(offset..).unwrap_or_default();
            guard::check_part10(stream.get(4..).unwrap_or_default())?;
            part10(stream).map_err(read_error)
        }
        Some(Layout::MetaOnly) => {
            guard::check_part10(bytes)?;
            let mut stream = b"DICM".to_vec();
            stream.extend_from_slice(bytes);
            part10(&stream).map_err(read_error)
        }
        Some(Layout::DataSet { explicit }) => {
            let uid = if explicit {
                "1.2.840.10008.1.2.1"
            } else {
                guard::IMPLICIT_VR_LE
            };
            guard::check_data_set(bytes, guard::Encoding::of(uid))?;
            let ts = TransferSyntaxRegistry
                .get(uid)
                .ok_or("no little endian transfer syntax in the registry")?;
            let obj = InMemDicomObject::read_dataset_with_ts(bytes, ts).map_err(read_error)?;
            // A bare data set has no meta group: say what it is encoded in, and make up the
            // SOP UIDs only if the data set has none (they are not used for decoding).
            let meta = FileMetaTableBuilder::new()
                .transfer_syntax(uid)
                .media_storage_sop_class_uid("1.2.840.10008.5.1.4.1.1.7")
                .media_storage_sop_instance_uid("2.25.0");
            obj.with_meta(meta)
                .map_err(|e| format!("cannot describe the bare data set: {e}"))
        }
    }
}

/// A Part 10 stream starting at `DICM`.
fn part10(stream: &[u8]) -> std::result::Result<DefaultDicomObject, dicom_object::ReadError> {
    dicom_object::OpenFileOptions::new()
        .read_preamble(dicom_object::file::ReadPreamble::Never)
        .from_reader(stream)
}

/// The body part a DICOM `BodyPartExamined` names, in FracAtlas's groups: hand (and wrist,
/// fingers), leg (and knee, ankle, foot, femur), hip (and pelvis), shoulder (and clavicle,
/// humerus); anything else is `Unknown`.
///
/// ```
/// use fracture::dataset::{dicom::body_part, BodyPart};
/// assert_eq!(body_part("WRIST"), BodyPart::Hand);
/// assert_eq!(body_part("ANKLE"), BodyPart::Leg);
/// assert_eq!(body_part("CHEST"), BodyPart::Unknown);
/// ```
pub fn body_part(body_part_examined: &str) -> BodyPart {
    match body_part_examined.trim().to_ascii_uppercase().as_str() {
        "HAND" | "WRIST" | "FINGER" | "THUMB" | "FOREARM" | "ELBOW" | "ARM" | "UPR EXTREMITY" => {
            BodyPart::Hand
        }
        "LEG" | "LOWER LEG" | "KNEE" | "ANKLE" | "FOOT" | "TOE" | "FEMUR" | "THIGH"
        | "LOWER EXTREMITY" | "LWR EXTREMITY" | "HEEL" | "CALCANEUS" => BodyPart::Leg,
        "HIP" | "PELVIS" | "SACRUM" => BodyPart::Hip,
        "SHOULDER" | "CLAVICLE" | "HUMERUS" | "SCAPULA" => BodyPart::Shoulder,
        _ => BodyPart::Unknown,
    }
}

/// Metadata for a DICOM sample whose dataset gives no body part: `BodyPartExamined` mapped by
/// [`body_part`]. DICOM says nothing about hardware (so it is unknown), multiscan or fracture
/// count (`false`/0), and the CSV label is the sample's own.
pub(crate) fn metadata(info: &DicomInfo, label: Label) -> Option<Metadata> {
    let part = body_part(info.body_part_examined.as_deref()?);
    Some(Metadata {
        body_part: part,
        views: Views::default(),
        hardware: None,
        multiscan: false,
        fracture_count: 0,
        csv_label: label,
    })
}
