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

/// The model card names how the shipped model was trained as its bundle records it: the
/// cached views (which replace the loader's augmentation) and the box supervision.
#[test]
#[ignore = "needs ../shared/data/fracatlas"]
fn the_model_card_names_the_cached_views_and_the_box_supervision() {
    use fracture::dataset::{Part, PartName};
    use fracture::report::Report;
    let mut clf = shipped();
    let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/fracatlas");
    let split = clf.split().unwrap().clone();
    // Eight validation images, found in the data folder as the bundle's split names them.
    let mut samples = split.val.samples[..8].to_vec();
    for s in &mut samples {
        let name = s.path.file_name().unwrap().to_owned();
        let folder = if s.label.as_f32() == 1.0 {
            "Fractured"
        } else {
            "Non_fractured"
        };
        s.path = data.join("images").join(folder).join(name);
    }
    let part = Part {
        name: PartName::Val,
        samples,
    };
    let evaluation = clf.evaluate(&part).unwrap();
    let out = tempfile::tempdir().unwrap();
    Report::new(&clf, &evaluation).write(out.path()).unwrap();
    let page = std::fs::read_to_string(out.path().join("report.html")).unwrap();
    for needle in [
        "frozen stages cached, views original, augmented:1, augmented:2",
        "box supervision (weight 1, positive cells x10, boxes grown 0.1)",
    ] {
        assert!(page.contains(needle), "the card lacks {needle:?}");
    }
    assert!(!page.contains("augmentation on"));
}
