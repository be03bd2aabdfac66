//! Counting at one threshold: the confusion matrix and the per-class report built from it.

use std::fmt;

use serde::Serialize;

use super::{check_inputs, check_threshold, ratio, Metric, Undefined, CLASS_NAMES};
use crate::{Error, Result};

/// Counts of a binary decision, fractured being the positive class.
///
/// ```
/// use fracture::metrics::{ConfusionMatrix, Metric};
///
/// let labels = [true, true, false, false];
/// let cm = ConfusionMatrix::from_scores(&labels, &[0.9, 0.3, 0.6, 0.1], 0.5)?;
/// assert_eq!(cm.rows(), [[1, 1], [1, 1]]); // rows: true class, columns: predicted
/// assert_eq!(cm.sensitivity(), Metric::Defined(0.5));
/// # Ok::<(), fracture::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct ConfusionMatrix {
    true_positives: usize,
    false_negatives: usize,
    false_positives: usize,
    true_negatives: usize,
}

impl ConfusionMatrix {
    /// Count decisions `score >= threshold` (predicted fractured) against `labels`.
    pub fn from_scores(labels: &[bool], scores: &[f64], threshold: f64) -> Result<Self> {
        check_inputs(labels, scores)?;
        check_threshold(threshold)?;
        let predicted: Vec<bool> = scores
            .iter()
            .map(|&s| super::predicts_fracture(s, threshold))
            .collect::<Result<_>>()?;
        Self::from_predictions(labels, &predicted)
    }

    /// Count predicted classes (`true` = predicted fractured) against `labels`.
    pub fn from_predictions(labels: &[bool], predicted_fractured: &[bool]) -> Result<Self> {
        if labels.len() != predicted_fractured.len() {
            return Err(Error::InvalidInput(format!(
                "confusion matrix: {} labels but {} predictions",
                labels.len(),
                predicted_fractured.len()
            )));
        }
        let mut counts = [0usize; 4];
        for (&truth, &predicted) in labels.iter().zip(predicted_fractured) {
            let slot = match (truth, predicted) {
                (true, true) => 0,
                (true, false) => 1,
                (false, true) => 2,
                (false, false) => 3,
            };
            counts[slot] += 1;
        }
        let [tp, fn_, fp, tn] = counts;
        Self::from_counts(tp, fn_, fp, tn)
    }

    /// Build from counts; errors if all are zero.
    pub fn from_counts(
        true_positives: usize,
        false_negatives: usize,
        false_positives: usize,
        true_negatives: usize,
    ) -> Result<Self> {
        if true_positives + false_negatives + false_positives + true_negatives == 0 {
            return Err(Error::InvalidInput(
                "confusion matrix: no cases (all counts are zero)".into(),
            ));
        }
        Ok(ConfusionMatrix {
            true_positives,
            false_negatives,
            false_positives,
            true_negatives,
        })
    }

    /// Fractures predicted fractured.
    pub fn true_positives(&self) -> usize {
        self.true_positives
    }

    /// Fractures missed (predicted not fractured).
    pub fn false_negatives(&self) -> usize {
        self.false_negatives
    }

    /// Not-fractured cases predicted fractured (false alarms).
    pub fn false_positives(&self) -> usize {
        self.false_positives
    }

    /// Not-fractured cases predicted not fractured.
    pub fn true_negatives(&self) -> usize {
        self.true_negatives
    }

    /// Number of fractured cases.
    pub fn fractured(&self) -> usize {
        self.true_positives + self.false_negatives
    }

    /// Number of not-fractured cases.
    pub fn not_fractured(&self) -> usize {
        self.false_positives + self.true_negatives
    }

    /// Number of cases.
    pub fn total(&self) -> usize {
        self.fractured() + self.not_fractured()
    }

    /// `[[TP, FN], [FP, TN]]`: rows are the true class, columns the predicted class, both in
    /// the order Fractured, Not fractured (scikit-learn's `confusion_matrix(labels=[1, 0])`).
    pub fn rows(&self) -> [[usize; 2]; 2] {
        [
            [self.true_positives, self.false_negatives],
            [self.false_positives, self.true_negatives],
        ]
    }

    /// Fraction of cases classified correctly.
    pub fn accuracy(&self) -> f64 {
        (self.true_positives + self.true_negatives) as f64 / self.total() as f64
    }

