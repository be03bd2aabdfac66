//! The model shipped in the repository (issue 24, item 6): it loads from `models/` with its
//! records, serves its own localization map, and classifies and explains a real radiograph.

use fracture::candle_core::Device;
use fracture::classifier::ThresholdSource;
use fracture::explain::{CamConfig, CamMethod};
use fracture::{FractureClassifier, SHIPPED_MODEL};
use std::path::Path;

fn shipped() -> FractureClassifier {
    FractureClassifier::load(SHIPPED_MODEL, &Device::Cpu).unwrap()
}

#[test]
fn the_shipped_model_loads_with_what_it_was_trained_and_measured_on() {
    let clf = shipped();
    assert_eq!(
        (clf.preprocess().height, clf.preprocess().width),
        (384, 384)
    );
    assert!(clf.backbone_config().as_efficientnet_lite().is_some());
    assert_eq!(clf.default_explanation(), CamMethod::ModelMap);
    assert!(matches!(
        clf.threshold_source(),
        Some(ThresholdSource::Validation { .. })
    ));
    let split = clf.split().expect("the shipped model records its split");
    assert_eq!(
        (split.train.len(), split.val.len(), split.test.len()),
        (2858, 409, 816)
    );
    let config = clf.train_config().expect("and its training configuration");
    assert!(config.box_supervision.is_some() && config.stage_cache.is_some());
    // The model card and the report of the test part, with the robustness table, are kept
    // beside the weights.
    let report = Path::new(SHIPPED_MODEL).join("report").join("report.html");
    let page = std::fs::read_to_string(&report).unwrap();
    for needle in [
        "Robustness",
        "JPEG",
        "12-bit DICOM",
        "the model&#39;s localization map",
    ] {
        assert!(
            page.contains(needle),
            "{} lacks {needle:?}",
            report.display()
        );
    }
}

#[test]
#[ignore = "needs ../shared/data/fracatlas"]
fn the_shipped_model_classifies_and_explains_a_real_radiograph() {
    let image = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data/fracatlas/images/Fractured/IMG0000453.jpg");
    let clf = shipped();
    let prediction = clf.classify_path(&image).unwrap();
    assert!(prediction.fracture_probability.is_finite());
    let explained = clf
        .explain_path(&image, CamConfig::new(clf.default_explanation()))
        .unwrap();
    // The explanation is the model's own answer, with its map over the whole picture.
    assert_eq!(explained.prediction, prediction);
    let map = explained.map_at_image_size().unwrap();
    assert_eq!(
        (map.width, map.height),
        (explained.width as usize, explained.height as usize)
    );
    // Probabilities per cell, not scaled to a peak of 1, and not constant.
    assert!(map
        .data
        .iter()
        .all(|v| v.is_finite() && (0.0..=1.0).contains(v)));
    let (low, high) = map
        .data
        .iter()
        .fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
    assert!(high > low, "a constant map {low}");
}
