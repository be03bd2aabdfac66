//! Train a fracture classifier on FracAtlas (or any FracAtlas-layout folder), evaluate it on
//! the held-out test part and save the bundle.
//!
//! ```bash
//! # The real thing: Keras's ImageNet weights (from ~/.keras/models, or downloaded there), the
//! # notebook's settings.
//! cargo run --release --example train_fracatlas -- --data FracAtlas --weights imagenet --out runs/r152
//! # From random weights, small and fast (under 30 minutes on 2 cores):
//! cargo run --release --example train_fracatlas -- --data "$FRACATLAS_DIR" --preset small --out runs/small
//! # Continue an interrupted run:
//! cargo run --release --example train_fracatlas -- --data FracAtlas --out runs/r152 --resume
//! ```

use clap::{Parser, ValueEnum};
use fracture::dataset::{FracAtlas, SplitConfig};
use fracture::device::DeviceRequest;
use fracture::model::ResNetV2Config;
use fracture::preprocess::Preprocess;
use fracture::train::{BackboneTraining, ClassWeights, TrainConfig};
use fracture::{FractureClassifier, WeightsSource};
use std::path::PathBuf;
use std::time::Instant;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Preset {
    /// Keras ResNet152V2 (the reference notebook's backbone).
    Resnet152v2,
    /// Keras ResNet101V2.
    Resnet101v2,
    /// Keras ResNet50V2.
    Resnet50v2,
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
    #[arg(long, value_enum, default_value = "resnet152v2")]
    preset: Preset,
    /// Initial weights: imagenet (Keras's ResNet152V2 file; imagenet:resnet50v2 etc. for the
    /// other presets), a file (.safetensors or Keras .h5), hub:OWNER/NAME[@REV][:FILE], or
    /// random[:SEED].
    #[arg(long, default_value = "random")]
    weights: WeightsSource,
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
    /// Fine-tune the last N stacks of the backbone (0: frozen, as in the notebook).
    #[arg(long, default_value_t = 0)]
    fine_tune_stacks: usize,
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
    /// Seed of the split and of the training.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let started = Instant::now();
    let data = FracAtlas::open(&args.data)?;
    println!("{} images\n{}", data.len(), data.report);
    let split = data.split(&SplitConfig {
        seed: args.seed,
        ..SplitConfig::default()
    })?;
    println!("{split}");
    std::fs::create_dir_all(&args.out)?;
    split.save_manifest(args.out.join("split.csv"))?;

    let small = matches!(args.preset, Preset::Small);
    let backbone = match args.preset {
        Preset::Resnet152v2 => ResNetV2Config::resnet152v2(),
        Preset::Resnet101v2 => ResNetV2Config::resnet101v2(),
        Preset::Resnet50v2 => ResNetV2Config::resnet50v2(),
        Preset::Small => {
            let mut c = ResNetV2Config::custom(vec![2, 2, 2], vec![8, 16, 32]);
            c.stem_filters = 16;
            c.bn_momentum = 0.9;
            c
        }
    };
    let size = args.image_size.unwrap_or(if small { 128 } else { 224 });
    let mut clf = FractureClassifier::builder()
        .backbone(backbone)
        .weights(args.weights.clone())
        .device(args.device)
        .preprocess(Preprocess {
            height: size,
            width: size,
            ..Preprocess::default()
        })
        .build()?;
    println!(
        "weights: {}; device: {}",
        args.weights.describe(),
        fracture::device::name(clf.device())
    );

    let defaults = TrainConfig::default();
    let learning_rate =
        args.learning_rate
            .unwrap_or(if small { 1e-3 } else { defaults.learning_rate });
    let backbone_training = if small {
        BackboneTraining::All { learning_rate }
    } else if args.fine_tune_stacks > 0 {
        BackboneTraining::LastStages {
            stages: args.fine_tune_stacks,
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
        augment: !args.no_augment,
        class_weights: args.balanced.then(|| {
            ClassWeights::balanced(
                counts.get(fracture::dataset::Label::NotFractured),
                counts.get(fracture::dataset::Label::Fractured),
            )
        }),
        seed: args.seed,
        split_manifest: Some(args.out.join("split.csv")),
        ..defaults
    };
    let checkpoints = args.out.join("checkpoints");
    let history = if args.resume {
        clf.resume_training(&split, &checkpoints)?
    } else {
        clf.train_with_checkpoints(&split, config, Some(&checkpoints))?
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
        "threshold chosen on the validation part (Youden's J): {:.4}",
        clf.threshold()
    );
    let evaluation = clf.evaluate(&split.test)?;
    println!("\n== test part ({} images)\n{evaluation}", split.test.len());
    let bundle = clf.save(args.out.join("bundle"))?;
    println!("bundle saved in {}", bundle.display());
    println!(
        "total time {:.1} min",
        started.elapsed().as_secs_f64() / 60.0
    );
    Ok(())
}
