//! Specification of the training loop: learning, freezing, best checkpoint, resume, crash
//! safety, non-finite losses.

use crate::common;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use fracture::augment::AugmentConfig;
use fracture::batch::{Batch, BatchSource, TensorBatches};
use fracture::dataset::loader::{ImageLoader, LoaderConfig};
use fracture::image::{ImageF32, SampleTransform};
use fracture::model::{FractureNet, HeadConfig, ResNetV2Config};
use fracture::preprocess::Preprocess;
use fracture::train::{
    predict, BackboneTraining, Checkpoint, EarlyStopping, LrSchedule, SavedConfig, TrainConfig,
    Trainer,
};
use fracture::Result;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

const SIZE: usize = 32;

/// A two-stack ResNetV2 with an 8-filter stem: small enough to train in seconds.
fn tiny_backbone() -> ResNetV2Config {
    let mut config = ResNetV2Config::custom(vec![2, 2], vec![4, 8]);
    config.stem_filters = 8;
    config
}

/// Backbone variables drawn from `seed` (He-uniform kernels, zero biases, identity BN), so
/// that two runs can start from the same weights (candle's CPU init cannot be seeded).
fn seeded_backbone_vars(config: &ResNetV2Config, seed: u64) -> VarMap {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let varmap = VarMap::new();
    {
        let mut data = varmap.data().lock().unwrap();
        for spec in config.variables() {
            let n: usize = spec.shape.iter().product();
            let values: Vec<f32> = if spec.name.ends_with("conv.weight") {
                let fan_in: usize = spec.shape[1..].iter().product();
                let limit = (6.0 / fan_in as f32).sqrt();
                (0..n).map(|_| rng.random_range(-limit..limit)).collect()
            } else if spec.name.ends_with("bn.weight") || spec.name.ends_with("running_var") {
                vec![1.0; n]
            } else {
                vec![0.0; n]
            };
            let t = Tensor::from_vec(values, spec.shape.clone(), &Device::Cpu).unwrap();
            data.insert(spec.name.clone(), Var::from_tensor(&t).unwrap());
        }
    }
    varmap
}

/// `n` noisy images; label 1 images carry a bright vertical bar (a "fracture line").
fn synthetic(n: usize, seed: u64) -> (Tensor, Tensor) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut pixels = Vec::with_capacity(n * 3 * SIZE * SIZE);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let positive = i % 2 == 1;
        let column = rng.random_range(4..SIZE - 6);
        let mut image = vec![0f32; SIZE * SIZE];
        for (p, v) in image.iter_mut().enumerate() {
            *v = rng.random_range(-1.0..1.0);
            if positive && (column..column + 2).contains(&(p % SIZE)) {
                *v += 2.0;
            }
        }
        for _ in 0..3 {
            pixels.extend_from_slice(&image);
        }
        labels.push(if positive { 1f32 } else { 0.0 });
    }
    (
        Tensor::from_vec(pixels, (n, 3, SIZE, SIZE), &Device::Cpu).unwrap(),
        Tensor::from_vec(labels, n, &Device::Cpu).unwrap(),
    )
}

fn batches(n: usize, seed: u64, batch_size: usize) -> TensorBatches {
    let (images, labels) = synthetic(n, seed);
    TensorBatches::new(images, labels, batch_size).unwrap()
}

/// A trainer of the tiny backbone, its variables drawn from `seed`.
fn tiny_trainer(config: TrainConfig, seed: u64) -> Trainer {
    let backbone = tiny_backbone();
    Trainer::new(
        &backbone,
        seeded_backbone_vars(&backbone, seed),
        config,
        &Device::Cpu,
    )
    .unwrap()
}

/// Settings for quick head-only runs; tests change what they exercise.
fn quick_config(epochs: usize) -> TrainConfig {
    TrainConfig {
        epochs,
        batch_size: 16,
        learning_rate: 1e-3,
        head: HeadConfig {
            hidden: 16,
            dropout: 0.5,
            localization: None,
        },
        augment: false,
        progress: false,
        ..TrainConfig::default()
    }
}

fn snapshot(varmap: &VarMap) -> HashMap<String, Vec<f32>> {
    varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(name, var)| {
            let values = var
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            (name.clone(), values)
        })
        .collect()
}

