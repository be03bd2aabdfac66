//! Recognising DICOM by its content, never by the file name.
//!
//! Three layouts are accepted, the way archives hold them:
//! - a Part 10 file: 128-byte preamble, then `DICM`, then the file meta group;
//! - the same without the preamble (`DICM` at offset 0), or the file meta group without
//!   preamble and magic (a first element `(0002,xxxx)` in explicit VR little endian);
//! - a bare data set (older archives, network dumps): the first element is in group `0008`, in
//!   explicit or implicit VR little endian, with a short defined length, and the next element
//!   header (when the bytes hold one) continues in ascending tag order.
//!
//! The checks only look at the first elements, so a caller can sniff a short prefix of a file
//! (see [`SNIFF_LEN`]); a JPEG (`FF D8`), PNG, BMP or TIFF start never matches.

/// Bytes of a file's start that decide whether it is DICOM.
pub const SNIFF_LEN: usize = 256;

/// Where a DICOM byte stream starts, as recognised from its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    /// `DICM` at this offset (128 with a preamble, 0 without), then the file meta group.
    Magic(usize),
    /// The file meta group at offset 0, without preamble and magic.
    MetaOnly,
    /// A bare data set at offset 0, explicit (`true`) or implicit VR little endian.
    DataSet { explicit: bool },
}

/// Value representations that have a 2-byte reserved field and a 4-byte length in explicit VR.
pub(crate) const LONG_VRS: [&[u8; 2]; 13] = [
    b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV",
];

/// Value representations with a 2-byte length in explicit VR.
const SHORT_VRS: [&[u8; 2]; 21] = [
    b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT", b"PN",
    b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US",
];

/// Whether two bytes are a value representation code of the standard.
pub(crate) fn is_vr(code: &[u8]) -> bool {
    LONG_VRS
        .iter()
        .chain(SHORT_VRS.iter())
        .any(|vr| &vr[..] == code)
}

/// Whether `bytes` (a whole file or its first [`SNIFF_LEN`] bytes) are DICOM.
///
/// ```
/// use fracture::dataset::dicom::is_dicom;
/// let mut part10 = vec![0u8; 128];
/// part10.extend_from_slice(b"DICM\x02\x00\x00\x00UL\x04\x00\x7e\x00\x00\x00");
/// assert!(is_dicom(&part10));
/// assert!(!is_dicom(b"\xFF\xD8\xFF\xE0 a JPEG"));
/// assert!(!is_dicom(b"this is not a DICOM file"));
/// ```
pub fn is_dicom(bytes: &[u8]) -> bool {
    layout(bytes).is_some()
}

/// The layout of a DICOM stream, or `None` when the bytes are not DICOM.
pub(crate) fn layout(bytes: &[u8]) -> Option<Layout> {
    if bytes.get(128..132) == Some(b"DICM") {
        return Some(Layout::Magic(128));
    }
    if bytes.get(0..4) == Some(b"DICM") {
        return Some(Layout::Magic(0));
    }
    let group = u16::from_le_bytes([*bytes.first()?, *bytes.get(1)?]);
    match group {
        0x0002 if bytes.get(4..6).is_some_and(is_vr) => Some(Layout::MetaOnly),
        0x0008 => bare_data_set(bytes),
        _ => None,
    }
}

/// A data set starting with a group `0008` element: plausible first element, and a second one
/// in ascending order when the bytes reach it.
fn bare_data_set(bytes: &[u8]) -> Option<Layout> {
    for explicit in [true, false] {
        let Some((tag, next)) = element_header(bytes, 0, explicit) else {
            continue;
        };
        let second_ok = match element_header(bytes, next, explicit) {
            Some((second, _)) => second > tag,
            None => next >= bytes.len().min(SNIFF_LEN),
        };
        if second_ok {
            return Some(Layout::DataSet { explicit });
        }
    }
    None
}

/// The tag of the element at `pos` and the offset just after its value, for a short,
/// defined-length element (at most 1024 bytes, which every group 0008 attribute is).
fn element_header(bytes: &[u8], pos: usize, explicit: bool) -> Option<(u32, usize)> {
    let word = |at: usize| -> Option<u16> {
        Some(u16::from_le_bytes([
            *bytes.get(pos + at)?,
            *bytes.get(pos + at + 1)?,
        ]))
    };
    let group = word(0)?;
    let element = word(2)?;
    if group < 0x0008 || group == 0xFFFE {
        return None;
    }
    let (length, header) = if explicit {
        let vr = bytes.get(pos + 4..pos + 6)?;
        if !is_vr(vr) {
            return None;
        }
        if LONG_VRS.iter().any(|long| &long[..] == vr) {
            let high = u32::from(word(10)?) << 16;
            (high | u32::from(word(8)?), 12)
        } else {
            (u32::from(word(6)?), 8)
        }
    } else {
        (u32::from(word(6)?) << 16 | u32::from(word(4)?), 8)
    };
    if length > 1024 {
        return None;
    }
    let tag = u32::from(group) << 16 | u32::from(element);
    Some((tag, pos + header + length as usize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_implicit_data_set_is_recognised() {
        // (0008,0005) CS length 10 "ISO_IR 100", then (0008,0016) UI length 2.
        let mut bytes = vec![0x08, 0x00, 0x05, 0x00, 10, 0, 0, 0];
        bytes.extend_from_slice(b"ISO_IR 100");
        bytes.extend_from_slice(&[0x08, 0x00, 0x16, 0x00, 2, 0, 0, 0, b'1', 0]);
        assert_eq!(layout(&bytes), Some(Layout::DataSet { explicit: false }));
    }

    #[test]
    fn bare_explicit_data_set_is_recognised() {
        let mut bytes = vec![0x08, 0x00, 0x05, 0x00, b'C', b'S', 10, 0];
        bytes.extend_from_slice(b"ISO_IR 100");
        bytes.extend_from_slice(&[0x08, 0x00, 0x16, 0x00, b'U', b'I', 2, 0, b'1', 0]);
        assert_eq!(layout(&bytes), Some(Layout::DataSet { explicit: true }));
    }

    #[test]
    fn descending_tags_or_long_first_values_are_not_dicom() {
        let mut bytes = vec![0x08, 0x00, 0x16, 0x00, 2, 0, 0, 0, b'1', 0];
        bytes.extend_from_slice(&[0x08, 0x00, 0x05, 0x00, 2, 0, 0, 0, b'A', b' ']);
        assert_eq!(layout(&bytes), None);
        assert_eq!(layout(&[0x08, 0x00, 0x05, 0x00, 0xFF, 0xFF, 0, 0]), None);
    }

    #[test]
    fn meta_group_without_preamble_is_recognised() {
        assert_eq!(
            layout(b"\x02\x00\x00\x00UL\x04\x00\x7e\x00\x00\x00"),
            Some(Layout::MetaOnly)
        );
        assert_eq!(layout(b"DICM\x02\x00"), Some(Layout::Magic(0)));
    }
}
