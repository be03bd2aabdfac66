//! Atomic file writes, shared by training checkpoints and classifier bundles: a file is
//! either the old version or the complete new one, never half written.

use crate::error::{Error, Result};
use candle_core::Tensor;
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Suffix of the temporary files (left behind only by a crash; safe to delete).
pub(crate) const TMP_SUFFIX: &str = ".tmp";

/// Writes files atomically into a folder: each to a temporary name in the same folder, flushed
/// to disk, then renamed over its final name (and the folder synced), so that a reader never
/// sees half a file and a crash leaves the previous version in place.
///
/// For tests, `fail_at` makes the n-th write (0-based) stop halfway through its temporary
/// file and return an error, as a killed process would.
pub(crate) struct AtomicWriter {
    dir: PathBuf,
    writes: usize,
    fail_at: Option<usize>,
}

impl AtomicWriter {
    pub(crate) fn new(dir: &Path, fail_at: Option<usize>) -> Self {
        Self {
            dir: dir.to_path_buf(),
            writes: 0,
            fail_at,
        }
    }

    /// Write `bytes` as `name` in the folder, replacing any previous file atomically.
    pub(crate) fn write_bytes(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        self.write_with(name, |tmp_path| {
            std::fs::write(tmp_path, bytes).map_err(|e| Error::io(tmp_path, e))
        })
    }

    /// Write named tensors as a safetensors file.
    pub(crate) fn write_tensors(&mut self, name: &str, tensors: &[(String, Tensor)]) -> Result<()> {
        let map: HashMap<&str, Tensor> = tensors
            .iter()
            .map(|(n, t)| (n.as_str(), t.clone()))
            .collect();
        self.write_with(name, |tmp_path| {
            candle_core::safetensors::save(&map, tmp_path).map_err(|e| Error::Format {
                path: tmp_path.into(),
                message: format!("cannot write safetensors: {e}"),
            })
        })
    }

    /// Let `write` fill a temporary file, flush it to disk, rename it to `name`.
    pub(crate) fn write_with(
        &mut self,
        name: &str,
        write: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<()> {
        let final_path = self.dir.join(name);
        let tmp_path = self.dir.join(format!("{name}{TMP_SUFFIX}"));
        let index = self.writes;
        self.writes += 1;
        write(&tmp_path)?;
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&tmp_path)
            .map_err(|e| Error::io(&tmp_path, e))?;
        if self.fail_at == Some(index) {
            let len = file.metadata().map_err(|e| Error::io(&tmp_path, e))?.len();
            file.set_len(len / 2).map_err(|e| Error::io(&tmp_path, e))?;
            return Err(Error::Training(format!(
                "injected failure while writing {}",
                tmp_path.display()
            )));
        }
        file.sync_all().map_err(|e| Error::io(&tmp_path, e))?;
        drop(file);
        std::fs::rename(&tmp_path, &final_path).map_err(|e| Error::io(&final_path, e))?;
        sync_dir(&self.dir);
        Ok(())
    }

    /// Write a value as pretty JSON.
    pub(crate) fn write_json<T: Serialize>(&mut self, name: &str, value: &T) -> Result<()> {
        let text = serde_json::to_string_pretty(value).map_err(|e| Error::Format {
            path: self.dir.join(name),
            message: format!("cannot serialize: {e}"),
        })?;
        self.write_bytes(name, text.as_bytes())
    }
}

/// Write one file atomically at `path`, creating its folder: `write` fills a temporary file
/// in the same folder, which is then flushed and renamed over `path`.
pub(crate) fn write_file(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::InvalidInput(format!("{}: not a file path", path.display())))?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    AtomicWriter::new(dir, None).write_with(name, write)
}

/// Make a rename durable (best effort: not every platform can open a folder).
fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}
