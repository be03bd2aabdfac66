//! A classifier whose weights went bad after loading (a NaN head bias: every logit NaN) must
//! refuse to answer, naming the image, on every path: both backbones, the fast path and
//! candle's, classify (one file, a batch, a folder), evaluate, explain and localization. The
//! weights cannot come from a file (reading refuses them), so they are put in here, past the
//! check.

use super::FractureClassifier;
use crate::dataset::annotations::Annotations;
use crate::dataset::synthetic::SyntheticConfig;
use crate::dataset::{FracAtlas, Split, SplitConfig};
use crate::device::DeviceRequest;
use crate::error::Error;
use crate::explain::{CamConfig, CamMethod};
use crate::metrics::LocalizationConfig;
use crate::model::{BackboneConfig, EfficientNetLiteConfig, ResNetV2Config};
use crate::WeightsSource;
use candle_core::Tensor;
use std::path::Path;

fn small_lite() -> EfficientNetLiteConfig {
    EfficientNetLiteConfig {
        width_multiplier: 0.5,
        stages: vec![
            "ds_r1_k3_s1_e1_c16".into(),
            "ir_r1_k3_s2_e6_c16".into(),
            "ir_r1_k5_s2_e3_c24".into(),
        ],
        stem_channels: 16,
        head_channels: 40,
        ..EfficientNetLiteConfig::lite0()
    }
}

/// A tiny classifier on `backbone` whose head bias is `bias` (NaN: every logit is NaN).
fn classifier(backbone: BackboneConfig, bias: f32, fast: bool) -> FractureClassifier {
    let clf = FractureClassifier::builder()
        .backbone(backbone)
        .weights(WeightsSource::Random { seed: 1 })
        .device(DeviceRequest::Cpu)
        .image_size(32, 32)
        .build()
        .unwrap();
    let mut tensors = clf.tensors.clone();
    let device = clf.device.clone();
    tensors.insert(
        "head.logit.bias".into(),
        Tensor::new(&[bias], &device).unwrap(),
    );
    let mut bad = FractureClassifier::from_tensors(
        clf.backbone.clone(),
        clf.head.clone(),
        tensors,
        clf.preprocess,
        clf.threshold,
        &device,
    )
    .unwrap();
    bad.set_fast_path(fast).unwrap();
    assert_eq!(bad.uses_fast_path(), fast);
    bad
}

fn data(root: &Path) -> Split {
    SyntheticConfig {
        n_fractured: 4,
        n_not_fractured: 4,
        min_size: 40,
        max_size: 48,
        seed: 7,
        ..SyntheticConfig::default()
    }
    .generate_to(root)
    .unwrap();
    let split = SplitConfig {
        train: 0.5,
        val: 0.25,
        test: 0.25,
        ..SplitConfig::default()
    };
    FracAtlas::open(root).unwrap().split(&split).unwrap()
}

/// The error is a [`Error::NonFinite`] for `image` (its path, or its position).
fn assert_names(what: &str, result: Result<impl std::fmt::Debug, Error>, image: &str) {
    match result {
        Err(error @ Error::NonFinite { .. }) => {
            let message = error.to_string();
            assert!(
                message.starts_with(&format!("{image}: the ")),
                "{what}: {message}"
            );
            assert!(message.contains("NaN"), "{what}: {message}");
        }
        other => panic!("{what}: expected a NonFinite error naming {image}, got {other:?}"),
    }
}

