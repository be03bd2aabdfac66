//! Train a fracture classifier on FracAtlas (or any FracAtlas-layout folder), evaluate it on
//! the held-out test part and save the bundle.
//!
//! ```bash
//! # The real thing: Keras's ImageNet weights (from ~/.keras/models, or downloaded there), the
//! # notebook's settings.
//! cargo run --release --example train_fracatlas -- --data FracAtlas --weights imagenet --out runs/r152
//! # EfficientNet-Lite0 with timm's ImageNet weights (a local copy of
//! # timm/tf_efficientnet_lite0.in1k), frozen backbone, the notebook's recipe:
//! cargo run --release --example train_fracatlas -- --data FracAtlas --backbone efficientnet-lite0 \
//!     --weights efficientnet_lite0_imagenet.safetensors --out runs/lite0
//! # Then fine-tune its last 2 stages under that head at a lower learning rate:
//! cargo run --release --example train_fracatlas -- --data FracAtlas --backbone efficientnet-lite0 \
//!     --init-bundle runs/lite0/bundle --fine-tune-stages 2 --learning-rate 1e-5 --out runs/lite0-ft
//! # From random weights, small and fast (under 30 minutes on 2 cores):
//! cargo run --release --example train_fracatlas -- --data "$FRACATLAS_DIR" --backbone small --out runs/small
//! # The threshold for a target specificity (or --target-sensitivity; default Youden's J):
//! cargo run --release --example train_fracatlas -- --data FracAtlas --backbone small \
//!     --target-specificity 0.90 --out runs/small-spec90
//! # At 384 px: cache the frozen stages, fine-tune the last 2 and learn a localization map from
//! # the fracture boxes; choose on the validation part only (--no-test):
//! cargo run --release --example train_fracatlas -- --data FracAtlas --backbone efficientnet-lite0 \
//!     --weights efficientnet_lite0_imagenet.safetensors --image-size 384 --fine-tune-stages 2 \
//!     --stage-cache runs/cache384 --box-loss-weight 1 --no-test --out runs/lite0-384-boxes
//! # Continue an interrupted run:
//! cargo run --release --example train_fracatlas -- --data FracAtlas --out runs/r152 --resume
//! ```

use clap::{Parser, ValueEnum};
use fracture::dataset::annotations::Annotations;
use fracture::dataset::{FracAtlas, SplitConfig};
use fracture::device::DeviceRequest;
use fracture::metrics::ThresholdRule;
use fracture::model::{
    BackboneConfig, EfficientNetLiteConfig, HeadConfig, LocalizationHeadConfig, ResNetV2Config,
};
use fracture::preprocess::Preprocess;
use fracture::train::{
    BackboneTraining, BoxSupervision, CacheDtype, CacheView, ClassWeights, StageCacheConfig,
    TrainConfig,
};
use fracture::{FractureClassifier, WeightsSource};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Backbone {
    /// Keras ResNet152V2 (the reference notebook's backbone).
    Resnet152v2,
    /// Keras ResNet101V2.
    Resnet101v2,
    /// Keras ResNet50V2.
    Resnet50v2,
    /// EfficientNet-Lite0 (timm's names; about 50x cheaper than ResNet152V2).
    #[value(name = "efficientnet-lite0")]
    EfficientNetLite0,
    /// A small ResNetV2 (3 stacks of 2 blocks, 16-filter stem) trained from scratch at 128 px.
    Small,
}

