//! Test-time augmentation: off unless asked; when on, the score is the mean logit over the
//! views, and `evaluate` compares it with the image alone by a paired bootstrap.

use crate::common;

use fracture::augment::TtaConfig;
use fracture::metrics::{paired_auc_difference, roc_auc, BootstrapConfig, Metric};

/// ROC AUC by counting every (fractured, not fractured) pair: ordered right 1, tied 1/2.
fn pairwise_auc(labels: &[bool], scores: &[f64]) -> f64 {
    let (mut right, mut pairs) = (0.0, 0.0);
    for (i, &yi) in labels.iter().enumerate() {
        for (j, &yj) in labels.iter().enumerate() {
            if yi && !yj {
                pairs += 1.0;
                right += match scores[i].partial_cmp(&scores[j]) {
                    Some(std::cmp::Ordering::Greater) => 1.0,
                    Some(std::cmp::Ordering::Equal) => 0.5,
                    _ => 0.0,
                };
            }
        }
    }
    right / pairs
}

/// The logit back from a probability at temperature `t`.
fn logit(probability: f64, temperature: f64) -> f64 {
    temperature * (probability / (1.0 - probability)).ln()
}

#[test]
fn tta_is_off_by_default() {
    let clf = common::tiny_classifier();
    assert_eq!(clf.tta(), &TtaConfig::none());
    assert!(!clf.tta().is_enabled());
}

#[test]
fn flip_tta_scores_the_mean_logit_of_the_image_and_its_mirror() {
    let mut clf = common::tiny_classifier();
    clf.set_temperature(1.7).unwrap();
    // A left-right asymmetric image whose size the model input is (no resize).
    let image = image::DynamicImage::ImageLuma8(image::GrayImage::from_fn(48, 48, |x, y| {
        image::Luma([((x * 5 + y * y) % 256) as u8])
    }));
    let plain = clf.classify_image(&image).unwrap().fracture_probability;
    let mirrored = clf
        .classify_image(&image.fliph())
        .unwrap()
        .fracture_probability;
    assert_ne!(plain, mirrored, "the test image must not be symmetric");

    clf.set_tta(TtaConfig {
        horizontal_flip: true,
        rotations_deg: Vec::new(),
    })
    .unwrap();
    let with_tta = clf.classify_image(&image).unwrap().fracture_probability;
    let expected_logit = (logit(plain, 1.7) + logit(mirrored, 1.7)) / 2.0;
    let got_logit = logit(with_tta, 1.7);
    assert!(
        (got_logit - expected_logit).abs() < 1e-4,
        "TTA logit {got_logit}, mean of the views {expected_logit}"
    );
}

#[test]
fn tta_rejects_large_rotations() {
    let mut clf = common::tiny_classifier();
    let err = clf
        .set_tta(TtaConfig {
            horizontal_flip: false,
            rotations_deg: vec![5.0, f64::NAN],
        })
        .unwrap_err();
    assert!(err.to_string().contains("rotations"), "{err}");
}

#[test]
fn evaluate_with_tta_reports_the_paired_auc_difference() {
    let data = tempfile::tempdir().unwrap();
    let split = common::synthetic_split(data.path(), 24);
    let mut clf = common::tiny_classifier();
    clf.train(&split, common::quick_training(2)).unwrap();
    let without = clf.evaluate(&split.test).unwrap();
    assert!(without.tta.is_none());

    clf.set_tta(TtaConfig::standard()).unwrap();
    let with = clf.evaluate(&split.test).unwrap();
    let tta = with.tta.as_ref().expect("a TTA comparison");
    assert_eq!(tta.config, TtaConfig::standard());
    assert_eq!(tta.auc_with, with.at_threshold.roc_auc);
    // The image alone under TTA is exactly the evaluation without TTA.
    assert_eq!(tta.auc_without, without.at_threshold.roc_auc);
    // Independent expectation: the AUCs recounted pair by pair from the cases' logits.
    let labels: Vec<bool> = with.cases.iter().map(|c| c.fractured).collect();
    let with_logits: Vec<f64> = with.cases.iter().map(|c| c.logit).collect();
    let without_logits: Vec<f64> = without.cases.iter().map(|c| c.logit).collect();
    let (auc_with, auc_without) = (
        pairwise_auc(&labels, &with_logits),
        pairwise_auc(&labels, &without_logits),
    );
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-12;
    match (tta.auc_without, tta.auc_with, tta.difference) {
        (Metric::Defined(a), Metric::Defined(b), Metric::Defined(d)) => {
            assert!(close(a, auc_without) && close(b, auc_with), "{a} {b}");
            assert!(close(d.estimate, auc_with - auc_without), "{d:?}");
            assert!(d.lower <= d.estimate && d.estimate <= d.upper, "{d:?}");
            assert!(d.resamples_used > 900 && d.resamples_used <= 1000, "{d:?}");
        }
        other => panic!("undefined on a part with both classes: {other:?}"),
    }
    assert!(with.to_string().contains("test-time augmentation"));
}

#[test]
fn paired_difference_of_a_perfect_and_a_reversed_ranking_is_exactly_one() {
    // By hand: AUC 1 against AUC 0 on every resample that holds both classes.
    let labels: Vec<bool> = (0..30).map(|i| i % 3 == 0).collect();
    let perfect: Vec<f64> = labels.iter().map(|&y| if y { 1.0 } else { 0.0 }).collect();
    let reversed: Vec<f64> = perfect.iter().map(|s| 1.0 - s).collect();
    let diff = paired_auc_difference(&labels, &reversed, &perfect, BootstrapConfig::default())
        .unwrap()
        .value()
        .unwrap();
    assert_eq!((diff.estimate, diff.lower, diff.upper), (1.0, 1.0, 1.0));
}

#[test]
fn paired_difference_of_identical_scores_is_exactly_zero() {
    let labels: Vec<bool> = (0..50).map(|i| i % 3 == 0).collect();
    let scores: Vec<f64> = (0..50).map(|i| ((i * 7) % 11) as f64 / 11.0).collect();
    let diff = paired_auc_difference(&labels, &scores, &scores, BootstrapConfig::default())
        .unwrap()
        .value()
        .unwrap();
    assert_eq!((diff.estimate, diff.lower, diff.upper), (0.0, 0.0, 0.0));
}

#[test]
fn paired_difference_is_narrower_than_the_unpaired_intervals() {
    // Two nearly identical scorers: pairing cancels the case-to-case noise both share.
    let labels: Vec<bool> = (0..200).map(|i| (i * 37) % 5 < 2).collect();
    let a: Vec<f64> = (0..200)
        .map(|i| ((i * 7919) % 101) as f64 / 101.0 * 0.8 + if labels[i] { 0.2 } else { 0.0 })
        .collect();
    let b: Vec<f64> = a
        .iter()
        .enumerate()
        .map(|(i, s)| s + ((i * 13) % 7) as f64 * 1e-3)
        .collect();
    let config = BootstrapConfig::default();
    let paired = paired_auc_difference(&labels, &a, &b, config)
        .unwrap()
        .value()
        .unwrap();
    let single = fracture::metrics::bootstrap_ci(&labels, &a, 0.5, config)
        .unwrap()
        .auc
        .value()
        .unwrap();
    assert!(
        paired.upper - paired.lower < 0.5 * (single.upper - single.lower),
        "paired {paired:?}, single {single:?}"
    );
    assert!(roc_auc(&labels, &a).unwrap().is_defined());
}
