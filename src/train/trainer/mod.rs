//! [`Trainer`]: the training loop (epochs, validation, best checkpoint, resume).

mod epoch;
mod feature_cache;
mod resume;
mod save;
mod variables;

use super::adam::Adam;
use super::checkpoint::{model_file_name, SPLIT_FILE, STATE_FILE};
use super::config::{BackboneTraining, TrainConfig};
use super::history::{EpochRecord, History};
use super::schedule::ScheduleState;
use crate::batch::BatchSource;
use crate::dataset::Split;
use crate::error::{Error, Result};
use crate::model::{Backbone, BackboneConfig, ClassifierHead, FractureNet, FrozenBackbone};
use crate::progress::{format_duration, Progress};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use feature_cache::FeatureCache;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use variables::{
    backbone_learning_rate, backbone_optimizer, check_backbone_vars, init_head, named_vars,
};

pub(super) const HEAD_OPT_PREFIX: &str = "head_opt.";
pub(super) const BACKBONE_OPT_PREFIX: &str = "backbone_opt.";

/// The lowest validation loss so far and the weights that reached it.
#[derive(Debug)]
struct Best {
    epoch: usize,
    val_loss: f64,
    /// Copies of every variable training can change.
    weights: HashMap<String, Tensor>,
}

/// A failure injected into a checkpoint write (tests of crash safety).
#[derive(Debug, Clone, Copy)]
struct InjectedFailure {
    epoch: usize,
    file_index: usize,
}

/// Loss, accuracy and AUC of one pass.
struct PassMetrics {
    loss: f64,
    accuracy: f64,
    auc: Option<f64>,
}

/// Trains a [`FractureNet`]: Adam on the head (and on the chosen backbone stacks), stable
/// binary cross-entropy, validation after every epoch, best weights by validation loss,
/// atomic checkpoints and exact resume.
///
/// The backbone's variables live in one `VarMap`, the head's (`head.*`) in another. With a
/// frozen backbone only the head's variables reach the optimizer and the backbone runs in
/// inference mode outside the autograd graph; with augmentation off its pooled features are
/// computed once and reused.
///
/// ```
/// use fracture::batch::TensorBatches;
/// use fracture::model::{HeadConfig, ResNetV2Config};
/// use fracture::train::{TrainConfig, Trainer};
/// use candle_core::{Device, DType, Tensor};
///
/// let device = Device::Cpu;
/// let backbone = ResNetV2Config::custom(vec![2, 2], vec![4, 8]);
/// let config = TrainConfig {
///     epochs: 2,
///     augment: false,
///     progress: false,
///     head: HeadConfig { hidden: 8, dropout: 0.5, localization: None },
///     ..TrainConfig::default()
/// };
/// // An empty VarMap gives a randomly initialised backbone; a loaded one keeps its weights.
/// let mut trainer = Trainer::new(&backbone, candle_nn::VarMap::new(), config, &device)?;
/// let images = Tensor::randn(0f32, 1., (6, 3, 32, 32), &device)?;
/// let labels = Tensor::new(&[0f32, 1., 0., 1., 0., 1.], &device)?;
/// let data = TensorBatches::new(images, labels, 4)?;
/// let history = trainer.fit(&data, &data, None)?;
/// assert_eq!(history.epochs.len(), 2);
/// assert!(trainer.trainable_variable_names().iter().all(|n| n.starts_with("head.")));
/// # Ok::<(), fracture::Error>(())
/// ```
pub struct Trainer {
    config: TrainConfig,
    backbone_config: BackboneConfig,
    device: Device,
    backbone_vars: VarMap,
    head_vars: VarMap,
    net: FractureNet,
    head_optimizer: Adam,
    backbone_optimizer: Option<Adam>,
    schedule: ScheduleState,
    history: History,
    epochs_done: usize,
    best: Option<Best>,
    best_model_file: Option<String>,
    stopped_early: bool,
    resumed_from: Option<PathBuf>,
    injected_failure: Option<InjectedFailure>,
    /// The frozen backbone as inference runs it (the fast path on the CPU), planned when
    /// `fit` starts.
    frozen: Option<FrozenBackbone>,
    /// The split manifest given by [`Trainer::record_split`], written into every checkpoint.
    split_manifest: Option<Vec<u8>>,
}

