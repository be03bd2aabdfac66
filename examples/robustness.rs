//! How far a saved classifier's fracture probabilities move when the pictures of a dataset part
//! reach it as hospitals pass them around (issue 24, item 7): re-encoded as JPEG at quality 75,
//! 85 and 95, with ±0.5 and ±1 gray level of noise (in floating point and rounded to 8 bits),
//! as 12-bit DICOM, and resized by another program (Lanczos3, CatmullRom; to half size and to
//! the model's input size). Prints, per perturbation, the median, 95th percentile and largest
//! absolute change of the probability and the decisions flipped at the classifier's threshold.
//!
//! ```bash
//! cargo run --release --example robustness -- BUNDLE_DIR --data FracAtlas --part test
//! cargo run --release --example robustness -- BUNDLE_DIR --data FracAtlas --seed 7 --json robustness.json
//! ```

use clap::Parser;
use fracture::dataset::{FracAtlas, PartName, SplitConfig};
use fracture::device::{self, DeviceRequest};
use fracture::model::Precision;
use fracture::robustness::Perturbation;
use fracture::FractureClassifier;
use std::path::PathBuf;

/// Measure a saved classifier's robustness on one part of its split.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// A folder written by `FractureClassifier::save`, or the Keras notebook's saved model
    /// (`.h5` or `.keras`; it holds no split, so pass --data).
    bundle: PathBuf,
    /// The FracAtlas-layout folder holding the images: with a bundle it only locates the
    /// images of the bundle's own split; a model without a split has the folder split afresh
    /// (70/10/20, seed --split-seed).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Seed of the fresh split of --data for a model without a recorded split.
    #[arg(long, default_value_t = SplitConfig::default().seed)]
    split_seed: u64,
    /// Which part to measure: train, val or test.
    #[arg(long, default_value = "test")]
    part: String,
    /// Seed of the noise perturbations.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Also write the report (summaries and every image's probabilities) as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Device: cpu, cuda[:N], metal[:N] or best.
    #[arg(long, default_value = "best")]
    device: DeviceRequest,
    /// Precision of the CPU fast path's convolutions: f32, or bf16 (needs AVX512_BF16).
    #[arg(long, default_value = "f32")]
    precision: Precision,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let device = device::select(args.device)?;
    let mut clf = FractureClassifier::open(&args.bundle, &device)?;
    clf.set_precision(args.precision)?;
    let data = args.data.as_ref().map(FracAtlas::open).transpose()?;
    let fresh = SplitConfig {
        seed: args.split_seed,
        ..SplitConfig::default()
    };
    // A bundle's split is the split; --data only locates its images (as in `evaluate`).
    let split = clf.resolve_split(data.as_ref(), &fresh)?;
    let part_name = PartName::parse(&args.part).ok_or("--part must be train, val or test")?;
    let part = split.part(part_name);
    let report = clf.robustness(part, &Perturbation::standard(), args.seed)?;
    print!("{report}");
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)?)?;
        println!("report written to {}", path.display());
    }
    Ok(())
}
