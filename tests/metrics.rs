//! The metrics module against scikit-learn (fixture cases) and against hand-worked examples.

use crate::common;

use std::path::{Path, PathBuf};

use fracture::metrics::{
    accuracy, average_precision, binary_cross_entropy, bootstrap_ci, by_subgroup, calibration_bins,
    choose_threshold, expected_calibration_error, roc_auc, BinaryMetrics, BootstrapConfig,
    ClassScores, ConfusionMatrix, Metric, PrCurve, RocCurve, ThresholdRule, Undefined,
};
use fracture::Error;
use serde_json::Value;

const TOLERANCE: f64 = 1e-9;

fn fixture_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/metrics/sklearn_binary.json")
}

fn load_cases(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let fixture: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        fixture["conventions"]["positive_label"], 1,
        "positive class must be 1"
    );
    assert_eq!(
        fixture["conventions"]["predicted_positive_if"],
        "score >= threshold"
    );
    fixture["cases"].as_array().unwrap().clone()
}

struct Case {
    name: String,
    threshold: f64,
    labels: Vec<bool>,
    scores: Vec<f64>,
    expected: Value,
}

fn parse(case: &Value) -> Case {
    Case {
        name: case["name"].as_str().unwrap().to_string(),
        threshold: case["threshold"].as_f64().unwrap(),
        labels: case["y_true"]
            .as_array()
            .unwrap()
            .iter()
            .map(|y| y.as_i64().unwrap() == 1)
            .collect(),
        scores: case["y_score"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_f64().unwrap())
            .collect(),
        expected: case["expected"].clone(),
    }
}

/// Compare a possibly-undefined metric with a fixture value (null = undefined).
fn check_metric(failures: &mut Vec<String>, case: &str, what: &str, got: Metric, want: &Value) {
    match (got, want.as_f64()) {
        (Metric::Defined(g), Some(w)) if (g - w).abs() <= TOLERANCE => {}
        (Metric::Undefined(_), None) if want.is_null() => {}
        _ => failures.push(format!("{case}: {what} = {got:?}, sklearn {want}")),
    }
}

fn check_value(failures: &mut Vec<String>, case: &str, what: &str, got: f64, want: &Value) {
    check_metric(failures, case, what, Metric::Defined(got), want);
}

fn check_class(
    failures: &mut Vec<String>,
    case: &str,
    what: &str,
    got: &ClassScores,
    want: &Value,
) {
    check_value(
        failures,
        case,
        &format!("{what} precision"),
        got.precision,
        &want["precision"],
    );
    check_value(
        failures,
        case,
        &format!("{what} recall"),
        got.recall,
        &want["recall"],
    );
    check_value(
        failures,
        case,
        &format!("{what} f1"),
        got.f1_score,
        &want["f1-score"],
    );
    check_value(
        failures,
        case,
        &format!("{what} support"),
        got.support as f64,
        &want["support"],
    );
}

/// Every quantity of every case; returns the mismatches.
fn check_case(case: &Case) -> Vec<String> {
    let mut failures = Vec::new();
    let (name, e) = (case.name.as_str(), &case.expected);
    let m = BinaryMetrics::compute(&case.labels, &case.scores, case.threshold).unwrap();
    check_value(&mut failures, name, "accuracy", m.accuracy, &e["accuracy"]);
    check_value(
        &mut failures,
        name,
        "BCE",
        m.binary_cross_entropy,
        &e["binary_cross_entropy"],
    );
    check_metric(&mut failures, name, "ROC AUC", m.roc_auc, &e["roc_auc"]);
    check_metric(
        &mut failures,
        name,
        "AP",
        m.average_precision,
        &e["average_precision"],
    );
    check_metric(
        &mut failures,
        name,
        "sensitivity",
        m.sensitivity,
        &e["sensitivity"],
    );
    check_metric(
        &mut failures,
        name,
        "specificity",
        m.specificity,
        &e["specificity"],
    );
    let youden = choose_threshold(&case.labels, &case.scores, ThresholdRule::Youden).unwrap();
    check_metric(
        &mut failures,
        name,
        "Youden threshold",
        youden.map(|p| p.threshold),
        &e["youden_threshold"],
    );
    let rows = e["confusion_matrix_rows_true_cols_pred_order_fractured_notfractured"].clone();
    let want_rows: [[usize; 2]; 2] = serde_json::from_value(rows).unwrap();
    if m.confusion.rows() != want_rows {
        failures.push(format!(
            "{name}: confusion {:?}, sklearn {want_rows:?}",
            m.confusion.rows()
        ));
    }
    let (r, want) = (&m.report, &e["report"]);
    check_class(
        &mut failures,
        name,
        "Fractured",
        &r.fractured,
        &want["Fractured"],
    );
    check_class(
        &mut failures,
        name,
        "Not_Fractured",
        &r.not_fractured,
        &want["Not_Fractured"],
    );
    check_class(
        &mut failures,
        name,
        "macro avg",
        &r.macro_avg,
        &want["macro avg"],
    );
    check_class(
        &mut failures,
        name,
        "weighted avg",
        &r.weighted_avg,
        &want["weighted avg"],
    );
    check_value(
        &mut failures,
        name,
        "report accuracy",
        r.accuracy,
        &want["accuracy"],
    );
    failures
}

