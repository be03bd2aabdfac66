//! CSV manifests: a `path,label` list as a dataset, and a split saved as a manifest.
//!
//! A split manifest has one row per image and the columns
//! `part,path,label,sha256,width,height,body_part,hardware,multiscan,fracture_count,frontal,lateral,oblique,csv_label`
//! (the columns after `sha256` are empty where unknown). Relative paths are resolved against
//! the manifest's folder. A split manifest is also a valid `path,label` manifest.

use super::{
    scan, split::PartName, BodyPart, ContentHash, Dataset, Label, LoadReport, Metadata, Part,
    Sample, Split, Views,
};
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// Read a dataset from a CSV with (at least) the columns `path` and `label`.
///
/// Labels are parsed by [`Label::parse`]; relative paths are resolved against the CSV's
/// folder. Rows whose file is missing or unreadable are skipped and listed in the report;
/// a row with an unknown label is listed in `orphan_rows`.
///
/// ```
/// let dir = tempfile::tempdir()?;
/// image::GrayImage::new(4, 4).save(dir.path().join("a.png"))?;
/// std::fs::write(dir.path().join("list.csv"), "path,label\na.png,fractured\nmissing.png,0\n")?;
/// let data = fracture::dataset::open_manifest(dir.path().join("list.csv"))?;
/// assert_eq!(data.len(), 1);
/// assert_eq!(data.report.unreadable.len(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn open_manifest(csv_path: impl AsRef<Path>) -> Result<Dataset> {
    let csv_path = csv_path.as_ref();
    if !csv_path.is_file() {
        return Err(Error::Dataset {
            path: csv_path.to_path_buf(),
            message: "manifest file not found".into(),
        });
    }
    let base = manifest_dir(csv_path)?;
    let mut reader = csv::Reader::from_path(csv_path).map_err(|e| csv_error(csv_path, e))?;
    let headers = reader
        .headers()
        .map_err(|e| csv_error(csv_path, e))?
        .clone();
    let column = |name: &str| {
        headers
            .iter()
            .position(|h| h.trim() == name)
            .ok_or_else(|| Error::Format {
                path: csv_path.to_path_buf(),
                message: format!("manifest has no `{name}` column (found {headers:?})"),
            })
    };
    let (path_col, label_col) = (column("path")?, column("label")?);
    let mut report = LoadReport::default();
    let mut files = Vec::new();
    for (i, record) in reader.records().enumerate() {
        let record = record.map_err(|e| csv_error(csv_path, e))?;
        let path = base.join(record.get(path_col).unwrap_or_default());
        let label_text = record.get(label_col).unwrap_or_default();
        match Label::parse(label_text) {
            Some(label) => files.push((path, label)),
            None => report.orphan_rows.push(format!(
                "{} row {}: unknown label {label_text:?}",
                csv_path.display(),
                i + 2
            )),
        }
    }
    let samples = scan::inspect_all(files, &mut report);
    Ok(Dataset {
        root: csv_path.to_path_buf(),
        samples,
        report,
    })
}

/// One row of a split manifest.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Row {
    part: String,
    path: PathBuf,
    label: String,
    sha256: String,
    width: Option<u32>,
    height: Option<u32>,
    body_part: Option<String>,
    hardware: Option<u8>,
    multiscan: Option<u8>,
    fracture_count: Option<u32>,
    frontal: Option<u8>,
    lateral: Option<u8>,
    oblique: Option<u8>,
    csv_label: Option<String>,
}

impl Row {
    fn from_sample(part: PartName, s: &Sample, absolute: bool) -> Self {
        let m = s.metadata.as_ref();
        Row {
            part: part.name().into(),
            // Relative paths would be read back against the manifest's folder: write them
            // absolute (unless the split is in a stored form, `Split::stored`).
            path: match absolute {
                true => std::path::absolute(&s.path).unwrap_or_else(|_| s.path.clone()),
                false => s.path.clone(),
            },
            label: s.label.name().into(),
            sha256: s.hash.to_string(),
            width: s.dimensions.map(|d| d.0),
            height: s.dimensions.map(|d| d.1),
            body_part: m.map(|m| m.body_part.name().into()),
            hardware: m.and_then(|m| m.hardware).map(u8::from),
            multiscan: m.map(|m| m.multiscan.into()),
            fracture_count: m.map(|m| m.fracture_count),
            frontal: m.map(|m| m.views.frontal.into()),
            lateral: m.map(|m| m.views.lateral.into()),
            oblique: m.map(|m| m.views.oblique.into()),
            csv_label: m.map(|m| m.csv_label.name().into()),
        }
    }

    fn into_sample(self, base: Option<&Path>) -> std::result::Result<(PartName, Sample), String> {
        let part = PartName::parse(&self.part).ok_or(format!("unknown part {:?}", self.part))?;
        let label = Label::parse(&self.label).ok_or(format!("unknown label {:?}", self.label))?;
        let hash =
            ContentHash::from_hex(&self.sha256).ok_or(format!("bad sha256 {:?}", self.sha256))?;
        let metadata = match (self.body_part, self.csv_label) {
            (Some(body), Some(csv_label)) => Some(Metadata {
                body_part: BodyPart::parse(&body).ok_or(format!("unknown body part {body:?}"))?,
                views: Views {
                    frontal: self.frontal.unwrap_or(0) != 0,
                    lateral: self.lateral.unwrap_or(0) != 0,
                    oblique: self.oblique.unwrap_or(0) != 0,
                },
                hardware: self.hardware.map(|h| h != 0),
                multiscan: self.multiscan.unwrap_or(0) != 0,
                fracture_count: self.fracture_count.unwrap_or(0),
                csv_label: Label::parse(&csv_label)
                    .ok_or(format!("unknown csv_label {csv_label:?}"))?,
            }),
            _ => None,
        };
        Ok((
            part,
            Sample {
                path: base.map_or_else(|| self.path.clone(), |b| b.join(&self.path)),
                label,
                hash,
                dimensions: self.width.zip(self.height),
                metadata,
            },
        ))
    }
}

