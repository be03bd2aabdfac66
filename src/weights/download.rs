//! Fetching one file over HTTP(S) into a cache folder, checked by MD5 before it takes its place.
//!
//! The body streams into a temporary file in the destination folder (a name no other download
//! uses) while its MD5 is computed; only a complete body with the expected hash is flushed and
//! renamed over the destination. A dropped connection, a short body or a wrong hash removes the
//! temporary file and leaves whatever was at the destination untouched.

use crate::error::{Error, Result};
use indicatif::{ProgressBar, ProgressStyle};
use md5::{Digest, Md5};
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Bytes read per step while hashing or downloading.
const CHUNK: usize = 1 << 20;
/// Off a terminal, a progress line every this many bytes.
const LOG_EVERY: u64 = 32 << 20;

/// The MD5 of a file's content as 32 lowercase hex digits.
///
/// ```
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("abc.txt");
/// std::fs::write(&path, b"abc")?;
/// assert_eq!(fracture::weights::file_md5(&path)?, "900150983cd24fb0d6963f7d28e17f72");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn file_md5(path: impl AsRef<Path>) -> Result<String> {
    let path = path.as_ref();
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut hasher = Md5::new();
    let mut buffer = vec![0u8; CHUNK];
    loop {
        let n = file.read(&mut buffer).map_err(|e| Error::io(path, e))?;
        match buffer.get(..n) {
            Some(read) if n > 0 => hasher.update(read),
            _ => break,
        }
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A temporary file that removes itself unless it was renamed into place.
struct PartFile {
    path: PathBuf,
    kept: bool,
}

impl Drop for PartFile {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Download `url` to `dest` if its MD5 is `expected_md5` (lowercase hex); anything else is an
/// [`Error::Download`] and `dest` is left as it was. `progress` shows a byte counter (a bar on
/// a terminal, a line every 32 MB otherwise).
pub(crate) fn download_verified(
    url: &str,
    dest: &Path,
    expected_md5: &str,
    progress: bool,
) -> Result<()> {
    let fail = |message: String| Error::Download {
        url: url.to_string(),
        message,
    };
    let dir = dest
        .parent()
        .ok_or_else(|| fail(format!("{} has no parent folder", dest.display())))?;
    let name = dest
        .file_name()
        .ok_or_else(|| fail(format!("{} has no file name", dest.display())))?
        .to_string_lossy()
        .into_owned();
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(30))
        .timeout_read(Duration::from_secs(60))
        .build();
    let response = agent.get(url).call().map_err(|e| {
        fail(match e {
            ureq::Error::Status(code, _) => format!("the server answered HTTP {code}"),
            ureq::Error::Transport(t) => format!(
                "cannot reach the server ({t}); check the network connection, or download the \
                 file by hand and put it at {}",
                dest.display()
            ),
        })
    })?;
    let length: Option<u64> = response
        .header("Content-Length")
        .and_then(|v| v.trim().parse().ok());
    let part = PartFile {
        path: dir.join(format!(".{name}.{}.download", std::process::id())),
        kept: false,
    };
    let mut file = std::fs::File::create(&part.path).map_err(|e| Error::io(&part.path, e))?;
    let bar = progress_bar(progress, length, &name);
    let mut reader = response.into_reader();
    let mut hasher = Md5::new();
    let mut buffer = vec![0u8; CHUNK];
    let mut received: u64 = 0;
    loop {
        let n = reader.read(&mut buffer).map_err(|e| {
            fail(format!(
                "the connection failed after {received} bytes ({e}); nothing was written to {}",
                dest.display()
            ))
        })?;
        let chunk = match buffer.get(..n) {
            Some(chunk) if n > 0 => chunk,
            _ => break,
        };
        hasher.update(chunk);
        file.write_all(chunk)
            .map_err(|e| Error::io(&part.path, e))?;
        let before = received;
        received = received.saturating_add(n as u64);
        bar.tick(before, received, length);
    }
    bar.finish();
    if let Some(length) = length.filter(|&l| l != received) {
        return Err(fail(format!(
            "the body ended after {received} of {length} bytes; nothing was written to {}",
            dest.display()
        )));
    }
    let found = hex(&hasher.finalize());
    if found != expected_md5 {
        return Err(fail(format!(
            "MD5 of the downloaded file is {found}, expected {expected_md5}; the file was \
             discarded ({} is unchanged)",
            dest.display()
        )));
    }
    file.sync_all().map_err(|e| Error::io(&part.path, e))?;
    drop(file);
    std::fs::rename(&part.path, dest).map_err(|e| Error::io(dest, e))?;
    let mut part = part;
    part.kept = true;
    if let Ok(folder) = std::fs::File::open(dir) {
        let _ = folder.sync_all();
    }
    Ok(())
}

/// Download progress: an indicatif bar on a terminal, plain lines otherwise, nothing when off.
enum Progress {
    Off,
    Bar(ProgressBar),
    Lines(String),
}

fn progress_bar(enabled: bool, length: Option<u64>, name: &str) -> Progress {
    if !enabled {
        return Progress::Off;
    }
    if !std::io::stderr().is_terminal() {
        eprintln!("downloading {name}");
        return Progress::Lines(name.to_string());
    }
    let bar = match length {
        Some(len) => ProgressBar::new(len),
        None => ProgressBar::no_length(),
    };
    if let Ok(style) =
        ProgressStyle::with_template("{msg} {bar:30} {bytes}/{total_bytes} {bytes_per_sec} {eta}")
    {
        bar.set_style(style);
    }
    bar.set_message(name.to_string());
    Progress::Bar(bar)
}

impl Progress {
    fn tick(&self, before: u64, now: u64, length: Option<u64>) {
        match self {
            Progress::Off => {}
            Progress::Bar(bar) => bar.set_position(now),
            Progress::Lines(name) => {
                if before / LOG_EVERY != now / LOG_EVERY {
                    let total = length.map_or(String::new(), |l| format!(" of {} MB", l >> 20));
                    eprintln!("  {name}: {} MB{total}", now >> 20);
                }
            }
        }
    }

    fn finish(&self) {
        if let Progress::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}
