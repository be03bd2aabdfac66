//! Offline quickstart: generate synthetic radiographs, train a small ResNetV2 from scratch,
//! evaluate it, save it, reload it and classify a few images. No network, no real data.
//!
//! ```bash
//! cargo run --release --example quickstart            # about 2 minutes on 2 cores, plus the build
//! cargo run --release --example quickstart -- --help
//! ```

use clap::Parser;
use fracture::dataset::synthetic::SyntheticConfig;
use fracture::dataset::{FracAtlas, SplitConfig};
use fracture::device::DeviceRequest;
use fracture::model::ResNetV2Config;
use fracture::train::{BackboneTraining, TrainConfig};
use fracture::{FractureClassifier, WeightsSource};
use std::path::PathBuf;
use std::time::Instant;

/// Train a small fracture classifier on generated radiographs, end to end and offline.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Folder for the generated images and the saved model bundle.
    #[arg(long, default_value = "fracture-quickstart")]
    out: PathBuf,
    /// Generated images per class.
    #[arg(long, default_value_t = 160)]
    per_class: usize,
    /// Training epochs.
    #[arg(long, default_value_t = 20)]
    epochs: usize,
    /// Model input size (square).
    #[arg(long, default_value_t = 96)]
    image_size: usize,
    /// Device: cpu, cuda[:N], metal[:N] or best.
    #[arg(long, default_value = "best")]
    device: DeviceRequest,
    /// Images per training step.
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    /// Learning rate (head and backbone, Adam).
    #[arg(long, default_value_t = 3e-3)]
    learning_rate: f64,
    /// How visible the generated fractures are (1.0: hairline; see `SyntheticConfig`).
    #[arg(long, default_value_t = 4.0)]
    visibility: f32,
    /// Train without the Keras-style augmentation.
    #[arg(long)]
    no_augment: bool,
    /// Seed of the data, the split and the training.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

/// A small pre-activation ResNet (three stacks of two blocks, a 16-filter stem instead of
/// Keras's 64, BN momentum 0.9 instead of 0.99) that trains from scratch on a CPU in minutes.
fn small_backbone() -> ResNetV2Config {
    let mut config = ResNetV2Config::custom(vec![2, 2, 2], vec![8, 16, 32]);
    config.stem_filters = 16;
    config.bn_momentum = 0.9;
    config
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let started = Instant::now();
    let data_dir = args.out.join("data");
    if !data_dir.join("dataset.csv").exists() {
        println!(
            "generating {} synthetic radiographs in {}",
            2 * args.per_class,
            data_dir.display()
        );
        SyntheticConfig {
            n_fractured: args.per_class,
            n_not_fractured: args.per_class,
            min_size: 96,
            max_size: 192,
            seed: args.seed,
            fracture_visibility: args.visibility,
            ..SyntheticConfig::default()
        }
        .generate_to(&data_dir)?;
    }
    let data = FracAtlas::open(&data_dir)?;
    println!("{}", data.report);
    let split = data.split(&SplitConfig {
        seed: args.seed,
        ..SplitConfig::default()
    })?;
    println!("{split}");

    let mut clf = FractureClassifier::builder()
        .backbone(small_backbone())
        .weights(WeightsSource::Random { seed: args.seed })
        .device(args.device)
        .image_size(args.image_size, args.image_size)
        .build()?;
    println!("device: {}", fracture::device::name(clf.device()));
    let config = TrainConfig {
        epochs: args.epochs,
        batch_size: args.batch_size,
        learning_rate: args.learning_rate,
        backbone: BackboneTraining::All {
            learning_rate: args.learning_rate,
        },
        augment: !args.no_augment,
        seed: args.seed,
        ..TrainConfig::default()
    };
    let history = clf.train(&split, config)?;
    if let Some(best) = history.best_epoch() {
        println!(
            "best epoch {} (validation loss {:.4})",
            best.epoch, best.val_loss
        );
    }
    println!(
        "threshold chosen on validation (Youden): {:.4}",
        clf.threshold()
    );

    let evaluation = clf.evaluate(&split.test)?;
    println!("\n== test set\n{evaluation}");

    let bundle = clf.save(args.out.join("bundle"))?;
    let reloaded = FractureClassifier::load(&bundle, clf.device())?;
    println!("saved and reloaded the bundle: {}", bundle.display());
    for sample in split.test.samples.iter().take(3) {
        let prediction = reloaded.classify_path(&sample.path)?;
        println!(
            "{} (truth {}): {prediction}",
            sample.path.display(),
            sample.label
        );
    }
    if let Some(sample) = split.test.samples.first() {
        println!(
            "\nclassify any image with:\n  cargo run --release --example classify -- {} {}",
            bundle.display(),
            sample.path.display()
        );
    }
    println!("done in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}
