//! A structural check of a DICOM byte stream before dicom-rs parses it.
//!
//! dicom-parser allocates (and zero-fills) each element's declared length before reading it,
//! so one corrupted length field makes it touch up to 4 GiB; its object builder recurses once
//! per nested sequence. This walker visits every element header (sequences, items and
//! encapsulated fragments included) and refuses the stream, with the element's tag, when a
//! declared length runs past the end of its container, when sequences nest deeper than
//! [`MAX_DEPTH`], or when a header is malformed. It reads no values except the transfer syntax.
//! It is stricter than dicom-parser (an unknown VR code is refused), never looser.
//!
//! [`guarded`] is the other guard: it runs a third-party decoder and turns its panic into an
//! error.

use super::sniff::{is_vr, LONG_VRS};
use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry, VirtualVr};
use dicom_core::{Tag, VR};
use dicom_dictionary_std::StandardDataDictionary;
use std::io::Read;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Deepest sequence nesting accepted (real radiographs use 3 or 4 levels).
pub(crate) const MAX_DEPTH: usize = 16;

/// Largest inflated data set accepted from a deflated transfer syntax (1 GiB).
pub(crate) const MAX_INFLATED: u64 = 1 << 30;

/// Run a third-party decoder, turning a panic into an error (the last resort of
/// [`super::pixels`] and [`super::codestream`]; it does nothing in a program built with
/// `panic = "abort"`).
pub(crate) fn guarded<T>(decoder: &str, run: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(run))
        .map_err(|_| format!("{decoder} failed on this file (internal panic caught)"))
}

const UNDEFINED: u32 = 0xFFFF_FFFF;
const PIXEL_DATA: (u16, u16) = (0x7FE0, 0x0010);

/// Transfer syntax UIDs whose data set encoding differs from explicit VR little endian.
pub(crate) const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";
pub(crate) const EXPLICIT_VR_BE: &str = "1.2.840.10008.1.2.2";
pub(crate) const DEFLATED_LE: &str = "1.2.840.10008.1.2.1.99";

/// How the elements of a data set are encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    ExplicitLittle,
    ImplicitLittle,
    ExplicitBig,
}

impl Encoding {
    /// The encoding of a transfer syntax's data set (deflated ones after inflation).
    pub(crate) fn of(transfer_syntax: &str) -> Self {
        match transfer_syntax {
            IMPLICIT_VR_LE => Encoding::ImplicitLittle,
            EXPLICIT_VR_BE => Encoding::ExplicitBig,
            _ => Encoding::ExplicitLittle,
        }
    }
}

/// Check a stream that starts right after `DICM`: the file meta group (explicit VR little
/// endian), then the data set in the encoding its transfer syntax names. Returns the transfer
/// syntax UID.
pub(crate) fn check_part10(bytes: &[u8]) -> Result<String, String> {
    let walker = Walker {
        bytes,
        encoding: Encoding::ExplicitLittle,
    };
    let (meta_end, transfer_syntax) = walker.meta_group()?;
    let transfer_syntax =
        transfer_syntax.ok_or("the file meta group has no transfer syntax (0002,0010)")?;
    let rest = bytes.get(meta_end..).unwrap_or_default();
    if transfer_syntax == DEFLATED_LE {
        let inflated = inflate(rest)?;
        check_data_set(&inflated, Encoding::ExplicitLittle)?;
    } else {
        check_data_set(rest, Encoding::of(&transfer_syntax))?;
    }
    Ok(transfer_syntax)
}

/// Check a data set (no meta group) in the given encoding.
pub(crate) fn check_data_set(bytes: &[u8], encoding: Encoding) -> Result<(), String> {
    let walker = Walker { bytes, encoding };
    walker.elements(0, bytes.len(), 0, false).map(|_| ())
}

/// Inflate a deflated data set, refusing more than [`MAX_INFLATED`] bytes.
fn inflate(deflated: &[u8]) -> Result<Vec<u8>, String> {
    let mut inflated = Vec::new();
    flate2::read::DeflateDecoder::new(deflated)
        .take(MAX_INFLATED + 1)
        .read_to_end(&mut inflated)
        .map_err(|e| format!("the deflated data set does not inflate: {e}"))?;
    if inflated.len() as u64 > MAX_INFLATED {
        return Err(format!(
            "the deflated data set inflates to more than {} MiB",
            MAX_INFLATED >> 20
        ));
    }
    Ok(inflated)
}

struct Walker<'a> {
    bytes: &'a [u8],
    encoding: Encoding,
}

/// One element header: tag, VR (explicit VR only) and declared length.
struct Header {
    tag: (u16, u16),
    vr: Option<[u8; 2]>,
    length: u32,
    size: usize,
}

