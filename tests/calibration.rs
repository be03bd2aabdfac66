//! Calibration: temperature and Platt scaling fitted on validation data lower the calibration
//! error without moving the ROC AUC or the decisions; the calibration and where it came from
//! survive the bundle; the test part and too small a part are refused unless forced; ranking
//! metrics come from logits.

use crate::common;

use candle_core::Device;
use fracture::classifier::{
    Calibration, CalibrationConfig, CalibrationMethod, CalibrationSource, ThresholdSource,
};
use fracture::metrics::{
    calibrated_probability, calibration_intercept, calibration_slope, choose_threshold,
    expected_calibration_error, fit_platt, fit_temperature, roc_auc, sigmoid, BinaryMetrics,
    BootstrapConfig, CalibrationSummary, LogitMap, Metric, ThresholdRule, ECE_BINS,
};
use fracture::FractureClassifier;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Cases whose true log-odds are known: labels drawn from `sigmoid(true)`, and a model that
/// reports `overconfidence × true` as its logit.
fn overconfident_cases(n: usize, overconfidence: f64, seed: u64) -> (Vec<bool>, Vec<f64>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            // Box-Muller: a standard normal, times 1.5.
            let (u, v): (f64, f64) = (rng.random::<f64>().max(1e-300), rng.random());
            let true_log_odds =
                1.5 * (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos();
            let p = 1.0 / (1.0 + (-true_log_odds).exp());
            (rng.random::<f64>() < p, overconfidence * true_log_odds)
        })
        .unzip()
}

fn probabilities(logits: &[f64], temperature: f64) -> Vec<f64> {
    logits
        .iter()
        .map(|&z| calibrated_probability(z, temperature))
        .collect()
}

fn auc_bits(labels: &[bool], scores: &[f64]) -> u64 {
    match roc_auc(labels, scores).unwrap() {
        Metric::Defined(auc) => auc.to_bits(),
        Metric::Undefined(why) => panic!("AUC undefined: {why}"),
    }
}

#[test]
fn temperature_scaling_lowers_the_ece_of_an_overconfident_model_and_keeps_its_auc() {
    let (val_labels, val_logits) = overconfident_cases(3000, 4.0, 1);
    let (test_labels, test_logits) = overconfident_cases(3000, 4.0, 2);
    let fit = fit_temperature(&val_labels, &val_logits)
        .unwrap()
        .value()
        .unwrap();
    // The model's logits are 4 times the truth: the fitted temperature must undo that.
    assert!(
        (3.5..4.5).contains(&fit.temperature),
        "temperature {}",
        fit.temperature
    );
    assert!(fit.nll_after < fit.nll_before);

    let before = probabilities(&test_logits, 1.0);
    let after = probabilities(&test_logits, fit.temperature);
    let ece_before = expected_calibration_error(&test_labels, &before, ECE_BINS).unwrap();
    let ece_after = expected_calibration_error(&test_labels, &after, ECE_BINS).unwrap();
    assert!(
        ece_after < 0.5 * ece_before && ece_after < 0.03,
        "ECE {ece_before} -> {ece_after}"
    );
    assert_eq!(
        auc_bits(&test_labels, &before),
        auc_bits(&test_labels, &after),
        "temperature scaling moved the ROC AUC"
    );
}

#[test]
fn a_well_calibrated_model_keeps_a_temperature_near_one() {
    let (labels, logits) = overconfident_cases(4000, 1.0, 3);
    let fit = fit_temperature(&labels, &logits).unwrap().value().unwrap();
    assert!(
        (0.9..1.1).contains(&fit.temperature),
        "temperature {}",
        fit.temperature
    );
}

/// A calibration fit on a small part, the size checks lowered (not forced).
fn small_part_allowed(method: CalibrationMethod) -> CalibrationConfig {
    CalibrationConfig {
        method,
        min_cases: 1,
        min_per_class: 1,
        force: false,
    }
}

