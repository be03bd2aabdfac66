//! Evaluate a saved bundle (or the Keras notebook's own saved model) on a dataset part: the
//! clinical report, the ROC curve as CSV and as a PNG plot.
//!
//! ```bash
//! cargo run --release --example evaluate -- BUNDLE_DIR                 # the bundle's own test part
//! cargo run --release --example evaluate -- BUNDLE_DIR --data FracAtlas --part test
//! cargo run --release --example evaluate -- best_model.h5 --data FracAtlas --out eval/
//! cargo run --release --example evaluate -- BUNDLE_DIR --data FracAtlas --localization  # + Grad-CAM vs boxes
//! ```

use clap::Parser;
use fracture::dataset::{annotations::Annotations, FracAtlas, PartName, Split, SplitConfig};
use fracture::device::{self, DeviceRequest};
use fracture::explain::CamMethod;
use fracture::metrics::{LocalizationConfig, RocCurve};
use fracture::FractureClassifier;
use image::{Rgb, RgbImage};
use std::path::{Path, PathBuf};

/// Print the report of a saved classifier on one part of a split and write its ROC curve.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// A folder written by `FractureClassifier::save`, or the Keras notebook's saved model
    /// (`.h5` or `.keras`, recognised by content; it holds no split, so pass --data).
    bundle: PathBuf,
    /// A FracAtlas-layout folder to split (default: the split saved in the bundle).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Which part to evaluate: train, val or test.
    #[arg(long, default_value = "test")]
    part: String,
    /// Where to write roc.csv and roc.png (default: the bundle folder, or the Keras model's).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Device: cpu, cuda[:N], metal[:N] or best.
    #[arg(long, default_value = "best")]
    device: DeviceRequest,
    /// Also score where class-activation maps land on the annotated fractures (pointing game,
    /// energy, box IoU, with baselines); needs FracAtlas's `Annotations/` (see --annotations).
    #[arg(long)]
    localization: bool,
    /// The folder holding `Annotations/` for --localization (default: --data).
    #[arg(long)]
    annotations: Option<PathBuf>,
    /// The map scored by --localization: gradcam, hirescam or gradcampp.
    #[arg(long, default_value = "gradcam")]
    cam: CamMethod,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let device = device::select(args.device)?;
    let mut clf = FractureClassifier::open(&args.bundle, &device)?;
    let split: Split = match &args.data {
        Some(dir) => FracAtlas::open(dir)?.split(&SplitConfig::default())?,
        None => clf
            .split()
            .cloned()
            .ok_or("the model holds no split (a Keras model never does): pass --data")?,
    };
    let part_name = PartName::parse(&args.part).ok_or("--part must be train, val or test")?;
    let part = split.part(part_name).clone();
    let evaluation = clf.evaluate(&part)?;
    println!("== {} part: {} images\n{evaluation}", args.part, part.len());
    if args.localization {
        let root = args.annotations.as_ref().or(args.data.as_ref()).ok_or(
            "--localization needs --annotations (or --data): the folder holding Annotations/",
        )?;
        let annotations = Annotations::open_fracatlas(root)?;
        let config = LocalizationConfig::default();
        println!(
            "{}",
            clf.localization(&part, &annotations, args.cam, &config)?
        );
    }

    let (labels, scores) = clf.scores(&part)?;
    let roc = RocCurve::new(&labels, &scores)?;
    let out = args.out.unwrap_or_else(|| match args.bundle.is_dir() {
        true => args.bundle.clone(),
        false => args.bundle.parent().map(PathBuf::from).unwrap_or_default(),
    });
    std::fs::create_dir_all(&out)?;
    write_roc_csv(&roc, &out.join("roc.csv"))?;
    plot_roc(&roc, &out.join("roc.png"))?;
    println!(
        "wrote {} and {}",
        out.join("roc.csv").display(),
        out.join("roc.png").display()
    );
    Ok(())
}

fn write_roc_csv(roc: &RocCurve, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let mut writer = csv::Writer::from_path(path)?;
    writer.write_record(["threshold", "false_positive_rate", "true_positive_rate"])?;
    for ((t, fpr), tpr) in roc.thresholds().iter().zip(roc.fpr()).zip(roc.tpr()) {
        writer.write_record([t.to_string(), fpr.to_string(), tpr.to_string()])?;
    }
    writer.flush()?;
    Ok(())
}

/// A 400x400 plot: grid, chance diagonal (grey) and the ROC curve (blue); x = false positive
/// rate, y = true positive rate (sensitivity).
fn plot_roc(roc: &RocCurve, path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    const SIZE: u32 = 400;
    const MARGIN: f64 = 20.0;
    let span = f64::from(SIZE) - 2.0 * MARGIN;
    let to_px = |x: f64, y: f64| (MARGIN + x * span, f64::from(SIZE) - MARGIN - y * span);
    let mut img = RgbImage::from_pixel(SIZE, SIZE, Rgb([255, 255, 255]));
    for i in 0..=10 {
        let v = f64::from(i) / 10.0;
        let grey = Rgb([225, 225, 225]);
        line(&mut img, to_px(v, 0.0), to_px(v, 1.0), grey);
        line(&mut img, to_px(0.0, v), to_px(1.0, v), grey);
    }
    line(&mut img, to_px(0.0, 0.0), to_px(1.0, 0.0), Rgb([0, 0, 0]));
    line(&mut img, to_px(0.0, 0.0), to_px(0.0, 1.0), Rgb([0, 0, 0]));
    line(
        &mut img,
        to_px(0.0, 0.0),
        to_px(1.0, 1.0),
        Rgb([160, 160, 160]),
    );
    let points: Vec<(f64, f64)> = roc
        .fpr()
        .iter()
        .copied()
        .zip(roc.tpr().iter().copied())
        .collect();
    for w in points.windows(2) {
        let (a, b) = (to_px(w[0].0, w[0].1), to_px(w[1].0, w[1].1));
        for d in [-1.0, 0.0, 1.0] {
            line(&mut img, (a.0 + d, a.1), (b.0 + d, b.1), Rgb([20, 80, 200]));
        }
    }
    img.save(path)?;
    Ok(())
}

fn line(img: &mut RgbImage, from: (f64, f64), to: (f64, f64), color: Rgb<u8>) {
    let steps = ((to.0 - from.0).abs().max((to.1 - from.1).abs()).ceil() as usize).max(1);
    for s in 0..=steps {
        let t = s as f64 / steps as f64;
        let (x, y) = (from.0 + t * (to.0 - from.0), from.1 + t * (to.1 - from.1));
        if x >= 0.0 && y >= 0.0 && (x as u32) < img.width() && (y as u32) < img.height() {
            img.put_pixel(x as u32, y as u32, color);
        }
    }
}
