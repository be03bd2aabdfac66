//! Does a finer feature map localize better? Grad-CAM of an EfficientNet-Lite bundle at the
//! output of each chosen stage (the later stages and the head differentiated by candle), scored
//! against FracAtlas's annotated fractures on one part of the bundle's split, next to the
//! centred Gaussian and uniform baselines.
//!
//! ```bash
//! cargo run --release --example explain_stages -- runs/lite0-finetune/bundle \
//!     --data ../shared/data/fracatlas --stages 2,3,4,6
//! ```
//!
//! Lite0's stages 0 to 6 end at strides 2, 4, 8, 16, 16, 32, 32: for a 224 x 224 input,
//! stage 2 gives a 28 x 28 map, stages 3 and 4 14 x 14, stages 5 and 6 7 x 7 (the usual map
//! is the head's, also 7 x 7). Runs on the CPU with candle's ops (no fast path).

use candle_core::{Device, Tensor};
use clap::Parser;
use fracture::dataset::annotations::Annotations;
use fracture::dataset::decode::decode_file;
use fracture::dataset::{FracAtlas, Label, PartName, SplitConfig};
use fracture::explain::{explain_features, CamConfig, CamMethod};
use fracture::metrics::localization::score_image;
use fracture::metrics::{LocalizationConfig, LocalizationReport};
use fracture::model::Backbone;
use fracture::progress::Progress;
use fracture::FractureClassifier;
use std::path::PathBuf;

/// Score Grad-CAM at several stages of an EfficientNet-Lite bundle.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// A folder written by `FractureClassifier::save` (EfficientNet-Lite backbone).
    bundle: PathBuf,
    /// The FracAtlas folder (images, dataset.csv, Annotations/).
    #[arg(long)]
    data: PathBuf,
    /// train, val or test (of the bundle's split, or the default split).
    #[arg(long, default_value = "test")]
    part: String,
    /// The stages whose outputs are explained, comma-separated (0-based).
    #[arg(long, value_delimiter = ',', default_value = "2,3,4,6")]
    stages: Vec<usize>,
    /// gradcam, hirescam or gradcampp.
    #[arg(long, default_value = "gradcam")]
    method: CamMethod,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let device = Device::Cpu;
    let clf = FractureClassifier::open(&args.bundle, &device)?;
    let Backbone::EfficientNetLite(net) = &clf.net().backbone else {
        return Err(format!("{}: not an EfficientNet-Lite bundle", args.bundle.display()).into());
    };
    let stage_count = net.config().stage_count();
    if let Some(bad) = args.stages.iter().find(|&&s| s >= stage_count) {
        return Err(format!("stage {bad} does not exist: the network has {stage_count}").into());
    }
    let data = FracAtlas::open(&args.data)?;
    let split = match clf.split() {
        // The bundle's split holds paths relative to the data root: find them in --data.
        Some(split) => split.locate(&data.samples, clf.path_form())?,
        None => data.split(&SplitConfig::default())?,
    };
    let part_name = PartName::parse(&args.part).ok_or("--part must be train, val or test")?;
    let part = split.part(part_name);
    let annotations = Annotations::open_fracatlas(&args.data)?;
    let config = LocalizationConfig::default();
    let cam = CamConfig::new(args.method);
    let todo: Vec<_> = part
        .samples
        .iter()
        .filter(|s| s.label == Label::Fractured)
        .filter_map(|s| {
            let a = annotations.for_path(&s.path)?;
            (!a.regions.is_empty()).then_some((s.path.clone(), a))
        })
        .collect();
    let preprocess = clf.preprocess();
    let mut scored = vec![Vec::new(); args.stages.len()];
    let mut sizes = vec![(0, 0); args.stages.len()];
    let mut skipped = Vec::new();
    let progress = Progress::items("explain stages", todo.len() as u64);
    for (path, annotated) in &todo {
        progress.inc(1);
        let image = decode_file(path)?;
        let (width, height) = (image.width(), image.height());
        let chw = preprocess.normalize_chw(&preprocess.resize_rgb(&image))?;
        let x = Tensor::from_vec(chw, (1, 3, preprocess.height, preprocess.width), &device)?;
        let taps = net.forward_taps(&x, false)?;
        for (k, &stage) in args.stages.iter().enumerate() {
            let rest = |features: &Tensor| -> fracture::Result<Tensor> {
                clf.net()
                    .head
                    .forward(&net.forward_from_stage(features, stage + 1)?)
            };
            let features = &taps.stages[stage];
            let explained =
                explain_features(features, &rest, cam, (preprocess.height, preprocess.width))?;
            let map = explained[0].at_size(height as usize, width as usize)?;
            sizes[k] = (explained[0].raw.height, explained[0].raw.width);
            match annotated.pixel_boxes(width, height) {
                Ok(placed) => scored[k].push(score_image(
                    path.clone(),
                    &map,
                    &placed.boxes,
                    config.tolerance_px * placed.scale,
                    &config,
                )?),
                // Another orientation than annotated: the same for every stage.
                Err(reason) => {
                    skipped.push((path.clone(), reason));
                    break;
                }
            }
        }
    }
    progress.finish(&format!("{} images, {} skipped", todo.len(), skipped.len()));
    for ((stage, images), (h, w)) in args.stages.iter().zip(scored).zip(sizes) {
        let report = LocalizationReport::new(
            format!("{} stage {stage}", args.method),
            config,
            images,
            Vec::new(),
            skipped.clone(),
        )?;
        println!("== stage {stage}: {h} x {w} map\n{report}");
    }
    Ok(())
}
