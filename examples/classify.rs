//! Classify radiographs with a saved bundle or the Keras notebook's own saved model: one file,
//! or every file in a folder.
//!
//! ```bash
//! cargo run --release --example classify -- xray.jpg                # the model shipped in models/
//! cargo run --release --example classify -- BUNDLE_DIR xray.jpg     # or a DICOM file (.dcm or none)
//! cargo run --release --example classify -- BUNDLE_DIR folder/ --csv predictions.csv
//! cargo run --release --example classify -- BUNDLE_DIR xray.jpg --tta   # test-time augmentation
//! cargo run --release --example classify -- best_model.h5 xray.jpg     # the notebook's checkpoint
//! cargo run --release --example classify -- BUNDLE_DIR folder/ --precision bf16  # AVX512_BF16 CPUs
//! ```

use clap::Parser;
use fracture::augment::TtaConfig;
use fracture::device::{self, DeviceRequest};
use fracture::model::Precision;
use fracture::FractureClassifier;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Print the fracture probability and label of each image.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// `[MODEL] INPUT`. MODEL: a folder written by `FractureClassifier::save` (e.g. by the
    /// quickstart), or the Keras notebook's saved model (`.h5` or `.keras`, recognised by
    /// content; its sigmoid read as P(Not_Fractured), as the notebook's class folders make
    /// it); left out, the model shipped in `models/`. INPUT: an image file (JPEG, PNG,
    /// DICOM, ...), or a folder classified recursively.
    #[arg(num_args = 1..=2, required = true, value_name = "[MODEL] INPUT")]
    paths: Vec<PathBuf>,
    /// Also write the predictions as CSV (path,label,fracture_probability,threshold); each
    /// path relative to the folder given (the file's name for a single file), never absolute.
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Override the bundle's decision threshold.
    #[arg(long)]
    threshold: Option<f64>,
    /// Average the logits over the image, its mirror image and rotations by ±5° (four
    /// forward passes per image).
    #[arg(long)]
    tta: bool,
    /// Device: cpu, cuda[:N], metal[:N] or best.
    #[arg(long, default_value = "best")]
    device: DeviceRequest,
    /// Precision of the CPU fast path's convolutions: f32, or bf16 (opt-in, needs a CPU with
    /// AVX512_BF16; an error elsewhere).
    #[arg(long, default_value = "f32")]
    precision: Precision,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let (bundle, input) = match args.paths.as_slice() {
        [input] => (PathBuf::from(fracture::SHIPPED_MODEL), input.clone()),
        [bundle, input] => (bundle.clone(), input.clone()),
        _ => return Err("give [MODEL] INPUT".into()),
    };
    let device = device::select(args.device)?;
    let mut clf = FractureClassifier::open(&bundle, &device)?;
    clf.set_precision(args.precision)?;
    if let Some(threshold) = args.threshold {
        clf.set_threshold(threshold)?;
    }
    if args.tta {
        clf.set_tta(TtaConfig::standard())?;
    }
    let (predictions, skipped) = if input.is_dir() {
        let result = clf.classify_dir(&input)?;
        (result.predictions, result.skipped)
    } else {
        (
            vec![(input.clone(), clf.classify_path(&input)?)],
            Vec::new(),
        )
    };
    println!("{:<60} {:>14} {:>12}", "image", "label", "probability");
    for (path, p) in &predictions {
        println!(
            "{:<60} {:>14} {:>12.4}",
            path.display(),
            p.label.to_string(),
            p.fracture_probability
        );
    }
    for (path, reason) in &skipped {
        eprintln!("skipped {}: {reason}", path.display());
    }
    println!(
        "{} image(s) classified at threshold {:.4}, {} skipped",
        predictions.len(),
        clf.threshold(),
        skipped.len()
    );
    if let Some(csv_path) = &args.csv {
        let mut writer = csv::Writer::from_path(csv_path)?;
        writer.write_record(["path", "label", "fracture_probability", "threshold"])?;
        let base = match input.is_dir() {
            true => input.as_path(),
            false => input.parent().unwrap_or(Path::new("")),
        };
        for (path, p) in &predictions {
            // Paths on disk are relative (see the README's privacy section).
            let relative = path.strip_prefix(base).unwrap_or(path);
            writer.write_record([
                relative.display().to_string(),
                p.label.to_string(),
                format!("{:.6}", p.fracture_probability),
                format!("{:.6}", p.threshold),
            ])?;
        }
        writer.flush()?;
        std::io::stdout().flush()?;
        println!("wrote {}", csv_path.display());
    }
    Ok(())
}