impl Split {
    /// Write the split as a CSV manifest (see the module docs for the columns).
    ///
    /// Paths are written absolute (relative ones are made absolute against the current
    /// folder), so the manifest can live anywhere, e.g. next to a checkpoint.
    pub fn save_manifest(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let bytes = self.manifest_bytes(path, true)?;
        std::fs::write(path, bytes).map_err(|e| Error::io(path, e))
    }

    /// Write a split in a stored form ([`Split::stored`]) with its paths as they are, as a
    /// bundle's `split.csv` holds it; read it back with [`Split::load_stored_manifest`].
    pub(crate) fn save_stored_manifest(&self, path: &Path) -> Result<()> {
        let bytes = self.manifest_bytes(path, false)?;
        std::fs::write(path, bytes).map_err(|e| Error::io(path, e))
    }

    /// The manifest [`Split::save_manifest`] writes, as bytes (`path` names it in errors);
    /// paths made absolute when `absolute`, else written as they are.
    pub(crate) fn manifest_bytes(&self, path: &Path, absolute: bool) -> Result<Vec<u8>> {
        let mut writer = csv::Writer::from_writer(Vec::new());
        for part in self.parts() {
            for s in &part.samples {
                writer
                    .serialize(Row::from_sample(part.name, s, absolute))
                    .map_err(|e| csv_error(path, e))?;
            }
        }
        writer
            .into_inner()
            .map_err(|e| Error::io(path, std::io::Error::other(e.to_string())))
    }

    /// Where this split and `other` first differ, comparing each part's samples in order by
    /// path (made absolute) and label; `None` when they list the same images with the same
    /// labels. The message gives this split's side first (`A against B`). Content hashes and
    /// metadata are not compared.
    ///
    /// ```
    /// use fracture::dataset::synthetic::SyntheticConfig;
    /// use fracture::dataset::{FracAtlas, SplitConfig};
    /// let dir = tempfile::tempdir()?;
    /// SyntheticConfig { n_fractured: 5, n_not_fractured: 5, ..Default::default() }.generate_to(dir.path())?;
    /// let data = FracAtlas::open(dir.path())?;
    /// let split = data.split(&SplitConfig::default())?;
    /// assert_eq!(split.first_difference(&split.clone()), None);
    /// let other = data.split(&SplitConfig { seed: 7, ..SplitConfig::default() })?;
    /// assert!(split.first_difference(&other).unwrap().contains("part"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn first_difference(&self, other: &Split) -> Option<String> {
        let absolute = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        for (mine, theirs) in self.parts().into_iter().zip(other.parts()) {
            for (i, (a, b)) in mine.samples.iter().zip(&theirs.samples).enumerate() {
                let (pa, pb) = (absolute(&a.path), absolute(&b.path));
                if pa != pb || a.label != b.label {
                    return Some(format!(
                        "{} part, sample {}: {} ({}) against {} ({})",
                        mine.name,
                        i + 1,
                        pa.display(),
                        a.label,
                        pb.display(),
                        b.label
                    ));
                }
            }
            if mine.samples.len() != theirs.samples.len() {
                return Some(format!(
                    "{} part: {} samples against {}",
                    mine.name,
                    mine.samples.len(),
                    theirs.samples.len()
                ));
            }
        }
        None
    }

    /// Read a split written by [`Split::save_manifest`]. The images are not opened; any
    /// malformed row is an error naming the row.
    pub fn load_manifest(path: impl AsRef<Path>) -> Result<Split> {
        let path = path.as_ref();
        Self::read_manifest(path, Some(&manifest_dir(path)?))
    }

    /// Read a manifest in a stored form (a bundle's `split.csv`): paths kept as written
    /// (relative to the data root, or hashed), to be joined with [`Split::rooted_at`].
    pub(crate) fn load_stored_manifest(path: &Path) -> Result<Split> {
        Self::read_manifest(path, None)
    }

    fn read_manifest(path: &Path, base: Option<&Path>) -> Result<Split> {
        let mut reader = csv::Reader::from_path(path).map_err(|e| csv_error(path, e))?;
        let mut parts = PartName::ALL.map(|name| Part {
            name,
            samples: Vec::new(),
        });
        for (i, row) in reader.deserialize::<Row>().enumerate() {
            let row = row.map_err(|e| csv_error(path, e))?;
            let (part, sample) = row.into_sample(base).map_err(|message| Error::Format {
                path: path.to_path_buf(),
                message: format!("row {}: {message}", i + 2),
            })?;
            if let Some(p) = parts.iter_mut().find(|p| p.name == part) {
                p.samples.push(sample);
            }
        }
        let [train, val, test] = parts;
        Ok(Split { train, val, test })
    }
}

fn manifest_dir(csv_path: &Path) -> Result<PathBuf> {
    let parent = csv_path.parent().unwrap_or(Path::new("."));
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    parent.canonicalize().map_err(|e| Error::io(parent, e))
}

fn csv_error(path: &Path, e: csv::Error) -> Error {
    Error::Format {
        path: path.to_path_buf(),
        message: format!("CSV: {e}"),
    }
}