#[test]
fn an_overconfident_classifier_is_calibrated_on_validation_and_keeps_its_calibration_in_the_bundle()
{
    let data = tempfile::tempdir().unwrap();
    let split = common::synthetic_split(data.path(), 60);
    let mut clf = common::tiny_classifier();
    clf.train(&split, common::quick_training(3)).unwrap();
    // The validation part (a few dozen images) is below the minimum: training declines.
    match &clf.calibration().source {
        CalibrationSource::NotFitted { reason: Some(why) } => {
            assert!(why.contains("fewer than the 100 images"), "{why}")
        }
        other => panic!("training calibrated a small validation part: {other:?}"),
    }
    assert_eq!(clf.temperature(), 1.0);

    // Make it over-confident on purpose: logits eight times too large.
    clf.set_temperature(0.125).unwrap();
    assert_eq!(clf.calibration().source, CalibrationSource::Manual);
    let overconfident_val = clf.evaluate(&split.val).unwrap();
    let overconfident = clf.evaluate(&split.test).unwrap();

    let fit = clf
        .calibrate_with(
            &split.val,
            small_part_allowed(CalibrationMethod::Temperature),
        )
        .unwrap()
        .value()
        .unwrap();
    assert_eq!(Some(clf.temperature()), fit.temperature());
    match &clf.calibration().source {
        CalibrationSource::Fitted {
            part,
            cases,
            forced,
            tta,
            ..
        } => {
            assert_eq!(
                (part.as_str(), *cases, *forced),
                ("val", split.val.len(), false)
            );
            assert_eq!(tta, &None);
        }
        other => panic!("not recorded as fitted: {other:?}"),
    }
    let calibrated_val = clf.evaluate(&split.val).unwrap();
    let calibrated = clf.evaluate(&split.test).unwrap();
    for (what, over, fixed) in [
        ("validation", &overconfident_val, &calibrated_val),
        ("test", &overconfident, &calibrated),
    ] {
        assert!(
            fixed.calibration.after.ece < over.calibration.after.ece,
            "{what} ECE {} -> {}",
            over.calibration.after.ece,
            fixed.calibration.after.ece
        );
        let auc =
            |e: &fracture::classifier::Evaluation| e.at_threshold.roc_auc.value().map(f64::to_bits);
        assert_eq!(auc(over), auc(fixed), "{what}: the ROC AUC moved");
        assert_eq!(
            over.at_threshold.confusion, fixed.at_threshold.confusion,
            "{what}: the decisions at the threshold changed"
        );
    }

    let bundle = tempfile::tempdir().unwrap();
    clf.save(bundle.path()).unwrap();
    let loaded = FractureClassifier::load(bundle.path(), &Device::Cpu).unwrap();
    assert_eq!(loaded.calibration(), clf.calibration());
    let image = &split.test.samples[0].path;
    assert_eq!(
        loaded.classify_path(image).unwrap(),
        clf.classify_path(image).unwrap()
    );
}

#[test]
fn platt_scaling_removes_a_logit_offset_that_a_temperature_cannot() {
    // A class-weighted loss: logits = true log-odds + 2.
    let shifted = |n, seed| {
        let (labels, logits) = overconfident_cases(n, 1.0, seed);
        (labels, logits.iter().map(|z| z + 2.0).collect::<Vec<f64>>())
    };
    let (val_labels, val_logits) = shifted(4000, 11);
    let (test_labels, test_logits) = shifted(4000, 12);
    let platt = fit_platt(&val_labels, &val_logits)
        .unwrap()
        .value()
        .unwrap();
    // The generating process: slope 1, intercept -2.
    assert!((platt.map.slope - 1.0).abs() < 0.1, "{:?}", platt.map);
    assert!((platt.map.intercept + 2.0).abs() < 0.15, "{:?}", platt.map);
    let temperature = fit_temperature(&val_labels, &val_logits)
        .unwrap()
        .value()
        .unwrap()
        .temperature;
    let by_temperature = LogitMap::temperature(temperature).unwrap();
    let mapped =
        |map: LogitMap| -> Vec<f64> { test_logits.iter().map(|&z| map.logit(z)).collect() };
    let intercept = |map| {
        calibration_intercept(&test_labels, &mapped(map))
            .unwrap()
            .value()
            .unwrap()
    };
    assert!(
        intercept(platt.map).abs() < 0.15,
        "{}",
        intercept(platt.map)
    );
    assert!(
        intercept(by_temperature) < -0.5,
        "a temperature alone removed the offset? {}",
        intercept(by_temperature)
    );
    let ece = |map| {
        let p: Vec<f64> = mapped(map).into_iter().map(sigmoid).collect();
        expected_calibration_error(&test_labels, &p, ECE_BINS).unwrap()
    };
    assert!(ece(platt.map) < ece(by_temperature));
}

#[test]
fn calibration_slope_and_intercept_match_independent_values() {
    // Logits four times the true log-odds: the calibration slope is 1/4.
    let (labels, logits) = overconfident_cases(20_000, 4.0, 21);
    let slope = calibration_slope(&labels, &logits)
        .unwrap()
        .value()
        .unwrap();
    assert!((slope - 0.25).abs() < 0.02, "slope {slope}");
    // Equal logits c: sigmoid(alpha + c) must be the fraction fractured, 1 in 4.
    let alpha = calibration_intercept(&[true, false, false, false], &[1.0; 4])
        .unwrap()
        .value()
        .unwrap();
    assert!(
        (alpha - ((1.0f64 / 3.0).ln() - 1.0)).abs() < 1e-10,
        "{alpha}"
    );
}

