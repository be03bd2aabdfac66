//! The append-only shard file `shard-I-of-N.csv`: its rows, how a rerun resumes it (rows kept,
//! a torn last line cut off, another model or threshold refused) and the `.done` marker.

use super::Shard;
use crate::error::{Error, Result};
use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The header of shard files and of the merged `scores.csv`.
pub const HEADER: [&str; 8] = [
    "path",
    "sha256",
    "p_fracture",
    "fractured",
    "threshold",
    "model",
    "body_part",
    "error",
];

/// One scored (or unscorable) input.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ScoreRow {
    /// The path relative to the input folder (`/`-separated), or as the list file gives it.
    pub path: String,
    /// SHA-256 of the file's bytes, hex (empty when the file could not be read).
    pub sha256: String,
    /// The calibrated fracture probability (`None` when the image was not scored).
    pub p_fracture: Option<f64>,
    /// `p_fracture >= threshold` (`None` when not scored).
    pub fractured: Option<bool>,
    /// The decision threshold applied.
    pub threshold: f64,
    /// The model's hash ([`FractureClassifier::model_hash`](crate::FractureClassifier::model_hash)).
    pub model: String,
    /// The body part group a DICOM file's `BodyPartExamined` names (`hand`, `leg`, `hip`,
    /// `shoulder`, `unknown`); empty for other files or DICOM without the attribute.
    pub body_part: String,
    /// Empty, or `kind: reason` when the image was not scored (see
    /// [`error_kind`](super::error_kind)).
    pub error: String,
}

impl ScoreRow {
    /// The row's CSV fields, in [`HEADER`] order.
    pub(crate) fn fields(&self) -> [String; 8] {
        [
            self.path.clone(),
            self.sha256.clone(),
            self.p_fracture.map(|p| p.to_string()).unwrap_or_default(),
            self.fractured
                .map(|f| if f { "1" } else { "0" }.to_string())
                .unwrap_or_default(),
            self.threshold.to_string(),
            self.model.clone(),
            self.body_part.clone(),
            self.error.clone(),
        ]
    }

    /// A row from CSV fields; `None` when they do not make one.
    fn parse(record: &csv::StringRecord) -> Option<Self> {
        if record.len() != HEADER.len() {
            return None;
        }
        let optional = |text: &str| -> Option<Option<f64>> {
            if text.is_empty() {
                Some(None)
            } else {
                text.parse::<f64>().ok().filter(|p| p.is_finite()).map(Some)
            }
        };
        let fractured = match &record[3] {
            "" => None,
            "1" => Some(true),
            "0" => Some(false),
            _ => return None,
        };
        Some(Self {
            path: record[0].to_string(),
            sha256: record[1].to_string(),
            p_fracture: optional(&record[2])?,
            fractured,
            threshold: record[4].parse().ok().filter(|t: &f64| t.is_finite())?,
            model: record[5].to_string(),
            body_part: record[6].to_string(),
            error: record[7].to_string(),
        })
    }
}

/// `shard-I-of-N.csv`.
pub(crate) fn csv_name(shard: Shard) -> String {
    format!("shard-{}-of-{}.csv", shard.index, shard.count)
}

/// `shard-I-of-N.done`.
pub(crate) fn done_name(shard: Shard) -> String {
    format!("shard-{}-of-{}.done", shard.index, shard.count)
}

/// The shard a file name `shard-I-of-N.csv` or `.done` names, with its extension; `None` for
/// any other name (or I >= N).
pub(crate) fn parse_name(name: &str) -> Option<(Shard, &str)> {
    let rest = name.strip_prefix("shard-")?;
    let (stem, ext) = rest.rsplit_once('.')?;
    let (index, count) = stem.split_once("-of-")?;
    let index = index.parse().ok()?;
    let count = count.parse().ok()?;
    Some((Shard::new(index, count).ok()?, ext))
}

/// CSV bytes of `rows` (no header).
pub(crate) fn to_csv(rows: &[ScoreRow], header: bool) -> Result<Vec<u8>> {
    let mut writer = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(Vec::new());
    let fail = |e: csv::Error| Error::Internal(format!("cannot format score rows: {e}"));
    if header {
        writer.write_record(HEADER).map_err(fail)?;
    }
    for row in rows {
        writer.write_record(row.fields()).map_err(fail)?;
    }
    writer
        .into_inner()
        .map_err(|e| Error::Internal(format!("cannot format score rows: {e}")))
}

/// The rows of a shard (or merged) file and, when its last line is torn (a killed writer),
/// the byte length of the complete part.
pub(crate) struct ReadRows {
    pub rows: Vec<ScoreRow>,
    pub torn_at: Option<u64>,
}

