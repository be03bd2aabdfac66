//! Training a [`FractureClassifier`]: loaders for the split, the [`Trainer`], and taking over
//! its result (best weights, history, split, validation-chosen threshold).

use super::{FractureClassifier, ThresholdSource, DEFAULT_THRESHOLD};
use crate::dataset::annotations::Annotations;
use crate::dataset::loader::{ImageLoader, LoaderConfig};
use crate::dataset::{Part, Split};
use crate::error::{Error, Result};
use crate::train::checkpoint::SPLIT_FILE;
use crate::train::{History, TrainConfig, Trainer};
use candle_core::{Tensor, Var};
use candle_nn::VarMap;
use std::collections::HashMap;
use std::path::Path;

impl FractureClassifier {
    /// Train on `split.train`, validating on `split.val`; afterwards the network holds the
    /// weights of the epoch with the lowest validation loss, a temperature is fitted on the
    /// validation part (with the classifier's test-time augmentation; not fitted, and the
    /// reason recorded, when that part holds fewer than
    /// [`super::MIN_CALIBRATION_CASES`] images or [`super::MIN_CALIBRATION_PER_CLASS`] of
    /// either class) and the threshold is chosen there on the calibrated logits by
    /// `config.threshold_rule` (Youden's J unless set), recorded with the rule as its source.
    /// If the rule is undefined there, a threshold set by hand is kept as it was; any other
    /// becomes the default 0.5 (recorded as the default, not as chosen on data).
    ///
    /// The head is trained from a fresh initialization seeded by `config.seed` (or from the
    /// classifier's current head with `config.keep_head`); the backbone
    /// starts from the classifier's current weights and is frozen or fine-tuned as
    /// `config.backbone` says. Augmentation (the notebook's Keras generator) is applied to the
    /// training images when `config.augment` is on.
    pub fn train(&mut self, split: &Split, config: TrainConfig) -> Result<History> {
        self.train_with_checkpoints(split, config, None)
    }

    /// [`FractureClassifier::train`], writing a checkpoint after every epoch into
    /// `checkpoint_dir` (resume with [`Trainer::resume`]).
    pub fn train_with_checkpoints(
        &mut self,
        split: &Split,
        config: TrainConfig,
        checkpoint_dir: Option<&Path>,
    ) -> Result<History> {
        self.train_inner(split, None, config, checkpoint_dir)
    }

    pub(super) fn train_inner(
        &mut self,
        split: &Split,
        annotations: Option<&Annotations>,
        config: TrainConfig,
        checkpoint_dir: Option<&Path>,
    ) -> Result<History> {
        let backbone_vars = VarMap::new();
        {
            let mut data = backbone_vars
                .data()
                .lock()
                .map_err(|_| Error::Internal("a variable map's lock is poisoned".into()))?;
            for spec in self.backbone.variables() {
                let value = self.tensor(&spec.name)?;
                data.insert(spec.name, Var::from_tensor(&value)?);
            }
        }
        let keep_head = config.keep_head;
        if keep_head && config.head != self.head {
            return Err(Error::InvalidConfig(format!(
                "keep_head: the classifier's head is {:?}, the training configuration asks for {:?}",
                self.head, config.head
            )));
        }
        let mut trainer = Trainer::new(&self.backbone, backbone_vars, config, &self.device)?;
        if keep_head {
            let head = self
                .head
                .variables(self.backbone.feature_channels())
                .into_iter()
                .map(|spec| Ok((spec.name.clone(), self.tensor(&spec.name)?)))
                .collect::<Result<HashMap<_, _>>>()?;
            trainer.set_head(&head)?;
        }
        trainer.record_split(split)?;
        let history = self.run_trainer(&mut trainer, split, annotations, checkpoint_dir)?;
        self.adopt(trainer, split, history)
    }

    /// Continue an interrupted [`FractureClassifier::train_with_checkpoints`] run from its
    /// checkpoint folder, on the same split; the result is the same as an uninterrupted run.
    /// The backbone shape and training configuration come from the checkpoint.
    ///
    /// `split` must be the one the run started with: it is compared with the checkpoint's
    /// `split.csv` (paths and labels, part by part), and an error names the first difference.
    pub fn resume_training(&mut self, split: &Split, checkpoint_dir: &Path) -> Result<History> {
        self.resume_inner(split, None, checkpoint_dir)
    }