fn check_fixture(path: &Path) {
    let cases = load_cases(path);
    assert!(!cases.is_empty(), "{}: no cases", path.display());
    let failures: Vec<String> = cases.iter().flat_map(|c| check_case(&parse(c))).collect();
    assert!(
        failures.is_empty(),
        "{}:\n{}",
        path.display(),
        failures.join("\n")
    );
}

fn case(name: &str) -> Case {
    load_cases(&fixture_path())
        .iter()
        .map(parse)
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no fixture case {name}"))
}

#[test]
fn every_fixture_case_matches_sklearn() {
    check_fixture(&fixture_path());
}

/// The shared reference cases, or another file named by `METRICS_FIXTURE`
/// (`METRICS_FIXTURE=/path/to/more_cases.json cargo test --test metrics -- --ignored`).
#[test]
#[ignore = "needs ../shared/fixtures/metrics (or METRICS_FIXTURE)"]
fn the_shared_or_named_fixture_matches_sklearn() {
    check_fixture(&common::reference_data(
        "METRICS_FIXTURE",
        "fixtures/metrics/sklearn_binary.json",
    ));
}

#[test]
fn auc_with_one_class_is_undefined_not_nan() {
    let c = case("single_class_auc_undefined");
    assert_eq!(
        roc_auc(&c.labels, &c.scores).unwrap(),
        Metric::Undefined(Undefined::NoFractured)
    );
    let healthy_only_reversed: Vec<bool> = c.labels.iter().map(|l| !l).collect();
    assert_eq!(
        roc_auc(&healthy_only_reversed, &c.scores).unwrap(),
        Metric::Undefined(Undefined::NoNotFractured)
    );
    assert!(matches!(
        RocCurve::new(&c.labels, &c.scores),
        Err(Error::Metric(_))
    ));
}

#[test]
fn always_answering_not_fractured_baseline_is_reported() {
    // FracAtlas-like test split: 143 fractured, 674 not fractured.
    let c = case("imbalanced_fracatlas_like");
    let m = BinaryMetrics::compute(&c.labels, &c.scores, c.threshold).unwrap();
    assert_eq!(m.majority_baseline_accuracy, 674.0 / 817.0);
    assert!(m
        .report
        .to_string()
        .contains("always \"Not_Fractured\" scores accuracy 0.82"));
    let summary = m.to_string();
    assert!(
        summary.contains("always \"Not_Fractured\": 0.8250"),
        "{summary}"
    );
    assert!(summary.contains("105 of 143 fractures found"), "{summary}");

    let silent = BinaryMetrics::compute(&c.labels, &vec![0.0; c.labels.len()], 0.5).unwrap();
    assert_eq!(silent.accuracy, silent.majority_baseline_accuracy);
    assert_eq!(silent.sensitivity, Metric::Defined(0.0));
}

#[test]
fn report_display_has_sklearn_layout() {
    // The confusion matrix of fixture case balanced_small, laid out by hand after
    // sklearn.metrics.classification_report(digits=2).
    let report = ConfusionMatrix::from_counts(8, 4, 2, 6).unwrap().report();
    let expected = "               precision    recall  f1-score   support

    Fractured       0.80      0.67      0.73        12
Not_Fractured       0.60      0.75      0.67         8

     accuracy                           0.70        20
    macro avg       0.70      0.71      0.70        20
 weighted avg       0.72      0.70      0.70        20

baseline: always \"Fractured\" scores accuracy 0.60";
    assert_eq!(report.to_string(), expected);
}

#[test]
fn report_display_precision_sets_digits() {
    let report = ConfusionMatrix::from_counts(8, 4, 2, 6).unwrap().report();
    let text = format!("{report:.4}");
    assert!(
        text.contains("    Fractured     0.8000    0.6667    0.7273        12"),
        "{text}"
    );
}

