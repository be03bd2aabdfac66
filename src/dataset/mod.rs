//! Radiograph datasets as they are on disk: samples, labels, metadata and a load report.
//!
//! This is the first step of the pipeline. A reader turns a folder into a [`Dataset`]: one
//! [`Sample`] per readable image (path, [`Label`], SHA-256 of the bytes, header size and, for
//! FracAtlas, the `dataset.csv` metadata). Problems that real data brings (unreadable files,
//! truncated JPEGs, a CSV row that disagrees with its folder) are collected in a
//! [`LoadReport`] instead of failing the whole load. A missing root or class folder is an
//! error.
//!
//! Readers: [`FracAtlas`] (the official layout), [`ImageFolder`] (one folder per class) and
//! [`open_manifest`] (a `path,label` CSV). Then [`Dataset::split`] makes a stratified,
//! duplicate-aware train/val/test [`Split`], and [`loader::ImageLoader`] turns a part into
//! batches.
//!
//! ```
//! use fracture::dataset::{synthetic::SyntheticConfig, FracAtlas, SplitConfig};
//! let dir = tempfile::tempdir()?;
//! SyntheticConfig { n_fractured: 6, n_not_fractured: 14, ..SyntheticConfig::default() }
//!     .generate_to(dir.path())?;
//! let data = FracAtlas::open(dir.path())?;
//! assert_eq!(data.len(), 20);
//! let split = data.split(&SplitConfig::default())?;
//! assert_eq!(split.train.len() + split.val.len() + split.test.len(), 20);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod annotations;
pub mod decode;
pub mod dicom;
pub mod folder;
pub mod fracatlas;
pub mod loader;
pub mod manifest;
mod scan;
pub mod split;
pub mod stored_path;
pub mod synthetic;
pub mod walk;

pub use folder::ImageFolder;
pub use fracatlas::FracAtlas;
pub use manifest::open_manifest;
pub use split::{Part, PartName, PartSummary, Split, SplitConfig};

use crate::error::{Error, Result};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// The class of a radiograph. `Fractured` is the positive class (1).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Label {
    /// No fracture visible (0).
    NotFractured,
    /// At least one fracture (1, the positive class).
    Fractured,
}

impl Label {
    /// The label as the model's target: 1.0 for fractured, 0.0 otherwise.
    ///
    /// ```
    /// use fracture::dataset::Label;
    /// assert_eq!(Label::Fractured.as_f32(), 1.0);
    /// assert_eq!(Label::NotFractured.as_f32(), 0.0);
    /// ```
    pub fn as_f32(self) -> f32 {
        match self {
            Label::Fractured => 1.0,
            Label::NotFractured => 0.0,
        }
    }

