//! Training: the loop that fits a [`crate::model::FractureNet`] to batches from a
//! [`crate::batch::BatchSource`].
//!
//! - [`TrainConfig`]: the reference notebook's settings as defaults (25 epochs, batch 32,
//!   Adam 1e-4, head 256 + dropout 0.5, frozen backbone, augmentation on), plus class
//!   weights, fine-tuning of the last stacks, early stopping and a learning-rate schedule.
//! - [`Trainer`]: epochs, validation, best weights by validation loss, checkpoints, resume.
//! - [`bce_with_logits`]: binary cross-entropy in the numerically stable form.
//! - [`History`]: loss, accuracy, AUC, learning rate and time per epoch (CSV and JSON).
//! - [`checkpoint`]: the crash-safe checkpoint folder and [`Checkpoint`] to read it.
//! - [`predict`]: a network's probabilities over a whole source, for metrics.
//! - [`StageCache`]: the frozen early stages' output cached on disk for training the last
//!   stages at high resolution ([`CachedSource`] serves it, with box targets).

mod adam;
pub mod checkpoint;
mod config;
mod evaluate;
mod history;
mod loss;
mod schedule;
mod stage_cache;
mod trainer;

pub use checkpoint::{Checkpoint, SavedConfig};
pub use config::{
    AdamConfig, BackboneTraining, BoxSupervision, ClassWeights, EarlyStopping, LrSchedule,
    TrainConfig,
};
pub use evaluate::{predict, Predictions};
pub use history::{EpochRecord, History};
pub use loss::{bce_with_logits, bce_with_logits_per_sample, cell_bce_with_logits};
pub use stage_cache::{
    cell_targets, CacheDtype, CacheView, CachedSource, StageCache, StageCacheConfig,
    ViewAugmentation,
};
pub use trainer::Trainer;