#[test]
fn confusion_matrix_rows_are_true_class_columns_predicted() {
    let labels = [true, true, true, false, false];
    let scores = [0.9, 0.5, 0.1, 0.7, 0.2];
    let cm = ConfusionMatrix::from_scores(&labels, &scores, 0.5).unwrap();
    // score 0.5 == threshold counts as fractured.
    assert_eq!(cm.rows(), [[2, 1], [1, 1]]);
    assert_eq!(cm.precision(), Metric::Defined(2.0 / 3.0));
    assert_eq!(cm.negative_predictive_value(), Metric::Defined(0.5));
    assert_eq!(cm.f1_score(), Metric::Defined(4.0 / 6.0));
}

#[test]
fn precision_without_fractured_predictions_is_undefined_but_zero_in_report() {
    let cm = ConfusionMatrix::from_scores(&[true, false], &[0.1, 0.2], 0.5).unwrap();
    assert_eq!(
        cm.precision(),
        Metric::Undefined(Undefined::NoPredictedFractured)
    );
    assert_eq!(cm.report().fractured.precision, 0.0);
}

#[test]
fn extreme_probabilities_give_finite_cross_entropy() {
    let c = case("extreme_probabilities");
    let loss = binary_cross_entropy(&c.labels, &c.scores).unwrap();
    // Every case confidently wrong: each costs about -ln(1e-7).
    assert!((loss - -(1e-7f64).ln()).abs() < 1e-6, "{loss}");
}

#[test]
fn youden_is_undefined_when_no_threshold_beats_calling_all_negative() {
    let c = case("extreme_probabilities");
    let choice = choose_threshold(&c.labels, &c.scores, ThresholdRule::Youden).unwrap();
    assert_eq!(choice, Metric::Undefined(Undefined::NoInformativeThreshold));
}

#[test]
fn target_sensitivity_picks_the_highest_threshold_reaching_it() {
    // Fractures at 0.9, 0.6, 0.3, 0.2; healthy at 0.8, 0.5, 0.1.
    let labels = [true, false, true, false, true, true, false];
    let scores = [0.9, 0.8, 0.6, 0.5, 0.3, 0.2, 0.1];
    let pick = |target| {
        choose_threshold(&labels, &scores, ThresholdRule::TargetSensitivity(target))
            .unwrap()
            .value()
            .unwrap()
    };
    assert_eq!(pick(0.5).threshold, 0.6);
    assert_eq!(pick(0.75).threshold, 0.3);
    let all = pick(1.0);
    assert_eq!(
        (all.threshold, all.sensitivity, all.specificity),
        (0.2, 1.0, 1.0 / 3.0)
    );
    assert!(matches!(
        choose_threshold(&labels, &scores, ThresholdRule::TargetSensitivity(1.5)),
        Err(Error::InvalidInput(_))
    ));
}

#[test]
fn roc_auc_counts_ties_as_one_half() {
    // Pairs (fracture, healthy): (0.7, 0.7) tie, (0.7, 0.2) right, (0.4, 0.7) wrong,
    // (0.4, 0.2) right → (2 + 0.5) / 4.
    let auc = roc_auc(&[true, true, false, false], &[0.7, 0.4, 0.7, 0.2]).unwrap();
    assert_eq!(auc, Metric::Defined(0.625));
}

#[test]
fn roc_curve_auc_agrees_with_pair_counting() {
    let c = case("many_ties");
    let scores_of = |fractured: bool| -> Vec<f64> {
        c.labels
            .iter()
            .zip(&c.scores)
            .filter(|&(&l, _)| l == fractured)
            .map(|(_, &s)| s)
            .collect()
    };
    let mut pairs = 0.0;
    for fracture in scores_of(true) {
        for healthy in scores_of(false) {
            pairs += if fracture > healthy {
                1.0
            } else if fracture == healthy {
                0.5
            } else {
                0.0
            };
        }
    }
    let positives = c.labels.iter().filter(|&&l| l).count() as f64;
    let by_pairs = pairs / (positives * (c.labels.len() as f64 - positives));
    let roc = RocCurve::new(&c.labels, &c.scores).unwrap();
    assert!((roc.auc() - by_pairs).abs() < 1e-12);
    assert_eq!((roc.fpr()[0], roc.tpr()[0]), (0.0, 0.0));
    assert_eq!(
        (*roc.fpr().last().unwrap(), *roc.tpr().last().unwrap()),
        (1.0, 1.0)
    );
}

#[test]
fn average_precision_is_undefined_without_fractures_and_one_for_a_perfect_ranking() {
    assert_eq!(
        average_precision(&[false, false], &[0.3, 0.6]).unwrap(),
        Metric::Undefined(Undefined::NoFractured)
    );
    assert!(matches!(
        PrCurve::new(&[false], &[0.3]),
        Err(Error::Metric(_))
    ));
    let ap = average_precision(&[true, true, false], &[0.9, 0.8, 0.1]).unwrap();
    assert_eq!(ap, Metric::Defined(1.0));
}

