//! Evaluate a saved bundle (or the Keras notebook's own saved model) on a dataset part: the
//! clinical summary on the terminal, and the evaluation report (`report.html`, self-contained, with its charts as PNG and SVG and its
//! numbers as `metrics.json`) in a folder.
//!
//! ```bash
//! cargo run --release --example evaluate -- BUNDLE_DIR                 # the bundle's own test part
//! cargo run --release --example evaluate -- BUNDLE_DIR --data FracAtlas --part test --tta  # the bundle's split, its images found in FracAtlas/
//! cargo run --release --example evaluate -- best_model.h5 --data FracAtlas --out eval/
//! cargo run --release --example evaluate -- BUNDLE_DIR --data FracAtlas --localization  # + Grad-CAM vs boxes
//! # Choose the threshold again on the bundle's validation part, for a target specificity:
//! cargo run --release --example evaluate -- BUNDLE_DIR --data FracAtlas --target-specificity 0.90
//! cargo run --release --example evaluate -- BUNDLE_DIR --precision bf16   # bf16 convolutions (AVX512_BF16)
//! ```
//!
//! Among its lines: `ROC AUC <value>`, `sensitivity at specificity 0.90: <value> (95% CI <lo>
//! to <hi>)` (and 0.80, 0.95) and, with `--localization`, `pointing game minus centred
//! Gaussian: <value> (95% CI <lo> to <hi>)` (and the other statistics and baselines).

use clap::Parser;
use fracture::augment::TtaConfig;
use fracture::dataset::decode::decode_file;
use fracture::dataset::{
    annotations::Annotations, FracAtlas, LoadReport, PartName, Split, SplitConfig,
};
use fracture::device::{self, DeviceRequest};
use fracture::explain::{CamConfig, CamMethod, OverlayStyle};
use fracture::metrics::{LocalizationConfig, ThresholdRule};
use fracture::model::Precision;
use fracture::report::{select_gallery, DataSource, GalleryImage, Overlay, Report};
use fracture::robustness::Perturbation;
use fracture::FractureClassifier;
use std::path::{Path, PathBuf};