    /// The name used in manifests and summaries: `fractured` or `not_fractured`.
    pub fn name(self) -> &'static str {
        match self {
            Label::Fractured => "fractured",
            Label::NotFractured => "not_fractured",
        }
    }

    /// Both labels, negative first.
    pub const ALL: [Label; 2] = [Label::NotFractured, Label::Fractured];

    /// Parse a label written by people or tools: `1`, `fractured`, `Fractured`, `positive`,
    /// `true` / `0`, `not_fractured`, `Non_fractured`, `normal`, `negative`, `false`
    /// (case-insensitive; `-` and spaces count as `_`). `None` for anything else.
    ///
    /// ```
    /// use fracture::dataset::Label;
    /// assert_eq!(Label::parse("Non_fractured"), Some(Label::NotFractured));
    /// assert_eq!(Label::parse("1"), Some(Label::Fractured));
    /// assert_eq!(Label::parse("maybe"), None);
    /// ```
    pub fn parse(text: &str) -> Option<Label> {
        let key = text.trim().to_ascii_lowercase().replace(['-', ' '], "_");
        match key.as_str() {
            "1" | "fractured" | "fracture" | "positive" | "abnormal" | "true" | "yes" => {
                Some(Label::Fractured)
            }
            "0" | "not_fractured" | "non_fractured" | "nonfractured" | "notfractured"
            | "unfractured" | "normal" | "negative" | "false" | "no" => Some(Label::NotFractured),
            _ => None,
        }
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

/// The SHA-256 of a file's bytes: equal hashes mean byte-identical files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContentHash(pub [u8; 32]);

impl ContentHash {
    /// Hash a byte buffer.
    ///
    /// ```
    /// use fracture::dataset::ContentHash;
    /// // SHA-256 of the empty input, a well-known value.
    /// assert!(ContentHash::of(b"").to_string().starts_with("e3b0c442"));
    /// ```
    pub fn of(bytes: &[u8]) -> Self {
        use sha2::Digest;
        ContentHash(sha2::Sha256::digest(bytes).into())
    }

    /// Parse 64 hexadecimal digits.
    pub fn from_hex(hex: &str) -> Option<Self> {
        let hex = hex.trim();
        if hex.len() != 64 || !hex.is_ascii() {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(ContentHash(out))
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

/// The anatomical region of a radiograph, from FracAtlas's one-hot body-part columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BodyPart {
    /// Hand (and wrist, fingers).
    Hand,
    /// Leg (and knee, ankle, foot).
    Leg,
    /// Hip (and pelvis).
    Hip,
    /// Shoulder.
    Shoulder,
    /// Several regions in one image (the `mixed` flag, or more than one flag set).
    Mixed,
    /// No body part given.
    Unknown,
}

impl BodyPart {
    /// Lower-case name, as written in manifests.
    pub fn name(self) -> &'static str {
        match self {
            BodyPart::Hand => "hand",
            BodyPart::Leg => "leg",
            BodyPart::Hip => "hip",
            BodyPart::Shoulder => "shoulder",
            BodyPart::Mixed => "mixed",
            BodyPart::Unknown => "unknown",
        }
    }

    /// Parse a name written by [`BodyPart::name`].
    pub fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "hand" => Some(BodyPart::Hand),
            "leg" => Some(BodyPart::Leg),
            "hip" => Some(BodyPart::Hip),
            "shoulder" => Some(BodyPart::Shoulder),
            "mixed" => Some(BodyPart::Mixed),
            "unknown" | "" => Some(BodyPart::Unknown),
            _ => None,
        }
    }
}

impl fmt::Display for BodyPart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.name())
    }
}

/// Which projections an image shows (several may be set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Views {
    /// Frontal (antero-posterior or postero-anterior) view.
    pub frontal: bool,
    /// Lateral view.
    pub lateral: bool,
    /// Oblique view.
    pub oblique: bool,
}

/// Per-image metadata from FracAtlas's `dataset.csv`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// The anatomical region.
    pub body_part: BodyPart,
    /// The projections shown.
    pub views: Views,
    /// Whether surgical hardware (plates, screws) is visible; `None` when the source does not
    /// say (DICOM). A strong shortcut in FracAtlas: nearly all such images are fractured.
    pub hardware: Option<bool>,
    /// Whether the image holds several scans side by side.
    pub multiscan: bool,
    /// Number of annotated fractures.
    pub fracture_count: u32,
    /// The `fractured` column as written in the CSV (the folder is authoritative).
    pub csv_label: Label,
}

/// One image of a dataset.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Where the image is.
    pub path: PathBuf,
    /// Its class (for FracAtlas and class folders: the folder it sits in).
    pub label: Label,
    /// SHA-256 of the file's bytes.
    pub hash: ContentHash,
    /// Width and height read from the file header (before EXIF orientation), if known.
    pub dimensions: Option<(u32, u32)>,
    /// Metadata joined from a CSV, if the dataset has one.
    pub metadata: Option<Metadata>,
}

impl Sample {
    /// The body part, `Unknown` without metadata.
    pub fn body_part(&self) -> BodyPart {
        self.metadata
            .as_ref()
            .map_or(BodyPart::Unknown, |m| m.body_part)
    }
}

/// A file that was left out of the dataset, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedFile {
    /// The file.
    pub path: PathBuf,
    /// Why it was left out.
    pub reason: String,
}

/// A CSV row whose label disagrees with the folder the image sits in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelDisagreement {
    /// The image.
    pub path: PathBuf,
    /// The label given by the folder (kept).
    pub folder_label: Label,
    /// The label written in the CSV (ignored).
    pub csv_label: Label,
}

