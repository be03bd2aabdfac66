//! What to score: every file under a folder, or the paths a text file lists.

use crate::error::{Error, Result};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// One input: the path as the rows name it, and the file to read (or why there is none).
#[derive(Debug, Clone, PartialEq)]
pub struct Input {
    /// Relative to the input folder, `/`-separated (for a list: the line as written).
    pub path: String,
    /// The file to read, or why it cannot be (a folder that cannot be read, a link loop).
    pub file: std::result::Result<PathBuf, String>,
}

/// The inputs under `input`: a folder (every regular file under it, links followed, in path
/// order), or a text file with one path per line (relative ones resolved against the list's
/// folder; blank lines and lines starting with `#` skipped). A path listed twice counts once.
/// Files under `exclude` (the output folder, when it is inside the input) are left out.
///
/// ```
/// let dir = tempfile::tempdir()?;
/// std::fs::create_dir(dir.path().join("b"))?;
/// std::fs::write(dir.path().join("b/2.jpg"), b"x")?;
/// std::fs::write(dir.path().join("1.png"), b"x")?;
/// let inputs = fracture::score::list_inputs(dir.path(), None)?;
/// let paths: Vec<_> = inputs.iter().map(|i| i.path.as_str()).collect();
/// assert_eq!(paths, ["1.png", "b/2.jpg"]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn list_inputs(input: &Path, exclude: Option<&Path>) -> Result<Vec<Input>> {
    let mut inputs = if input.is_dir() {
        walk(input, exclude)?
    } else {
        read_list(input)?
    };
    let mut seen = HashSet::new();
    inputs.retain(|i| seen.insert(i.path.clone()));
    Ok(inputs)
}

fn walk(root: &Path, exclude: Option<&Path>) -> Result<Vec<Input>> {
    let exclude = exclude.and_then(|e| e.canonicalize().ok());
    let relative = |path: &Path| -> String {
        let rel = path.strip_prefix(root).unwrap_or(path);
        rel.components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/")
    };
    let mut inputs = Vec::new();
    let walker = walkdir::WalkDir::new(root)
        .follow_links(true)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|entry| {
            exclude.as_ref().is_none_or(|ex| {
                entry.depth() == 0
                    || !entry.file_type().is_dir()
                    || entry.path().canonicalize().map_or(true, |p| &p != ex)
            })
        });
    for entry in walker {
        match entry {
            Ok(entry) if entry.file_type().is_file() => {
                let path = entry.into_path();
                let file = if path.to_str().is_some() {
                    Ok(path.clone())
                } else {
                    Err("unreadable: the path is not valid UTF-8".to_string())
                };
                inputs.push(Input {
                    path: relative(&path),
                    file,
                });
            }
            Ok(_) => {}
            Err(e) if e.depth() == 0 => {
                let source = e
                    .into_io_error()
                    .unwrap_or_else(|| std::io::Error::other("cannot walk the folder"));
                return Err(Error::io(root, source));
            }
            Err(e) => {
                let path = e.path().unwrap_or(root).to_path_buf();
                let reason = match e.loop_ancestor() {
                    Some(_) => "unreadable: link loop, not followed".to_string(),
                    None => format!(
                        "unreadable: {}",
                        e.io_error()
                            .map_or_else(|| e.to_string(), ToString::to_string)
                    ),
                };
                inputs.push(Input {
                    path: relative(&path),
                    file: Err(reason),
                });
            }
        }
    }
    inputs.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(inputs)
}

fn read_list(list: &Path) -> Result<Vec<Input>> {
    let text = std::fs::read_to_string(list).map_err(|e| {
        Error::io(
            list,
            std::io::Error::new(
                e.kind(),
                format!("{e} (the input is a folder or a text file of paths)"),
            ),
        )
    })?;
    let base = list.parent().unwrap_or(Path::new("."));
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| Input {
            path: line.to_string(),
            file: Ok(base.join(line)),
        })
        .collect())
}
