//! A generic class-folder dataset: `root/<fractured folder>/*`, `root/<not fractured folder>/*`.
//!
//! Folder names are recognised by [`Label::parse`] (`Fractured`, `fracture`, `positive`, `1`,
//! `abnormal` / `Non_fractured`, `not_fractured`, `normal`, `negative`, `0`, ...), or given
//! explicitly with [`ImageFolder::open_with`]. Other folders are listed in
//! [`LoadReport::ignored`](super::LoadReport::ignored).

use super::{scan, Dataset, Label, LoadReport};
use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// Reader for datasets laid out as one folder per class.
///
/// ```
/// use fracture::dataset::{ImageFolder, Label};
/// let root = tempfile::tempdir()?;
/// for (dir, value) in [("fractured", 200u8), ("normal", 40)] {
///     std::fs::create_dir(root.path().join(dir))?;
///     image::GrayImage::from_pixel(8, 8, image::Luma([value]))
///         .save(root.path().join(dir).join("a.png"))?;
/// }
/// let data = ImageFolder::open(root.path())?;
/// assert_eq!(data.counts().fractured, 1);
/// assert_eq!(data.counts().not_fractured, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct ImageFolder;

impl ImageFolder {
    /// Open `root`, finding the two class folders by name (see the module docs).
    ///
    /// Errors if `root` is missing, or if a class has no folder or more than one.
    pub fn open(root: impl AsRef<Path>) -> Result<Dataset> {
        let root = scan::existing_root(root.as_ref())?;
        let entries = std::fs::read_dir(&root).map_err(|e| Error::io(&root, e))?;
        let mut fractured = Vec::new();
        let mut not_fractured = Vec::new();
        let mut report = LoadReport::default();
        for entry in entries {
            let path = entry.map_err(|e| Error::io(&root, e))?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            match (path.is_dir(), Label::parse(name)) {
                (true, Some(Label::Fractured)) => fractured.push(path),
                (true, Some(Label::NotFractured)) => not_fractured.push(path),
                _ => report.ignored.push(path),
            }
        }
        let fractured = single_folder(&root, fractured, Label::Fractured)?;
        let not_fractured = single_folder(&root, not_fractured, Label::NotFractured)?;
        report.ignored.sort();
        open_folders(root, &fractured, &not_fractured, report)
    }

    /// Open `root` with explicit class folder names (relative to `root`).
    pub fn open_with(
        root: impl AsRef<Path>,
        fractured_dir: &str,
        not_fractured_dir: &str,
    ) -> Result<Dataset> {
        let root = scan::existing_root(root.as_ref())?;
        let fractured = root.join(fractured_dir);
        let not_fractured = root.join(not_fractured_dir);
        open_folders(root, &fractured, &not_fractured, LoadReport::default())
    }
}

/// Read the two class folders into a dataset rooted at `root`.
pub(crate) fn open_folders(
    root: PathBuf,
    fractured: &Path,
    not_fractured: &Path,
    mut report: LoadReport,
) -> Result<Dataset> {
    let folders = [
        (fractured.to_path_buf(), Label::Fractured),
        (not_fractured.to_path_buf(), Label::NotFractured),
    ];
    let samples = scan::read_class_folders(&folders, &mut report)?;
    Ok(Dataset {
        root,
        samples,
        report,
    })
}

fn single_folder(root: &Path, mut found: Vec<PathBuf>, label: Label) -> Result<PathBuf> {
    found.sort();
    match found.len() {
        1 => Ok(found.remove(0)),
        0 => Err(Error::Dataset {
            path: root.to_path_buf(),
            message: format!(
                "no folder for class {label} (expected a folder named like `Fractured` / \
                 `Non_fractured`, or use ImageFolder::open_with)"
            ),
        }),
        _ => Err(Error::Dataset {
            path: root.to_path_buf(),
            message: format!("several folders for class {label}: {found:?}"),
        }),
    }
}