/// Read a file of score rows: its header must be [`HEADER`]; a last record that is cut short
/// (no line end, too few fields, unparsable) is torn; any other bad record is an error.
pub(crate) fn read_rows(path: &Path) -> Result<ReadRows> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let format_error = |message: String| Error::Format {
        path: path.to_path_buf(),
        message,
    };
    let header_end = bytes.iter().position(|&b| b == b'\n').ok_or_else(|| {
        format_error("no complete header line: not a shard file (or written by a killed run before its header)".into())
    })?;
    let header = String::from_utf8_lossy(&bytes[..header_end]);
    if header.trim_end_matches('\r') != HEADER.join(",") {
        return Err(format_error(format!(
            "header {header:?} is not a score file's ({:?})",
            HEADER.join(",")
        )));
    }
    let body = &bytes[header_end + 1..];
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(false)
        .flexible(true)
        .from_reader(body);
    let mut parsed = Vec::new();
    let mut record = csv::StringRecord::new();
    loop {
        let start = reader.position().byte();
        match reader.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => parsed.push((start, ScoreRow::parse(&record))),
            Err(_) => {
                parsed.push((start, None));
                break;
            }
        }
    }
    // A record that does not end in a line break was being written when the writer died.
    let ends_cleanly = body.is_empty() || body.ends_with(b"\n");
    let mut torn_at = None;
    if let Some(&(start, ref row)) = parsed.last()
        && (row.is_none() || !ends_cleanly)
    {
        torn_at = Some((header_end + 1) as u64 + start);
        parsed.pop();
    }
    let mut rows = Vec::with_capacity(parsed.len());
    for (line, (_, row)) in parsed.into_iter().enumerate() {
        rows.push(row.ok_or_else(|| {
            format_error(format!("record {} is not a valid score row", line + 1))
        })?);
    }
    Ok(ReadRows { rows, torn_at })
}

/// What a shard records in its `.done` marker.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct DoneMarker {
    pub shard: usize,
    pub shards: usize,
    pub rows: usize,
    pub model: String,
    pub threshold: f64,
    pub fracture_version: String,
}

/// An open shard file, appended to in batches.
pub(crate) struct ShardFile {
    path: PathBuf,
    file: std::fs::File,
    /// Rows in the file.
    pub rows: usize,
}

impl ShardFile {
    /// Open (or create) the shard's file in `out` for appending, keeping the rows a previous
    /// run wrote and cutting off a torn last line. Refuses a file written by another model or
    /// at another threshold, and a folder that holds shards of another count. Returns the file
    /// and the paths already scored.
    pub fn open(
        out: &Path,
        shard: Shard,
        model: &str,
        threshold: f64,
    ) -> Result<(Self, HashSet<String>)> {
        std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
        refuse_other_counts(out, shard)?;
        let path = out.join(csv_name(shard));
        let mut seen = HashSet::new();
        let mut rows = 0;
        let existing = path.exists() && std::fs::metadata(&path).is_ok_and(|m| m.len() > 0);
        if existing {
            let read = read_rows(&path)?;
            for row in &read.rows {
                if row.model != model || row.threshold != threshold {
                    return Err(Error::Format {
                        path: path.clone(),
                        message: format!(
                            "written by model {} at threshold {}, this run is model {model} at \
                             threshold {threshold}: use another output folder",
                            row.model, row.threshold
                        ),
                    });
                }
                seen.insert(row.path.clone());
            }
            rows = read.rows.len();
            if let Some(len) = read.torn_at {
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| Error::io(&path, e))?;
                file.set_len(len).map_err(|e| Error::io(&path, e))?;
                file.sync_all().map_err(|e| Error::io(&path, e))?;
            }
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        if !existing {
            file.write_all(&to_csv(&[], true)?)
                .and_then(|()| file.sync_all())
                .map_err(|e| Error::io(&path, e))?;
            if let Ok(dir) = std::fs::File::open(out) {
                let _ = dir.sync_all();
            }
        }
        Ok((Self { path, file, rows }, seen))
    }

    /// Append rows, then flush them to disk.
    pub fn append(&mut self, rows: &[ScoreRow]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let bytes = to_csv(rows, false)?;
        self.file
            .write_all(&bytes)
            .and_then(|()| self.file.sync_data())
            .map_err(|e| Error::io(&self.path, e))?;
        self.rows += rows.len();
        Ok(())
    }
}

/// An error when `out` holds shard files of a count other than `shard.count`.
fn refuse_other_counts(out: &Path, shard: Shard) -> Result<()> {
    let entries = std::fs::read_dir(out).map_err(|e| Error::io(out, e))?;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if let Some((other, _)) = name.to_str().and_then(parse_name)
            && other.count != shard.count
        {
            return Err(Error::InvalidConfig(format!(
                "{} holds {} from a run in {} shards, this run is in {}: use another \
                     output folder (or remove that run's files)",
                out.display(),
                name.to_string_lossy(),
                other.count,
                shard.count
            )));
        }
    }
    Ok(())
}