#[test]
fn invalid_input_is_an_error_not_a_panic() {
    let invalid = |r: fracture::Result<Metric>| matches!(r, Err(Error::InvalidInput(_)));
    assert!(invalid(roc_auc(&[true, false], &[0.5])));
    assert!(invalid(roc_auc(&[], &[])));
    assert!(invalid(roc_auc(&[true, false], &[0.5, f64::NAN])));
    assert!(matches!(
        binary_cross_entropy(&[true], &[1.5]),
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        accuracy(&[true], &[0.5], f64::NAN),
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        BinaryMetrics::compute(&[true, false], &[0.5, -0.1], 0.5),
        Err(Error::InvalidInput(_))
    ));
    assert!(matches!(
        by_subgroup(&[true, false], &[0.5, 0.1], &["hand"], 0.5),
        Err(Error::InvalidInput(_))
    ));
}

#[test]
fn undefined_metric_serializes_as_null() {
    let undefined: Metric = Metric::Undefined(Undefined::NoFractured);
    assert_eq!(serde_json::to_string(&undefined).unwrap(), "null");
    assert_eq!(
        serde_json::to_string(&Metric::Defined(0.25)).unwrap(),
        "0.25"
    );
    assert_eq!(format!("{:.2}", Metric::Defined(0.256)), "0.26");
}

#[test]
fn ece_of_hand_worked_bins() {
    // 4 bins of width 0.25. Bin (0, 0.25]: scores 0.1, 0.2, labels 0, 1 → |0.5 − 0.15| = 0.35.
    // Bin (0.5, 0.75]: score 0.6, label 1 → |1 − 0.6| = 0.4. Bin (0.75, 1]: 0.8, 0.9, labels
    // 1, 1 → |1 − 0.85| = 0.15. ECE = (2·0.35 + 1·0.4 + 2·0.15) / 5 = 0.28.
    let labels = [false, true, true, true, true];
    let scores = [0.1, 0.2, 0.6, 0.8, 0.9];
    let ece = expected_calibration_error(&labels, &scores, 4).unwrap();
    assert!((ece - 0.28).abs() < 1e-12, "{ece}");
    let counts: Vec<usize> = calibration_bins(&labels, &scores, 4)
        .unwrap()
        .iter()
        .map(|b| b.count)
        .collect();
    assert_eq!(counts, [2, 1, 2]);
}

#[test]
fn ece_is_zero_when_probabilities_match_observed_rates() {
    // Half of the cases scored 0.5 are fractured, all those scored 1.0, none scored 0.0.
    let labels = [true, false, true, false, true, false];
    let scores = [0.5, 0.5, 1.0, 0.0, 0.5, 0.5];
    let ece = expected_calibration_error(&labels, &scores, 10).unwrap();
    assert!(ece.abs() < 1e-12, "{ece}");
}

#[test]
fn calibration_bin_includes_its_upper_edge() {
    // 0.5 lies on the edge between the two bins: it belongs to (0, 0.5].
    let bins = calibration_bins(&[true, false], &[0.5, 0.0], 2).unwrap();
    assert_eq!(bins.len(), 1);
    assert_eq!((bins[0].count, bins[0].upper), (2, 0.5));
    assert!(matches!(
        calibration_bins(&[true], &[0.5], 0),
        Err(Error::InvalidInput(_))
    ));
}

fn bootstrap_data() -> (Vec<bool>, Vec<f64>) {
    let c = case("imbalanced_fracatlas_like");
    (c.labels, c.scores)
}

fn config(seed: u64) -> BootstrapConfig {
    BootstrapConfig {
        n_resamples: 200,
        confidence: 0.9,
        seed,
    }
}

#[test]
fn bootstrap_intervals_contain_the_point_estimates() {
    let (labels, scores) = bootstrap_data();
    let ci = bootstrap_ci(&labels, &scores, 0.5, config(7)).unwrap();
    let auc = ci.auc.value().unwrap();
    assert_eq!(
        Metric::Defined(auc.estimate),
        roc_auc(&labels, &scores).unwrap()
    );
    for interval in [
        auc,
        ci.sensitivity.value().unwrap(),
        ci.specificity.value().unwrap(),
    ] {
        assert!(
            interval.lower < interval.estimate && interval.estimate < interval.upper,
            "{interval:?}"
        );
        assert_eq!(interval.resamples_used, 200);
        assert_eq!(interval.confidence, 0.9);
    }
}

