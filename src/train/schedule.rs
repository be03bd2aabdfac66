//! Learning-rate schedule and early stopping: small state machines fed with the validation
//! loss of each epoch, serializable so that a resumed run continues them.

use super::config::{EarlyStopping, LrSchedule};
use serde::{Deserialize, Serialize};

/// Where the schedule and early stopping stand after some epochs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ScheduleState {
    /// Factor applied to every configured learning rate (ReduceOnPlateau).
    pub(crate) plateau_scale: f64,
    /// Lowest validation loss seen by ReduceOnPlateau.
    pub(crate) plateau_best: Option<f64>,
    /// Epochs since ReduceOnPlateau last saw an improvement.
    pub(crate) plateau_wait: usize,
    /// Lowest validation loss seen by early stopping.
    pub(crate) stopping_best: Option<f64>,
    /// Epochs since early stopping last saw an improvement.
    pub(crate) stopping_wait: usize,
}

impl Default for ScheduleState {
    fn default() -> Self {
        Self {
            plateau_scale: 1.0,
            plateau_best: None,
            plateau_wait: 0,
            stopping_best: None,
            stopping_wait: 0,
        }
    }
}

/// Did `loss` improve on `best` by more than `min_delta`?
fn improves(loss: f64, best: Option<f64>, min_delta: f64) -> bool {
    best.is_none_or(|b| loss < b - min_delta)
}

impl ScheduleState {
    /// Factor by which the configured learning rates are scaled in the 0-based `epoch` of
    /// `epochs`.
    pub(crate) fn lr_scale(
        &self,
        schedule: &LrSchedule,
        base_lr: f64,
        epoch: usize,
        epochs: usize,
    ) -> f64 {
        match *schedule {
            LrSchedule::Constant => 1.0,
            LrSchedule::ReduceOnPlateau { .. } => self.plateau_scale,
            LrSchedule::Cosine { min_lr } => {
                let progress = epoch as f64 / epochs.max(1) as f64;
                let lr = min_lr
                    + (base_lr - min_lr) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
                lr / base_lr
            }
        }
    }

    /// Feed the validation loss of a finished epoch; returns true when early stopping says
    /// training should stop.
    pub(crate) fn observe(
        &mut self,
        val_loss: f64,
        schedule: &LrSchedule,
        base_lr: f64,
        early_stopping: Option<&EarlyStopping>,
    ) -> bool {
        if let LrSchedule::ReduceOnPlateau {
            factor,
            patience,
            min_delta,
            min_lr,
        } = *schedule
        {
            if improves(val_loss, self.plateau_best, min_delta) {
                self.plateau_best = Some(val_loss);
                self.plateau_wait = 0;
            } else {
                self.plateau_wait += 1;
                if self.plateau_wait >= patience {
                    let lowest_scale = if base_lr > 0.0 { min_lr / base_lr } else { 0.0 };
                    self.plateau_scale = (self.plateau_scale * factor).max(lowest_scale);
                    self.plateau_wait = 0;
                }
            }
        }
        let Some(stopping) = early_stopping else {
            return false;
        };
        if improves(val_loss, self.stopping_best, stopping.min_delta) {
            self.stopping_best = Some(val_loss);
            self.stopping_wait = 0;
            false
        } else {
            self.stopping_wait += 1;
            self.stopping_wait >= stopping.patience
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_starts_at_the_learning_rate_and_halves_midway() {
        let state = ScheduleState::default();
        let cosine = LrSchedule::Cosine { min_lr: 0.0 };
        assert_eq!(state.lr_scale(&cosine, 1e-3, 0, 10), 1.0);
        assert!((state.lr_scale(&cosine, 1e-3, 5, 10) - 0.5).abs() < 1e-12);
        assert!(state.lr_scale(&cosine, 1e-3, 9, 10) < 0.03);
    }

    #[test]
    fn plateau_reduces_after_patience_epochs_without_improvement_and_respects_min_lr() {
        let schedule = LrSchedule::ReduceOnPlateau {
            factor: 0.5,
            patience: 2,
            min_delta: 0.0,
            min_lr: 0.3,
        };
        let mut state = ScheduleState::default();
        for loss in [1.0, 0.9, 0.95, 0.92] {
            state.observe(loss, &schedule, 1.0, None);
        }
        assert_eq!(state.lr_scale(&schedule, 1.0, 4, 10), 0.5);
        for loss in [0.95, 0.93] {
            state.observe(loss, &schedule, 1.0, None);
        }
        assert_eq!(state.lr_scale(&schedule, 1.0, 6, 10), 0.3);
    }

    #[test]
    fn early_stopping_fires_after_patience_epochs_without_improvement() {
        let stopping = EarlyStopping {
            patience: 2,
            min_delta: 0.01,
        };
        let mut state = ScheduleState::default();
        let fired: Vec<bool> = [1.0, 0.8, 0.795, 0.7, 0.71, 0.72]
            .iter()
            .map(|&l| state.observe(l, &LrSchedule::Constant, 1.0, Some(&stopping)))
            .collect();
        assert_eq!(fired, vec![false, false, false, false, false, true]);
    }
}
