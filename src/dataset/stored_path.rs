//! How image paths are written to disk. In hospitals a file path often holds the patient's
//! name or ID (`/exports/DOE_JOHN_4711/IM0001.dcm`), so nothing this crate writes into a
//! bundle or a report holds an absolute image path: every path is written in a [`PathForm`],
//! relative to the *data root* or as a salted hash of that relative path.
//!
//! The data root of a file is the deepest folder that holds every image path the file
//! mentions ([`data_root`]): for FracAtlas that is `FracAtlas/images`, so a stored path reads
//! `Fractured/IMG0000019.jpg`. The root itself is never written.
//!
//! With [`PathForm::SaltedHash`] every stored path is `salted-sha256:` followed by the hex
//! SHA-256 of the salt, a zero byte and the relative path (with `/` separators). The salt is
//! the user's secret: it is never written anywhere, so whoever reads the files cannot test a
//! guessed name against the hashes, while whoever holds the salt can find an image's row by
//! hashing its relative path again ([`PathForm::store`]).
//!
//! ```
//! use fracture::dataset::stored_path::{PathForm, PathSalt};
//! use std::path::Path;
//! let root = Path::new("/data/xrays");
//! let image = Path::new("/data/xrays/DOE_JOHN/IM0001.dcm");
//! assert_eq!(PathForm::Relative.store(root, image), "DOE_JOHN/IM0001.dcm");
//! let hashed = PathForm::SaltedHash(PathSalt::new("a secret of 16+ bytes")?);
//! let stored = hashed.store(root, image);
//! assert!(stored.starts_with("salted-sha256:") && !stored.contains("DOE"));
//! # Ok::<(), fracture::Error>(())
//! ```

use crate::error::{Error, Result};
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::{Component, Path, PathBuf};

/// The prefix of a path stored as a salted hash.
pub const HASH_PREFIX: &str = "salted-sha256:";

/// The shortest salt [`PathSalt::new`] accepts, in bytes (a short salt could be guessed, and
/// with it every hashed name).
pub const MIN_SALT_BYTES: usize = 16;

/// The user's secret salt of [`PathForm::SaltedHash`]. Its `Debug` does not show it, and
/// nothing in this crate writes it to disk.
///
/// ```
/// use fracture::dataset::stored_path::PathSalt;
/// assert!(PathSalt::new("short").is_err());
/// let salt = PathSalt::new("correct horse battery staple")?;
/// assert!(!format!("{salt:?}").contains("horse"));
/// # Ok::<(), fracture::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct PathSalt(String);

impl PathSalt {
    /// A salt of at least [`MIN_SALT_BYTES`] bytes.
    pub fn new(salt: impl Into<String>) -> Result<Self> {
        let salt = salt.into();
        if salt.len() < MIN_SALT_BYTES {
            return Err(Error::InvalidConfig(format!(
                "a path salt needs at least {MIN_SALT_BYTES} bytes, this one has {}",
                salt.len()
            )));
        }
        Ok(Self(salt))
    }
}

impl fmt::Debug for PathSalt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PathSalt(<hidden>)")
    }
}

/// How image paths are written into bundles (`split.csv`, `metrics.json`) and reports
/// (`metrics.json`, `report.html`). Default: relative to the data root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum PathForm {
    /// The path relative to the data root, with `/` separators.
    #[default]
    Relative,
    /// [`HASH_PREFIX`] and the hex SHA-256 of salt, a zero byte and the relative path.
    SaltedHash(PathSalt),
}

impl PathForm {
    /// `path` as it is written to disk, against the data root `root`. A path outside `root`
    /// keeps only its file name (never its folders); a relative `path` counts as already
    /// relative to the root.
    ///
    /// ```
    /// use fracture::dataset::stored_path::PathForm;
    /// use std::path::Path;
    /// let root = Path::new("/data");
    /// assert_eq!(PathForm::Relative.store(root, Path::new("/data/a/b.png")), "a/b.png");
    /// assert_eq!(PathForm::Relative.store(root, Path::new("/elsewhere/JOHN/b.png")), "b.png");
    /// assert_eq!(PathForm::Relative.store(root, Path::new("a/b.png")), "a/b.png");
    /// ```
    pub fn store(&self, root: &Path, path: &Path) -> String {
        let text = relative_path(root, path);
        match self {
            PathForm::Relative => text,
            PathForm::SaltedHash(salt) => {
                if is_hashed(&text) {
                    return text;
                }
                let mut hasher = Sha256::new();
                hasher.update(salt.0.as_bytes());
                hasher.update([0u8]);
                hasher.update(text.as_bytes());
                let digest = hasher.finalize();
                let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
                format!("{HASH_PREFIX}{hex}")
            }
        }
    }