/// Everything noticed while opening a dataset that did not stop it from opening.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Files that could not be used (empty, not an image, unreadable header, I/O error).
    pub unreadable: Vec<SkippedFile>,
    /// JPEGs without an end-of-image marker: kept, the loader decodes them leniently.
    pub truncated: Vec<PathBuf>,
    /// Images whose CSV label disagrees with their folder.
    pub label_disagreements: Vec<LabelDisagreement>,
    /// Images without a metadata row.
    pub missing_metadata: Vec<PathBuf>,
    /// Metadata rows (or manifest rows) without a matching image, with the reason.
    pub orphan_rows: Vec<String>,
    /// Class folders that hold no image.
    pub empty_classes: Vec<PathBuf>,
    /// Files and folders that were not considered (other extensions, other folders).
    pub ignored: Vec<PathBuf>,
}

impl LoadReport {
    /// Whether nothing was noticed.
    pub fn is_clean(&self) -> bool {
        *self == LoadReport::default()
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "load report:")?;
        writeln!(f, "  unreadable files skipped: {}", self.unreadable.len())?;
        for s in &self.unreadable {
            writeln!(f, "    {}: {}", s.path.display(), s.reason)?;
        }
        writeln!(
            f,
            "  truncated JPEGs kept (decoded leniently): {}",
            self.truncated.len()
        )?;
        writeln!(
            f,
            "  CSV labels disagreeing with their folder (folder kept): {}",
            self.label_disagreements.len()
        )?;
        for d in &self.label_disagreements {
            writeln!(
                f,
                "    {}: folder says {}, CSV says {}",
                d.path.display(),
                d.folder_label,
                d.csv_label
            )?;
        }
        writeln!(
            f,
            "  images without metadata: {}",
            self.missing_metadata.len()
        )?;
        writeln!(f, "  rows without an image: {}", self.orphan_rows.len())?;
        for p in &self.empty_classes {
            writeln!(f, "  empty class folder: {}", p.display())?;
        }
        write!(f, "  ignored paths: {}", self.ignored.len())
    }
}

/// Number of samples per class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ClassCounts {
    /// Samples labelled fractured.
    pub fractured: usize,
    /// Samples labelled not fractured.
    pub not_fractured: usize,
}

impl ClassCounts {
    /// Count the labels of some samples.
    pub fn of<'a>(samples: impl IntoIterator<Item = &'a Sample>) -> Self {
        let mut counts = ClassCounts::default();
        for s in samples {
            counts.add(s.label);
        }
        counts
    }

    /// Count one more sample of `label`.
    pub fn add(&mut self, label: Label) {
        match label {
            Label::Fractured => self.fractured += 1,
            Label::NotFractured => self.not_fractured += 1,
        }
    }

    /// The count for one label.
    pub fn get(&self, label: Label) -> usize {
        match label {
            Label::Fractured => self.fractured,
            Label::NotFractured => self.not_fractured,
        }
    }

    /// Both classes together.
    pub fn total(&self) -> usize {
        self.fractured + self.not_fractured
    }
}

/// A set of labelled images, with what was noticed while reading it.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// The folder (or manifest) it was read from.
    pub root: PathBuf,
    /// The usable images, sorted by path.
    pub samples: Vec<Sample>,
    /// Problems found while reading.
    pub report: LoadReport,
}

impl Dataset {
    /// Number of usable images.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether there is no usable image.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Images per class.
    pub fn counts(&self) -> ClassCounts {
        ClassCounts::of(&self.samples)
    }

    /// Groups of byte-identical images (two or more members each), as sample indices in
    /// ascending order; groups are ordered by their first member.
    pub fn duplicate_groups(&self) -> Vec<Vec<usize>> {
        duplicate_groups(&self.samples)
    }

    /// Split into train/val/test; see [`crate::dataset::split`] for the rules.
    pub fn split(&self, config: &SplitConfig) -> Result<Split> {
        split::split_samples(&self.samples, config)
    }
}

/// Groups of byte-identical samples (same [`ContentHash`]) with two or more members.
pub fn duplicate_groups(samples: &[Sample]) -> Vec<Vec<usize>> {
    let mut by_hash: BTreeMap<ContentHash, Vec<usize>> = BTreeMap::new();
    for (i, s) in samples.iter().enumerate() {
        by_hash.entry(s.hash).or_default().push(i);
    }
    let mut groups: Vec<Vec<usize>> = by_hash.into_values().filter(|g| g.len() > 1).collect();
    groups.sort();
    groups
}

fn missing_root(path: &Path) -> Error {
    Error::Dataset {
        path: path.to_path_buf(),
        message: "folder not found (check the path; for FracAtlas it is the folder holding \
                  `images/` and `dataset.csv`)"
            .into(),
    }
}