fn weights_as_map(trainer: &Trainer) -> HashMap<String, Vec<f32>> {
    trainer
        .weights()
        .unwrap()
        .into_iter()
        .map(|(n, t)| (n, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .collect()
}

fn tensors_as_map(tensors: HashMap<String, Tensor>) -> HashMap<String, Vec<f32>> {
    tensors
        .into_iter()
        .map(|(n, t)| (n, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .collect()
}

/// Probability that a random positive outranks a random negative (ties count half),
/// counted pair by pair.
fn pairwise_auc(scores: &[f32], labels: &[f32]) -> f64 {
    let (mut wins, mut pairs) = (0.0, 0.0);
    for (i, &yi) in labels.iter().enumerate() {
        for (j, &yj) in labels.iter().enumerate() {
            if yi == 1.0 && yj == 0.0 {
                pairs += 1.0;
                if scores[i] > scores[j] {
                    wins += 1.0;
                } else if scores[i] == scores[j] {
                    wins += 0.5;
                }
            }
        }
    }
    wins / pairs
}

/// Textbook binary cross-entropy of probabilities, averaged.
fn mean_bce(probabilities: &[f32], labels: &[f32]) -> f64 {
    let total: f64 = probabilities
        .iter()
        .zip(labels)
        .map(|(&p, &y)| {
            let p = (p as f64).clamp(1e-12, 1.0 - 1e-12);
            -(y as f64 * p.ln() + (1.0 - y as f64) * (1.0 - p).ln())
        })
        .sum();
    total / probabilities.len() as f64
}

/// A source that fails or corrupts one epoch: wraps another source.
struct Faulty<'a> {
    inner: &'a dyn BatchSource,
    /// `batches(epoch)` fails for this epoch (an interrupted run).
    fail_epoch: Option<u64>,
    /// This (epoch, batch) gets NaN labels.
    nan_at: Option<(u64, usize)>,
    /// From this epoch on, every image is zero.
    zero_images_from_epoch: Option<u64>,
    calls: Cell<u64>,
}

impl<'a> Faulty<'a> {
    fn new(inner: &'a dyn BatchSource) -> Self {
        Self {
            inner,
            fail_epoch: None,
            nan_at: None,
            zero_images_from_epoch: None,
            calls: Cell::new(0),
        }
    }
}

impl BatchSource for Faulty<'_> {
    fn num_samples(&self) -> usize {
        self.inner.num_samples()
    }

    fn batches(&self, epoch: u64) -> Result<Box<dyn Iterator<Item = Result<Batch>> + '_>> {
        self.calls.set(self.calls.get() + 1);
        if self.fail_epoch == Some(epoch) {
            return Err(fracture::Error::Training("simulated interruption".into()));
        }
        let nan_at = self.nan_at;
        let zero = self.zero_images_from_epoch.is_some_and(|e| epoch >= e);
        Ok(Box::new(self.inner.batches(epoch)?.enumerate().map(
            move |(b, batch)| {
                let mut batch = batch?;
                if nan_at == Some((epoch, b)) {
                    batch.labels = (batch.labels.ones_like()? * f64::NAN)?;
                }
                if zero {
                    batch.images = batch.images.zeros_like()?;
                }
                Ok(batch)
            },
        )))
    }
}

#[test]
fn a_tiny_resnet_trained_from_scratch_learns_synthetic_fractures() {
    let config = TrainConfig {
        epochs: 8,
        backbone: BackboneTraining::All {
            learning_rate: 3e-3,
        },
        learning_rate: 3e-3,
        head: HeadConfig {
            hidden: 16,
            dropout: 0.2,
            localization: None,
        },
        ..quick_config(8)
    };
    let mut trainer = tiny_trainer(config, 1);
    let train = batches(256, 10, 16);
    let val = batches(64, 11, 32);
    let test = batches(128, 12, 32);
    let history = trainer.fit(&train, &val, None).unwrap();
    let first = history.epochs.first().unwrap().val_loss;
    let last = history.epochs.last().unwrap().val_loss;
    assert!(last < 0.5 * first, "validation loss {first} -> {last}");
    let predictions = predict(trainer.net(), &test).unwrap();
    let auc = pairwise_auc(&predictions.probabilities, &predictions.labels);
    assert!(auc > 0.9, "test AUC {auc}");
}

/// Two epochs with a frozen backbone on `train`: the backbone must come out bit-identical and
/// the head trained.
fn frozen_backbone_stays_bit_identical(
    train: &dyn BatchSource,
    val: &dyn BatchSource,
    augment: bool,
) {
    let backbone = tiny_backbone();
    let backbone_vars = seeded_backbone_vars(&backbone, 2);
    let before = snapshot(&backbone_vars);
    let config = TrainConfig {
        augment,
        ..quick_config(2)
    };
    let mut trainer = Trainer::new(&backbone, backbone_vars, config, &Device::Cpu).unwrap();
    let head_before = snapshot(trainer.head_vars());
    trainer.fit(train, val, None).unwrap();
    assert_eq!(snapshot(trainer.backbone_vars()), before);
    assert_ne!(
        snapshot(trainer.head_vars()),
        head_before,
        "the head did not train"
    );
}

/// The notebook's augmentation, counting the images it augments.
#[derive(Default)]
struct CountingAugment {
    calls: AtomicUsize,
}

impl SampleTransform for CountingAugment {
    fn apply(&self, image: ImageF32, seed: u64, epoch: u64, index: u64) -> Result<ImageF32> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        AugmentConfig::default().apply(image, seed, epoch, index)
    }
}

