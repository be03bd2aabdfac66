//! Joining the shard files into `scores.csv` and `summary.json`, after checking that every
//! shard is there and done, written by one model at one threshold, and that no path is twice.

use super::rows::{self, parse_name, read_rows, DoneMarker, ScoreRow};
use super::Shard;
use crate::atomic;
use crate::error::{Error, Result};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

/// The merged rows, sorted by path.
pub const SCORES_CSV: &str = "scores.csv";
/// The merged summary.
pub const SUMMARY_JSON: &str = "summary.json";

/// Scored and fractured counts of one body part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct PartCounts {
    /// Images scored.
    pub scored: usize,
    /// Of them, called fractured.
    pub fractured: usize,
}

/// What `summary.json` holds.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Summary {
    /// How many shards were merged.
    pub shards: usize,
    /// Rows (inputs), scored or not.
    pub images: usize,
    /// Rows with a probability.
    pub scored: usize,
    /// Rows with an error.
    pub errors: usize,
    /// Scored rows called fractured.
    pub fractured: usize,
    /// `fractured / scored` (`None` when nothing was scored).
    pub fractured_share: Option<f64>,
    /// Error rows by kind ([`error_kind`](super::error_kind)).
    pub errors_by_kind: BTreeMap<String, usize>,
    /// Scored DICOM rows by the body part their `BodyPartExamined` names.
    pub body_parts: BTreeMap<String, PartCounts>,
    /// The model's hash.
    pub model: String,
    /// The decision threshold.
    pub threshold: f64,
}

/// Merge the shards in `out` into `out/scores.csv` (every row, sorted by path) and
/// `out/summary.json`. Refuses, naming the files, when a shard is missing or not done, when
/// shards of different counts or models are there, or when a path is in two rows (or in a
/// shard it does not belong to).
pub fn merge(out: &Path) -> Result<Summary> {
    let refuse =
        |message: String| Error::InvalidInput(format!("merge {}: {message}", out.display()));
    let mut csvs: BTreeMap<Shard, String> = BTreeMap::new();
    let mut dones: BTreeSet<Shard> = BTreeSet::new();
    let entries = std::fs::read_dir(out).map_err(|e| Error::io(out, e))?;
    for entry in entries {
        let name = entry.map_err(|e| Error::io(out, e))?.file_name();
        let Some(name) = name.to_str() else { continue };
        match parse_name(name) {
            Some((shard, "csv")) => {
                csvs.insert(shard, name.to_string());
            }
            Some((shard, "done")) => {
                dones.insert(shard);
            }
            _ => {}
        }
    }
    let counts: BTreeSet<usize> = csvs.keys().chain(&dones).map(|s| s.count).collect();
    let count = match counts.len() {
        0 => return Err(refuse("no shard files (shard-I-of-N.csv) here".into())),
        1 => counts.into_iter().next().unwrap_or(1),
        _ => {
            let names: Vec<&str> = csvs.values().map(String::as_str).collect();
            return Err(refuse(format!(
                "shards of different counts {counts:?} are mixed here ({}): merge one run",
                names.join(", ")
            )));
        }
    };
    let all: Vec<Shard> = (0..count).map(|i| Shard { index: i, count }).collect();
    let missing: Vec<String> = all
        .iter()
        .filter(|s| !csvs.contains_key(s))
        .map(|&s| rows::csv_name(s))
        .collect();
    if !missing.is_empty() {
        return Err(refuse(format!("shard missing: {}", missing.join(", "))));
    }
    let unfinished: Vec<String> = all
        .iter()
        .filter(|s| !dones.contains(s))
        .map(|&s| rows::csv_name(s))
        .collect();
    if !unfinished.is_empty() {
        return Err(refuse(format!(
            "shard not done (no .done marker: still running, or killed; rerun it): {}",
            unfinished.join(", ")
        )));
    }
    let mut merged: Vec<ScoreRow> = Vec::new();
    let mut owner: HashMap<String, String> = HashMap::new();
    let mut model_of: Option<(String, f64, String)> = None;
    for shard in &all {
        let name = &csvs[shard];
        let path = out.join(name);
        let read = read_rows(&path)?;
        if read.torn_at.is_some() {
            return Err(refuse(format!(
                "{name} ends in a torn line: rerun its shard"
            )));
        }
        let done = read_done(out, *shard)?;
        if done.rows != read.rows.len() {
            return Err(refuse(format!(
                "{name} has {} rows, its .done marker says {}: rerun its shard",
                read.rows.len(),
                done.rows
            )));
        }
        let (model, threshold, first) = model_of
            .get_or_insert_with(|| (done.model.clone(), done.threshold, name.clone()))
            .clone();
        for (what, row_model, row_threshold) in
            std::iter::once(("marker", &done.model, done.threshold))
                .chain(read.rows.iter().map(|r| ("rows", &r.model, r.threshold)))
        {
            if *row_model != model || row_threshold != threshold {
                return Err(refuse(format!(
                    "{name} ({what}) is from model {row_model} at threshold {row_threshold}, \
                     {first} from model {model} at threshold {threshold}: another model's shard"
                )));
            }
        }
        for row in read.rows {
            if let Some(other) = owner.insert(row.path.clone(), name.clone()) {
                return Err(refuse(format!(
                    "duplicate: {:?} is in {other} and in {name}",
                    row.path
                )));
            }
            if !shard.contains(&row.path) {
                return Err(refuse(format!(
                    "{name} holds {:?}, which belongs to shard {}/{count}",
                    row.path,
                    shard.of(&row.path)
                )));
            }
            merged.push(row);
        }
    }
    merged.sort_by(|a, b| a.path.cmp(&b.path));
    let (model, threshold, _) = model_of.unwrap_or_default();
    let summary = summarize(&merged, count, model, threshold);
    let bytes = rows::to_csv(&merged, true)?;
    atomic::write_file(&out.join(SCORES_CSV), |tmp| {
        std::fs::write(tmp, &bytes).map_err(|e| Error::io(tmp, e))
    })?;
    atomic::AtomicWriter::new(out, None).write_json(SUMMARY_JSON, &summary)?;
    Ok(summary)
}

