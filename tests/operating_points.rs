//! Operating points for clinicians: the threshold of a target specificity, the sensitivity at
//! fixed specificities with bootstrap intervals (hand-worked cases and scikit-learn's
//! `roc_curve`, `tests/fixtures/metrics/sklearn_operating_points.json`), and the rule recorded
//! as the threshold's source.

use crate::common;

use std::path::Path;

use fracture::classifier::ThresholdSource;
use fracture::metrics::{
    bootstrap_sensitivity_at_specificity, choose_threshold, sensitivity_at_specificity,
    BootstrapConfig, Metric, RocCurve, ThresholdRule, Undefined,
};
use fracture::Error;
use serde_json::Value;

/// Fractures at 0.9, 0.7, 0.3; healthy at 0.6, 0.4, 0.1.
const LABELS: [bool; 6] = [true, true, false, false, true, false];
const SCORES: [f64; 6] = [0.9, 0.7, 0.6, 0.4, 0.3, 0.1];

fn by_specificity(labels: &[bool], scores: &[f64], target: f64) -> Metric<(f64, f64, f64)> {
    choose_threshold(labels, scores, ThresholdRule::TargetSpecificity(target))
        .unwrap()
        .map(|p| (p.threshold, p.sensitivity, p.specificity))
}

#[test]
fn target_specificity_takes_the_best_sensitivity_and_on_a_tie_the_highest_threshold() {
    // Thresholds (sensitivity, specificity): 0.9 (1/3, 1), 0.7 (2/3, 1), 0.6 (2/3, 2/3),
    // 0.4 (2/3, 1/3), 0.3 (1, 1/3), 0.1 (1, 0).
    let two_thirds = 2.0 / 3.0;
    assert_eq!(
        by_specificity(&LABELS, &SCORES, 1.0),
        Metric::Defined((0.7, two_thirds, 1.0))
    );
    // 0.6 and 0.4 also reach 0.3 but find no more fractures than 0.7: the tie goes to the
    // higher threshold, the one with fewer false alarms.
    assert_eq!(
        by_specificity(&LABELS, &SCORES, 0.6),
        Metric::Defined((0.7, two_thirds, 1.0))
    );
    assert_eq!(
        by_specificity(&LABELS, &SCORES, 0.34),
        Metric::Defined((0.7, two_thirds, 1.0))
    );
    // Specificity 1/3 reaches 0.3: every fracture found at 0.3.
    assert_eq!(
        by_specificity(&LABELS, &SCORES, 0.3),
        Metric::Defined((0.3, 1.0, 1.0 / 3.0))
    );
}

#[test]
fn a_specificity_equal_to_the_target_reaches_it() {
    // Ten healthy cases: one false alarm is specificity 9/10, exactly the target 0.9.
    let healthy = [0.95, 0.5, 0.4, 0.3, 0.2, 0.15, 0.1, 0.05, 0.04, 0.03];
    let fractured = [0.9, 0.8, 0.45];
    let labels: Vec<bool> = (healthy.iter().map(|_| false))
        .chain(fractured.iter().map(|_| true))
        .collect();
    let scores: Vec<f64> = healthy.iter().chain(&fractured).copied().collect();
    assert_eq!(
        by_specificity(&labels, &scores, 0.9),
        Metric::Defined((0.8, 2.0 / 3.0, 0.9))
    );
    assert_eq!(
        sensitivity_at_specificity(&labels, &scores, 0.9).unwrap(),
        Metric::Defined(2.0 / 3.0)
    );
    // Two false alarms (0.8) allow the third fracture at 0.45.
    assert_eq!(
        by_specificity(&labels, &scores, 0.8),
        Metric::Defined((0.45, 1.0, 0.8))
    );
}

#[test]
fn no_fracture_found_at_the_target_is_sensitivity_zero_and_no_threshold() {
    // The highest score is healthy: only "nothing is fractured" keeps specificity 1.
    let (labels, scores) = ([false, true, false], [0.9, 0.5, 0.1]);
    assert_eq!(
        sensitivity_at_specificity(&labels, &scores, 1.0).unwrap(),
        Metric::Defined(0.0)
    );
    assert_eq!(
        by_specificity(&labels, &scores, 1.0),
        Metric::Undefined(Undefined::NoInformativeThreshold)
    );
    let roc = RocCurve::new(&labels, &scores).unwrap();
    assert_eq!(roc.for_specificity(1.0).unwrap().threshold, f64::INFINITY);
    // Specificity 1/2 allows the false alarm at 0.9, then the fracture at 0.5 is found.
    assert_eq!(
        sensitivity_at_specificity(&labels, &scores, 0.5).unwrap(),
        Metric::Defined(1.0)
    );
}

