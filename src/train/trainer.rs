//! [`Trainer`]: the training loop (epochs, validation, best checkpoint, resume).

use super::adam::Adam;
use super::checkpoint::{
    load_tensors, model_file_name, optimizer_file_name, remove_unreferenced, AtomicWriter,
    Checkpoint, SavedConfig, TrainState, CONFIG_FILE, HISTORY_CSV, HISTORY_JSON, SPLIT_FILE,
    STATE_FILE,
};
use super::config::{BackboneTraining, TrainConfig};
use super::evaluate::{accuracy, roc_auc};
use super::history::{EpochRecord, History};
use super::loss::{bce_with_logits, bce_with_logits_per_sample};
use super::schedule::ScheduleState;
use crate::batch::BatchSource;
use crate::error::{Error, Result};
use crate::model::{ClassifierHead, FastResNetV2, FractureNet, ResNetV2, ResNetV2Config};
use candle_core::{DType, Device, Module, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use indicatif::{ProgressBar, ProgressStyle};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

const HEAD_OPT_PREFIX: &str = "head_opt.";
const BACKBONE_OPT_PREFIX: &str = "backbone_opt.";

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

/// Pooled backbone features per sample, computed once (frozen backbone, fixed images).
#[derive(Debug)]
struct FeatureCache {
    rows: Tensor,
    position: HashMap<usize, u32>,
}

impl FeatureCache {
    fn build(
        pooled_features: &dyn Fn(&Tensor) -> Result<Tensor>,
        source: &dyn BatchSource,
        device: &Device,
    ) -> Result<Self> {
        let mut parts = Vec::new();
        let mut position = HashMap::new();
        let mut row = 0u32;
        for batch in source.batches(0)? {
            let batch = batch?;
            let images = batch.images.to_device(device)?;
            let features = pooled_features(&images)?;
            for index in batch.indices {
                position.insert(index, row);
                row = row.checked_add(1).ok_or_else(|| {
                    Error::InvalidInput("too many samples to cache features for".into())
                })?;
            }
            parts.push(features.detach());
        }
        let rows = Tensor::cat(&parts, 0)?;
        Ok(Self { rows, position })
    }

    fn gather(&self, indices: &[usize]) -> Result<Tensor> {
        let rows = indices
            .iter()
            .map(|i| {
                self.position.get(i).copied().ok_or_else(|| {
                    Error::InvalidInput(format!(
                        "sample index {i} was not in the first pass over the data: cached features need the same samples in every epoch"
                    ))
                })
            })
            .collect::<Result<Vec<u32>>>()?;
        let rows = Tensor::new(rows, self.rows.device())?;
        Ok(self.rows.index_select(&rows, 0)?)
    }
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
///     head: HeadConfig { hidden: 8, dropout: 0.5 },
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
    backbone_config: ResNetV2Config,
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
    /// The fast CPU inference path of the frozen backbone, planned when `fit` starts.
    fast_backbone: Option<FastResNetV2>,
}

impl Trainer {
    /// Set up training of a backbone shaped like `backbone_config` whose variables are in
    /// `backbone_vars` (empty: random initialisation; otherwise it must hold exactly the
    /// backbone's variables, e.g. pretrained weights). The head is created from
    /// `config.head` with Keras's initialisation (Glorot-uniform kernels, zero biases) drawn
    /// from `config.seed`.
    pub fn new(
        backbone_config: &ResNetV2Config,
        backbone_vars: VarMap,
        config: TrainConfig,
        device: &Device,
    ) -> Result<Self> {
        config.validate()?;
        backbone_config.validate()?;
        check_backbone_vars(backbone_config, &backbone_vars, device)?;
        let backbone = ResNetV2::new(
            backbone_config,
            VarBuilder::from_varmap(&backbone_vars, DType::F32, device),
        )?;
        let head_vars = VarMap::new();
        let head = ClassifierHead::new(
            backbone_config.feature_channels(),
            &config.head,
            VarBuilder::from_varmap(&head_vars, DType::F32, device).pp("head"),
        )?;
        init_head(&head_vars, config.seed, device)?;
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
            fast_backbone: None,
        })
    }

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

    /// The shape of the backbone being trained.
    pub fn backbone_config(&self) -> &ResNetV2Config {
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
        // A frozen backbone on the CPU runs through the fast inference path (BN folded,
        // channels-last matrix products); it is planned here, after any resume has loaded
        // the weights, and stays valid because frozen weights never change.
        self.fast_backbone = if frozen && self.device.is_cpu() {
            Some(FastResNetV2::from_model(&self.net.backbone)?)
        } else {
            None
        };
        let val_cache = if frozen {
            Some(FeatureCache::build(
                &|x| self.frozen_pooled(x),
                val,
                &self.device,
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
                )?);
            }
            let progress = self.progress_bar(train.num_samples(), epoch);
            let trained = self.train_epoch(train, epoch, train_cache.as_ref(), &progress)?;
            let validated = self.validate(val, val_cache.as_ref())?;
            progress.finish_with_message(format!(
                "loss {:.4} acc {:.4} val_loss {:.4} val_acc {:.4} val_auc {}",
                trained.loss,
                trained.accuracy,
                validated.loss,
                validated.accuracy,
                validated
                    .auc
                    .map_or_else(|| "-".to_string(), |a| format!("{a:.4}"))
            ));
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
            self.finish_epoch(record, checkpoint_dir)?;
        }
        if self.config.restore_best_weights {
            self.restore_best()?;
        }
        Ok(self.history.clone())
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

    fn train_epoch(
        &mut self,
        source: &dyn BatchSource,
        epoch: usize,
        cache: Option<&FeatureCache>,
        progress: &ProgressBar,
    ) -> Result<PassMetrics> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.config.seed);
        rng.set_stream(epoch as u64 + 1);
        let (mut loss_sum, mut count) = (0f64, 0usize);
        let (mut logits_all, mut labels_all) = (Vec::new(), Vec::new());
        for (b, batch) in source.batches(epoch as u64)?.enumerate() {
            let batch = batch?;
            let labels = batch.labels.to_device(&self.device)?.to_dtype(DType::F32)?;
            let pooled = match cache {
                Some(cache) => cache.gather(&batch.indices)?,
                None => self.train_features(&batch.images)?,
            };
            let logits = self.head_forward_train(&pooled, &mut rng)?;
            let loss = bce_with_logits(&logits, &labels, self.config.class_weights.as_ref())?;
            let loss_value = f64::from(loss.to_scalar::<f32>()?);
            if !loss_value.is_finite() {
                progress.abandon();
                return Err(Error::Training(format!(
                    "non-finite loss ({loss_value}) in epoch {}, batch {}: training stopped; the checkpoint of epoch {} is left as it was",
                    epoch + 1,
                    b + 1,
                    self.epochs_done
                )));
            }
            let grads = loss.backward()?;
            self.head_optimizer.step(&grads)?;
            if let Some(optimizer) = &mut self.backbone_optimizer {
                optimizer.step(&grads)?;
            }
            let n = batch.indices.len();
            loss_sum += loss_value * n as f64;
            count += n;
            logits_all.extend(logits.detach().to_vec1::<f32>()?);
            labels_all.extend(labels.to_vec1::<f32>()?);
            progress.inc(n as u64);
            progress.set_message(format!("loss {:.4}", loss_sum / count.max(1) as f64));
        }
        Ok(PassMetrics {
            loss: loss_sum / count.max(1) as f64,
            accuracy: accuracy(&logits_all, &labels_all),
            auc: roc_auc(&logits_all, &labels_all),
        })
    }

    /// Pooled features of a frozen backbone, outside the autograd graph (fast path on the CPU).
    fn frozen_pooled(&self, images: &Tensor) -> Result<Tensor> {
        let pooled = match &self.fast_backbone {
            Some(fast) => fast.forward_pooled(images)?,
            None => ResNetV2::global_average_pool(&self.net.backbone.forward_features(images)?)?,
        };
        Ok(pooled.detach())
    }

    /// Pooled features of a training batch, through the graph only where the backbone trains.
    fn train_features(&self, images: &Tensor) -> Result<Tensor> {
        let images = images.to_device(&self.device)?;
        let backbone = &self.net.backbone;
        let features = match &self.config.backbone {
            BackboneTraining::Frozen => return self.frozen_pooled(&images),
            BackboneTraining::LastStacks { stacks, .. } => {
                let first = self.backbone_config.blocks.len().saturating_sub(*stacks);
                backbone.forward_features_partial(&images, first)?
            }
            BackboneTraining::All { .. } => backbone.forward_features_t(&images, true)?,
        };
        ResNetV2::global_average_pool(&features)
    }

    /// Head in training mode, with a dropout mask drawn from the epoch's seeded generator
    /// (candle's CPU dropout cannot be seeded).
    fn head_forward_train(&self, pooled: &Tensor, rng: &mut ChaCha8Rng) -> Result<Tensor> {
        let head = &self.net.head;
        let hidden = head.dense.forward(pooled)?.relu()?;
        let p = self.config.head.dropout;
        let hidden = if p > 0.0 {
            let keep_scale = 1.0 / (1.0 - p);
            let mask: Vec<f32> = (0..hidden.elem_count())
                .map(|_| {
                    if rng.random::<f32>() >= p {
                        keep_scale
                    } else {
                        0.0
                    }
                })
                .collect();
            let mask = Tensor::from_vec(mask, hidden.shape(), &self.device)?;
            (hidden * mask)?
        } else {
            hidden
        };
        Ok(head.logit.forward(&hidden)?.squeeze(1)?)
    }

    fn validate(
        &self,
        source: &dyn BatchSource,
        cache: Option<&FeatureCache>,
    ) -> Result<PassMetrics> {
        let (mut loss_sum, mut count) = (0f64, 0usize);
        let (mut logits_all, mut labels_all) = (Vec::new(), Vec::new());
        for batch in source.batches(0)? {
            let batch = batch?;
            let labels = batch.labels.to_device(&self.device)?.to_dtype(DType::F32)?;
            let logits = match cache {
                Some(cache) => self
                    .net
                    .head
                    .forward_t(&cache.gather(&batch.indices)?, false)?,
                None => self
                    .net
                    .forward_t(&batch.images.to_device(&self.device)?, false)?,
            }
            .detach();
            let per_sample = bce_with_logits_per_sample(&logits, &labels)?;
            loss_sum += f64::from(per_sample.sum_all()?.to_scalar::<f32>()?);
            count += batch.indices.len();
            logits_all.extend(logits.to_vec1::<f32>()?);
            labels_all.extend(labels.to_vec1::<f32>()?);
        }
        let loss = loss_sum / count.max(1) as f64;
        if !loss.is_finite() {
            return Err(Error::Training(format!(
                "non-finite validation loss ({loss}) after epoch {}: training stopped; the checkpoint of epoch {} is left as it was",
                self.epochs_done + 1,
                self.epochs_done
            )));
        }
        Ok(PassMetrics {
            loss,
            accuracy: accuracy(&logits_all, &labels_all),
            auc: roc_auc(&logits_all, &labels_all),
        })
    }

    fn progress_bar(&self, samples: usize, epoch: usize) -> ProgressBar {
        if !self.config.progress {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(samples as u64);
        if let Ok(style) =
            ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {elapsed} {msg}")
        {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_prefix(format!("Epoch {}/{}", epoch + 1, self.config.epochs));
        bar
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

    /// Set every variable from `tensors`; all must be present with the right shape.
    fn set_weights(&self, tensors: &HashMap<String, Tensor>, file: &Path) -> Result<()> {
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

    fn save_checkpoint(&mut self, dir: &Path) -> Result<()> {
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
        if let Some(split) = &self.config.split_manifest {
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

/// The backbone learning rate the configuration asks for, if the backbone trains.
fn backbone_learning_rate(mode: &BackboneTraining) -> Option<f64> {
    match mode {
        BackboneTraining::Frozen => None,
        BackboneTraining::LastStacks { learning_rate, .. }
        | BackboneTraining::All { learning_rate } => Some(*learning_rate),
    }
}

/// The variables of a `VarMap`, sorted by name.
fn named_vars(varmap: &VarMap) -> Result<Vec<(String, Var)>> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| Error::Training("a variable map's lock is poisoned".into()))?;
    let mut vars: Vec<(String, Var)> = data.iter().map(|(n, v)| (n.clone(), v.clone())).collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(vars)
}

/// An empty map, or one holding exactly the backbone's variables with the right shapes on
/// `device`.
fn check_backbone_vars(config: &ResNetV2Config, varmap: &VarMap, device: &Device) -> Result<()> {
    let vars = named_vars(varmap)?;
    if vars.is_empty() {
        return Ok(());
    }
    let expected: HashMap<String, Vec<usize>> = config
        .variables()
        .into_iter()
        .map(|v| (v.name, v.shape))
        .collect();
    let mut problems = Vec::new();
    for (name, var) in &vars {
        match expected.get(name) {
            None => problems.push(format!("unexpected variable {name}")),
            Some(shape) if shape.as_slice() != var.dims() => problems.push(format!(
                "{name} has shape {:?}, expected {shape:?}",
                var.dims()
            )),
            Some(_) => {}
        }
        if !var.device().same_device(device) {
            problems.push(format!("{name} is on another device than the trainer"));
        }
    }
    let present: HashSet<&str> = vars.iter().map(|(n, _)| n.as_str()).collect();
    let mut missing: Vec<&str> = expected
        .keys()
        .map(String::as_str)
        .filter(|n| !present.contains(n))
        .collect();
    missing.sort_unstable();
    if let Some(first) = missing.first() {
        problems.push(format!(
            "{} variables missing (first: {first})",
            missing.len()
        ));
    }
    if problems.is_empty() {
        return Ok(());
    }
    problems.truncate(10);
    Err(Error::Weights {
        source_name: "backbone VarMap".into(),
        message: problems.join("; "),
    })
}

/// Keras's Dense initialisation: Glorot-uniform kernels, zero biases, from `seed`.
fn init_head(head_vars: &VarMap, seed: u64, device: &Device) -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for (name, var) in named_vars(head_vars)? {
        let value = if name.ends_with(".weight") {
            let (fan_out, fan_in) = var.dims2()?;
            let limit = (6.0 / (fan_in + fan_out) as f64).sqrt() as f32;
            let values: Vec<f32> = (0..fan_in * fan_out)
                .map(|_| rng.random_range(-limit..limit))
                .collect();
            Tensor::from_vec(values, (fan_out, fan_in), device)?
        } else {
            var.as_tensor().zeros_like()?
        };
        var.set(&value)?;
    }
    Ok(())
}

/// The optimizer of the trained backbone variables (none when frozen). BN moving
/// statistics are never optimized.
fn backbone_optimizer(
    config: &TrainConfig,
    backbone_config: &ResNetV2Config,
    backbone_vars: &VarMap,
) -> Result<Option<Adam>> {
    let stacks = backbone_config.blocks.len();
    let prefixes: Option<Vec<String>> = match &config.backbone {
        BackboneTraining::Frozen => return Ok(None),
        BackboneTraining::All { .. } => None,
        BackboneTraining::LastStacks { stacks: n, .. } => {
            if *n > stacks {
                return Err(Error::InvalidConfig(format!(
                    "cannot fine-tune the last {n} stacks: the backbone has {stacks}"
                )));
            }
            let mut p: Vec<String> = (stacks - n..stacks)
                .map(|s| format!("conv{}_", s + 2))
                .collect();
            p.push("post_bn.".into());
            Some(p)
        }
    };
    let trained = named_vars(backbone_vars)?
        .into_iter()
        .filter(|(name, _)| !name.ends_with(".running_mean") && !name.ends_with(".running_var"))
        .filter(|(name, _)| {
            prefixes
                .as_ref()
                .is_none_or(|p| p.iter().any(|prefix| name.starts_with(prefix.as_str())))
        })
        .collect();
    let learning_rate = backbone_learning_rate(&config.backbone).unwrap_or(config.learning_rate);
    Ok(Some(Adam::new(trained, config.adam, learning_rate)?))
}
