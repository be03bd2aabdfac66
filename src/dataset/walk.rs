//! The one walk over a folder of images ([`files_under`], used by
//! [`crate::FractureClassifier::classify_dir`] and the `explain` example), and where an output
//! for each input goes when the input tree is mirrored ([`mirrored_path`]).

use crate::error::{Error, Result};
use std::path::{Path, PathBuf};

/// What [`files_under`] found.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FolderFiles {
    /// Every regular file, sorted by path.
    pub files: Vec<PathBuf>,
    /// Entries that could not be walked (a folder without permission, a broken link, a link
    /// loop), with the reason.
    pub skipped: Vec<(PathBuf, String)>,
}

/// Every regular file under `dir`, recursively (links followed), sorted by path; entries that
/// cannot be read go to [`FolderFiles::skipped`] with the reason. An error only when `dir`
/// itself cannot be read.
///
/// ```
/// let dir = tempfile::tempdir()?;
/// std::fs::create_dir_all(dir.path().join("a"))?;
/// std::fs::write(dir.path().join("a/IM0001.dcm"), b"x")?;
/// std::fs::write(dir.path().join("IM0001.dcm"), b"x")?;
/// let found = fracture::dataset::walk::files_under(dir.path())?;
/// assert_eq!(found.files, [dir.path().join("IM0001.dcm"), dir.path().join("a/IM0001.dcm")]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn files_under(dir: &Path) -> Result<FolderFiles> {
    let mut found = FolderFiles::default();
    for entry in walkdir::WalkDir::new(dir).follow_links(true) {
        match entry {
            Ok(entry) if entry.file_type().is_file() => found.files.push(entry.into_path()),
            Ok(_) => {}
            Err(e) if e.depth() == 0 => {
                let source = e
                    .into_io_error()
                    .unwrap_or_else(|| std::io::Error::other("cannot walk the folder"));
                return Err(Error::io(dir, source));
            }
            Err(e) => {
                let path = e.path().unwrap_or(dir).to_path_buf();
                let reason = match e.loop_ancestor() {
                    Some(ancestor) => format!(
                        "link loop: leads back to {}, not followed",
                        ancestor.display()
                    ),
                    None => format!(
                        "cannot be read: {}",
                        e.io_error()
                            .map_or_else(|| e.to_string(), ToString::to_string)
                    ),
                };
                found.skipped.push((path, reason));
            }
        }
    }
    found.files.sort();
    found.skipped.sort();
    Ok(found)
}

/// Where the output for `file` (found under `input_root`) goes in `out`: the same folders
/// below `out` as `file` has below `input_root`, and the file name's stem followed by
/// `suffix`. Two inputs of the same name in different folders (many `IM0001.dcm`) so never
/// share an output. A `file` outside `input_root` (or `input_root` a file itself) keeps only
/// its name.
///
/// ```
/// use fracture::dataset::walk::mirrored_path;
/// use std::path::Path;
/// let out = mirrored_path(Path::new("in"), Path::new("in/a/IM0001.dcm"), Path::new("maps"), "_gradcam.png");
/// assert_eq!(out, Path::new("maps/a/IM0001_gradcam.png"));
/// ```
pub fn mirrored_path(input_root: &Path, file: &Path, out: &Path, suffix: &str) -> PathBuf {
    let relative = file.strip_prefix(input_root).unwrap_or(file);
    let folder = relative.parent().filter(|_| relative != file);
    let stem = file
        .file_stem()
        .map_or_else(|| "image".into(), |s| s.to_string_lossy());
    let name = format!("{stem}{suffix}");
    match folder {
        Some(folder) => out.join(folder).join(name),
        None => out.join(name),
    }
}