/// Train, evaluate and save a fracture classifier on a FracAtlas-layout dataset.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// The dataset folder (images/Fractured, images/Non_fractured, dataset.csv).
    #[arg(long, env = "FRACATLAS_DIR")]
    data: PathBuf,
    /// Backbone.
    #[arg(long, alias = "preset", value_enum, default_value = "resnet152v2")]
    backbone: Backbone,
    /// Initial weights: imagenet (the backbone's ImageNet weights: Keras's file for the
    /// ResNetV2 presets, timm's hub repository for EfficientNet-Lite0), a file (.safetensors
    /// or Keras .h5), hub:OWNER/NAME[@REV][:FILE], or random[:SEED].
    #[arg(long, default_value = "random")]
    weights: WeightsSource,
    /// Start from a saved bundle (backbone and head) instead of --weights: the second phase of
    /// transfer learning, fine-tuning under the head trained on the frozen backbone.
    #[arg(long, conflicts_with = "weights")]
    init_bundle: Option<PathBuf>,
    /// Device: cpu, cuda[:N], metal[:N] or best.
    #[arg(long, default_value = "best")]
    device: DeviceRequest,
    /// Training epochs (the notebook: 25).
    #[arg(long)]
    epochs: Option<usize>,
    /// Batch size (the notebook: 32).
    #[arg(long)]
    batch_size: Option<usize>,
    /// Model input size (square; ImageNet weights expect 224).
    #[arg(long)]
    image_size: Option<usize>,
    /// Learning rate of the head (the notebook: 1e-4).
    #[arg(long)]
    learning_rate: Option<f64>,
    /// Fine-tune the last N stages of the backbone (0: frozen, as in the notebook; ResNetV2
    /// has 4 stacks, EfficientNet-Lite0 7 stages).
    #[arg(long, alias = "fine-tune-stacks", default_value_t = 0)]
    fine_tune_stages: usize,
    /// Fine-tune the whole backbone (at --backbone-learning-rate).
    #[arg(long, conflicts_with = "fine_tune_stages")]
    fine_tune_all: bool,
    /// Learning rate of the fine-tuned backbone layers.
    #[arg(long, default_value_t = 1e-5)]
    backbone_learning_rate: f64,
    /// Weigh the classes inversely to their frequency (finds more fractures).
    #[arg(long)]
    balanced: bool,
    /// Turn off the Keras-style augmentation.
    #[arg(long)]
    no_augment: bool,
    /// Output folder: checkpoints in OUT/checkpoints, the final bundle in OUT/bundle.
    #[arg(long, default_value = "runs/fracatlas")]
    out: PathBuf,
    /// Continue the run whose checkpoints are in OUT/checkpoints.
    #[arg(long)]
    resume: bool,
    /// Seed of the training (head initialization, shuffling, augmentation, dropout).
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Seed of the train/val/test split (default 42), recorded in OUT/split.json. Not with
    /// --init-bundle: a second phase trains on the first phase's own split, so that its test
    /// images stay held out.
    #[arg(long, conflicts_with = "init_bundle")]
    split_seed: Option<u64>,
    /// Choose the threshold on the validation part as the highest one whose sensitivity
    /// reaches this target, in (0, 1] (default: Youden's J). With --resume, the rule the run
    /// started with.
    #[arg(long, conflicts_with_all = ["target_specificity", "resume"])]
    target_sensitivity: Option<f64>,
    /// Choose the threshold on the validation part as the one of highest sensitivity whose
    /// specificity reaches this target, in (0, 1] (default: Youden's J).
    #[arg(long, conflicts_with = "resume")]
    target_specificity: Option<f64>,
    /// Cache the frozen stages' output (the picture and its mirror) in this folder and train
    /// the last --fine-tune-stages on it: high resolutions in reasonable time. Reused while
    /// the weights, the size and the images are the same.
    #[arg(long, requires = "fine_tune_stages")]
    stage_cache: Option<PathBuf>,
    /// Store the cache in f32 instead of f16.
    #[arg(long, requires = "stage_cache")]
    cache_f32: bool,
    /// The views of the training images the cache holds, comma-separated: `original`,
    /// `mirror`, `augmented:SEED` (each picture resized by another program, re-encoded,
    /// noisy, turned, zoomed, shifted and mirrored as the seed draws for it; boxes follow).
    #[arg(
        long,
        requires = "stage_cache",
        value_delimiter = ',',
        default_value = "original,mirror"
    )]
    cache_views: Vec<CacheView>,
    /// Train a localization map from FracAtlas's fracture boxes with this weight in the loss
    /// (adds the map to the head; needs --stage-cache). The explanation of such a model is
    /// its map.
    #[arg(long, requires = "stage_cache")]
    box_loss_weight: Option<f64>,
    /// Weight of a cell inside a box against one outside (with --box-loss-weight).
    #[arg(long, default_value_t = 10.0)]
    box_positive_weight: f64,
    /// Grow each side of a box by this share of its size (with --box-loss-weight).
    #[arg(long, default_value_t = 0.1)]
    box_grow: f64,
    /// Evaluate on the validation part only, leaving the test part unscored: for choosing a
    /// recipe (the test part is scored once, for the recipe chosen).
    #[arg(long)]
    no_test: bool,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let started = Instant::now();
    let threshold_rule = match (args.target_sensitivity, args.target_specificity) {
        (Some(target), _) => ThresholdRule::TargetSensitivity(target),
        (None, Some(target)) => ThresholdRule::TargetSpecificity(target),
        (None, None) => ThresholdRule::Youden,
    };
    // A target outside (0, 1] is refused before any work.
    threshold_rule.validate()?;
    let data = FracAtlas::open(&args.data)?;
    println!("{} images\n{}", data.len(), data.report);

    let small = matches!(args.backbone, Backbone::Small);
    let backbone: BackboneConfig = match args.backbone {
        Backbone::Resnet152v2 => ResNetV2Config::resnet152v2().into(),
        Backbone::Resnet101v2 => ResNetV2Config::resnet101v2().into(),
        Backbone::Resnet50v2 => ResNetV2Config::resnet50v2().into(),
        Backbone::EfficientNetLite0 => EfficientNetLiteConfig::lite0().into(),
        Backbone::Small => {
            let mut c = ResNetV2Config::custom(vec![2, 2, 2], vec![8, 16, 32]);
            c.stem_filters = 16;
            c.bn_momentum = 0.9;
            c.into()
        }
    };
    let size = args.image_size.unwrap_or(if small { 128 } else { 224 });
    let preprocess = Preprocess {
        height: size,
        width: size,
        ..Preprocess::default()
    };
    let (mut clf, weights) = match &args.init_bundle {
        Some(bundle) => {
            let clf = FractureClassifier::load(bundle, &fracture::device::select(args.device)?)?;
            if clf.backbone_config() != &backbone || clf.preprocess() != &preprocess {
                return Err(format!(
                    "{} holds {} at {} px; asked for {} at {size} px",
                    bundle.display(),
                    clf.backbone_config().describe(),
                    clf.preprocess().height,
                    backbone.describe()
                )
                .into());
            }
            (clf, format!("bundle {}", bundle.display()))
        }
        None => {
            // `imagenet` names the chosen backbone's own ImageNet weights.
            let weights = if args.weights == WeightsSource::imagenet() {
                WeightsSource::imagenet_for(&backbone)?
            } else {
                args.weights.clone()
            };
            let clf = FractureClassifier::builder()
                .backbone(backbone)
                .weights(weights.clone())
                .device(args.device)
                .preprocess(preprocess)
                .build()?;
            (clf, weights.describe())
        }
    };
    println!(
        "backbone: {}; weights: {weights}; device: {}",
        clf.backbone_config().describe(),
        fracture::device::name(clf.device())
    );
    // A fresh split for a fresh classifier; a second phase keeps its bundle's split (its
    // images located in --data, which must hold exactly them).
    let fresh = SplitConfig {
        seed: args.split_seed.unwrap_or(SplitConfig::default().seed),
        ..SplitConfig::default()
    };
    let recorded = clf.split().is_some();
    let split = clf.resolve_split(Some(&data), &fresh)?;
    println!("{split}");
    std::fs::create_dir_all(&args.out)?;
    split.save_manifest(args.out.join("split.csv"))?;
    let split_record = match (&args.init_bundle, recorded) {
        (Some(bundle), true) => serde_json::json!({
            "origin": "the split recorded in the initial bundle",
            "bundle": bundle.display().to_string(),
        }),
        _ => serde_json::json!({
            "origin": "a fresh split of the data",
            "train": fresh.train,
            "val": fresh.val,
            "test": fresh.test,
            "seed": fresh.seed,
        }),
    };
    std::fs::write(
        args.out.join("split.json"),
        serde_json::to_string_pretty(&split_record)?,
    )?;

    let defaults = TrainConfig::default();
    let learning_rate =
        args.learning_rate
            .unwrap_or(if small { 1e-3 } else { defaults.learning_rate });
    let backbone_training = if small {
        BackboneTraining::All { learning_rate }
    } else if args.fine_tune_all {
        BackboneTraining::All {
            learning_rate: args.backbone_learning_rate,
        }
    } else if args.fine_tune_stages > 0 {
        BackboneTraining::LastStages {
            stages: args.fine_tune_stages,
            learning_rate: args.backbone_learning_rate,
        }
    } else {
        BackboneTraining::Frozen
    };
    let counts = split.train.counts();
    let config = TrainConfig {
        epochs: args
            .epochs
            .unwrap_or(if small { 8 } else { defaults.epochs }),
        batch_size: args.batch_size.unwrap_or(defaults.batch_size),
        learning_rate,
        backbone: backbone_training,
        keep_head: args.init_bundle.is_some(),
        augment: !args.no_augment,
        class_weights: args.balanced.then(|| {
            ClassWeights::balanced(
                counts.get(fracture::dataset::Label::NotFractured),
                counts.get(fracture::dataset::Label::Fractured),
            )
        }),
        seed: args.seed,
        split_manifest: Some(args.out.join("split.csv")),
        threshold_rule,
        stage_cache: args.stage_cache.as_ref().map(|dir| StageCacheConfig {
            dtype: if args.cache_f32 {
                CacheDtype::F32
            } else {
                CacheDtype::F16
            },
            views: args.cache_views.clone(),
            ..StageCacheConfig::new(dir)
        }),
        box_supervision: args.box_loss_weight.map(|weight| BoxSupervision {
            weight,
            positive_weight: args.box_positive_weight,
            grow: args.box_grow,
        }),
        ..defaults
    };
    let config = match (
        args.box_loss_weight,
        clf.backbone_config().as_efficientnet_lite(),
    ) {
        (None, _) => config,
        (Some(_), Some(lite)) => TrainConfig {
            head: HeadConfig {
                localization: Some(LocalizationHeadConfig::efficientnet_lite(lite)?),
                ..config.head
            },
            ..config
        },
        (Some(_), None) => {
            return Err("--box-loss-weight needs an EfficientNet-Lite backbone".into())
        }
    };
    let checkpoints = args.out.join("checkpoints");
    // The boxes, when this run (or, resuming, the run in the checkpoint) learns from them.
    let with_boxes = if args.resume {
        fracture::train::Checkpoint::open(&checkpoints)?
            .config()
            .box_supervision
            .is_some()
    } else {
        args.box_loss_weight.is_some()
    };
    let annotations = match with_boxes {
        true => Some(Annotations::open_fracatlas(&args.data)?),
        false => None,
    };
    let history = match (args.resume, &annotations) {
        (true, Some(a)) => clf.resume_training_with_boxes(&split, a, &checkpoints)?,
        (true, None) => clf.resume_training(&split, &checkpoints)?,
        (false, Some(a)) => clf.train_with_boxes(&split, a, config, Some(&checkpoints))?,
        (false, None) => clf.train_with_checkpoints(&split, config, Some(&checkpoints))?,
    };
    println!("\nepoch  train_loss  val_loss  val_auc  seconds");
    for e in &history.epochs {
        println!(
            "{:>5}  {:>10.4}  {:>8.4}  {:>7}  {:>7.1}",
            e.epoch,
            e.train_loss,
            e.val_loss,
            e.val_auc.map_or("-".into(), |a| format!("{a:.4}")),
            e.seconds
        );
    }
    println!(
        "threshold {:.4} (source: {})",
        clf.threshold(),
        clf.threshold_source()
            .map_or_else(|| "not recorded".to_string(), |s| s.to_string())
    );
    let (name, part) = if args.no_test {
        ("validation", &split.val)
    } else {
        ("test", &split.test)
    };
    let evaluation = clf.evaluate(part)?;
    println!("\n== {name} part ({} images)\n{evaluation}", part.len());
    let bundle = clf.save(args.out.join("bundle"))?;
    println!("bundle saved in {}", bundle.display());
    println!(
        "total time {:.1} min",
        started.elapsed().as_secs_f64() / 60.0
    );
    Ok(())
}