#[test]
fn ece_and_brier_come_with_bootstrap_intervals_that_narrow_with_more_cases() {
    let logit_of = |p: f64| (p / (1.0 - p)).ln();
    let two = CalibrationSummary::compute(
        &[true, false],
        &[logit_of(0.9), logit_of(0.1)],
        BootstrapConfig::default(),
    )
    .unwrap();
    // By hand: both off by 0.1.
    assert!((two.ece - 0.1).abs() < 1e-12 && (two.brier - 0.01).abs() < 1e-12);
    let width = |n: usize| {
        let (labels, logits) = overconfident_cases(n, 2.0, 31);
        let s = CalibrationSummary::compute(&labels, &logits, BootstrapConfig::default()).unwrap();
        let (ece, brier) = (
            s.ece_interval.value().unwrap(),
            s.brier_interval.value().unwrap(),
        );
        assert!(ece.lower <= s.ece && s.ece <= ece.upper, "{ece:?}");
        assert!(
            brier.lower <= s.brier && s.brier <= brier.upper,
            "{brier:?}"
        );
        (ece.upper - ece.lower, brier.upper - brier.lower)
    };
    let (small, large) = (width(64), width(4000));
    assert!(
        small.0 > 2.0 * large.0 && small.1 > 2.0 * large.1,
        "{small:?} {large:?}"
    );
}

#[test]
fn ranking_metrics_and_thresholds_come_from_logits_that_a_saturated_sigmoid_ties() {
    let labels = [true, false, true, false];
    let logits = [45.0, 40.0, 3.0, -2.0];
    let probabilities: Vec<f64> = logits.iter().map(|&z| sigmoid(z)).collect();
    assert_eq!(probabilities[0], probabilities[1], "no tie to test");
    // Pairs ordered right: (45, 40), (45, -2), (3, -2); wrong: (3, 40).
    let m = BinaryMetrics::compute_ranked(&labels, &probabilities, &logits, 0.5).unwrap();
    assert_eq!(m.roc_auc, Metric::Defined(0.75));
    // Youden on logits: 45 (J = 1/2, the highest on ties).
    let point = choose_threshold(&labels, &logits, ThresholdRule::Youden)
        .unwrap()
        .value()
        .unwrap();
    assert_eq!(point.threshold, 45.0);
}

#[test]
fn evaluate_takes_the_auc_from_logits_when_the_probabilities_saturate() {
    let data = tempfile::tempdir().unwrap();
    let split = common::synthetic_split(data.path(), 12);
    let mut clf = common::tiny_classifier();
    let plain = clf.evaluate(&split.test).unwrap();
    // Logits times 10^6: most probabilities become exactly 0 or 1.
    clf.set_temperature(1e-6).unwrap();
    let saturated = clf.evaluate(&split.test).unwrap();
    let distinct_logits_tied = saturated.cases.iter().enumerate().any(|(i, a)| {
        saturated.cases[i + 1..]
            .iter()
            .any(|b| a.probability == b.probability && a.logit != b.logit)
    });
    assert!(distinct_logits_tied, "the sigmoid did not saturate");
    let bits = |e: &fracture::classifier::Evaluation| {
        (
            e.at_threshold.roc_auc.value().map(f64::to_bits),
            e.at_threshold.average_precision.value().map(f64::to_bits),
            e.intervals.auc.value().map(|i| i.estimate.to_bits()),
        )
    };
    assert_eq!(bits(&plain), bits(&saturated));
}

#[test]
fn calibrating_on_the_test_part_or_a_small_part_is_refused_unless_forced() {
    let data = tempfile::tempdir().unwrap();
    let split = common::synthetic_split(data.path(), 12);
    let mut clf = common::tiny_classifier();
    let message = clf.calibrate(&split.test).unwrap_err().to_string();
    assert!(message.contains("on the test part is refused"), "{message}");
    let message = clf.calibrate(&split.val).unwrap_err().to_string();
    assert!(message.contains("fewer than the 100 images"), "{message}");
    assert_eq!(clf.calibration(), &Calibration::none());

    let forced = CalibrationConfig {
        force: true,
        ..CalibrationConfig::default()
    };
    clf.calibrate_with(&split.test, forced).unwrap();
    match &clf.calibration().source {
        CalibrationSource::Fitted { part, forced, .. } => {
            assert_eq!((part.as_str(), *forced), ("test", true))
        }
        other => panic!("{other:?}"),
    }
    let evaluation = clf.evaluate(&split.test).unwrap();
    let out = tempfile::tempdir().unwrap();
    let files = fracture::report::Report::new(&clf, &evaluation)
        .write(out.path())
        .unwrap();
    let html = std::fs::read_to_string(&files.html).unwrap();
    assert!(
        html.contains("fitted on the test part"),
        "no source in the report"
    );
    assert!(html.contains("<strong>forced</strong>"));
    assert!(html.contains("that is the part evaluated here"));
    assert!(!html.contains("temperature fitted there"));
}

