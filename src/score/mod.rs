//! Scoring an archive in shards, the way a cluster runs it: each task of a Slurm job array or
//! a Kubernetes Indexed Job scores its own deterministic share of the input, into an
//! append-only file that survives being killed and requeued, and a merge checks that nothing
//! is missing or there twice.
//!
//! - [`Shard`]: which share a path belongs to (a stable hash of its relative path, mod N) and
//!   which share this process is (`--shard I/N`, or the scheduler's environment).
//! - [`FractureClassifier::score_shard`](crate::FractureClassifier::score_shard): score one
//!   shard into `OUT/shard-I-of-N.csv` (rows appended per batch, flushed and synced; a rerun
//!   skips the rows already there and cuts off a torn last line), then `shard-I-of-N.done`.
//! - [`merge`]: every shard done, same model, same count, no path twice → `OUT/scores.csv`
//!   (sorted by path) and `OUT/summary.json`.
//!
//! No DICOM patient identifier reaches any output: rows hold the path, the file's hash, the
//! scores, the body part group and the error kind (DICOM error messages are redacted where
//! they are made). The paths are the archive's own: an archive that names files after
//! patients should be scored through a list of neutral names.
//!
//! ```
//! use fracture::score::{merge, ScoreOptions, Shard};
//! # let tmp = tempfile::tempdir()?;
//! # let images = tmp.path().join("images");
//! # fracture::dataset::synthetic::SyntheticConfig { n_fractured: 3, n_not_fractured: 3, min_size: 32, max_size: 48, ..Default::default() }.generate_to(&images)?;
//! let clf = fracture::FractureClassifier::builder()
//!     .backbone(fracture::model::ResNetV2Config::custom(vec![2, 2], vec![4, 8]))
//!     .weights(fracture::WeightsSource::Random { seed: 0 })
//!     .device(fracture::device::DeviceRequest::Cpu)
//!     .image_size(32, 32)
//!     .build()?;
//! let out = tmp.path().join("scores");
//! for index in 0..2 {
//!     let options = ScoreOptions { shard: Shard::new(index, 2)?, ..ScoreOptions::default() };
//!     clf.score_shard(&images, &out, &options)?;
//! }
//! let summary = merge(&out)?;
//! // Six JPEGs, and dataset.csv and the COCO annotations: two rows with an error.
//! assert_eq!((summary.images, summary.scored), (8, 6));
//! assert_eq!(summary.errors_by_kind.get("not-an-image"), Some(&2));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod inputs;
mod merge;
mod rows;
mod shard;

pub use inputs::{list_inputs, Input};
pub use merge::{merge, PartCounts, Summary, SCORES_CSV, SUMMARY_JSON};
pub use rows::{ScoreRow, HEADER};
pub use shard::{shard_key, Shard};

pub(crate) use rows::{done_name, DoneMarker, ShardFile};

use crate::error::Error;
use std::sync::Arc;

/// Images decoded and classified per batch (and appended per write) by default.
pub const DEFAULT_BATCH: usize = 8;

/// Called after each batch is on disk with the number of rows in the shard file.
pub type AfterBatch = Arc<dyn Fn(usize) + Send + Sync>;

/// How [`FractureClassifier::score_shard`](crate::FractureClassifier::score_shard) runs.
#[derive(Clone)]
pub struct ScoreOptions {
    /// The shard to score (default: [`Shard::ALL`]; [`Shard::from_env`] reads the scheduler's).
    pub shard: Shard,
    /// Files read and decoded in parallel and appended per write (default [`DEFAULT_BATCH`]);
    /// the network sees one image at a time, so the rows do not depend on it.
    pub batch_size: usize,
    /// Progress on stderr: a bar on a terminal, lines with count, rate and ETA off one.
    pub progress: bool,
    /// Called after each batch is written (for a custom progress display, or a test that
    /// stops the process there).
    pub after_batch: Option<AfterBatch>,
}

impl Default for ScoreOptions {
    fn default() -> Self {
        Self {
            shard: Shard::ALL,
            batch_size: DEFAULT_BATCH,
            progress: false,
            after_batch: None,
        }
    }
}

impl std::fmt::Debug for ScoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScoreOptions")
            .field("shard", &self.shard)
            .field("batch_size", &self.batch_size)
            .field("progress", &self.progress)
            .field("after_batch", &self.after_batch.is_some())
            .finish()
    }
}

/// What one shard run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardReport {
    /// The shard.
    pub shard: Shard,
    /// Rows in the shard file now (earlier runs' included).
    pub rows: usize,
    /// Rows this run added.
    pub added: usize,
    /// Rows an earlier run had written (skipped by this one).
    pub resumed: usize,
    /// Rows with an error (this run's).
    pub errors: usize,
}

/// The kind and the message of an error that kept an input from being scored, as rows record
/// it (`kind: message`): `unreadable` (the file cannot be read), `empty`, `not-an-image`,
/// `unsupported-dicom-syntax`, `dicom-unreadable`, `undecodable` (an image format that fails
/// to decode), `non-finite` (the model gave a NaN or infinite output for this image),
/// `failed` (anything else). Messages name no path (the row has it) and hold no
/// DICOM patient identifier.
///
/// ```
/// use fracture::{score::error_kind, Error};
/// let e = Error::Image { path: "a.dcm".into(), message: "empty file (0 bytes)".into() };
/// assert_eq!(error_kind(&e).0, "empty");
/// ```
pub fn error_kind(error: &Error) -> (&'static str, String) {
    let (kind, message) = match error {
        Error::Io { source, .. } => ("unreadable", source.to_string()),
        Error::Image { message, .. } => {
            let kind = if message.contains("empty file") {
                "empty"
            } else if message.contains("unsupported transfer syntax") {
                "unsupported-dicom-syntax"
            } else if message.starts_with("not an image")
                || message.contains("not a DICOM file")
                || message.contains("no pixel data")
            {
                "not-an-image"
            } else if message.starts_with("DICOM") {
                "dicom-unreadable"
            } else {
                "undecodable"
            };
            (kind, message.clone())
        }
        Error::NonFinite { what, value, .. } => ("non-finite", format!("the {what} is {value}")),
        other => ("failed", other.to_string()),
    };
    (kind, message.replace(['\n', '\r'], " "))
}