    /// Accuracy of always answering the more frequent class, the bar any model must clear.
    pub fn majority_baseline_accuracy(&self) -> f64 {
        self.fractured().max(self.not_fractured()) as f64 / self.total() as f64
    }

    /// Sensitivity (recall, true-positive rate): fraction of fractures found.
    pub fn sensitivity(&self) -> Metric {
        ratio(
            self.true_positives,
            self.fractured(),
            Undefined::NoFractured,
        )
    }

    /// Specificity (true-negative rate): fraction of not-fractured cases cleared.
    pub fn specificity(&self) -> Metric {
        ratio(
            self.true_negatives,
            self.not_fractured(),
            Undefined::NoNotFractured,
        )
    }

    /// Precision (positive predictive value): fraction of "fractured" calls that are right.
    pub fn precision(&self) -> Metric {
        ratio(
            self.true_positives,
            self.true_positives + self.false_positives,
            Undefined::NoPredictedFractured,
        )
    }

    /// Negative predictive value: fraction of "not fractured" calls that are right.
    pub fn negative_predictive_value(&self) -> Metric {
        ratio(
            self.true_negatives,
            self.true_negatives + self.false_negatives,
            Undefined::NoPredictedNotFractured,
        )
    }

    /// F1 score of the fractured class, `2 TP / (2 TP + FP + FN)`.
    pub fn f1_score(&self) -> Metric {
        ratio(
            2 * self.true_positives,
            2 * self.true_positives + self.false_positives + self.false_negatives,
            Undefined::NoFractured,
        )
    }

    /// The per-class report (scikit-learn's `classification_report`, `zero_division=0`).
    pub fn report(&self) -> ClassificationReport {
        ClassificationReport::from_confusion(self)
    }
}

impl fmt::Display for ConfusionMatrix {
    /// A 2×2 table, true class in rows, predicted class in columns.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [fractured, not_fractured] = CLASS_NAMES;
        let rows = [format!("true {fractured}"), format!("true {not_fractured}")];
        let columns = [
            format!("predicted {fractured}"),
            format!("predicted {not_fractured}"),
        ];
        let width = rows.iter().map(String::len).max().unwrap_or(0);
        let [first, second] = &columns;
        let (w1, w2) = (first.len(), second.len());
        write!(f, "{:width$}  {first}  {second}", "")?;
        for (row, [predicted_fractured, predicted_not]) in rows.iter().zip(self.rows()) {
            write!(
                f,
                "\n{row:<width$}  {predicted_fractured:>w1$}  {predicted_not:>w2$}"
            )?;
        }
        Ok(())
    }
}

/// Precision, recall, F1 and support of one class (or of an average over classes).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ClassScores {
    /// Fraction of the cases predicted in the class that are in it (0 if none predicted).
    pub precision: f64,
    /// Fraction of the class's cases predicted in it (0 if the class is absent).
    pub recall: f64,
    /// Harmonic mean of precision and recall (0 if both are 0).
    pub f1_score: f64,
    /// Number of cases in the class (all cases, for the averages).
    pub support: usize,
}

impl ClassScores {
    /// Scores of one class from its true positives, predicted count and true count.
    fn of_class(hits: usize, predicted: usize, support: usize) -> Self {
        // scikit-learn's zero_division=0.
        let zero_if_undefined = |numerator: usize, denominator: usize| match denominator {
            0 => 0.0,
            _ => numerator as f64 / denominator as f64,
        };
        ClassScores {
            precision: zero_if_undefined(hits, predicted),
            recall: zero_if_undefined(hits, support),
            f1_score: zero_if_undefined(2 * hits, support + predicted),
            support,
        }
    }

    /// Mean of two classes' scores with the given weights (1 and 1: macro average; the
    /// supports: weighted average), reporting `support`.
    fn average(classes: [&ClassScores; 2], weights: [f64; 2], support: usize) -> Self {
        let [a, b] = classes;
        let [wa, wb] = weights;
        let mean = |pick: fn(&ClassScores) -> f64| (pick(a) * wa + pick(b) * wb) / (wa + wb);
        ClassScores {
            precision: mean(|c| c.precision),
            recall: mean(|c| c.recall),
            f1_score: mean(|c| c.f1_score),
            support,
        }
    }
}

