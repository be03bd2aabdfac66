//! Box supervision (issue 24, item 3): on synthetic radiographs whose fractures lie anywhere
//! along the bones, the same small network trained on the same stage cache points at the
//! lesions more often with its localization map learned from the boxes than trained without
//! boxes (explained by Grad-CAM, the crate's explanation for such a model).

use fracture::dataset::annotations::Annotations;
use fracture::dataset::synthetic::SyntheticConfig;
use fracture::dataset::{FracAtlas, Split, SplitConfig};
use fracture::device::DeviceRequest;
use fracture::explain::CamMethod;
use fracture::metrics::{LocalizationConfig, LocalizationReport};
use fracture::model::{EfficientNetLiteConfig, HeadConfig, LocalizationHeadConfig};
use fracture::train::{BackboneTraining, BoxSupervision, StageCacheConfig, TrainConfig};
use fracture::{FractureClassifier, WeightsSource};
use std::path::Path;

const SIZE: usize = 128;

/// A small EfficientNet-Lite (Lite0's stages, half the width).
fn small_lite() -> EfficientNetLiteConfig {
    let mut c = EfficientNetLiteConfig::lite0();
    c.width_multiplier = 0.5;
    c.depth_multiplier = 0.5;
    c.stem_channels = 16;
    c.head_channels = 64;
    // Moving statistics that follow a short training (TensorFlow's 0.99 would leave them
    // near their initial values after a hundred steps, and inference would see noise).
    c.bn_momentum = 0.9;
    c
}

fn classifier(seed: u64) -> FractureClassifier {
    FractureClassifier::builder()
        .backbone(small_lite())
        .weights(WeightsSource::Random { seed })
        .device(DeviceRequest::Cpu)
        .image_size(SIZE, SIZE)
        .build()
        .unwrap()
}

fn config(seed: u64, cache: &Path, boxes: bool) -> TrainConfig {
    let localization =
        boxes.then(|| LocalizationHeadConfig::efficientnet_lite(&small_lite()).unwrap());
    TrainConfig {
        epochs: 20,
        batch_size: 16,
        learning_rate: 3e-3,
        backbone: BackboneTraining::LastStages {
            stages: 2,
            learning_rate: 3e-3,
        },
        head: HeadConfig {
            hidden: 32,
            dropout: 0.2,
            localization,
        },
        augment: false,
        progress: false,
        seed,
        stage_cache: Some(StageCacheConfig::new(cache)),
        box_supervision: boxes.then(BoxSupervision::default),
        ..TrainConfig::default()
    }
}

fn data(dir: &Path, seed: u64) -> (Split, Annotations) {
    SyntheticConfig {
        n_fractured: 160,
        n_not_fractured: 160,
        min_size: 96,
        max_size: 128,
        seed,
        fracture_visibility: 8.0,
        fracture_spread: 0.4,
    }
    .generate_to(dir)
    .unwrap();
    let split = FracAtlas::open(dir)
        .unwrap()
        .split(&SplitConfig {
            seed,
            ..SplitConfig::default()
        })
        .unwrap();
    (split, Annotations::open_fracatlas(dir).unwrap())
}

fn pointing(report: &LocalizationReport) -> f64 {
    report.map.pointing_game.estimate
}

/// Measured (32 fractured test images; pointing within 4 px, half a cell of the 8 x 8 map):
/// with boxes 0.344, 0.469, 0.500 and 0.344 for seeds 21 to 24, trained without boxes (its
/// Grad-CAM) 0.095, 0.033, 0.055 and 0.125; the centred Gaussian 0.281, 0.328, 0.438 and 0.375,
/// so beating it is not asserted (seed 24 does not). Each seed took 3.5 to 6.5 minutes on 2
/// shared cores. `BOX_SEED` chooses another seed.
#[test]
fn box_supervision_points_at_synthetic_lesions_better_than_training_without_boxes() {
    let started = std::time::Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    let seed: u64 = std::env::var("BOX_SEED").map_or(21, |s| s.parse().unwrap());
    let (split, annotations) = data(dir.path(), seed);
    let localization = LocalizationConfig {
        tolerance_px: 4.0,
        ..LocalizationConfig::default()
    };

    // Phase 1, as ImageNet pretraining does for the real recipe: the whole network learns
    // the task without boxes, so that the stages frozen below have features worth caching
    // (randomly initialised ones give activations near 1e-6).
    let mut pretrained = classifier(seed);
    pretrained
        .train(
            &split,
            TrainConfig {
                epochs: 12,
                backbone: BackboneTraining::All {
                    learning_rate: 3e-3,
                },
                stage_cache: None,
                box_supervision: None,
                head: HeadConfig {
                    localization: None,
                    ..config(seed, cache.path(), false).head
                },
                ..config(seed, cache.path(), false)
            },
        )
        .unwrap();
    eprintln!(
        "phase 1 done in {:.1} s; history {:?}",
        started.elapsed().as_secs_f64(),
        pretrained.history().map(|h| h
            .epochs
            .iter()
            .map(|e| (e.val_loss, e.val_auc))
            .collect::<Vec<_>>())
    );
    let bundle = tempfile::tempdir().unwrap();
    pretrained.save(bundle.path().join("phase1")).unwrap();
    let copy = || {
        FractureClassifier::load(bundle.path().join("phase1"), &candle_core::Device::Cpu).unwrap()
    };

    let mut boxed = copy();
    boxed
        .train_with_boxes(&split, &annotations, config(seed, cache.path(), true), None)
        .unwrap();
    assert_eq!(boxed.default_explanation(), CamMethod::ModelMap);
    let with_boxes = boxed
        .localization(
            &split.test,
            &annotations,
            CamMethod::ModelMap,
            &localization,
        )
        .unwrap();

    let mut plain = copy();
    plain
        .train(&split, config(seed, cache.path(), false))
        .unwrap();
    assert_eq!(plain.default_explanation(), CamMethod::GradCam);
    let without_boxes = plain
        .localization(&split.test, &annotations, CamMethod::GradCam, &localization)
        .unwrap();
    eprintln!(
        "pointing game with boxes {:.3}, without {:.3}, centred Gaussian {:.3}; {} images; {:.1} s",
        pointing(&with_boxes),
        pointing(&without_boxes),
        with_boxes.centred_gaussian.pointing_game.estimate,
        with_boxes.images.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(with_boxes.images.len() >= 20);
    assert!(pointing(&with_boxes) > pointing(&without_boxes) + 0.1);
}