#[test]
fn platt_calibration_survives_the_bundle_and_older_bundles_load_honestly() {
    let data = tempfile::tempdir().unwrap();
    let split = common::synthetic_split(data.path(), 12);
    let mut clf = common::tiny_classifier();
    clf.calibrate_with(&split.val, small_part_allowed(CalibrationMethod::Platt))
        .unwrap()
        .value()
        .unwrap();
    assert_eq!(clf.calibration().method, CalibrationMethod::Platt);
    let bundle = tempfile::tempdir().unwrap();
    clf.save(bundle.path()).unwrap();
    let loaded = FractureClassifier::load(bundle.path(), &Device::Cpu).unwrap();
    assert_eq!(loaded.calibration(), clf.calibration());
    let image = &split.test.samples[0].path;
    assert_eq!(
        loaded.classify_path(image).unwrap(),
        clf.classify_path(image).unwrap()
    );

    // Layout 3: a temperature, no record of where it came from.
    clf.set_temperature(1.25).unwrap();
    clf.save(bundle.path()).unwrap();
    rewrite_manifest(bundle.path(), |m| {
        m.as_object_mut().unwrap().remove("calibration");
        m["format_version"] = 3.into();
    });
    let old = FractureClassifier::load(bundle.path(), &Device::Cpu).unwrap();
    assert_eq!(old.calibration().source, CalibrationSource::Unknown);
    assert_eq!(old.temperature(), 1.25);
}

#[test]
fn a_threshold_chosen_for_old_weights_does_not_survive_training_when_youden_is_undefined() {
    let data = tempfile::tempdir().unwrap();
    let mut split = common::synthetic_split(data.path(), 24);
    // A validation part with one class: Youden's J and the calibration are undefined there.
    split
        .val
        .samples
        .retain(|s| s.label == fracture::dataset::Label::NotFractured);
    // A classifier whose threshold was chosen on validation data (for other weights).
    let bundle = tempfile::tempdir().unwrap();
    common::tiny_classifier().save(bundle.path()).unwrap();
    rewrite_manifest(bundle.path(), |m| {
        m["threshold"] = 0.37.into();
        m["threshold_source"] = "validation".into();
    });
    let mut clf = FractureClassifier::load(bundle.path(), &Device::Cpu).unwrap();
    // A bundle written before the rule was recorded: chosen on validation, rule unknown.
    assert_eq!(
        clf.threshold_source(),
        Some(ThresholdSource::Validation { rule: None })
    );
    clf.train(&split, common::quick_training(1)).unwrap();
    assert_eq!(
        (clf.threshold(), clf.threshold_source()),
        (0.5, Some(ThresholdSource::Default))
    );
    assert!(matches!(
        clf.calibration().source,
        CalibrationSource::NotFitted { reason: Some(_) }
    ));
}

fn rewrite_manifest(dir: &std::path::Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("bundle.json");
    let mut manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut manifest);
    std::fs::write(&path, serde_json::to_string_pretty(&manifest).unwrap()).unwrap();
}

#[test]
fn a_bundle_without_a_temperature_loads_uncalibrated() {
    let bundle = tempfile::tempdir().unwrap();
    let mut clf = common::tiny_classifier();
    clf.set_temperature(2.5).unwrap();
    clf.save(bundle.path()).unwrap();
    rewrite_manifest(bundle.path(), |m| {
        let m = m.as_object_mut().unwrap();
        m.remove("temperature");
        m.remove("calibration");
        m.insert("format_version".into(), 2.into());
    });
    let loaded = FractureClassifier::load(bundle.path(), &Device::Cpu).unwrap();
    assert_eq!(loaded.temperature(), 1.0);
    assert_eq!(loaded.calibration(), &Calibration::none());
}

#[test]
fn a_bundle_with_a_bad_temperature_is_an_error_naming_the_manifest() {
    for bad in [0.0, -1.0] {
        let bundle = tempfile::tempdir().unwrap();
        common::tiny_classifier().save(bundle.path()).unwrap();
        rewrite_manifest(bundle.path(), |m| m["temperature"] = bad.into());
        let message = FractureClassifier::load(bundle.path(), &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("bundle.json") && message.contains("temperature"),
            "{message}"
        );
    }
}
