//! The crate as a user meets it: synthetic radiographs → train (tiny) → evaluate → save →
//! load → classify, and the failure modes of bundles and folders.

use candle_core::Device;
use fracture::dataset::synthetic::SyntheticConfig;
use fracture::dataset::Split;
use fracture::FractureClassifier;
use std::path::Path;

mod common;

use common::{quick_training, tiny_classifier};

fn synthetic_split(root: &Path) -> Split {
    common::synthetic_split(root, 24)
}

#[test]
fn train_save_load_classify_gives_identical_probabilities() {
    let data_dir = tempfile::tempdir().unwrap();
    let split = synthetic_split(data_dir.path());
    let mut clf = tiny_classifier();
    let history = clf.train(&split, quick_training(2)).unwrap();
    assert_eq!(history.epochs.len(), 2);
    let evaluation = clf.evaluate(&split.test).unwrap();
    assert!(evaluation.to_string().contains("sensitivity"));

    let images: Vec<_> = split.test.samples.iter().map(|s| s.path.clone()).collect();
    let before: Vec<f64> = images
        .iter()
        .map(|p| clf.classify_path(p).unwrap().fracture_probability)
        .collect();

    let bundle = tempfile::tempdir().unwrap();
    clf.save(bundle.path()).unwrap();
    let loaded = FractureClassifier::load(bundle.path(), &Device::Cpu).unwrap();
    let after: Vec<f64> = images
        .iter()
        .map(|p| loaded.classify_path(p).unwrap().fracture_probability)
        .collect();
    assert_eq!(before, after, "probabilities changed across save/load");
    assert_eq!(loaded.threshold(), clf.threshold());
    assert_eq!(loaded.preprocess(), clf.preprocess());
    assert_eq!(loaded.history().map(|h| h.epochs.len()), Some(2));
    let saved_split = loaded.split().expect("split saved in the bundle");
    assert_eq!(saved_split.test.samples.len(), split.test.samples.len());
    for name in [
        "bundle.json",
        "model.safetensors",
        "split.csv",
        "history.json",
        "metrics.json",
    ] {
        assert!(bundle.path().join(name).is_file(), "{name} missing");
    }
}

fn saved_bundle() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    tiny_classifier().save(dir.path()).unwrap();
    dir
}

fn load_error(dir: &Path) -> String {
    FractureClassifier::load(dir, &Device::Cpu)
        .unwrap_err()
        .to_string()
}

#[test]
fn bundle_without_weights_file_is_an_error_naming_it() {
    let dir = saved_bundle();
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let msg = load_error(dir.path());
    assert!(msg.contains("model.safetensors"), "{msg}");
}

#[test]
fn bundle_with_truncated_weights_is_an_error_naming_it() {
    let dir = saved_bundle();
    let path = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let msg = load_error(dir.path());
    assert!(msg.contains("model.safetensors"), "{msg}");
}

#[test]
fn bundle_with_corrupt_manifest_is_an_error_naming_it() {
    let dir = saved_bundle();
    std::fs::write(dir.path().join("bundle.json"), "{ not json").unwrap();
    let msg = load_error(dir.path());
    assert!(msg.contains("bundle.json"), "{msg}");
}

#[test]
fn bundle_without_manifest_is_an_error_naming_it() {
    let dir = saved_bundle();
    std::fs::remove_file(dir.path().join("bundle.json")).unwrap();
    let msg = load_error(dir.path());
    assert!(msg.contains("bundle.json"), "{msg}");
}

#[test]
fn bundle_of_a_newer_layout_is_refused() {
    let dir = saved_bundle();
    let path = dir.path().join("bundle.json");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace(
            &format!(
                "\"format_version\": {}",
                fracture::classifier::BUNDLE_FORMAT_VERSION
            ),
            "\"format_version\": 99",
        ),
    )
    .unwrap();
    let msg = load_error(dir.path());
    assert!(
        msg.contains("bundle.json") && msg.contains("newer"),
        "{msg}"
    );
}

#[test]
fn classify_dir_lists_bad_files_and_classifies_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let images = SyntheticConfig {
        n_fractured: 2,
        n_not_fractured: 2,
        ..SyntheticConfig::default()
    }
    .generate_to(dir.path())
    .unwrap();
    let good = &images[0].path;
    let bytes = std::fs::read(good).unwrap();
    std::fs::write(dir.path().join("corrupt.jpg"), &bytes[..40]).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not an image").unwrap();
    std::fs::write(dir.path().join("empty.png"), b"").unwrap();

    let result = tiny_classifier().classify_dir(dir.path()).unwrap();
    assert_eq!(result.predictions.len(), images.len());
    let skipped: Vec<String> = result
        .skipped
        .iter()
        .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for name in ["corrupt.jpg", "notes.txt", "empty.png", "dataset.csv"] {
        assert!(
            skipped.iter().any(|s| s == name),
            "{name} not listed in {skipped:?}"
        );
    }
    assert!(result.skipped.iter().all(|(_, reason)| !reason.is_empty()));
    for (_, p) in &result.predictions {
        assert!((0.0..=1.0).contains(&p.fracture_probability));
    }
}

#[test]
fn classify_batch_matches_one_by_one() {
    let images: Vec<_> = SyntheticConfig {
        n_fractured: 2,
        n_not_fractured: 1,
        ..SyntheticConfig::default()
    }
    .generate()
    .unwrap()
    .into_iter()
    .map(|s| image::DynamicImage::ImageLuma8(s.image))
    .collect();
    let clf = tiny_classifier();
    let batch = clf.classify_batch(&images).unwrap();
    for (image, together) in images.iter().zip(&batch) {
        let alone = clf.classify_image(image).unwrap();
        assert!((alone.fracture_probability - together.fracture_probability).abs() < 1e-6);
        assert_eq!(alone.label, together.label);
    }
}