/// Passes another source's batches on, keeping each epoch's images by sample index: what the
/// trainer saw.
struct Recording<'a> {
    inner: &'a dyn BatchSource,
    seen: RefCell<HashMap<(u64, usize), Vec<f32>>>,
}

impl BatchSource for Recording<'_> {
    fn num_samples(&self) -> usize {
        self.inner.num_samples()
    }

    fn batches(&self, epoch: u64) -> Result<Box<dyn Iterator<Item = Result<Batch>> + '_>> {
        Ok(Box::new(self.inner.batches(epoch)?.map(move |batch| {
            let batch = batch?;
            for (row, &index) in batch.indices.iter().enumerate() {
                let image = batch.images.get(row)?.flatten_all()?.to_vec1()?;
                self.seen.borrow_mut().insert((epoch, index), image);
            }
            Ok(batch)
        })))
    }

    fn skipped_in_epoch(&self, epoch: u64) -> usize {
        self.inner.skipped_in_epoch(epoch)
    }
}

/// Sixteen generated radiographs behind a shuffling loader of `SIZE` x `SIZE` images.
fn image_loader(dir: &Path) -> ImageLoader {
    let samples = common::generated_samples(dir, 8, 40, 56);
    let preprocess = Preprocess {
        height: SIZE,
        width: SIZE,
        ..Preprocess::default()
    };
    let config = LoaderConfig {
        batch_size: 8,
        seed: 5,
        ..LoaderConfig::default()
    };
    ImageLoader::new(samples, preprocess, config, Device::Cpu).unwrap()
}

#[test]
fn a_frozen_backbone_is_bit_identical_after_training_with_augmentation() {
    let dir = tempfile::tempdir().unwrap();
    let plain = image_loader(dir.path());
    let counting = Arc::new(CountingAugment::default());
    let augmented = image_loader(dir.path()).with_transform(counting.clone());
    let seen = Recording {
        inner: &augmented,
        seen: RefCell::default(),
    };
    frozen_backbone_stays_bit_identical(&seen, &plain, true);

    // Every training image of both epochs went through the augmentation ...
    assert_eq!(counting.calls.load(Ordering::SeqCst), 2 * 16);
    // ... and what the trainer saw is not the plain images, nor the same in both epochs.
    let plain_images: HashMap<usize, Vec<f32>> = plain
        .batches(0)
        .unwrap()
        .flat_map(|b| {
            let b = b.unwrap();
            (0..b.indices.len())
                .map(|row| {
                    let image = b.images.get(row).unwrap().flatten_all().unwrap();
                    (b.indices[row], image.to_vec1().unwrap())
                })
                .collect::<Vec<_>>()
        })
        .collect();
    let seen = seen.seen.borrow();
    assert_eq!(seen.len(), 2 * 16);
    for index in 0..16 {
        let (first, second) = (&seen[&(0, index)], &seen[&(1, index)]);
        assert_ne!(
            first, &plain_images[&index],
            "sample {index} was not augmented"
        );
        assert_ne!(
            first, second,
            "sample {index} was augmented alike in both epochs"
        );
    }
}

#[test]
fn a_frozen_backbone_is_bit_identical_after_training_on_cached_features() {
    let data = batches(48, 3, 16);
    frozen_backbone_stays_bit_identical(&data, &data, false);
}

/// Claims `missing` more samples than its batches hold: a source that lost some without
/// reporting them as skipped.
struct Short<'a> {
    inner: &'a dyn BatchSource,
    missing: usize,
}

