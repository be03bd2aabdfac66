//! The backbone choice through the whole crate: EfficientNet-Lite next to ResNetV2 in
//! weights loading, the ImageNet top, the facade (training frozen and fine-tuned, bundles,
//! the fast path), and a second training phase that keeps the trained head.

use crate::common;

use candle_core::Device;
use fracture::dataset::synthetic::SyntheticConfig;
use fracture::dataset::{FracAtlas, Split, SplitConfig};
use fracture::model::{BackboneConfig, EfficientNetLiteConfig, HeadConfig, ResNetV2Config};
use fracture::preprocess::Preprocess;
use fracture::train::{BackboneTraining, TrainConfig};
use fracture::weights::{HubOptions, KerasCache};
use fracture::{FractureClassifier, WeightsSource};
use std::path::{Path, PathBuf};

const WEIGHTS: &str = "../shared/weights/efficientnet_lite0_imagenet.safetensors";
const CAT: &str = "../shared/fixtures/efficientnet_lite0/io.safetensors";

fn shared(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// A small EfficientNet-Lite: Lite0's stage strings with a quarter of the width and the
/// narrow stem and head, so that training it on the CPU takes seconds.
fn small_lite() -> EfficientNetLiteConfig {
    let mut c = EfficientNetLiteConfig::lite0();
    c.width_multiplier = 0.25;
    c.depth_multiplier = 0.5;
    c.stem_channels = 8;
    c.head_channels = 32;
    c
}

fn synthetic_split(root: &Path) -> Split {
    SyntheticConfig {
        n_fractured: 16,
        n_not_fractured: 16,
        min_size: 64,
        max_size: 80,
        seed: 11,
        fracture_visibility: 2.5,
        fracture_spread: 0.2,
    }
    .generate_to(root)
    .unwrap();
    FracAtlas::open(root)
        .unwrap()
        .split(&SplitConfig::default())
        .unwrap()
}

fn lite_classifier(seed: u64) -> FractureClassifier {
    FractureClassifier::builder()
        .backbone(small_lite())
        .weights(WeightsSource::Random { seed })
        .device(fracture::device::DeviceRequest::Cpu)
        .image_size(64, 64)
        .build()
        .unwrap()
}

/// An independent copy of a classifier, through a bundle.
fn copy_of(clf: &FractureClassifier) -> FractureClassifier {
    let dir = tempfile::tempdir().unwrap();
    let bundle = clf.save(dir.path().join("copy")).unwrap();
    FractureClassifier::load(bundle, &Device::Cpu).unwrap()
}

fn quick(backbone: BackboneTraining) -> TrainConfig {
    TrainConfig {
        epochs: 1,
        batch_size: 8,
        augment: false,
        progress: false,
        backbone,
        head: HeadConfig {
            hidden: 16,
            dropout: 0.5,
            localization: None,
        },
        ..TrainConfig::default()
    }
}

#[test]
#[ignore = "needs ../shared/weights and ../shared/fixtures/efficientnet_lite0"]
fn the_cat_photo_is_class_285_from_the_weights_file_through_the_imagenet_top() {
    // The photo (224 x 224 RGB) written as a PNG, so that it goes through decoding and the
    // crate's preprocessing like any user's image.
    let io = common::load_safetensors(&shared(CAT));
    let pixels = io["image_uint8"].get(0).unwrap();
    let (h, w, _) = pixels.dims3().unwrap();
    let raw: Vec<u8> = pixels.flatten_all().unwrap().to_vec1::<u8>().unwrap();
    let photo =
        image::DynamicImage::ImageRgb8(image::RgbImage::from_raw(w as u32, h as u32, raw).unwrap());
    let config = BackboneConfig::from(EfficientNetLiteConfig::lite0());
    let clf = WeightsSource::file(shared(WEIGHTS))
        .load_imagenet_classifier(
            config,
            &Device::Cpu,
            &HubOptions::from_env(),
            &KerasCache::from_env(),
        )
        .unwrap();
    assert!(clf.uses_fast_path());
    assert_eq!(clf.classes(), 1000);
    for (what, clf) in [
        ("fast path", clf.clone()),
        ("candle", clf.without_fast_path()),
    ] {
        let top = clf.top_k(&photo, &Preprocess::default(), 5).unwrap();
        assert_eq!(
            top[0].0, 285,
            "{what}: top-5 {top:?}, expected 285 Egyptian cat first"
        );
        // timm gives 0.7936 on these pixels (../shared/weights/README.md).
        assert!((top[0].1 - 0.7936).abs() < 2e-3, "{what}: {top:?}");
    }
}

#[test]
#[ignore = "needs ../shared/weights"]
fn imagenet_lite0_weights_build_a_fracture_classifier_with_a_fresh_head() {
    let clf = FractureClassifier::builder()
        .backbone(EfficientNetLiteConfig::lite0())
        .weights(WeightsSource::file(shared(WEIGHTS)))
        .device(fracture::device::DeviceRequest::Cpu)
        .build()
        .unwrap();
    assert_eq!(clf.backbone_config().describe(), "EfficientNet-Lite0");
    assert!(clf.uses_fast_path());
    let image = image::DynamicImage::ImageLuma8(image::GrayImage::from_fn(300, 260, |x, y| {
        image::Luma([((x * 7 + y * 3) % 256) as u8])
    }));
    let fast = clf.classify_image(&image).unwrap().fracture_probability;
    let mut slow = copy_of(&clf);
    slow.set_fast_path(false).unwrap();
    let candle = slow.classify_image(&image).unwrap().fracture_probability;
    assert!(fast.is_finite() && (0.0..=1.0).contains(&fast), "{fast}");
    assert!(
        (fast - candle).abs() < 1e-4,
        "fast {fast} vs candle {candle}"
    );
}

#[test]
fn imagenet_names_each_presets_own_weights() {
    let lite0 = BackboneConfig::from(EfficientNetLiteConfig::lite0());
    assert_eq!(
        WeightsSource::imagenet_for(&lite0).unwrap(),
        WeightsSource::hub("timm/tf_efficientnet_lite0.in1k")
    );
    let lite3 = BackboneConfig::from(EfficientNetLiteConfig::lite3());
    assert_eq!(
        WeightsSource::imagenet_for(&lite3).unwrap(),
        WeightsSource::hub("timm/tf_efficientnet_lite3.in1k")
    );
    assert!(WeightsSource::imagenet_for(&small_lite().into()).is_err());
    let r50 = BackboneConfig::from(ResNetV2Config::resnet50v2());
    assert_eq!(
        WeightsSource::imagenet_for(&r50).unwrap(),
        "imagenet:resnet50v2".parse().unwrap()
    );
}

#[test]
fn a_resnet_file_given_to_an_efficientnet_is_refused_by_name() {
    let err = FractureClassifier::builder()
        .backbone(small_lite())
        .weights(WeightsSource::file(common::tiny_fixture(
            "model.weights.h5",
        )))
        .device(fracture::device::DeviceRequest::Cpu)
        .build()
        .unwrap_err()
        .to_string();
    assert!(err.contains("conv_stem.weight"), "{err}");
}

#[test]
fn an_efficientnet_classifier_trains_frozen_then_fine_tunes_under_its_head_and_round_trips() {
    let data = tempfile::tempdir().unwrap();
    let split = synthetic_split(data.path());
    let mut clf = lite_classifier(5);
    clf.train(&split, quick(BackboneTraining::Frozen)).unwrap();
    let image = &split.test.samples[0].path;
    let before = clf.classify_path(image).unwrap().fracture_probability;

    // Phase two: the last two stages and the head train, starting from the trained head.
    let mut config = quick(BackboneTraining::LastStages {
        stages: 2,
        learning_rate: 1e-4,
    });
    config.keep_head = true;
    let mut tuned = copy_of(&clf);
    let history = tuned.train(&split, config.clone()).unwrap();
    assert_eq!(history.epochs.len(), 1);
    assert!(history.epochs[0].train_loss.is_finite());
    let after = tuned.classify_path(image).unwrap().fracture_probability;
    assert!(
        after.is_finite() && (after - before).abs() > 0.0,
        "{before} -> {after}"
    );
    // A head of another shape cannot be kept.
    let mut other = config.clone();
    other.head.hidden = 8;
    let err = copy_of(&clf).train(&split, other).unwrap_err().to_string();
    assert!(err.contains("keep_head"), "{err}");

    // The bundle stores the backbone's shape and restores the same predictions, on the fast
    // path and through candle's ops.
    let dir = tempfile::tempdir().unwrap();
    tuned.save(dir.path().join("bundle")).unwrap();
    let mut loaded = FractureClassifier::load(dir.path().join("bundle"), &Device::Cpu).unwrap();
    assert_eq!(
        loaded.backbone_config(),
        &BackboneConfig::from(small_lite())
    );
    assert!(loaded.uses_fast_path());
    let fast = loaded.classify_path(image).unwrap().fracture_probability;
    assert!((fast - after).abs() < 1e-6, "{fast} vs {after}");
    loaded.set_fast_path(false).unwrap();
    let candle = loaded.classify_path(image).unwrap().fracture_probability;
    assert!((candle - after).abs() < 1e-4, "{candle} vs {after}");
}

#[test]
fn keep_head_starts_the_second_phase_from_the_trained_head() {
    let data = tempfile::tempdir().unwrap();
    let split = synthetic_split(data.path());
    let mut clf = lite_classifier(7);
    // Phase one moves the head well away from its initialization.
    let mut first = quick(BackboneTraining::Frozen);
    first.learning_rate = 1e-2;
    first.epochs = 3;
    clf.train(&split, first).unwrap();
    // One epoch at a vanishing learning rate: with the head kept, the head's weights stay
    // those phase one trained; with a fresh head they are a new draw.
    let mut config = quick(BackboneTraining::Frozen);
    config.learning_rate = 1e-12;
    config.keep_head = true;
    // Another seed than phase one's, so that a fresh head could not match by chance.
    config.seed = 1234;
    let trained = head_weights(&clf);
    let mut kept = copy_of(&clf);
    kept.train(&split, config.clone()).unwrap();
    config.keep_head = false;
    let mut fresh = copy_of(&clf);
    fresh.train(&split, config).unwrap();
    let (kept, fresh) = (head_weights(&kept), head_weights(&fresh));
    let largest = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, |m, d| {
                if d.is_nan() || m.is_nan() {
                    f32::NAN
                } else {
                    m.max(d)
                }
            })
    };
    assert_eq!(trained.len(), kept.len());
    let kept_change = largest(&trained, &kept);
    let fresh_change = largest(&trained, &fresh);
    assert!(kept_change < 1e-6, "kept head moved by {kept_change}");
    assert!(
        fresh_change > 1e-2,
        "fresh head differs by only {fresh_change}"
    );
}