/// scikit-learn's `classification_report` for the two classes (Fractured first), with
/// `zero_division=0`: a precision or recall with an empty denominator is reported as 0.
///
/// `Display` prints scikit-learn's text layout (2 digits; `{:.4}` for 4) and one more line:
/// the accuracy of always answering the majority class.
///
/// ```
/// use fracture::metrics::ConfusionMatrix;
///
/// let report = ConfusionMatrix::from_counts(8, 4, 2, 6)?.report();
/// assert_eq!(report.fractured.precision, 0.8);
/// let text = report.to_string();
/// assert!(text.contains("   Fractured       0.80      0.67      0.73        12"));
/// assert!(text.contains("always \"Fractured\" scores accuracy 0.60"));
/// # Ok::<(), fracture::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ClassificationReport {
    /// Scores of the fractured class (precision is the PPV, recall the sensitivity).
    pub fractured: ClassScores,
    /// Scores of the not-fractured class (precision is the NPV, recall the specificity).
    pub not_fractured: ClassScores,
    /// Fraction of cases classified correctly.
    pub accuracy: f64,
    /// Unweighted mean over the two classes.
    pub macro_avg: ClassScores,
    /// Mean over the two classes weighted by support.
    pub weighted_avg: ClassScores,
    /// Accuracy of always answering the more frequent class.
    pub majority_baseline_accuracy: f64,
}

impl ClassificationReport {
    /// Build the report from a confusion matrix.
    pub fn from_confusion(cm: &ConfusionMatrix) -> Self {
        let fractured = ClassScores::of_class(
            cm.true_positives(),
            cm.true_positives() + cm.false_positives(),
            cm.fractured(),
        );
        let not_fractured = ClassScores::of_class(
            cm.true_negatives(),
            cm.true_negatives() + cm.false_negatives(),
            cm.not_fractured(),
        );
        let classes = [&fractured, &not_fractured];
        let supports = [fractured.support as f64, not_fractured.support as f64];
        let macro_avg = ClassScores::average(classes, [1.0, 1.0], cm.total());
        let weighted_avg = ClassScores::average(classes, supports, cm.total());
        ClassificationReport {
            fractured,
            not_fractured,
            accuracy: cm.accuracy(),
            macro_avg,
            weighted_avg,
            majority_baseline_accuracy: cm.majority_baseline_accuracy(),
        }
    }

    /// Name of the more frequent class ("Not_Fractured" on a tie, the harmless answer).
    pub fn majority_class(&self) -> &'static str {
        let [fractured, not_fractured] = CLASS_NAMES;
        if self.fractured.support > self.not_fractured.support {
            fractured
        } else {
            not_fractured
        }
    }
}

impl fmt::Display for ClassificationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The layout of scikit-learn's `classification_report` (sklearn/metrics/_classification.py).
        let digits = f.precision().unwrap_or(2);
        let heading = "weighted avg";
        let width = CLASS_NAMES
            .iter()
            .map(|name| name.len())
            .chain([heading.len(), digits])
            .max()
            .unwrap_or(heading.len());
        let row = |f: &mut fmt::Formatter<'_>, name: &str, s: &ClassScores| {
            writeln!(
                f,
                "{name:>width$}  {:>9.digits$} {:>9.digits$} {:>9.digits$} {:>9}",
                s.precision, s.recall, s.f1_score, s.support
            )
        };
        writeln!(
            f,
            "{:>width$}  {:>9} {:>9} {:>9} {:>9}\n",
            "", "precision", "recall", "f1-score", "support"
        )?;
        row(f, CLASS_NAMES[0], &self.fractured)?;
        row(f, CLASS_NAMES[1], &self.not_fractured)?;
        writeln!(f)?;
        writeln!(
            f,
            "{:>width$}  {:>9} {:>9} {:>9.digits$} {:>9}",
            "accuracy", "", "", self.accuracy, self.macro_avg.support
        )?;
        row(f, "macro avg", &self.macro_avg)?;
        row(f, heading, &self.weighted_avg)?;
        write!(
            f,
            "\nbaseline: always \"{}\" scores accuracy {:.digits$}",
            self.majority_class(),
            self.majority_baseline_accuracy
        )
    }
}