impl BatchSource for Short<'_> {
    fn num_samples(&self) -> usize {
        self.inner.num_samples() + self.missing
    }

    fn batches(&self, epoch: u64) -> Result<Box<dyn Iterator<Item = Result<Batch>> + '_>> {
        self.inner.batches(epoch)
    }
}

fn internal_error_text(result: Result<impl std::fmt::Debug>) -> String {
    match result {
        Err(e @ fracture::Error::Internal(_)) => e.to_string(),
        other => panic!("expected an internal error, got {other:?}"),
    }
}

#[test]
fn a_pass_that_sees_fewer_samples_than_its_source_holds_is_an_error() {
    let data = batches(12, 3, 4);
    let short = Short {
        inner: &data,
        missing: 2,
    };
    let trainer = |training: BackboneTraining| {
        let config = TrainConfig {
            backbone: training,
            augment: true,
            ..quick_config(1)
        };
        tiny_trainer(config, 4)
    };
    let all = BackboneTraining::All {
        learning_rate: 1e-3,
    };
    let cases: [(&str, BackboneTraining, &dyn BatchSource, &dyn BatchSource); 3] = [
        ("training epoch 1", BackboneTraining::Frozen, &short, &data),
        ("validation", all.clone(), &data, &short),
        // A frozen backbone computes the validation features once, through the same check.
        ("validation", BackboneTraining::Frozen, &data, &short),
    ];
    for (pass, training, train, val) in cases {
        let text = internal_error_text(trainer(training).fit(train, val, None));
        assert!(
            text.contains(pass) && text.contains("processed 12 of 14 samples"),
            "{text}"
        );
    }
    let text = internal_error_text(predict(trainer(all).net(), &short));
    assert!(text.contains("prediction: processed 12 of 14"), "{text}");
}

#[test]
fn validation_on_images_that_all_fail_to_decode_is_an_error_naming_validation() {
    let dir = tempfile::tempdir().unwrap();
    let train = image_loader(&dir.path().join("train"));
    let val = image_loader(&dir.path().join("val"));
    for sample in val.samples() {
        std::fs::write(&sample.path, b"not an image").unwrap();
    }
    for training in [
        BackboneTraining::Frozen,
        BackboneTraining::All {
            learning_rate: 1e-3,
        },
    ] {
        let config = TrainConfig {
            backbone: training.clone(),
            ..quick_config(1)
        };
        let mut trainer = tiny_trainer(config, 4);
        let err = trainer.fit(&train, &val, None).unwrap_err().to_string();
        assert!(
            err.contains("validation") && err.contains("none of the 16 images could be read"),
            "{training:?}: {err}"
        );
    }
}

#[test]
fn only_head_variables_reach_the_optimizer_when_the_backbone_is_frozen() {
    let trainer = tiny_trainer(quick_config(1), 2);
    assert_eq!(
        trainer.trainable_variable_names(),
        vec![
            "head.dense.bias",
            "head.dense.weight",
            "head.logit.bias",
            "head.logit.weight"
        ]
    );
}

#[test]
fn fine_tuning_the_last_stack_trains_it_with_batch_statistics_and_freezes_the_rest() {
    let backbone = tiny_backbone();
    let backbone_vars = seeded_backbone_vars(&backbone, 4);
    let before = snapshot(&backbone_vars);
    let config = TrainConfig {
        backbone: BackboneTraining::LastStages {
            stages: 1,
            learning_rate: 1e-3,
        },
        ..quick_config(1)
    };
    let mut trainer = Trainer::new(&backbone, backbone_vars, config, &Device::Cpu).unwrap();
    let names = trainer.trainable_variable_names();
    assert!(names.iter().all(|n| n.starts_with("head.")
        || (n.starts_with("conv3_") || n.starts_with("post_bn.")) && !n.contains("running")));
    let data = batches(32, 5, 16);
    trainer.fit(&data, &data, None).unwrap();
    let after = snapshot(trainer.backbone_vars());
    for (name, values) in &before {
        let trained = name.starts_with("conv3_") || name.starts_with("post_bn.");
        let changed = &after[name] != values;
        assert_eq!(
            changed, trained,
            "{name}: changed {changed}, trained {trained}"
        );
    }
    // BN in training mode updates the moving statistics of the fine-tuned part.
    assert_ne!(
        after["post_bn.running_mean"],
        before["post_bn.running_mean"]
    );
}

