//! Temperature scaling: fitted on validation data, it lowers the calibration error of an
//! over-confident model without moving its ROC AUC or its decisions, and it survives the
//! bundle.

use crate::common;

use candle_core::Device;
use fracture::metrics::{
    calibrated_probability, expected_calibration_error, fit_temperature, roc_auc, Metric, ECE_BINS,
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

#[test]
fn an_overconfident_classifier_is_calibrated_on_validation_and_keeps_its_temperature_in_the_bundle()
{
    let data = tempfile::tempdir().unwrap();
    let split = common::synthetic_split(data.path(), 60);
    let mut clf = common::tiny_classifier();
    clf.train(&split, common::quick_training(3)).unwrap();
    let fitted_in_training = clf.temperature();
    assert!(fitted_in_training > 0.0 && fitted_in_training != 1.0);

    // Make it over-confident on purpose: logits eight times too large.
    clf.set_temperature(fitted_in_training / 8.0).unwrap();
    let overconfident_val = clf.evaluate(&split.val).unwrap();
    let overconfident = clf.evaluate(&split.test).unwrap();

    let fit = clf.calibrate(&split.val).unwrap().value().unwrap();
    assert_eq!(clf.temperature(), fit.temperature);
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
    assert_eq!(loaded.temperature().to_bits(), clf.temperature().to_bits());
    let image = &split.test.samples[0].path;
    assert_eq!(
        loaded.classify_path(image).unwrap(),
        clf.classify_path(image).unwrap()
    );
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
        m.as_object_mut().unwrap().remove("temperature");
        m["format_version"] = 2.into();
    });
    let loaded = FractureClassifier::load(bundle.path(), &Device::Cpu).unwrap();
    assert_eq!(loaded.temperature(), 1.0);
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