#[test]
fn targets_outside_zero_to_one_and_single_classes_are_refused_or_undefined() {
    for bad in [0.0, -0.1, 1.5, f64::NAN] {
        assert!(matches!(
            choose_threshold(&LABELS, &SCORES, ThresholdRule::TargetSpecificity(bad)),
            Err(Error::InvalidInput(_))
        ));
        assert!(sensitivity_at_specificity(&LABELS, &SCORES, bad).is_err());
    }
    assert_eq!(
        sensitivity_at_specificity(&[true, true], &[0.2, 0.4], 0.9).unwrap(),
        Metric::Undefined(Undefined::NoNotFractured)
    );
}

#[test]
fn sensitivity_at_specificity_and_its_threshold_match_sklearn_roc_curve() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/metrics/sklearn_operating_points.json");
    let fixture: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut checked = 0;
    let mut failures = Vec::new();
    for case in fixture["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let labels: Vec<bool> = case["y_true"]
            .as_array()
            .unwrap()
            .iter()
            .map(|y| y.as_i64() == Some(1))
            .collect();
        let scores: Vec<f64> = case["y_score"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_f64().unwrap())
            .collect();
        for (target, expected) in case["at_specificity"].as_object().unwrap() {
            let target: f64 = target.parse().unwrap();
            let sensitivity = expected["sensitivity"].as_f64().unwrap();
            let got = sensitivity_at_specificity(&labels, &scores, target).unwrap();
            if got.value().is_none_or(|g| (g - sensitivity).abs() > 1e-12) {
                failures.push(format!(
                    "{name} at {target}: {got:?}, sklearn {sensitivity}"
                ));
            }
            let chosen = by_specificity(&labels, &scores, target).value();
            let expected_threshold = expected["threshold"].as_f64().filter(|_| sensitivity > 0.0);
            if chosen.map(|c| c.0) != expected_threshold {
                failures.push(format!(
                    "{name} at {target}: threshold {chosen:?}, sklearn {expected_threshold:?}"
                ));
            }
            checked += 1;
        }
    }
    assert!(checked >= 30, "only {checked} fixture points");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn config(seed: u64) -> BootstrapConfig {
    BootstrapConfig {
        n_resamples: 300,
        confidence: 0.95,
        seed,
    }
}

/// Eighty cases, one in four fractured, overlapping scores (seeded by construction).
fn overlapping() -> (Vec<bool>, Vec<f64>) {
    let labels: Vec<bool> = (0..80).map(|i| i % 4 == 0).collect();
    let scores = (0..80)
        .map(|i| ((i * 37) % 80) as f64 / 80.0 + if i % 4 == 0 { 0.3 } else { 0.0 })
        .collect();
    (labels, scores)
}

#[test]
fn bootstrap_sensitivity_at_specificity_is_seeded_and_brackets_the_estimate() {
    let (labels, scores) = overlapping();
    let targets = [0.8, 0.9, 0.95];
    let points =
        bootstrap_sensitivity_at_specificity(&labels, &scores, targets, config(5)).unwrap();
    let mut previous = f64::INFINITY;
    for (point, target) in points.iter().zip(targets) {
        assert_eq!(point.specificity, target);
        let ci = point.sensitivity.value().unwrap();
        assert_eq!(
            Metric::Defined(ci.estimate),
            sensitivity_at_specificity(&labels, &scores, target).unwrap()
        );
        assert!(ci.lower < ci.estimate && ci.estimate <= ci.upper, "{ci:?}");
        assert_eq!(ci.resamples_used, 300);
        // A stricter specificity never allows a higher sensitivity.
        assert!(ci.estimate <= previous);
        previous = ci.estimate;
    }
    let again = bootstrap_sensitivity_at_specificity(&labels, &scores, targets, config(5)).unwrap();
    assert_eq!(points, again);
    let other = bootstrap_sensitivity_at_specificity(&labels, &scores, targets, config(6)).unwrap();
    assert_ne!(points, other);
}