impl Trainer {
    /// Set up training of a backbone shaped like `backbone_config` whose variables are in
    /// `backbone_vars` (empty: random initialisation; otherwise it must hold exactly the
    /// backbone's variables, e.g. pretrained weights). The head is created from
    /// `config.head` with Keras's initialisation (Glorot-uniform kernels, zero biases) drawn
    /// from `config.seed`.
    pub fn new(
        backbone_config: impl Into<BackboneConfig>,
        backbone_vars: VarMap,
        config: TrainConfig,
        device: &Device,
    ) -> Result<Self> {
        let backbone_config = &backbone_config.into();
        config.validate()?;
        backbone_config.validate()?;
        check_localization_stage(&config, backbone_config)?;
        check_backbone_vars(backbone_config, &backbone_vars, device)?;
        let backbone = Backbone::new(
            backbone_config,
            VarBuilder::from_varmap(&backbone_vars, DType::F32, device),
        )?;
        let head_vars = VarMap::new();
        let head = ClassifierHead::new(
            backbone_config.feature_channels(),
            &config.head,
            VarBuilder::from_varmap(&head_vars, DType::F32, device).pp("head"),
        )?;
        init_head(
            &head_vars,
            &config.head,
            backbone_config.feature_channels(),
            config.seed,
            device,
        )?;
        let head_optimizer = Adam::new(named_vars(&head_vars)?, config.adam, config.learning_rate)?;
        let backbone_optimizer = backbone_optimizer(&config, backbone_config, &backbone_vars)?;
        Ok(Self {
            net: FractureNet::from_parts(backbone, head),
            config,
            backbone_config: backbone_config.clone(),
            device: device.clone(),
            backbone_vars,
            head_vars,
            head_optimizer,
            backbone_optimizer,
            schedule: ScheduleState::default(),
            history: History::default(),
            epochs_done: 0,
            best: None,
            best_model_file: None,
            stopped_early: false,
            resumed_from: None,
            injected_failure: None,
            frozen: None,
            split_manifest: None,
        })
    }

    /// Start from a trained head instead of the fresh one: `values` maps each of the head's
    /// variables (`head.dense.weight`, ...) to its value, with the shapes
    /// [`HeadConfig::variables`](crate::model::HeadConfig::variables) gives. Call it before
    /// [`Trainer::fit`]; an error names a missing or misshapen variable.
    pub fn set_head(&mut self, values: &HashMap<String, Tensor>) -> Result<()> {
        if self.epochs_done > 0 {
            return Err(Error::InvalidInput(
                "the head can only be replaced before the first epoch".into(),
            ));
        }
        let specs = self
            .config
            .head
            .variables(self.backbone_config.feature_channels());
        let vars: HashMap<String, Var> = named_vars(&self.head_vars)?.into_iter().collect();
        for spec in specs {
            let value = values.get(&spec.name).ok_or_else(|| Error::Weights {
                source_name: "head given to the trainer".into(),
                message: format!("variable {} missing", spec.name),
            })?;
            if value.dims() != spec.shape.as_slice() {
                return Err(Error::Weights {
                    source_name: "head given to the trainer".into(),
                    message: format!(
                        "{} has shape {:?}, the head needs {:?}",
                        spec.name,
                        value.dims(),
                        spec.shape
                    ),
                });
            }
            let var = vars.get(&spec.name).ok_or_else(|| {
                Error::Internal(format!("the head has no variable {}", spec.name))
            })?;
            var.set(&value.to_device(&self.device)?)?;
        }
        Ok(())
    }

    /// The shape of the backbone being trained.
    pub fn backbone_config(&self) -> &BackboneConfig {
        &self.backbone_config
    }

    /// The network being trained.
    pub fn net(&self) -> &FractureNet {
        &self.net
    }

    /// The training configuration.
    pub fn config(&self) -> &TrainConfig {
        &self.config
    }

    /// The backbone's variables (Keras layer names).
    pub fn backbone_vars(&self) -> &VarMap {
        &self.backbone_vars
    }

    /// The head's variables (`head.dense.*`, `head.logit.*`).
    pub fn head_vars(&self) -> &VarMap {
        &self.head_vars
    }

    /// Every epoch finished so far.
    pub fn history(&self) -> &History {
        &self.history
    }

    /// Number of finished epochs.
    pub fn epochs_done(&self) -> usize {
        self.epochs_done
    }

