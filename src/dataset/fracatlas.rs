//! The FracAtlas dataset (Abedeen et al., Scientific Data 10, 521, 2023; CC-BY 4.0) in its
//! official layout:
//!
//! ```text
//! FracAtlas/
//!   images/Fractured/IMG*.jpg       label 1 (the folder is the label)
//!   images/Non_fractured/IMG*.jpg   label 0
//!   dataset.csv                     image_id, hand, leg, hip, shoulder, mixed, hardware,
//!                                   multiscan, fractured, fracture_count, frontal, lateral, oblique
//! ```
//!
//! The CSV is joined per image by file name. Where its `fractured` column disagrees with the
//! folder (IMG0003298.jpg in the real data), the folder wins and the disagreement is listed in
//! the [`super::LoadReport`]. Unreadable files are skipped and listed; truncated
//! JPEGs are kept (the loader decodes them leniently) and listed.

use super::{folder, scan, BodyPart, Dataset, Label, LabelDisagreement, LoadReport, Metadata};
use crate::error::{Error, Result};
use std::collections::HashMap;
use std::path::Path;

/// Reader for the FracAtlas layout.
///
/// ```
/// use fracture::dataset::{synthetic::SyntheticConfig, FracAtlas};
/// let dir = tempfile::tempdir()?;
/// SyntheticConfig { n_fractured: 3, n_not_fractured: 5, ..Default::default() }
///     .generate_to(dir.path())?;
/// let data = FracAtlas::open(dir.path())?;
/// assert_eq!((data.counts().fractured, data.counts().not_fractured), (3, 5));
/// assert!(data.samples.iter().all(|s| s.metadata.is_some()));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct FracAtlas;

/// The class folder holding fractured images, under `images/`.
pub const FRACTURED_DIR: &str = "Fractured";
/// The class folder holding images without fracture, under `images/`.
pub const NOT_FRACTURED_DIR: &str = "Non_fractured";
/// The metadata file at the dataset root.
pub const METADATA_CSV: &str = "dataset.csv";

/// One row of `dataset.csv`.
#[derive(Debug, serde::Deserialize)]
struct Row {
    image_id: String,
    hand: u8,
    leg: u8,
    hip: u8,
    shoulder: u8,
    mixed: u8,
    hardware: u8,
    multiscan: u8,
    fractured: u8,
    fracture_count: u32,
    frontal: u8,
    lateral: u8,
    oblique: u8,
}

impl Row {
    fn metadata(&self) -> Metadata {
        let flags = [
            (self.hand, BodyPart::Hand),
            (self.leg, BodyPart::Leg),
            (self.hip, BodyPart::Hip),
            (self.shoulder, BodyPart::Shoulder),
        ];
        let set: Vec<BodyPart> = flags
            .iter()
            .filter(|(flag, _)| *flag != 0)
            .map(|(_, part)| *part)
            .collect();
        let body_part = match (self.mixed != 0, set.as_slice()) {
            (true, _) => BodyPart::Mixed,
            (false, [one]) => *one,
            (false, []) => BodyPart::Unknown,
            (false, _) => BodyPart::Mixed,
        };
        Metadata {
            body_part,
            views: super::Views {
                frontal: self.frontal != 0,
                lateral: self.lateral != 0,
                oblique: self.oblique != 0,
            },
            hardware: Some(self.hardware != 0),
            multiscan: self.multiscan != 0,
            fracture_count: self.fracture_count,
            csv_label: if self.fractured != 0 {
                Label::Fractured
            } else {
                Label::NotFractured
            },
        }
    }
}

impl FracAtlas {
    /// Open a FracAtlas folder (the one holding `images/` and `dataset.csv`).
    ///
    /// Errors if the root or a class folder is missing, or `dataset.csv` exists but has not
    /// the FracAtlas columns. A missing `dataset.csv` is not an error: every image is then
    /// listed under `missing_metadata`.
    pub fn open(root: impl AsRef<Path>) -> Result<Dataset> {
        let root = scan::existing_root(root.as_ref())?;
        let images = root.join("images");
        let mut dataset = folder::open_folders(
            root.clone(),
            &images.join(FRACTURED_DIR),
            &images.join(NOT_FRACTURED_DIR),
            LoadReport::default(),
        )?;
        let csv_path = root.join(METADATA_CSV);
        let rows = if csv_path.is_file() {
            read_metadata(&csv_path, &mut dataset.report)?
        } else {
            HashMap::new()
        };
        join_metadata(&mut dataset, rows);
        Ok(dataset)
    }
}

fn read_metadata(path: &Path, report: &mut LoadReport) -> Result<HashMap<String, Metadata>> {
    let mut reader = csv::Reader::from_path(path).map_err(|e| csv_error(path, e))?;
    let headers = reader.headers().map_err(|e| csv_error(path, e))?.clone();
    for required in ["image_id", "fractured", "hand", "fracture_count"] {
        if !headers.iter().any(|h| h == required) {
            return Err(Error::Format {
                path: path.to_path_buf(),
                message: format!("not a FracAtlas dataset.csv: no `{required}` column"),
            });
        }
    }
    let mut rows = HashMap::new();
    for (i, record) in reader.deserialize::<Row>().enumerate() {
        match record {
            Ok(row) => {
                let metadata = row.metadata();
                if rows.insert(row.image_id.clone(), metadata).is_some() {
                    report
                        .orphan_rows
                        .push(format!("{}: listed twice (last row kept)", row.image_id));
                }
            }
            Err(e) => report
                .orphan_rows
                .push(format!("{} row {}: {e}", path.display(), i + 2)),
        }
    }
    Ok(rows)
}

fn join_metadata(dataset: &mut Dataset, mut rows: HashMap<String, Metadata>) {
    let report = &mut dataset.report;
    for sample in &mut dataset.samples {
        let name = sample
            .path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        match rows.remove(name) {
            Some(metadata) => {
                if metadata.csv_label != sample.label {
                    report.label_disagreements.push(LabelDisagreement {
                        path: sample.path.clone(),
                        folder_label: sample.label,
                        csv_label: metadata.csv_label,
                    });
                }
                sample.metadata = Some(metadata);
            }
            None => report.missing_metadata.push(sample.path.clone()),
        }
    }
    let unreadable: std::collections::HashSet<String> = report
        .unreadable
        .iter()
        .filter_map(|s| s.path.file_name()?.to_str().map(String::from))
        .collect();
    let mut orphans: Vec<String> = rows
        .into_keys()
        .filter(|name| !unreadable.contains(name))
        .map(|name| format!("{name}: in {METADATA_CSV} but no such image"))
        .collect();
    orphans.sort();
    report.orphan_rows.extend(orphans);
}

fn csv_error(path: &Path, e: csv::Error) -> Error {
    Error::Format {
        path: path.to_path_buf(),
        message: format!("CSV: {e}"),
    }
}