#[test]
fn bootstrap_sensitivity_at_specificity_of_separated_classes_is_one_throughout() {
    let labels: Vec<bool> = (0..30).map(|i| i < 10).collect();
    let scores: Vec<f64> = (0..30).map(|i| 1.0 - i as f64 / 30.0).collect();
    let [point] =
        bootstrap_sensitivity_at_specificity(&labels, &scores, [0.95], config(1)).unwrap();
    let ci = point.sensitivity.value().unwrap();
    assert_eq!((ci.lower, ci.estimate, ci.upper), (1.0, 1.0, 1.0));
    assert_eq!(
        point.to_string(),
        "sensitivity at specificity 0.95: 1.000 (95% CI 1.000 to 1.000)"
    );
    let [single] =
        bootstrap_sensitivity_at_specificity(&[false, false], &[0.1, 0.2], [0.9], config(1))
            .unwrap();
    assert_eq!(
        single.sensitivity,
        Metric::Undefined(Undefined::NoFractured)
    );
}

#[test]
fn the_threshold_rule_is_recorded_and_old_sources_still_read() {
    let rule =
        |json: &str| serde_json::from_str::<ThresholdSource>(json).map_err(|e| e.to_string());
    assert_eq!(
        rule(r#"{"validation":{"rule":{"target_sensitivity":0.9}}}"#),
        Ok(ThresholdSource::Validation {
            rule: Some(ThresholdRule::TargetSensitivity(0.9))
        })
    );
    assert_eq!(
        rule(r#"{"validation":{"rule":"youden"}}"#),
        Ok(ThresholdSource::Validation {
            rule: Some(ThresholdRule::Youden)
        })
    );
    assert_eq!(
        rule(r#""validation""#),
        Ok(ThresholdSource::Validation { rule: None })
    );
    assert_eq!(rule(r#""manual""#), Ok(ThresholdSource::Manual));
    for bad in [
        r#""chosen""#,
        r#"{"validation":{"rule":{"target_specificity":1.5}}}"#,
        r#"{"validation":{"rule":"median"}}"#,
        r#"{"manual":{}}"#,
        "3",
    ] {
        assert!(rule(bad).is_err(), "{bad} was accepted");
    }
    let source = ThresholdSource::Validation {
        rule: Some(ThresholdRule::TargetSpecificity(0.95)),
    };
    let written = serde_json::to_string(&source).unwrap();
    assert_eq!(
        written,
        r#"{"validation":{"rule":{"target_specificity":0.95}}}"#
    );
    assert_eq!(rule(&written), Ok(source));
}

#[test]
fn training_chooses_the_threshold_by_its_configured_rule_and_the_bundle_keeps_it() {
    let data = tempfile::tempdir().unwrap();
    let split = common::synthetic_split(data.path(), 24);
    let rule = ThresholdRule::TargetSensitivity(1.0);
    let mut clf = common::tiny_classifier();
    let config = fracture::train::TrainConfig {
        threshold_rule: rule,
        ..common::quick_training(1)
    };
    clf.train(&split, config.clone()).unwrap();
    let recorded = Some(ThresholdSource::Validation { rule: Some(rule) });
    assert_eq!(clf.threshold_source(), recorded);
    // Every fracture of the validation part is called fractured at the chosen threshold.
    let (labels, probabilities) = clf.scores(&split.val).unwrap();
    assert!(labels.contains(&true) && labels.contains(&false));
    for (&fractured, &p) in labels.iter().zip(&probabilities) {
        assert!(
            !fractured || p >= clf.threshold(),
            "{p} < {}",
            clf.threshold()
        );
    }
    let bundle = tempfile::tempdir().unwrap();
    clf.save(bundle.path()).unwrap();
    let again =
        fracture::FractureClassifier::load(bundle.path(), &candle_core::Device::Cpu).unwrap();
    assert_eq!(again.threshold_source(), recorded);
    assert_eq!(again.threshold(), clf.threshold());
    assert_eq!(again.train_config().map(|c| c.threshold_rule), Some(rule));
    // A target outside (0, 1] is refused before any training.
    let bad = fracture::train::TrainConfig {
        threshold_rule: ThresholdRule::TargetSpecificity(0.0),
        ..config
    };
    let message = common::tiny_classifier()
        .train(&split, bad)
        .unwrap_err()
        .to_string();
    assert!(message.contains("threshold_rule"), "{message}");
}