    /// Names of the variables the optimizers update, sorted (head first).
    pub fn trainable_variable_names(&self) -> Vec<String> {
        let mut names = self.head_optimizer.variable_names();
        if let Some(optimizer) = &self.backbone_optimizer {
            names.extend(optimizer.variable_names());
        }
        names
    }

    /// Every variable, backbone and head, by name (copies of the current values).
    pub fn weights(&self) -> Result<Vec<(String, Tensor)>> {
        let mut all = named_vars(&self.backbone_vars)?;
        all.extend(named_vars(&self.head_vars)?);
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all.into_iter()
            .map(|(name, var)| Ok((name, var.as_tensor().copy()?)))
            .collect()
    }

    /// The backbone's variables that training leaves as they are (every one with a frozen
    /// backbone; those before the trained stages otherwise), by name: what a stage cache's
    /// key covers.
    pub(crate) fn frozen_weights(&self) -> Result<Vec<(String, Tensor)>> {
        let trained: Vec<String> = match &self.config.backbone {
            BackboneTraining::Frozen => Vec::new(),
            BackboneTraining::All { .. } => return Ok(Vec::new()),
            BackboneTraining::LastStages { stages, .. } => {
                self.backbone_config.last_stage_prefixes(*stages)?
            }
        };
        named_vars(&self.backbone_vars)?
            .into_iter()
            .filter(|(name, _)| !trained.iter().any(|p| name.starts_with(p.as_str())))
            .map(|(name, var)| Ok((name, var.as_tensor().clone())))
            .collect()
    }

    /// Write `split` as `split.csv` into every checkpoint (instead of copying
    /// [`TrainConfig::split_manifest`]), so that the checkpoint says which images it was
    /// trained and validated on and a resume can check it is given the same ones.
    pub fn record_split(&mut self, split: &Split) -> Result<()> {
        self.split_manifest = Some(split.manifest_bytes(Path::new(SPLIT_FILE), true)?);
        Ok(())
    }

    /// Make the checkpoint write of `epoch` (1-based) fail halfway through its
    /// `file_index`-th file (0-based), leaving a truncated temporary file as a killed
    /// process would. For crash-safety tests only.
    #[doc(hidden)]
    pub fn inject_checkpoint_failure(&mut self, epoch: usize, file_index: usize) {
        self.injected_failure = Some(InjectedFailure { epoch, file_index });
    }

    /// Train until `config.epochs` epochs are done (or early stopping), validating on `val`
    /// after each epoch. With `checkpoint_dir`, a checkpoint is written after every epoch (see
    /// [`crate::train::checkpoint`]). A non-finite loss stops with an
    /// [`Error::Training`] naming the epoch and batch; the last checkpoint is left as it was.
    ///
    /// Epochs are passed to the sources 0-based; the history counts them from 1.
    pub fn fit(
        &mut self,
        train: &dyn BatchSource,
        val: &dyn BatchSource,
        checkpoint_dir: Option<&Path>,
    ) -> Result<History> {
        if train.num_samples() == 0 || val.num_samples() == 0 {
            return Err(Error::InvalidInput(format!(
                "training needs samples to train and validate on, found {} training and {} validation samples",
                train.num_samples(),
                val.num_samples()
            )));
        }
        if let Some(dir) = checkpoint_dir {
            self.prepare_checkpoint_dir(dir)?;
        }
        let frozen = self.config.backbone == BackboneTraining::Frozen;
        // A frozen backbone runs as inference does (the fast path on the CPU); it is planned
        // here, after any resume has loaded the weights, and stays valid because frozen
        // weights never change.
        self.frozen = if frozen || self.frozen_stages_run_fast()? {
            Some(FrozenBackbone::new(
                self.net.backbone.clone(),
                &self.device,
            )?)
        } else {
            None
        };
        let val_cache = if frozen {
            Some(FeatureCache::build(
                &|x| self.frozen_pooled(x),
                val,
                &self.device,
                "validation",
            )?)
        } else {
            None
        };
        let mut train_cache = None;
        while self.epochs_done < self.config.epochs && !self.stopped_early {
            let epoch = self.epochs_done; // 0-based
            let started = Instant::now();
            let scale = self.schedule.lr_scale(
                &self.config.schedule,
                self.config.learning_rate,
                epoch,
                self.config.epochs,
            );
            self.head_optimizer
                .set_learning_rate(self.config.learning_rate * scale);
            let backbone_lr = backbone_learning_rate(&self.config.backbone).map(|lr| lr * scale);
            if let (Some(optimizer), Some(lr)) = (&mut self.backbone_optimizer, backbone_lr) {
                optimizer.set_learning_rate(lr);
            }
            if frozen && !self.config.augment && train_cache.is_none() {
                train_cache = Some(FeatureCache::build(
                    &|x| self.frozen_pooled(x),
                    train,
                    &self.device,
                    "training",
                )?);
            }
            let progress = self.progress(train.num_samples(), epoch);
            let trained = self.train_epoch(train, epoch, train_cache.as_ref(), &progress)?;
            let validated = self.validate(val, val_cache.as_ref())?;
            let record = EpochRecord {
                epoch: epoch + 1,
                train_loss: trained.loss,
                train_accuracy: trained.accuracy,
                train_auc: trained.auc,
                val_loss: validated.loss,
                val_accuracy: validated.accuracy,
                val_auc: validated.auc,
                learning_rate: self.head_optimizer.learning_rate(),
                backbone_learning_rate: backbone_lr,
                seconds: started.elapsed().as_secs_f64(),
            };
            progress.finish(&epoch_summary(&record, self.eta(&record)));
            self.finish_epoch(record, checkpoint_dir)?;
        }
        if self.config.restore_best_weights {
            self.restore_best()?;
        }
        Ok(self.history.clone())
    }

