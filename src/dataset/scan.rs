//! Listing class folders and inspecting files cheaply (hash, header, truncation), in parallel.
//! DICOM files count as images by content; their `BodyPartExamined` becomes the sample's
//! metadata where the dataset gives none.

use super::{dicom, ContentHash, Label, LoadReport, Sample, SkippedFile};
use crate::error::{Error, Result};
use rayon::prelude::*;
use std::io::Cursor;
use std::path::{Path, PathBuf};

/// File extensions (lower case) treated as images.
pub(crate) const IMAGE_EXTENSIONS: [&str; 9] = [
    "jpg", "jpeg", "png", "bmp", "tif", "tiff", "dcm", "dicom", "dic",
];

/// What a quick look at one file found.
pub(crate) struct Inspected {
    pub hash: ContentHash,
    pub dimensions: (u32, u32),
    pub truncated: bool,
    /// For DICOM: its attributes (`BodyPartExamined` becomes metadata where the dataset has
    /// none).
    pub dicom_info: Option<dicom::DicomInfo>,
}

/// Whether a path has an image extension.
pub(crate) fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Whether a file is an image candidate: an image extension, or DICOM content (archives
/// store DICOM without extension). Only files without an image extension are opened, and
/// only their first [`dicom::SNIFF_LEN`] bytes read.
fn is_image_candidate(path: &Path) -> bool {
    has_image_extension(path) || starts_like_dicom(path)
}

fn starts_like_dicom(path: &Path) -> bool {
    use std::io::Read;
    let mut prefix = Vec::with_capacity(dicom::SNIFF_LEN);
    std::fs::File::open(path)
        .and_then(|file| file.take(dicom::SNIFF_LEN as u64).read_to_end(&mut prefix))
        .is_ok_and(|_| dicom::is_dicom(&prefix))
}

/// The image files directly inside `dir`, sorted; other entries go to `ignored`.
pub(crate) fn list_images(dir: &Path, ignored: &mut Vec<PathBuf>) -> Result<Vec<PathBuf>> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut images = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if path.is_file() && is_image_candidate(&path) {
            images.push(path);
        } else {
            ignored.push(path);
        }
    }
    images.sort();
    ignored.sort();
    Ok(images)
}

/// Read a file, hash it, read its header; `Err(reason)` when it cannot be used.
pub(crate) fn inspect(path: &Path) -> std::result::Result<Inspected, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    if bytes.is_empty() {
        return Err("empty file (0 bytes)".into());
    }
    if dicom::is_dicom(&bytes) {
        let info = dicom::read_header(&bytes, path).map_err(|e| match e {
            Error::Image { message, .. } => message,
            other => other.to_string(),
        })?;
        return Ok(Inspected {
            hash: ContentHash::of(&bytes),
            dimensions: (info.columns, info.rows),
            truncated: false,
            dicom_info: Some(info),
        });
    }
    let format = image::guess_format(&bytes).map_err(|_| {
        "not an image (content matches no known image format, DICOM included)".to_string()
    })?;
    let dimensions = image::ImageReader::with_format(Cursor::new(&bytes), format)
        .into_dimensions()
        .map_err(|e| format!("unreadable {format:?} header: {e}"))?;
    let truncated = super::decode::is_truncated_jpeg(&bytes);
    Ok(Inspected {
        hash: ContentHash::of(&bytes),
        dimensions,
        truncated,
        dicom_info: None,
    })
}

/// Inspect labelled files in parallel; usable ones become samples (in input order), the
/// others are recorded in the report.
pub(crate) fn inspect_all(files: Vec<(PathBuf, Label)>, report: &mut LoadReport) -> Vec<Sample> {
    let results: Vec<_> = files
        .into_par_iter()
        .map(|(path, label)| {
            let inspected = inspect(&path);
            (path, label, inspected)
        })
        .collect();
    let mut samples = Vec::with_capacity(results.len());
    for (path, label, inspected) in results {
        match inspected {
            Ok(info) => {
                if info.truncated {
                    report.truncated.push(path.clone());
                }
                let metadata = info
                    .dicom_info
                    .as_ref()
                    .and_then(|dicom_info| dicom::metadata(dicom_info, label));
                samples.push(Sample {
                    path,
                    label,
                    hash: info.hash,
                    dimensions: Some(info.dimensions),
                    metadata,
                });
            }
            Err(reason) => report.unreadable.push(SkippedFile { path, reason }),
        }
    }
    samples
}

/// Read class folders (`(folder, label)` pairs) under an existing root into samples.
pub(crate) fn read_class_folders(
    folders: &[(PathBuf, Label)],
    report: &mut LoadReport,
) -> Result<Vec<Sample>> {
    let mut files = Vec::new();
    for (dir, label) in folders {
        if !dir.is_dir() {
            return Err(Error::Dataset {
                path: dir.clone(),
                message: format!("class folder for {label} not found"),
            });
        }
        let images = list_images(dir, &mut report.ignored)?;
        if images.is_empty() {
            report.empty_classes.push(dir.clone());
        }
        files.extend(images.into_iter().map(|p| (p, *label)));
    }
    let mut samples = inspect_all(files, report);
    samples.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(samples)
}

/// Canonical absolute form of an existing dataset root, or a "not found" error.
pub(crate) fn existing_root(root: &Path) -> Result<PathBuf> {
    if !root.is_dir() {
        return Err(super::missing_root(root));
    }
    root.canonicalize().map_err(|e| Error::io(root, e))
}