/// Print the metrics of a saved classifier on one part of a split and write its report.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// A folder written by `FractureClassifier::save`, or the Keras notebook's saved model
    /// (`.h5` or `.keras`, recognised by content; it holds no split, so pass --data). Left
    /// out: the model shipped in `models/`.
    #[arg(default_value = fracture::SHIPPED_MODEL)]
    bundle: PathBuf,
    /// The FracAtlas-layout folder holding the images. With a bundle it only locates the
    /// images of the bundle's own split (the folder may have moved) and must hold exactly
    /// them; a Keras model holds no split, so its folder is split afresh (70/10/20, seed
    /// --split-seed) and the report says the model's training images are unknown.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Seed of the fresh split of --data for a model without a recorded split (a Keras file).
    #[arg(long, default_value_t = SplitConfig::default().seed)]
    split_seed: u64,
    /// Which part to evaluate: train, val or test.
    #[arg(long, default_value = "test")]
    part: String,
    /// Where to write the report (default: BUNDLE_DIR/report, or `report/` beside the Keras
    /// model).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Average the logits over the image, its mirror image and rotations by ±5° (test-time
    /// augmentation), and report the AUC difference against the image alone.
    #[arg(long)]
    tta: bool,
    /// Gallery cases of each kind (most confident false negatives, false positives, true
    /// positives).
    #[arg(long, default_value_t = 4)]
    gallery: usize,
    /// The data source named in the model card: `fracatlas`, `synthetic`, any other text, or
    /// `auto` (FracAtlas when the data folder has FracAtlas's `Annotations/`, else its path).
    #[arg(long, default_value = "auto")]
    source: String,
    /// Device: cpu, cuda[:N], metal[:N] or best.
    #[arg(long, default_value = "best")]
    device: DeviceRequest,
    /// Precision of the CPU fast path's convolutions: f32, or bf16 (opt-in, needs a CPU with
    /// AVX512_BF16; an error elsewhere). The report does not record it: name it beside the
    /// report when it is bf16.
    #[arg(long, default_value = "f32")]
    precision: Precision,
    /// Also score where class-activation maps land on the annotated fractures (pointing game,
    /// energy, box IoU, with baselines); needs FracAtlas's `Annotations/` (see --annotations).
    #[arg(long)]
    localization: bool,
    /// The folder holding `Annotations/` for --localization (default: --data).
    #[arg(long)]
    annotations: Option<PathBuf>,
    /// The map scored by --localization and drawn in the report's gallery: gradcam,
    /// hirescam, gradcampp or map (the model's own localization map). Default: the model's
    /// map when it has one, gradcam otherwise.
    #[arg(long)]
    cam: Option<CamMethod>,
    /// Also measure how the probabilities move when the part's pictures are re-encoded as
    /// JPEG, noised, stored as 12-bit DICOM or resized by another program
    /// (`FractureClassifier::robustness`, seeded by --robustness-seed); the model card shows
    /// the table.
    #[arg(long)]
    robustness: bool,
    /// Seed of the noise of --robustness.
    #[arg(long, default_value_t = 7)]
    robustness_seed: u64,
    /// Leave the class-activation overlays out of the report's gallery.
    #[arg(long)]
    no_overlays: bool,
    /// Choose the threshold again on the validation part of the split, as the highest one
    /// whose sensitivity reaches this target in (0, 1] (the bundle on disk is not changed; the
    /// report states the rule).
    #[arg(long, conflicts_with_all = ["target_specificity", "youden"])]
    target_sensitivity: Option<f64>,
    /// Choose the threshold again on the validation part, as the one of highest sensitivity
    /// whose specificity reaches this target in (0, 1].
    #[arg(long, conflicts_with = "youden")]
    target_specificity: Option<f64>,
    /// Choose the threshold again on the validation part by Youden's J.
    #[arg(long)]
    youden: bool,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let rule = match (
        args.target_sensitivity,
        args.target_specificity,
        args.youden,
    ) {
        (Some(target), _, _) => Some(ThresholdRule::TargetSensitivity(target)),
        (None, Some(target), _) => Some(ThresholdRule::TargetSpecificity(target)),
        (None, None, true) => Some(ThresholdRule::Youden),
        (None, None, false) => None,
    };
    if let Some(rule) = rule {
        rule.validate()?;
    }
    let device = device::select(args.device)?;
    let mut clf = FractureClassifier::open(&args.bundle, &device)?;
    let cam = args.cam.unwrap_or_else(|| clf.default_explanation());
    clf.set_precision(args.precision)?;
    if args.precision != Precision::F32 {
        println!("scoring at precision {}", args.precision);
    }
    let data = args.data.as_ref().map(FracAtlas::open).transpose()?;
    let fresh = SplitConfig {
        seed: args.split_seed,
        ..SplitConfig::default()
    };
    // A bundle's split is the split; --data only locates its images.
    let split = clf.resolve_split(data.as_ref(), &fresh)?;
    let load_report: Option<LoadReport> = data.map(|d| d.report);
    let part_name = PartName::parse(&args.part).ok_or("--part must be train, val or test")?;
    let part = split.part(part_name).clone();
    if let (Some(rule), PartName::Val) = (rule, part_name) {
        return Err(format!(
            "{rule} would choose the threshold on the validation part and then measure it on \
             the same images: evaluate --part test (or train) with a rule, or --part val without"
        )
        .into());
    }
    if args.tta {
        clf.set_tta(TtaConfig::standard())?;
    }
    if let Some(rule) = rule {
        // On the validation part as the classifier scores it (with --tta, the mean logit).
        match clf.choose_threshold(&split.val, rule)? {
            Some(threshold) => println!(
                "threshold {threshold:.4} chosen on the validation part ({} images) for {rule}",
                split.val.len()
            ),
            None => {
                return Err(format!(
                    "{rule} is undefined on the validation part ({} images): no threshold \
                     there finds a fracture while reaching it, or the part lacks a class",
                    split.val.len()
                )
                .into())
            }
        }
    }
    let evaluation = clf.evaluate(&part)?;
    println!("== {} part: {} images\n{evaluation}", args.part, part.len());
    let localization = if args.localization {
        let root = args.annotations.as_ref().or(args.data.as_ref()).ok_or(
            "--localization needs --annotations (or --data): the folder holding Annotations/",
        )?;
        let annotations = Annotations::open_fracatlas(root)?;
        let config = LocalizationConfig::default();
        let localization = clf.localization(&part, &annotations, cam, &config)?;
        println!("{localization}");
        Some(localization)
    } else {
        None
    };

    let robustness = if args.robustness {
        let measured = clf.robustness(&part, &Perturbation::standard(), args.robustness_seed)?;
        println!("{measured}");
        Some(measured)
    } else {
        None
    };

    let data_root = args.data.clone().or_else(|| data_root_of(&split));
    let mut source = data_source(&args.source, data_root.as_deref());
    if let Some(report) = &load_report {
        source = source.with_load_report(report);
    }
    let out = args.out.unwrap_or_else(|| match args.bundle.is_dir() {
        true => args.bundle.join("report"),
        false => args.bundle.with_file_name("report"),
    });
    let mut report = Report::new(&clf, &evaluation)
        .data_source(source)
        .bundle(&args.bundle)?
        .gallery(select_gallery(&evaluation, args.gallery));
    if let Some(root) = data_root.as_deref() {
        report = report.fracatlas_boxes(root)?;
    }
    if let Some(localization) = &localization {
        report = report.localization(localization);
    }
    if let Some(robustness) = &robustness {
        report = report.robustness(robustness);
    }
    if !args.no_overlays {
        // Grad-CAM (or --cam) beside each gallery thumbnail, with the annotated fractures
        // outlined when the data folder has FracAtlas's annotations.
        let annotations = match args.annotations.as_ref().or(data_root.as_ref()) {
            Some(root) if root.join("Annotations").is_dir() => {
                Some(Annotations::open_fracatlas(root)?)
            }
            _ => None,
        };
        let grad_cam = |case: &GalleryImage| -> fracture::Result<Option<Overlay>> {
            let image = decode_file(&case.path)?;
            let explained = clf.explain_image(&image, CamConfig::new(cam))?;
            let regions = annotations
                .as_ref()
                .and_then(|a| a.for_path(&case.path))
                .map(|a| a.regions.clone())
                .unwrap_or_default();
            let picture = explained.overlay(&image, &regions, &OverlayStyle::default())?;
            let mut png = Vec::new();
            picture
                .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
                .map_err(|e| fracture::Error::InvalidInput(format!("overlay PNG: {e}")))?;
            Ok(Some(Overlay::Encoded(png)))
        };
        report = report.overlays(&grad_cam)?;
    }
    let files = report.write(&out)?;
    println!(
        "wrote {} ({} charts as PNG and SVG, numbers in {})",
        files.html.display(),
        files.charts.len() / 2,
        files.metrics.display()
    );
    Ok(())
}

/// The folder holding `dataset.csv` above the split's first image, if any.
fn data_root_of(split: &Split) -> Option<PathBuf> {
    let first = split.parts().into_iter().find_map(|p| p.samples.first())?;
    first
        .path
        .ancestors()
        .find(|dir| dir.join("dataset.csv").is_file())
        .map(Path::to_path_buf)
}

fn data_source(choice: &str, root: Option<&Path>) -> DataSource {
    match choice {
        "fracatlas" => DataSource::fracatlas(),
        "synthetic" => DataSource::synthetic(),
        "auto" => match root {
            Some(dir) if dir.join("Annotations").is_dir() => DataSource::fracatlas(),
            Some(dir) => DataSource::named(dir.display().to_string()),
            None => DataSource::named("not recorded"),
        },
        other => DataSource::named(other),
    }
}
