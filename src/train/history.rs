//! [`History`]: what happened in each epoch (Keras's `History.history`), written as CSV and
//! JSON next to the checkpoints.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The record of one finished epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// Epoch number, counted from 1 as in Keras's log ("Epoch 1/25").
    pub epoch: usize,
    /// Mean training loss over the epoch (dropout active, class weights applied).
    pub train_loss: f64,
    /// Training accuracy at probability threshold 0.5.
    pub train_accuracy: f64,
    /// Training ROC AUC; `None` when the epoch saw a single class.
    pub train_auc: Option<f64>,
    /// Validation loss (inference mode, no class weights).
    pub val_loss: f64,
    /// Validation accuracy at probability threshold 0.5.
    pub val_accuracy: f64,
    /// Validation ROC AUC; `None` when the validation set holds a single class.
    pub val_auc: Option<f64>,
    /// Learning rate of the head in this epoch.
    pub learning_rate: f64,
    /// Learning rate of the trained backbone variables, when the backbone is trained.
    pub backbone_learning_rate: Option<f64>,
    /// Wall-clock seconds the epoch took (training and validation).
    pub seconds: f64,
}

/// Every epoch's record, in order.
///
/// ```
/// use fracture::train::{EpochRecord, History};
/// let mut history = History::default();
/// for (epoch, val_loss) in [(1, 0.7), (2, 0.5), (3, 0.6)] {
///     history.epochs.push(EpochRecord {
///         epoch, train_loss: 0.6, train_accuracy: 0.7, train_auc: Some(0.8),
///         val_loss, val_accuracy: 0.7, val_auc: None,
///         learning_rate: 1e-4, backbone_learning_rate: None, seconds: 1.0,
///     });
/// }
/// assert_eq!(history.best_epoch().map(|r| r.epoch), Some(2));
/// assert!(history.to_csv().lines().nth(1).unwrap().starts_with("1,0.6,0.7,0.8,0.7,0.7,,"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    /// One record per finished epoch.
    pub epochs: Vec<EpochRecord>,
}

const CSV_HEADER: &str = "epoch,train_loss,train_accuracy,train_auc,val_loss,val_accuracy,val_auc,learning_rate,backbone_learning_rate,seconds";

impl History {
    /// The epoch with the lowest validation loss (the first one on ties).
    pub fn best_epoch(&self) -> Option<&EpochRecord> {
        self.epochs
            .iter()
            .fold(None, |best: Option<&EpochRecord>, r| match best {
                Some(b) if b.val_loss <= r.val_loss => Some(b),
                _ => Some(r),
            })
    }

    /// The history as CSV, one row per epoch, empty cells for missing values.
    pub fn to_csv(&self) -> String {
        let opt = |x: Option<f64>| x.map(|v| v.to_string()).unwrap_or_default();
        let mut out = String::from(CSV_HEADER);
        out.push('\n');
        for r in &self.epochs {
            out.push_str(&format!(
                "{},{},{},{},{},{},{},{},{},{}\n",
                r.epoch,
                r.train_loss,
                r.train_accuracy,
                opt(r.train_auc),
                r.val_loss,
                r.val_accuracy,
                opt(r.val_auc),
                r.learning_rate,
                opt(r.backbone_learning_rate),
                r.seconds
            ));
        }
        out
    }

    /// The history as pretty-printed JSON (`{"epochs": [...]}`).
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self)
            .map_err(|e| Error::Training(format!("cannot serialize the history: {e}")))
    }

    /// Write [`History::to_csv`] to `path`.
    pub fn write_csv(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        std::fs::write(path, self.to_csv()).map_err(|e| Error::io(path, e))
    }

    /// Write [`History::to_json`] to `path`.
    pub fn write_json(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        std::fs::write(path, self.to_json()?).map_err(|e| Error::io(path, e))
    }

    /// Read a history written by [`History::to_json`].
    pub fn load_json(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        serde_json::from_str(&text).map_err(|e| Error::Format {
            path: path.into(),
            message: format!("not a training history: {e}"),
        })
    }
}