/// The head's first dense kernel, as saved in the classifier's bundle.
fn head_weights(clf: &FractureClassifier) -> Vec<f32> {
    let dir = tempfile::tempdir().unwrap();
    let bundle = clf.save(dir.path().join("b")).unwrap();
    let tensors =
        fracture::weights::read_tensors(bundle.join("model.safetensors"), &Device::Cpu).unwrap();
    tensors
        .get("head.dense.weight")
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

#[test]
fn a_resnet_bundle_without_an_architecture_tag_still_opens() {
    // Bundles written before the backbone choice hold a bare ResNetV2 configuration.
    let clf = common::tiny_classifier();
    let dir = tempfile::tempdir().unwrap();
    let bundle = clf.save(dir.path().join("b")).unwrap();
    let config_file = bundle.join("bundle.json");
    let text = std::fs::read_to_string(&config_file).unwrap();
    let mut json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let backbone = json["backbone"].as_object_mut().unwrap();
    assert_eq!(backbone.remove("architecture").unwrap(), "resnet_v2");
    std::fs::write(&config_file, serde_json::to_string(&json).unwrap()).unwrap();
    let loaded = FractureClassifier::load(&bundle, &Device::Cpu).unwrap();
    assert_eq!(
        loaded.backbone_config(),
        &BackboneConfig::from(ResNetV2Config::custom(vec![2, 2], vec![4, 8]))
    );
}