    /// [`FractureClassifier::resume_training`] of a run started by
    /// [`FractureClassifier::train_with_boxes`], with the same annotations.
    ///
    /// ```no_run
    /// use fracture::dataset::annotations::Annotations;
    /// use fracture::dataset::{FracAtlas, SplitConfig};
    /// # let mut clf = fracture::FractureClassifier::load("model_dir", &candle_core::Device::Cpu)?;
    /// let split = FracAtlas::open("FracAtlas")?.split(&SplitConfig::default())?;
    /// let annotations = Annotations::open_fracatlas("FracAtlas")?;
    /// clf.resume_training_with_boxes(&split, &annotations, "runs/boxes/checkpoints".as_ref())?;
    /// # Ok::<(), fracture::Error>(())
    /// ```
    pub fn resume_training_with_boxes(
        &mut self,
        split: &Split,
        annotations: &Annotations,
        checkpoint_dir: &Path,
    ) -> Result<History> {
        self.resume_inner(split, Some(annotations), checkpoint_dir)
    }

    fn resume_inner(
        &mut self,
        split: &Split,
        annotations: Option<&Annotations>,
        checkpoint_dir: &Path,
    ) -> Result<History> {
        let recorded = checkpoint_dir.join(SPLIT_FILE);
        if !recorded.is_file() {
            return Err(Error::InvalidInput(format!(
                "{} holds no {SPLIT_FILE}, so the split given cannot be checked against the one the run trained on; \
                 resume it with Trainer::resume, or start a new run",
                checkpoint_dir.display()
            )));
        }
        if let Some(difference) = Split::load_manifest(&recorded)?.first_difference(split) {
            return Err(Error::InvalidInput(format!(
                "the split given differs from the one the run in {} trained on ({} against the split given): {difference}",
                checkpoint_dir.display(),
                recorded.display()
            )));
        }
        let mut trainer = Trainer::resume(checkpoint_dir, &self.device)?;
        trainer.record_split(split)?;
        let history = self.run_trainer(&mut trainer, split, annotations, Some(checkpoint_dir))?;
        self.adopt(trainer, split, history)
    }

    /// Take over the trained weights, remember history and split, choose the threshold.
    fn adopt(&mut self, trainer: Trainer, split: &Split, history: History) -> Result<History> {
        let backbone = trainer.backbone_config().clone();
        let head = trainer.config().head.clone();
        let tensors: HashMap<String, Tensor> = trainer.weights()?.into_iter().collect();
        let mut trained = Self::from_tensors(
            backbone,
            head,
            tensors,
            self.preprocess,
            self.threshold,
            &self.device,
        )?;
        // A threshold chosen for the old weights means nothing for the new ones: only one set
        // by hand is kept (as it was, not rescaled); any other starts again from the default.
        if self.threshold_source == Some(ThresholdSource::Manual) {
            trained.threshold_source = Some(ThresholdSource::Manual);
        } else {
            trained.threshold = DEFAULT_THRESHOLD;
            trained.threshold_source = Some(ThresholdSource::Default);
        }
        trained.history = Some(history.clone());
        trained.split = Some(split.clone());
        trained.train_config = Some(trainer.config().clone());
        trained.initial_weights = self.initial_weights.clone();
        // Calibration first, then the threshold on the calibrated scale; both on the
        // validation part scored once, as `classify` will score (the TTA mean logit when TTA
        // is on). If the rule is undefined there, the threshold above stays, with its source.
        trained.tta = self.tta.clone();
        trained.path_form = self.path_form.clone();
        trained.set_precision(self.precision())?;
        let val = trained.score_part(&split.val)?;
        trained.calibrate_after_training(&val.labels, &val.logits)?;
        let rule = trainer.config().threshold_rule;
        trained.choose_threshold_from(&val.labels, &val.logits, rule)?;
        *self = trained;
        Ok(history)
    }

    fn tensor(&self, name: &str) -> Result<Tensor> {
        self.tensors
            .get(name)
            .cloned()
            .ok_or_else(|| Error::Weights {
                source_name: "classifier".into(),
                message: format!("variable {name} missing"),
            })
    }

    pub(super) fn loader(
        &self,
        part: &Part,
        batch_size: usize,
        shuffle: bool,
        seed: u64,
    ) -> Result<ImageLoader> {
        let config = LoaderConfig {
            batch_size,
            shuffle,
            seed,
            ..LoaderConfig::default()
        };
        ImageLoader::for_part(part, self.preprocess, config, self.device.clone())
    }
}
