//! Import the Keras notebook's whole saved model (`ModelCheckpoint`'s `.h5`, or a `.keras`
//! file) and save it as a fracture bundle, printing what was found and how long it took.
//!
//! ```bash
//! cargo run --release --example convert_keras_model -- best_model.h5 bundle_dir
//! cargo run --release --example convert_keras_model -- model.keras bundle_dir --sigmoid fracture
//! ```

use clap::{Parser, ValueEnum};
use fracture::classifier::KerasImport;
use fracture::device::DeviceRequest;
use fracture::weights::keras_model::{read_keras_model, KerasModelOptions, SigmoidOutput};
use fracture::FractureClassifier;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Sigmoid {
    /// P(Not_Fractured): the notebook's classes (folders sorted, Fractured = 0).
    NotFractured,
    /// P(fracture): a model trained with fractures as class 1.
    Fracture,
}

/// Convert a saved Keras model into a fracture bundle.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The saved Keras model (`.h5` from model.save, or `.keras`; recognised by content).
    model: PathBuf,
    /// The bundle folder to write.
    bundle: PathBuf,
    /// What the model's sigmoid output is the probability of.
    #[arg(long, value_enum, default_value = "not-fractured")]
    sigmoid: Sigmoid,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let sigmoid = match args.sigmoid {
        Sigmoid::NotFractured => SigmoidOutput::NotFractured,
        Sigmoid::Fracture => SigmoidOutput::Fractured,
    };
    let start = Instant::now();
    let model = read_keras_model(&args.model, &KerasModelOptions { sigmoid })?;
    let read = start.elapsed();
    println!(
        "{}: {:?} written by Keras {}; backbone {}, head Dense({}) `{}` → Dense(1) `{}`, input {:?}; read in {:.2} s",
        args.model.display(),
        model.format,
        model.keras_version.as_deref().unwrap_or("?"),
        model.backbone.describe(),
        model.head.hidden,
        model.head_layers.0,
        model.head_layers.1,
        model.image_size,
        read.as_secs_f64()
    );
    let options = KerasImport {
        sigmoid,
        device: DeviceRequest::Cpu,
        ..KerasImport::default()
    };
    let start = Instant::now();
    let clf = FractureClassifier::from_keras_model(&args.model, &options)?;
    println!(
        "imported as a classifier (CPU fast path prepared) in {:.2} s",
        start.elapsed().as_secs_f64()
    );
    clf.save(&args.bundle)?;
    println!(
        "saved {} (threshold {}, not chosen on validation data)",
        args.bundle.display(),
        clf.threshold()
    );
    Ok(())
}
