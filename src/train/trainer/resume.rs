//! Resuming a run from its checkpoint folder.

use super::{Best, Trainer, BACKBONE_OPT_PREFIX, HEAD_OPT_PREFIX};
use crate::error::{Error, Result};
use crate::train::checkpoint::{load_tensors, Checkpoint};
use candle_core::{Device, Tensor};
use candle_nn::VarMap;
use std::collections::HashMap;
use std::path::Path;

impl Trainer {
    /// Continue the run saved in checkpoint folder `dir`: weights, optimizer moments,
    /// learning-rate schedule, early-stopping state and history are restored, so that
    /// [`Trainer::fit`] with the same data gives the same result as an uninterrupted run.
    pub fn resume(dir: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let dir = dir.as_ref();
        let checkpoint = Checkpoint::open(dir)?;
        let mut trainer = Self::new(
            checkpoint.backbone_config(),
            VarMap::new(),
            checkpoint.config().clone(),
            device,
        )?;
        let last_path = checkpoint.last_model_path();
        let last = load_tensors(&last_path, device)?;
        trainer.set_weights(&last, &last_path)?;
        let optimizer_path = checkpoint.optimizer_path();
        let moments = load_tensors(&optimizer_path, device)?;
        let file = optimizer_path.display().to_string();
        let state = &checkpoint.state;
        trainer.head_optimizer.restore(
            HEAD_OPT_PREFIX,
            &moments,
            state.head_optimizer_steps,
            &file,
        )?;
        if let Some(optimizer) = &mut trainer.backbone_optimizer {
            optimizer.restore(
                BACKBONE_OPT_PREFIX,
                &moments,
                state.backbone_optimizer_steps,
                &file,
            )?;
        }
        if let (Some(epoch), Some(val_loss), Some(path)) = (
            state.best_epoch,
            state.best_val_loss,
            checkpoint.best_model_path(),
        ) {
            let all = load_tensors(&path, device)?;
            let changing = trainer.changing_variable_names()?;
            let weights = all
                .into_iter()
                .filter(|(name, _)| changing.contains(name))
                .collect();
            trainer.best = Some(Best {
                epoch,
                val_loss,
                weights,
            });
        }
        trainer.best_model_file = state.best_model_file.clone();
        trainer.schedule = state.schedule.clone();
        trainer.history = state.history.clone();
        trainer.epochs_done = state.epochs_done;
        trainer.stopped_early = state.stopped_early;
        trainer.resumed_from = Some(dir.to_path_buf());
        Ok(trainer)
    }

    /// Set every variable from `tensors`; all must be present with the right shape.
    pub(super) fn set_weights(&self, tensors: &HashMap<String, Tensor>, file: &Path) -> Result<()> {
        for (name, var) in self.all_named_vars()? {
            let value = tensors.get(&name).ok_or_else(|| Error::Format {
                path: file.into(),
                message: format!("checkpoint has no variable {name}"),
            })?;
            if value.dims() != var.dims() {
                return Err(Error::Format {
                    path: file.into(),
                    message: format!(
                        "variable {name} has shape {:?} in the checkpoint, the model expects {:?}",
                        value.dims(),
                        var.dims()
                    ),
                });
            }
            var.set(&value.to_dtype(var.dtype())?)?;
        }
        Ok(())
    }
}