    /// Whether the frozen stages before the last ones that train run through a
    /// [`FrozenBackbone`] (EfficientNet-Lite training at least one stage, with a stage before
    /// them): the same arithmetic as inference and as a stage cache.
    fn frozen_stages_run_fast(&self) -> Result<bool> {
        // With a stage cache the frozen stages ran when the cache was built, not here.
        Ok(
            matches!(self.backbone_config, BackboneConfig::EfficientNetLite(_))
                && self.config.stage_cache.is_none()
                && matches!(self.config.backbone, BackboneTraining::LastStages { .. })
                && self.first_trainable_stage()? > 0,
        )
    }

    /// Put the weights of the best epoch so far back into the model (no-op before the
    /// first epoch).
    pub fn restore_best(&mut self) -> Result<()> {
        if let Some(best) = &self.best {
            let vars = self.all_named_vars()?;
            for (name, var) in vars {
                if let Some(value) = best.weights.get(&name) {
                    var.set(value)?;
                }
            }
        }
        Ok(())
    }

    /// The epoch (1-based) with the lowest validation loss so far.
    pub fn best_epoch(&self) -> Option<usize> {
        self.best.as_ref().map(|b| b.epoch)
    }

    fn prepare_checkpoint_dir(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let resuming_here = self.resumed_from.as_deref() == Some(dir);
        if dir.join(STATE_FILE).exists() && !resuming_here {
            return Err(Error::InvalidConfig(format!(
                "{} already holds a training run: continue it with Trainer::resume or choose another folder",
                dir.display()
            )));
        }
        Ok(())
    }

    /// Record the epoch, update the best weights and the schedule, write the checkpoint.
    fn finish_epoch(&mut self, record: EpochRecord, checkpoint_dir: Option<&Path>) -> Result<()> {
        let epoch = record.epoch;
        let val_loss = record.val_loss;
        if self.best.as_ref().is_none_or(|b| val_loss < b.val_loss) {
            let changing = self.changing_variable_names()?;
            let weights = self
                .all_named_vars()?
                .into_iter()
                .filter(|(name, _)| changing.contains(name))
                .map(|(name, var)| Ok((name, var.as_tensor().copy()?)))
                .collect::<Result<HashMap<_, _>>>()?;
            self.best = Some(Best {
                epoch,
                val_loss,
                weights,
            });
            self.best_model_file = Some(model_file_name(epoch));
        }
        self.stopped_early = self.schedule.observe(
            val_loss,
            &self.config.schedule,
            self.config.learning_rate,
            self.config.early_stopping.as_ref(),
        );
        self.history.epochs.push(record);
        self.epochs_done = epoch;
        if let Some(dir) = checkpoint_dir {
            self.save_checkpoint(dir)?;
        }
        Ok(())
    }