    /// What the stored paths are, in words (written into `metrics.json` as `path_form`).
    pub fn describe(&self) -> &'static str {
        match self {
            PathForm::Relative => "relative to the data root",
            PathForm::SaltedHash(_) => {
                "salted SHA-256 of the path relative to the data root (salt not stored)"
            }
        }
    }
}

/// Whether a stored path is already a salted hash (hashing is not applied twice).
fn is_hashed(text: &str) -> bool {
    text.strip_prefix(HASH_PREFIX)
        .is_some_and(|hex| hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// `path` relative to `root` with `/` separators; the file name alone for an absolute path
/// outside `root`; a relative path as it is.
fn relative_path(root: &Path, path: &Path) -> String {
    let joined = |p: &Path| {
        p.components()
            .filter_map(|c| match c {
                Component::Normal(part) => Some(part.to_string_lossy().into_owned()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join("/")
    };
    if !path.is_absolute() {
        return joined(path);
    }
    match path.strip_prefix(root) {
        Ok(inner) if root.is_absolute() => joined(inner),
        _ => path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    }
}

/// The deepest folder that holds every absolute path of `paths` (relative paths are left out
/// of the reckoning); `None` when there is none. The data root of a bundle or report is this
/// over every image path it mentions.
///
/// ```
/// use fracture::dataset::stored_path::data_root;
/// use std::path::{Path, PathBuf};
/// let paths = [Path::new("/d/images/Fractured/a.jpg"), Path::new("/d/images/Non_fractured/b.jpg")];
/// assert_eq!(data_root(paths), Some(PathBuf::from("/d/images")));
/// assert_eq!(data_root([Path::new("/d/x/a.jpg")]), Some(PathBuf::from("/d/x")));
/// ```
pub fn data_root<'a>(paths: impl IntoIterator<Item = &'a Path>) -> Option<PathBuf> {
    let mut root: Option<PathBuf> = None;
    for path in paths.into_iter().filter(|p| p.is_absolute()) {
        let folder = path.parent().unwrap_or(path);
        root = Some(match root {
            None => folder.to_path_buf(),
            Some(current) => folder
                .ancestors()
                .find(|a| current.starts_with(a))
                .map(Path::to_path_buf)
                .unwrap_or_default(),
        });
    }
    root
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_depend_on_salt_and_path_and_hide_both() {
        let root = Path::new("/r");
        let image = Path::new("/r/SMITH_ANNA_0815/IM0001.dcm");
        let one = PathForm::SaltedHash(PathSalt::new("first salt, sixteen+").unwrap());
        let two = PathForm::SaltedHash(PathSalt::new("second salt, sixteen").unwrap());
        let a = one.store(root, image);
        assert_eq!(a, one.store(root, image), "not deterministic");
        assert_ne!(a, two.store(root, image), "salt ignored");
        assert_ne!(
            a,
            one.store(root, Path::new("/r/SMITH_ANNA_0815/IM0002.dcm"))
        );
        assert!(!a.contains("SMITH") && !a.contains("IM0001") && !a.contains("sixteen"));
        assert_eq!(a.len(), HASH_PREFIX.len() + 64);
        // Hashing a stored hash again leaves it as it is.
        assert_eq!(one.store(root, Path::new(&a)), a);
        // printf 'first salt, sixteen+\0SMITH_ANNA_0815/IM0001.dcm' | sha256sum
        let expected = "bb68076be3e5176b45166fc78d98d54c502856059d7cef9e7041b696a343d7d8";
        assert_eq!(a, format!("{HASH_PREFIX}{expected}"));
    }

    #[test]
    fn the_root_is_the_deepest_common_folder() {
        let p = |s: &str| PathBuf::from(s);
        let paths = [p("/a/b/c/x.png"), p("/a/b/d/y.png"), p("relative/z.png")];
        assert_eq!(
            data_root(paths.iter().map(PathBuf::as_path)),
            Some(p("/a/b"))
        );
        assert_eq!(data_root([Path::new("rel/x.png")]), None);
        assert_eq!(
            data_root([Path::new("/x/1.png"), Path::new("/y/2.png")]),
            Some(p("/"))
        );
    }
}
