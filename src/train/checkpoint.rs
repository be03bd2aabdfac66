//! Checkpoints: a folder that always holds one complete, consistent training state.
//!
//! Layout of a checkpoint folder:
//!
//! | file | content |
//! |---|---|
//! | `model-eNNNN.safetensors` | every variable (backbone and `head.*`) after epoch NNNN |
//! | `optimizer-eNNNN.safetensors` | Adam moments (`head_opt.m.*`, `head_opt.v.*`, `backbone_opt.*`) |
//! | `config.json` | the [`TrainConfig`] and the backbone's [`BackboneConfig`] |
//! | `split.csv` | the split manifest, when [`TrainConfig::split_manifest`] names one |
//! | `history.csv`, `history.json` | the [`History`] so far |
//! | `train_state.json` | the index: epochs done, which files hold the last and the best model, optimizer step counts, schedule state, history |
//!
//! Every file is written to a temporary name in the same folder, flushed to disk and renamed
//! over its final name; `train_state.json` is written last. Until it is renamed, the
//! previous state file names the previous (untouched) model files, so a write killed at any
//! point leaves the last good checkpoint readable. Files no state refers to are removed after
//! the new state is in place.

use super::config::TrainConfig;
use super::history::History;
use super::schedule::ScheduleState;
use crate::atomic::TMP_SUFFIX;
use crate::error::{Error, Result};
use crate::model::BackboneConfig;
use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Name of the index file, written last.
pub const STATE_FILE: &str = "train_state.json";
/// Name of the configuration file.
pub const CONFIG_FILE: &str = "config.json";
/// Name of the copied split manifest.
pub const SPLIT_FILE: &str = "split.csv";
/// Name of the CSV history.
pub const HISTORY_CSV: &str = "history.csv";
/// Name of the JSON history.
pub const HISTORY_JSON: &str = "history.json";
const FORMAT_VERSION: u32 = 1;

/// What `config.json` holds: how the run was configured and which backbone it trains.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedConfig {
    /// The training configuration.
    pub train: TrainConfig,
    /// The backbone's shape (checkpoints written before backbones were tagged hold a bare
    /// ResNetV2 configuration, read as one).
    #[serde(deserialize_with = "crate::model::deserialize_backbone_config")]
    pub backbone: BackboneConfig,
}

/// The content of `train_state.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TrainState {
    pub(crate) format_version: u32,
    pub(crate) epochs_done: usize,
    pub(crate) model_file: String,
    pub(crate) optimizer_file: String,
    pub(crate) best_epoch: Option<usize>,
    pub(crate) best_val_loss: Option<f64>,
    pub(crate) best_model_file: Option<String>,
    pub(crate) head_optimizer_steps: u64,
    pub(crate) backbone_optimizer_steps: u64,
    pub(crate) schedule: ScheduleState,
    pub(crate) stopped_early: bool,
    pub(crate) history: History,
}

/// File name of the model weights after `epoch` (1-based).
pub(crate) fn model_file_name(epoch: usize) -> String {
    format!("model-e{epoch:04}.safetensors")
}

/// File name of the optimizer state after `epoch` (1-based).
pub(crate) fn optimizer_file_name(epoch: usize) -> String {
    format!("optimizer-e{epoch:04}.safetensors")
}

/// A saved training run, read from its checkpoint folder.
///
/// ```no_run
/// let checkpoint = fracture::train::Checkpoint::open("runs/fracatlas")?;
/// println!("{} epochs done, best epoch {:?}", checkpoint.epochs_done(), checkpoint.best_epoch());
/// let weights = checkpoint.load_best_weights(&candle_core::Device::Cpu)?;
/// # Ok::<(), fracture::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Checkpoint {
    dir: PathBuf,
    pub(crate) state: TrainState,
    config: SavedConfig,
}

impl Checkpoint {
    /// Read the checkpoint in `dir` (its `train_state.json` and `config.json`).
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let state: TrainState = read_json(&dir.join(STATE_FILE), "training state")?;
        if state.format_version != FORMAT_VERSION {
            return Err(Error::Format {
                path: dir.join(STATE_FILE),
                message: format!(
                    "checkpoint format version {} is not supported (expected {FORMAT_VERSION})",
                    state.format_version
                ),
            });
        }
        let config: SavedConfig = read_json(&dir.join(CONFIG_FILE), "training configuration")?;
        Ok(Self { dir, state, config })
    }

    /// The folder this checkpoint was read from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Number of finished epochs.
    pub fn epochs_done(&self) -> usize {
        self.state.epochs_done
    }

    /// The epoch (1-based) with the lowest validation loss so far.
    pub fn best_epoch(&self) -> Option<usize> {
        self.state.best_epoch
    }

    /// The lowest validation loss so far.
    pub fn best_val_loss(&self) -> Option<f64> {
        self.state.best_val_loss
    }

    /// Whether early stopping ended the run.
    pub fn stopped_early(&self) -> bool {
        self.state.stopped_early
    }

    /// The training configuration of the run.
    pub fn config(&self) -> &TrainConfig {
        &self.config.train
    }

    /// The backbone's shape.
    pub fn backbone_config(&self) -> &BackboneConfig {
        &self.config.backbone
    }

    /// The history of every finished epoch.
    pub fn history(&self) -> &History {
        &self.state.history
    }

    /// Path of the weights after the last finished epoch.
    pub fn last_model_path(&self) -> PathBuf {
        self.dir.join(&self.state.model_file)
    }

    /// Path of the weights of the best epoch.
    pub fn best_model_path(&self) -> Option<PathBuf> {
        self.state
            .best_model_file
            .as_ref()
            .map(|f| self.dir.join(f))
    }

    /// Path of the optimizer state after the last finished epoch.
    pub(crate) fn optimizer_path(&self) -> PathBuf {
        self.dir.join(&self.state.optimizer_file)
    }

    /// The best epoch's variables (backbone names and `head.*`), ready for a `VarBuilder`.
    pub fn load_best_weights(&self, device: &Device) -> Result<HashMap<String, Tensor>> {
        let path = self.best_model_path().ok_or_else(|| Error::Format {
            path: self.dir.join(STATE_FILE),
            message: "the checkpoint has no best model yet".into(),
        })?;
        load_tensors(&path, device)
    }

    /// The last epoch's variables.
    pub fn load_last_weights(&self, device: &Device) -> Result<HashMap<String, Tensor>> {
        load_tensors(&self.last_model_path(), device)
    }
}

/// Read a safetensors file, naming the file in any error.
pub(crate) fn load_tensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    candle_core::safetensors::load(path, device).map_err(|e| Error::Format {
        path: path.into(),
        message: format!("cannot read safetensors: {e}"),
    })
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::Format {
        path: path.into(),
        message: format!("not a valid {what} file: {e}"),
    })
}

/// Remove weights and optimizer files the committed `state` does not refer to, and
/// temporary files left by interrupted writes.
pub(crate) fn remove_unreferenced(dir: &Path, state: &TrainState) -> Result<()> {
    let keep: Vec<&str> = [
        Some(state.model_file.as_str()),
        Some(state.optimizer_file.as_str()),
        state.best_model_file.as_deref(),
    ]
    .into_iter()
    .flatten()
    .collect();
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let ours = (name.starts_with("model-e") || name.starts_with("optimizer-e"))
            && name.ends_with(".safetensors");
        if (ours && !keep.contains(&name.as_str())) || name.ends_with(TMP_SUFFIX) {
            let path = entry.path();
            std::fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
        }
    }
    Ok(())
}