fn backbones() -> [(&'static str, BackboneConfig); 2] {
    [
        (
            "ResNetV2",
            ResNetV2Config::custom(vec![2, 2], vec![4, 8]).into(),
        ),
        ("EfficientNet-Lite", small_lite().into()),
    ]
}

#[test]
fn a_nan_logit_is_an_error_naming_the_image_on_every_path() {
    let root = tempfile::tempdir().unwrap();
    let split = data(root.path());
    let annotations = Annotations::open_fracatlas(root.path()).unwrap();
    let first = split.test.samples[0].path.clone();
    let first_name = first.display().to_string();
    let image = crate::dataset::decode::decode_file(&first).unwrap();
    let cam = CamConfig::new(CamMethod::GradCam);
    for (name, backbone) in backbones() {
        for fast in [true, false] {
            let what = |call: &str| format!("{name}, fast path {fast}: {call}");
            let mut clf = classifier(backbone.clone(), f32::NAN, fast);
            assert_names(
                &what("classify_path"),
                clf.classify_path(&first),
                &first_name,
            );
            let batch = [image.clone(), image.clone()];
            assert_names(
                &what("classify_batch"),
                clf.classify_batch(&batch),
                "image 0 of the batch",
            );
            let folder = first.parent().unwrap();
            let mut files: Vec<_> = std::fs::read_dir(folder)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            files.sort();
            let first_in_folder = files[0].display().to_string();
            assert_names(
                &what("classify_dir"),
                clf.classify_dir(folder),
                &first_in_folder,
            );
            let evaluated = clf.evaluate(&split.test).map(|_| ());
            assert_names(&what("evaluate"), evaluated, &first_name);
            assert_names(
                &what("explain_path"),
                clf.explain_path(&first, cam),
                &first_name,
            );
            assert_names(
                &what("explain_images"),
                clf.explain_images(&batch, cam),
                "image 0 of the batch",
            );
            let fractured = split
                .test
                .samples
                .iter()
                .find(|s| s.label == crate::dataset::Label::Fractured)
                .unwrap();
            let localized = clf.localization(
                &split.test,
                &annotations,
                cam.method,
                &LocalizationConfig::default(),
            );
            assert_names(
                &what("localization"),
                localized.map(|_| ()),
                &fractured.path.display().to_string(),
            );
        }
    }
}

#[test]
fn the_same_classifiers_answer_with_a_finite_bias() {
    let root = tempfile::tempdir().unwrap();
    let split = data(root.path());
    let first = &split.test.samples[0].path;
    for (name, backbone) in backbones() {
        for fast in [true, false] {
            let clf = classifier(backbone.clone(), 0.25, fast);
            let p = clf.classify_path(first).unwrap().fracture_probability;
            assert!((0.0..=1.0).contains(&p), "{name}, fast {fast}: {p}");
            assert!(clf.explain_path(first, CamConfig::default()).is_ok());
        }
    }
}

/// Scoring an archive with such a model finishes the shard: every image's row says
/// `non-finite` (no probability, no decision) instead of one image stopping the shard for good
/// (a requeue would hit the same image again).
#[test]
fn a_nan_logit_is_a_row_error_when_scoring_an_archive() {
    let root = tempfile::tempdir().unwrap();
    let split = data(root.path());
    let out = tempfile::tempdir().unwrap();
    let clf = classifier(backbones()[0].1.clone(), f32::NAN, true);
    // The folder of the class folders: images only.
    let images_dir = split.test.samples[0]
        .path
        .parent()
        .unwrap()
        .parent()
        .unwrap();
    let report = clf
        .score_shard(
            images_dir,
            out.path(),
            &crate::score::ScoreOptions::default(),
        )
        .unwrap();
    let images = split.parts().iter().map(|p| p.samples.len()).sum::<usize>();
    assert_eq!(report.errors, images, "{report:?}");
    let summary = crate::score::merge(out.path()).unwrap();
    assert_eq!(summary.scored, 0);
    assert_eq!(summary.fractured, 0);
    assert_eq!(summary.errors_by_kind.get("non-finite"), Some(&images));
    let csv = std::fs::read_to_string(out.path().join("scores.csv")).unwrap();
    assert!(
        csv.lines()
            .skip(1)
            .all(|row| row.contains("non-finite: the fracture logit is NaN")),
        "{csv}"
    );
}