#[test]
fn the_best_checkpoint_is_the_epoch_with_the_lowest_validation_loss() {
    let dir = tempfile::tempdir().unwrap();
    let backbone = tiny_backbone();
    // A high learning rate on few samples overfits: validation loss falls, then rises.
    let config = TrainConfig {
        learning_rate: 3e-2,
        ..quick_config(6)
    };
    let mut trainer = tiny_trainer(config, 6);
    let train = batches(32, 7, 16);
    let val = batches(32, 8, 16);
    let history = trainer.fit(&train, &val, Some(dir.path())).unwrap();
    let lowest = history
        .epochs
        .iter()
        .min_by(|a, b| a.val_loss.total_cmp(&b.val_loss))
        .unwrap();
    let checkpoint = Checkpoint::open(dir.path()).unwrap();
    assert_eq!(checkpoint.best_epoch(), Some(lowest.epoch));
    // The best weights, evaluated independently, give that epoch's validation loss.
    let weights = checkpoint.load_best_weights(&Device::Cpu).unwrap();
    let vb = VarBuilder::from_tensors(weights, DType::F32, &Device::Cpu);
    let net = FractureNet::new(&backbone, &checkpoint.config().head, vb).unwrap();
    let predictions = predict(&net, &val).unwrap();
    let loss = mean_bce(&predictions.probabilities, &predictions.labels);
    assert!(
        (loss - lowest.val_loss).abs() < 1e-4,
        "{loss} vs {}",
        lowest.val_loss
    );
}

#[test]
fn resuming_after_an_interruption_gives_the_same_final_weights_as_an_uninterrupted_run() {
    let config = TrainConfig {
        backbone: BackboneTraining::LastStages {
            stages: 1,
            learning_rate: 5e-4,
        },
        schedule: LrSchedule::Cosine { min_lr: 1e-5 },
        augment: true,
        restore_best_weights: false,
        ..quick_config(4)
    };
    let train = batches(48, 9, 16);
    let val = batches(32, 10, 16);

    let whole_dir = tempfile::tempdir().unwrap();
    let mut whole = tiny_trainer(config.clone(), 11);
    let whole_history = whole.fit(&train, &val, Some(whole_dir.path())).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut first = tiny_trainer(config, 11);
    let mut interrupted = Faulty::new(&train);
    interrupted.fail_epoch = Some(2);
    assert!(first.fit(&interrupted, &val, Some(dir.path())).is_err());
    assert_eq!(Checkpoint::open(dir.path()).unwrap().epochs_done(), 2);

    let mut resumed = Trainer::resume(dir.path(), &Device::Cpu).unwrap();
    let resumed_history = resumed.fit(&train, &val, Some(dir.path())).unwrap();
    assert_eq!(weights_as_map(&resumed), weights_as_map(&whole));
    let losses = |h: &fracture::train::History| -> Vec<f64> {
        h.epochs.iter().map(|r| r.val_loss).collect()
    };
    assert_eq!(losses(&resumed_history), losses(&whole_history));
}

#[test]
fn a_killed_checkpoint_write_leaves_the_previous_checkpoint_readable() {
    let data = batches(32, 12, 16);
    let reference = {
        let config = TrainConfig {
            restore_best_weights: false,
            ..quick_config(1)
        };
        let mut trainer = tiny_trainer(config, 13);
        trainer.fit(&data, &data, None).unwrap();
        weights_as_map(&trainer)
    };
    // A checkpoint writes 6 files; kill each of them halfway in turn.
    for file_index in 0..6 {
        let dir = tempfile::tempdir().unwrap();
        let mut trainer = tiny_trainer(quick_config(2), 13);
        trainer.inject_checkpoint_failure(2, file_index);
        assert!(trainer.fit(&data, &data, Some(dir.path())).is_err());
        let leftovers = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".tmp")
            })
            .count();
        assert_eq!(
            leftovers, 1,
            "file {file_index}: the killed write leaves its temp file"
        );
        let checkpoint = Checkpoint::open(dir.path()).unwrap();
        assert_eq!(checkpoint.epochs_done(), 1, "file {file_index}");
        assert_eq!(checkpoint.history().epochs.len(), 1, "file {file_index}");
        let last = tensors_as_map(checkpoint.load_last_weights(&Device::Cpu).unwrap());
        assert_eq!(last, reference, "file {file_index}");
        // And training can go on from it.
        let mut resumed = Trainer::resume(dir.path(), &Device::Cpu).unwrap();
        resumed.fit(&data, &data, Some(dir.path())).unwrap();
        assert_eq!(Checkpoint::open(dir.path()).unwrap().epochs_done(), 2);
    }
}