fn read_done(out: &Path, shard: Shard) -> Result<DoneMarker> {
    let path = out.join(rows::done_name(shard));
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let done: DoneMarker = serde_json::from_str(&text).map_err(|e| Error::Format {
        path: path.clone(),
        message: format!("not a shard's .done marker: {e}"),
    })?;
    if (done.shard, done.shards) != (shard.index, shard.count) {
        return Err(Error::Format {
            path,
            message: format!("marks shard {}/{}, not {shard}", done.shard, done.shards),
        });
    }
    Ok(done)
}

fn summarize(rows: &[ScoreRow], shards: usize, model: String, threshold: f64) -> Summary {
    let mut summary = Summary {
        shards,
        images: rows.len(),
        scored: 0,
        errors: 0,
        fractured: 0,
        fractured_share: None,
        errors_by_kind: BTreeMap::new(),
        body_parts: BTreeMap::new(),
        model,
        threshold,
    };
    for row in rows {
        if !row.error.is_empty() {
            summary.errors += 1;
            let kind = row.error.split(':').next().unwrap_or_default().to_string();
            *summary.errors_by_kind.entry(kind).or_default() += 1;
        }
        if let Some(fractured) = row.fractured {
            summary.scored += 1;
            summary.fractured += usize::from(fractured);
            if !row.body_part.is_empty() {
                let part = summary.body_parts.entry(row.body_part.clone()).or_default();
                part.scored += 1;
                part.fractured += usize::from(fractured);
            }
        }
    }
    if summary.scored > 0 {
        summary.fractured_share = Some(summary.fractured as f64 / summary.scored as f64);
    }
    summary
}