#[test]
fn bootstrap_with_the_same_seed_repeats_and_another_seed_differs() {
    let (labels, scores) = bootstrap_data();
    let first = bootstrap_ci(&labels, &scores, 0.5, config(7)).unwrap();
    assert_eq!(
        first,
        bootstrap_ci(&labels, &scores, 0.5, config(7)).unwrap()
    );
    assert_ne!(
        first,
        bootstrap_ci(&labels, &scores, 0.5, config(8)).unwrap()
    );
}

#[test]
fn bootstrap_of_a_perfect_ranking_is_a_point() {
    // Every resample with both classes still ranks them perfectly: AUC is 1 throughout.
    let c = case("perfect_separation");
    let ci = bootstrap_ci(&c.labels, &c.scores, 0.5, config(1)).unwrap();
    let auc = ci.auc.value().unwrap();
    assert_eq!((auc.lower, auc.estimate, auc.upper), (1.0, 1.0, 1.0));
}

#[test]
fn bootstrap_keeps_undefined_metrics_undefined_and_rejects_bad_settings() {
    let c = case("single_class_auc_undefined");
    let ci = bootstrap_ci(&c.labels, &c.scores, 0.5, config(1)).unwrap();
    assert_eq!(ci.auc, Metric::Undefined(Undefined::NoFractured));
    assert_eq!(ci.sensitivity, Metric::Undefined(Undefined::NoFractured));
    assert!(ci.specificity.is_defined());
    for bad in [
        BootstrapConfig {
            n_resamples: 0,
            ..config(1)
        },
        BootstrapConfig {
            confidence: 1.0,
            ..config(1)
        },
    ] {
        assert!(matches!(
            bootstrap_ci(&c.labels, &c.scores, 0.5, bad),
            Err(Error::InvalidInput(_))
        ));
    }
}

#[test]
fn subgroups_get_their_own_metrics_and_single_class_groups_have_undefined_auc() {
    let labels = [true, false, true, false, false, false];
    let scores = [0.9, 0.6, 0.3, 0.1, 0.7, 0.2];
    let hardware = ["yes", "yes", "no", "no", "none", "none"];
    let groups = by_subgroup(&labels, &scores, &hardware, 0.5).unwrap();
    assert_eq!(groups.len(), 3);
    let yes = groups.get("yes").unwrap();
    assert_eq!(
        (yes.sensitivity, yes.specificity),
        (Metric::Defined(1.0), Metric::Defined(0.0))
    );
    let no = groups.get("no").unwrap();
    assert_eq!(
        (no.sensitivity, no.roc_auc),
        (Metric::Defined(0.0), Metric::Defined(1.0))
    );
    let none = groups.get("none").unwrap();
    assert_eq!(none.roc_auc, Metric::Undefined(Undefined::NoFractured));
    assert_eq!(none.specificity, Metric::Defined(0.5));
    let table = groups.to_string();
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("none") && l.contains("n/a")),
        "{table}"
    );
}

#[test]
fn confusion_matrix_display_labels_rows_true_and_columns_predicted() {
    let cm = ConfusionMatrix::from_counts(105, 38, 67, 607).unwrap();
    let expected = [
        "                    predicted Fractured  predicted Not_Fractured",
        "true Fractured                      105                       38",
        "true Not_Fractured                   67                      607",
    ]
    .join("\n");
    assert_eq!(cm.to_string(), expected);
}

#[test]
fn interval_display_shows_estimate_confidence_and_bounds() {
    let (labels, scores) = bootstrap_data();
    let config = BootstrapConfig {
        confidence: 0.975,
        ..config(3)
    };
    let auc = bootstrap_ci(&labels, &scores, 0.5, config)
        .unwrap()
        .auc
        .value()
        .unwrap();
    let expected = format!(
        "{:.2} (97.5% CI {:.2} to {:.2})",
        auc.estimate, auc.lower, auc.upper
    );
    assert_eq!(format!("{auc:.2}"), expected);
}

#[test]
fn a_nan_score_is_no_decision_not_a_negative() {
    use fracture::metrics::predicts_fracture;
    assert!(predicts_fracture(0.5, 0.5).unwrap());
    assert!(!predicts_fracture(0.25, 0.5).unwrap());
    let message = predicts_fracture(f64::NAN, 0.5).unwrap_err().to_string();
    assert!(message.contains("NaN"), "{message}");
    assert!(predicts_fracture(0.5, f64::NAN).is_err());
    // The confusion matrix, built on the same rule, refuses a NaN score too.
    assert!(ConfusionMatrix::from_scores(&[true, false], &[f64::NAN, 0.1], 0.5).is_err());
}