#[test]
fn a_non_finite_loss_names_epoch_and_batch_and_keeps_the_last_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let data = batches(48, 14, 16);
    let mut poisoned = Faulty::new(&data);
    poisoned.nan_at = Some((1, 1));
    let config = TrainConfig {
        augment: true,
        ..quick_config(3)
    };
    let mut trainer = tiny_trainer(config, 15);
    let err = trainer.fit(&poisoned, &data, Some(dir.path())).unwrap_err();
    let message = err.to_string();
    assert!(message.contains("epoch 2, batch 2"), "{message}");
    let checkpoint = Checkpoint::open(dir.path()).unwrap();
    assert_eq!(checkpoint.epochs_done(), 1);
    assert!(checkpoint.load_last_weights(&Device::Cpu).is_ok());
}

/// Final weights of a frozen-backbone run on `source` validated on `val`.
fn frozen_run(
    source: &dyn BatchSource,
    val: &dyn BatchSource,
    augment: bool,
) -> HashMap<String, Vec<f32>> {
    let config = TrainConfig {
        augment,
        ..quick_config(3)
    };
    let mut trainer = tiny_trainer(config, 17);
    trainer.fit(source, val, None).unwrap();
    weights_as_map(&trainer)
}

#[test]
fn without_augmentation_backbone_features_are_computed_once() {
    let data = batches(32, 16, 16);
    // Images go blank after the first epoch: a run that reuses the first epoch's features
    // cannot tell, a run that recomputes them can.
    let mut blanking = Faulty::new(&data);
    blanking.zero_images_from_epoch = Some(1);
    let steady = frozen_run(&data, &data, false);
    assert_eq!(frozen_run(&blanking, &data, false), steady);
    assert_ne!(
        frozen_run(&blanking, &data, true),
        frozen_run(&data, &data, true)
    );
}

#[test]
fn a_checkpoint_holds_config_split_manifest_and_history() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("manifest.csv");
    std::fs::write(&manifest, "path,label,part\na.jpg,1,train\n").unwrap();
    let run = dir.path().join("run");
    let backbone = tiny_backbone();
    let config = TrainConfig {
        split_manifest: Some(manifest.clone()),
        ..quick_config(2)
    };
    let mut trainer = tiny_trainer(config.clone(), 18);
    let data = batches(32, 19, 16);
    trainer.fit(&data, &data, Some(&run)).unwrap();
    let saved: SavedConfig =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(saved.train, config);
    assert_eq!(saved.backbone, backbone.into());
    assert_eq!(
        std::fs::read(run.join("split.csv")).unwrap(),
        std::fs::read(&manifest).unwrap()
    );
    let csv = std::fs::read_to_string(run.join("history.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3);
    assert!(csv.starts_with("epoch,train_loss,train_accuracy,train_auc,val_loss"));
    let json = fracture::train::History::load_json(run.join("history.json")).unwrap();
    assert_eq!(json.epochs.len(), 2);
    assert_eq!(&json, Checkpoint::open(&run).unwrap().history());
}

#[test]
fn a_new_run_refuses_a_folder_that_holds_another_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = batches(16, 20, 16);
    let new_trainer = || tiny_trainer(quick_config(1), 21);
    new_trainer().fit(&data, &data, Some(dir.path())).unwrap();
    let err = new_trainer()
        .fit(&data, &data, Some(dir.path()))
        .unwrap_err();
    assert!(err.to_string().contains("Trainer::resume"), "{err}");
}

#[test]
fn early_stopping_ends_training_when_validation_loss_stops_improving() {
    let config = TrainConfig {
        // A learning rate this small leaves the validation loss where it is.
        learning_rate: 1e-12,
        early_stopping: Some(EarlyStopping {
            patience: 2,
            min_delta: 1e-3,
        }),
        ..quick_config(10)
    };
    let mut trainer = tiny_trainer(config, 22);
    let data = batches(16, 23, 16);
    let history = trainer.fit(&data, &data, None).unwrap();
    assert_eq!(history.epochs.len(), 3);
}

#[test]
fn a_backbone_varmap_missing_variables_is_rejected_by_name() {
    let backbone = tiny_backbone();
    let vars = seeded_backbone_vars(&backbone, 24);
    vars.data().lock().unwrap().remove("post_bn.running_var");
    let err = Trainer::new(&backbone, vars, quick_config(1), &Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("post_bn.running_var"), "{err}");
}