impl Walker<'_> {
    fn u16_at(&self, pos: usize) -> Result<u16, String> {
        let end = pos.checked_add(2).ok_or("offset overflow")?;
        let b = self
            .bytes
            .get(pos..end)
            .ok_or_else(|| format!("the data ends inside an element header at byte {pos}"))?;
        Ok(match self.encoding {
            Encoding::ExplicitBig => u16::from_be_bytes([b[0], b[1]]),
            _ => u16::from_le_bytes([b[0], b[1]]),
        })
    }

    fn u32_at(&self, pos: usize) -> Result<u32, String> {
        let (first, second) = (self.u16_at(pos)?, self.u16_at(pos + 2)?);
        Ok(match self.encoding {
            Encoding::ExplicitBig => u32::from(first) << 16 | u32::from(second),
            _ => u32::from(second) << 16 | u32::from(first),
        })
    }

    fn header(&self, pos: usize) -> Result<Header, String> {
        let tag = (self.u16_at(pos)?, self.u16_at(pos + 2)?);
        let explicit = self.encoding != Encoding::ImplicitLittle;
        if tag.0 == 0xFFFE || !explicit {
            return Ok(Header {
                tag,
                vr: None,
                length: self.u32_at(pos + 4)?,
                size: 8,
            });
        }
        let vr = self
            .bytes
            .get(pos + 4..pos + 6)
            .ok_or_else(|| format!("the data ends inside the header of {}", name(tag)))?;
        if !is_vr(vr) {
            return Err(format!("{} has no valid VR code", name(tag)));
        }
        let vr = [vr[0], vr[1]];
        if LONG_VRS.iter().any(|long| **long == vr) {
            Ok(Header {
                tag,
                vr: Some(vr),
                length: self.u32_at(pos + 8)?,
                size: 12,
            })
        } else {
            Ok(Header {
                tag,
                vr: Some(vr),
                length: u32::from(self.u16_at(pos + 6)?),
                size: 8,
            })
        }
    }

    /// Walk the meta group; returns where it ends and the transfer syntax UID.
    fn meta_group(&self) -> Result<(usize, Option<String>), String> {
        let mut pos = 0;
        let mut transfer_syntax = None;
        while pos < self.bytes.len() && self.u16_at(pos)? == 0x0002 {
            let header = self.header(pos)?;
            let value = pos + header.size;
            let end = self.value_end(&header, value, self.bytes.len())?;
            if header.tag == (0x0002, 0x0010) {
                let text = self.bytes.get(value..end).unwrap_or_default();
                transfer_syntax = Some(
                    String::from_utf8_lossy(text)
                        .trim_end_matches(['\0', ' '])
                        .to_string(),
                );
            }
            pos = end;
        }
        Ok((pos, transfer_syntax))
    }

    /// The end of a defined-length value starting at `value`, checked against `limit`.
    fn value_end(&self, header: &Header, value: usize, limit: usize) -> Result<usize, String> {
        if header.length == UNDEFINED {
            return Err(format!(
                "{} has an undefined length where a defined one is required",
                name(header.tag)
            ));
        }
        let end = value
            .checked_add(header.length as usize)
            .filter(|&end| end <= limit)
            .ok_or_else(|| {
                let what = if header.tag == PIXEL_DATA {
                    "pixel data shorter than declared (file cut short?): "
                } else {
                    ""
                };
                format!(
                    "{what}{} declares {} bytes but only {} remain",
                    name(header.tag),
                    header.length,
                    limit.saturating_sub(value)
                )
            })?;
        Ok(end)
    }

    /// Walk the elements in `pos..end`. Inside an undefined-length item, stop after its
    /// delimiter and return the position after it.
    fn elements(
        &self,
        mut pos: usize,
        end: usize,
        depth: usize,
        in_undefined_item: bool,
    ) -> Result<usize, String> {
        while pos < end {
            if depth == 0 && self.bytes.get(pos..end).is_some_and(is_zero_padding) {
                return Ok(end); // zero bytes after the last element: padding, not elements
            }
            let header = self.header(pos)?;
            let value = pos + header.size;
            if header.tag.0 == 0xFFFE {
                if header.tag.1 == 0xE00D && in_undefined_item {
                    return Ok(value);
                }
                return Err(format!("unexpected {} at byte {pos}", name(header.tag)));
            }
            pos = if header.length == UNDEFINED {
                if header.tag == PIXEL_DATA {
                    self.fragments(value, end, header.tag)?
                } else {
                    let inner = match header.vr {
                        Some(vr) if &vr == b"UN" => Encoding::ImplicitLittle,
                        _ => self.encoding,
                    };
                    let walker = Walker {
                        bytes: self.bytes,
                        encoding: inner,
                    };
                    walker.items(value, end, depth + 1, None, header.tag)?
                }
            } else {
                let stop = self.value_end(&header, value, end)?;
                if self.is_sequence(&header) {
                    self.items(value, stop, depth + 1, Some(stop), header.tag)?;
                }
                stop
            };
        }
        if in_undefined_item {
            return Err("an item has no end (item delimiter missing)".into());
        }
        Ok(pos)
    }

    fn is_sequence(&self, header: &Header) -> bool {
        match header.vr {
            Some(vr) => &vr == b"SQ",
            None => StandardDataDictionary
                .by_tag(Tag(header.tag.0, header.tag.1))
                .is_some_and(|entry| entry.vr() == VirtualVr::Exact(VR::SQ)),
        }
    }

    /// Walk the items of a sequence starting at `pos`; `defined` is the end of a
    /// defined-length sequence. Returns the position after the sequence.
    fn items(
        &self,
        mut pos: usize,
        end: usize,
        depth: usize,
        defined: Option<usize>,
        owner: (u16, u16),
    ) -> Result<usize, String> {
        if depth > MAX_DEPTH {
            return Err(format!(
                "sequences nest deeper than {MAX_DEPTH} levels at {}",
                name(owner)
            ));
        }
        loop {
            if pos >= end {
                return match defined {
                    Some(stop) => Ok(stop),
                    None => Err(format!("{} has no end (delimiter missing)", name(owner))),
                };
            }
            let tag = (self.u16_at(pos)?, self.u16_at(pos + 2)?);
            let length = self.u32_at(pos + 4)?;
            let value = pos + 8;
            match tag {
                (0xFFFE, 0xE0DD) => return Ok(value),
                (0xFFFE, 0xE000) if length == UNDEFINED => {
                    pos = self.elements(value, end, depth, true)?;
                }
                (0xFFFE, 0xE000) => {
                    let header = Header {
                        tag,
                        vr: None,
                        length,
                        size: 8,
                    };
                    let stop = self.value_end(&header, value, end)?;
                    self.elements(value, stop, depth, false)?;
                    pos = stop;
                }
                _ => {
                    return Err(format!(
                        "{} holds {} where an item was expected",
                        name(owner),
                        name(tag)
                    ))
                }
            }
        }
    }

    /// Walk encapsulated pixel data: defined-length items up to the sequence delimiter.
    fn fragments(&self, mut pos: usize, end: usize, owner: (u16, u16)) -> Result<usize, String> {
        loop {
            if pos >= end {
                return Err(format!(
                    "{} has no end (sequence delimiter missing)",
                    name(owner)
                ));
            }
            let tag = (self.u16_at(pos)?, self.u16_at(pos + 2)?);
            let header = Header {
                tag,
                vr: None,
                length: self.u32_at(pos + 4)?,
                size: 8,
            };
            match tag {
                (0xFFFE, 0xE0DD) => return Ok(pos + 8),
                (0xFFFE, 0xE000) => pos = self.value_end(&header, pos + 8, end)?,
                _ => {
                    return Err(format!(
                        "encapsulated pixel data holds {} where a fragment was expected",
                        name(tag)
                    ))
                }
            }
        }
    }
}

