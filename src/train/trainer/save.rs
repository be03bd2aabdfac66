//! Writing the checkpoint of the epoch just finished (see [`crate::train::checkpoint`] for the
//! folder's layout and why it is crash-safe).

use super::{Trainer, BACKBONE_OPT_PREFIX, HEAD_OPT_PREFIX};
use crate::atomic::AtomicWriter;
use crate::error::{Error, Result};
use crate::train::adam::Adam;
use crate::train::checkpoint::{
    model_file_name, optimizer_file_name, remove_unreferenced, SavedConfig, TrainState,
    CONFIG_FILE, HISTORY_CSV, HISTORY_JSON, SPLIT_FILE, STATE_FILE,
};
use candle_core::Tensor;
use std::path::Path;

impl Trainer {
    pub(super) fn save_checkpoint(&mut self, dir: &Path) -> Result<()> {
        let epoch = self.epochs_done;
        let fail_at = self
            .injected_failure
            .filter(|f| f.epoch == epoch)
            .map(|f| f.file_index);
        let mut writer = AtomicWriter::new(dir, fail_at);
        let model_file = model_file_name(epoch);
        // Shared (not copied) tensors: nothing updates the variables while they are written.
        let weights: Vec<(String, Tensor)> = self
            .all_named_vars()?
            .into_iter()
            .map(|(name, var)| (name, var.as_tensor().clone()))
            .collect();
        writer.write_tensors(&model_file, &weights)?;
        let mut moments = self.head_optimizer.moments(HEAD_OPT_PREFIX);
        if let Some(optimizer) = &self.backbone_optimizer {
            moments.extend(optimizer.moments(BACKBONE_OPT_PREFIX));
        }
        let optimizer_file = optimizer_file_name(epoch);
        writer.write_tensors(&optimizer_file, &moments)?;
        let saved_config = SavedConfig {
            train: self.config.clone(),
            backbone: self.backbone_config.clone(),
        };
        writer.write_json(CONFIG_FILE, &saved_config)?;
        if let Some(bytes) = &self.split_manifest {
            writer.write_bytes(SPLIT_FILE, bytes)?;
        } else if let Some(split) = &self.config.split_manifest {
            // A resumed run whose manifest has moved keeps the copy it already has.
            match std::fs::read(split) {
                Ok(bytes) => writer.write_bytes(SPLIT_FILE, &bytes)?,
                Err(_) if dir.join(SPLIT_FILE).exists() => {}
                Err(e) => return Err(Error::io(split, e)),
            }
        }
        writer.write_bytes(HISTORY_CSV, self.history.to_csv().as_bytes())?;
        writer.write_bytes(HISTORY_JSON, self.history.to_json()?.as_bytes())?;
        let state = TrainState {
            format_version: 1,
            epochs_done: epoch,
            model_file,
            optimizer_file,
            best_epoch: self.best.as_ref().map(|b| b.epoch),
            best_val_loss: self.best.as_ref().map(|b| b.val_loss),
            best_model_file: self.best_model_file.clone(),
            head_optimizer_steps: self.head_optimizer.step_count(),
            backbone_optimizer_steps: self.backbone_optimizer.as_ref().map_or(0, Adam::step_count),
            schedule: self.schedule.clone(),
            stopped_early: self.stopped_early,
            history: self.history.clone(),
        };
        writer.write_json(STATE_FILE, &state)?;
        remove_unreferenced(dir, &state)?;
        self.resumed_from = Some(dir.to_path_buf());
        Ok(())
    }
}