    /// The progress of one epoch: a bar on a terminal, one line per epoch otherwise.
    fn progress(&self, samples: usize, epoch: usize) -> Progress {
        if !self.config.progress {
            return Progress::hidden();
        }
        let label = format!("Epoch {}/{}", epoch + 1, self.config.epochs);
        Progress::new(label, samples as u64, None)
    }

    /// Time the remaining epochs should take at the mean pace of the epochs done so far (this
    /// one included); `None` after the last epoch.
    fn eta(&self, latest: &EpochRecord) -> Option<Duration> {
        let left = self.config.epochs.checked_sub(latest.epoch)?;
        if left == 0 {
            return None;
        }
        let seconds: Vec<f64> = self
            .history
            .epochs
            .iter()
            .chain([latest])
            .map(|r| r.seconds)
            .collect();
        let mean = seconds.iter().sum::<f64>() / seconds.len() as f64;
        Duration::try_from_secs_f64(mean * left as f64).ok()
    }

    /// Every variable of both maps, by name.
    fn all_named_vars(&self) -> Result<Vec<(String, Var)>> {
        let mut all = named_vars(&self.backbone_vars)?;
        all.extend(named_vars(&self.head_vars)?);
        Ok(all)
    }

    /// Names of the variables an epoch can change: the head, and with a trained backbone
    /// every backbone variable (BN moving statistics included).
    fn changing_variable_names(&self) -> Result<HashSet<String>> {
        let mut names: HashSet<String> = named_vars(&self.head_vars)?
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        if self.config.backbone != BackboneTraining::Frozen {
            names.extend(named_vars(&self.backbone_vars)?.into_iter().map(|(n, _)| n));
        }
        Ok(names)
    }
}

/// A localization head reads the stage cache's maps: its stage must be the one the cache
/// holds, the last frozen one.
fn check_localization_stage(config: &TrainConfig, backbone: &BackboneConfig) -> Result<()> {
    let Some(localization) = &config.head.localization else {
        return Ok(());
    };
    let cached = match &config.backbone {
        BackboneTraining::LastStages { stages, .. } => {
            backbone.stage_count().checked_sub(*stages + 1)
        }
        _ => None,
    };
    if cached != Some(localization.stage) {
        return Err(Error::InvalidConfig(format!(
            "the localization map reads the output of stage {}, and the stage cache holds {}: fine-tune the stages after {}",
            localization.stage,
            cached.map_or_else(|| "no stage".to_string(), |s| format!("stage {s}'s")),
            localization.stage
        )));
    }
    Ok(())
}

/// What the progress report says about a finished epoch: losses, accuracies, validation AUC,
/// its duration and the estimated time left.
fn epoch_summary(record: &EpochRecord, eta: Option<Duration>) -> String {
    let auc = record
        .val_auc
        .map_or_else(|| "undefined".to_string(), |a| format!("{a:.4}"));
    let mut line = format!(
        "train loss {:.4} acc {:.4}, val loss {:.4} acc {:.4} AUC {auc}, {}",
        record.train_loss,
        record.train_accuracy,
        record.val_loss,
        record.val_accuracy,
        format_duration(Duration::try_from_secs_f64(record.seconds).unwrap_or_default()),
    );
    if let Some(eta) = eta {
        line.push_str(&format!(", ETA {}", format_duration(eta)));
    }
    line
}

impl std::fmt::Debug for Trainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer")
            .field("config", &self.config)
            .field("backbone_config", &self.backbone_config)
            .field("epochs_done", &self.epochs_done)
            .field("best_epoch", &self.best_epoch())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_epoch_line_has_losses_auc_duration_and_eta() {
        let record = EpochRecord {
            epoch: 3,
            train_loss: 0.41234,
            train_accuracy: 0.8,
            train_auc: Some(0.9),
            val_loss: 0.39,
            val_accuracy: 0.83,
            val_auc: Some(0.81234),
            learning_rate: 1e-4,
            backbone_learning_rate: None,
            seconds: 41.4,
        };
        assert_eq!(
            epoch_summary(&record, Some(Duration::from_secs(902))),
            "train loss 0.4123 acc 0.8000, val loss 0.3900 acc 0.8300 AUC 0.8123, 41 s, ETA 15 min 02 s"
        );
        let single_class = EpochRecord {
            val_auc: None,
            ..record
        };
        assert!(epoch_summary(&single_class, None).ends_with("AUC undefined, 41 s"));
    }
}