/// Whether the rest of a data set is only zero bytes (some writers pad files).
fn is_zero_padding(rest: &[u8]) -> bool {
    rest.iter().all(|&b| b == 0)
}

/// `element (gggg,eeee)`, as errors name elements.
fn name(tag: (u16, u16)) -> String {
    format!("element ({:04X},{:04X})", tag.0, tag.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn element(tag: (u16, u16), vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&tag.0.to_le_bytes());
        out.extend_from_slice(&tag.1.to_le_bytes());
        out.extend_from_slice(vr);
        out.extend_from_slice(&(value.len() as u16).to_le_bytes());
        out.extend_from_slice(value);
        out
    }

    #[test]
    fn lengths_past_the_end_are_refused_with_the_tag() {
        let mut bytes = element((0x0008, 0x0060), b"CS", b"DX");
        bytes.extend_from_slice(&[0xE0, 0x7F, 0x10, 0x00, b'O', b'W', 0, 0]);
        bytes.extend_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
        bytes.extend_from_slice(&[0; 16]);
        let err = check_data_set(&bytes, Encoding::ExplicitLittle).unwrap_err();
        assert!(
            err.contains("(7FE0,0010)") && err.contains("only 16 remain"),
            "{err}"
        );
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut bytes = Vec::new();
        for _ in 0..(MAX_DEPTH + 2) {
            bytes.extend_from_slice(&[0x08, 0x00, 0x15, 0x11, b'S', b'Q', 0, 0]);
            bytes.extend_from_slice(&UNDEFINED.to_le_bytes());
            bytes.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0]);
            bytes.extend_from_slice(&UNDEFINED.to_le_bytes());
        }
        let err = check_data_set(&bytes, Encoding::ExplicitLittle).unwrap_err();
        assert!(err.contains("deeper"), "{err}");
    }

    #[test]
    fn well_formed_sequences_pass() {
        let item = element((0x0028, 0x3002), b"US", &[0, 1, 0, 0, 12, 0]);
        let mut bytes = vec![0x28, 0x00, 0x10, 0x30, b'S', b'Q', 0, 0];
        bytes.extend_from_slice(&(item.len() as u32 + 8).to_le_bytes());
        bytes.extend_from_slice(&[0xFE, 0xFF, 0x00, 0xE0]);
        bytes.extend_from_slice(&(item.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&item);
        bytes.extend(element((0x0028, 0x3010 + 1), b"US", &[1, 0]));
        check_data_set(&bytes, Encoding::ExplicitLittle).unwrap();
    }
}
