//! Explain a saved classifier's predictions: a class-activation map over each radiograph,
//! written as a PNG in the original image's coordinates (optionally with the annotated
//! fracture boxes), for one image or every image of a folder.
//!
//! ```bash
//! cargo run --release --example explain -- xray.jpg --out maps/     # the model shipped in models/
//! cargo run --release --example explain -- BUNDLE_DIR xray.jpg --out maps/
//! cargo run --release --example explain -- BUNDLE_DIR FracAtlas/images/Fractured --out maps/ \
//!     --method gradcampp --annotations FracAtlas --limit 20
//! ```
//!
//! A map shows where the features that raised the chosen score are (the fracture logit by
//! default): what drives the model, not a diagnosis. See the README's "Explanations".

use clap::Parser;
use fracture::dataset::annotations::Annotations;
use fracture::dataset::decode::decode_file;
use fracture::dataset::walk;
use fracture::device::{self, DeviceRequest};
use fracture::explain::{save_png, CamConfig, CamMethod, CamTarget, OverlayStyle};
use fracture::progress::Progress;
use fracture::FractureClassifier;
use std::path::{Path, PathBuf};

/// Write a class-activation overlay per image and print each prediction.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// `[MODEL] INPUT`. MODEL: a folder written by `FractureClassifier::save`; left out, the
    /// model shipped in `models/`. INPUT: an image file, or a folder (every image in it,
    /// recursively).
    #[arg(num_args = 1..=2, required = true, value_name = "[MODEL] INPUT")]
    paths: Vec<PathBuf>,
    /// Where to write the overlays: the input folder's tree mirrored, each image's overlay
    /// named `<image stem>_<method>_<target>.png` in the folder mirroring the image's.
    #[arg(long, default_value = "explanations")]
    out: PathBuf,
    /// gradcam, hirescam, gradcampp or map (the model's own localization map). Default: the
    /// model's map when it has one, gradcam otherwise.
    #[arg(long)]
    method: Option<CamMethod>,
    /// fracture (what raised the fracture logit) or no_fracture (what lowered it).
    #[arg(long, default_value = "fracture")]
    target: CamTarget,
    /// A FracAtlas-layout folder whose `Annotations/` boxes are drawn on the overlays.
    #[arg(long)]
    annotations: Option<PathBuf>,
    /// Opacity of the map where it peaks (0 to 1).
    #[arg(long, default_value_t = 0.6)]
    opacity: f32,
    /// Explain at most this many images (in path order).
    #[arg(long)]
    limit: Option<usize>,
    /// Device: cpu, cuda[:N], metal[:N] or best.
    #[arg(long, default_value = "best")]
    device: DeviceRequest,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let (bundle, input) = match args.paths.as_slice() {
        [input] => (PathBuf::from(fracture::SHIPPED_MODEL), input.clone()),
        [bundle, input] => (bundle.clone(), input.clone()),
        _ => return Err("give [MODEL] INPUT".into()),
    };
    let device = device::select(args.device)?;
    let clf = FractureClassifier::open(&bundle, &device)?;
    let annotations = args
        .annotations
        .as_ref()
        .map(Annotations::open_fracatlas)
        .transpose()?;
    // The input tree is mirrored under --out, so images of the same name in different
    // folders (many IM0001.dcm) get different overlays.
    let (input_root, mut files) = if input.is_dir() {
        let found = walk::files_under(&input)?;
        for (path, reason) in &found.skipped {
            eprintln!("skipped {}: {reason}", path.display());
        }
        (input.clone(), found.files)
    } else {
        let folder = input.parent().unwrap_or(Path::new("")).to_path_buf();
        (folder, vec![input.clone()])
    };
    files.truncate(args.limit.unwrap_or(usize::MAX));
    let method = args.method.unwrap_or_else(|| clf.default_explanation());
    let config = CamConfig {
        method,
        target: args.target,
    };
    let style = OverlayStyle {
        opacity: args.opacity,
        ..OverlayStyle::default()
    };
    let progress = Progress::items("explain", files.len() as u64);
    // Each overlay's path, checked before any work: two inputs of one stem in one folder
    // (IM0001.dcm, IM0001.png) are refused, never overwritten.
    let suffix = format!("_{}_{}.png", method.key(), args.target.key());
    let targets: Vec<PathBuf> = files
        .iter()
        .map(|path| walk::mirrored_path(&input_root, path, &args.out, &suffix))
        .collect();
    let mut seen = std::collections::HashMap::new();
    for (path, target) in files.iter().zip(&targets) {
        if let Some(earlier) = seen.insert(target, path) {
            return Err(format!(
                "{} and {} would both be explained in {}: rename one",
                earlier.display(),
                path.display(),
                target.display()
            )
            .into());
        }
    }
    let (mut written, mut skipped) = (0usize, 0usize);
    for (path, target) in files.iter().zip(&targets) {
        progress.inc(1);
        let image = match decode_file(path) {
            Ok(image) => image,
            Err(e) => {
                progress.suspend(|| eprintln!("skipped {}: {e}", path.display()));
                skipped += 1;
                continue;
            }
        };
        let explained = clf.explain_image(&image, config)?;
        let regions = annotations
            .as_ref()
            .and_then(|a| a.for_path(path))
            .map(|a| a.regions.as_slice())
            .unwrap_or_default();
        let picture = explained.overlay(&image, regions, &style)?;
        save_png(&picture, target)?;
        written += 1;
        progress.suspend(|| {
            println!(
                "{}: {} -> {}",
                path.display(),
                explained.prediction,
                target.display()
            )
        });
    }
    progress.finish(&format!("{written} written, {skipped} skipped"));
    println!(
        "{written} overlay(s) of {config} written to {}, {skipped} skipped",
        args.out.display()
    );
    Ok(())
}
