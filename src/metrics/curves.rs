//! Ranking metrics over all thresholds: ROC and precision-recall curves, their areas, and
//! choosing an operating threshold on validation data.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::{check_inputs, Metric, Undefined};
use crate::{Error, Result};

/// Cumulative counts at each distinct score, highest first (scikit-learn's
/// `_binary_clf_curve`): predicting fractured for `score >= thresholds[k]` finds
/// `true_positives[k]` fractures and raises `false_positives[k]` false alarms.
struct Ranking {
    thresholds: Vec<f64>,
    true_positives: Vec<usize>,
    false_positives: Vec<usize>,
    fractured: usize,
    not_fractured: usize,
}

impl Ranking {
    /// Rank validated input (finite scores, one per label).
    fn new(labels: &[bool], scores: &[f64]) -> Self {
        let mut cases: Vec<(f64, bool)> =
            scores.iter().copied().zip(labels.iter().copied()).collect();
        cases.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut ranking = Ranking {
            thresholds: Vec::new(),
            true_positives: Vec::new(),
            false_positives: Vec::new(),
            fractured: 0,
            not_fractured: 0,
        };
        let mut cases = cases.into_iter().peekable();
        while let Some((score, fractured)) = cases.next() {
            if fractured {
                ranking.fractured += 1;
            } else {
                ranking.not_fractured += 1;
            }
            // -0.0 and 0.0 sort apart under total_cmp but are one threshold, hence `!=`.
            if cases.peek().is_none_or(|next| next.0 != score) {
                ranking.thresholds.push(score);
                ranking.true_positives.push(ranking.fractured);
                ranking.false_positives.push(ranking.not_fractured);
            }
        }
        ranking
    }

    /// `Undefined` unless both classes are present.
    fn require_both_classes(&self) -> std::result::Result<(), Undefined> {
        if self.fractured == 0 {
            Err(Undefined::NoFractured)
        } else if self.not_fractured == 0 {
            Err(Undefined::NoNotFractured)
        } else {
            Ok(())
        }
    }

    /// Exact trapezoidal area under the ROC curve (ties count one half), both classes present.
    fn auc(&self) -> f64 {
        let mut previous = (0u128, 0u128);
        let mut twice_area = 0u128;
        for (&tp, &fp) in self.true_positives.iter().zip(&self.false_positives) {
            let (tp, fp) = (tp as u128, fp as u128);
            twice_area += (fp - previous.1) * (tp + previous.0);
            previous = (tp, fp);
        }
        twice_area as f64 / (2 * self.fractured as u128 * self.not_fractured as u128) as f64
    }
}

/// Area under the ROC curve: the probability that a random fracture scores higher than a
/// random non-fracture, ties counting one half (scikit-learn's `roc_auc_score`).
///
/// Undefined when only one class is present.
///
/// ```
/// use fracture::metrics::{roc_auc, Metric};
/// let auc = roc_auc(&[true, false, true, false], &[0.8, 0.3, 0.5, 0.5])?;
/// assert_eq!(auc, Metric::Defined(0.875)); // 3 pairs ordered right, 1 tie
/// # Ok::<(), fracture::Error>(())
/// ```
pub fn roc_auc(labels: &[bool], scores: &[f64]) -> Result<Metric> {
    check_inputs(labels, scores)?;
    let ranking = Ranking::new(labels, scores);
    Ok(match ranking.require_both_classes() {
        Ok(()) => Metric::Defined(ranking.auc()),
        Err(reason) => Metric::Undefined(reason),
    })
}

/// Average precision: `Σ (R_k − R_{k−1}) P_k` over thresholds, the step-wise area under the
/// precision-recall curve without interpolation (scikit-learn's `average_precision_score`).
///
/// More telling than ROC AUC when fractures are rare. Undefined without fractured cases.
///
/// ```
/// use fracture::metrics::{average_precision, Metric};
/// // Ranked: fracture, healthy, fracture → (1/2)·1 + (1/2)·(2/3).
/// let ap = average_precision(&[true, false, true], &[0.9, 0.5, 0.1])?;
/// assert_eq!(ap, Metric::Defined(0.5 + 1.0 / 3.0));
/// # Ok::<(), fracture::Error>(())
/// ```
pub fn average_precision(labels: &[bool], scores: &[f64]) -> Result<Metric> {
    check_inputs(labels, scores)?;
    let ranking = Ranking::new(labels, scores);
    if ranking.fractured == 0 {
        return Ok(Metric::Undefined(Undefined::NoFractured));
    }
    Ok(Metric::Defined(
        PrCurve::from_ranking(&ranking).average_precision(),
    ))
}

/// The ROC curve at every distinct score (no point dropped), from the strictest threshold
/// (`+∞`: nothing called fractured, the point (0, 0)) down to the lowest score (1, 1).
///
/// ```
/// use fracture::metrics::RocCurve;
/// let roc = RocCurve::new(&[true, false, true, false], &[0.9, 0.6, 0.4, 0.1])?;
/// assert_eq!(roc.thresholds(), &[f64::INFINITY, 0.9, 0.6, 0.4, 0.1]);
/// assert_eq!(roc.tpr(), &[0.0, 0.5, 0.5, 1.0, 1.0]);
/// assert_eq!(roc.fpr(), &[0.0, 0.0, 0.5, 0.5, 1.0]);
/// assert_eq!(roc.auc(), 0.75);
/// # Ok::<(), fracture::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RocCurve {
    fpr: Vec<f64>,
    tpr: Vec<f64>,
    thresholds: Vec<f64>,
    auc: f64,
    fractured: usize,
    not_fractured: usize,
    /// Not-fractured cases cleared at each threshold (for an exact specificity).
    #[serde(skip)]
    true_negatives: Vec<usize>,
    /// Fractured cases found at each threshold (for an exact Youden's J).
    #[serde(skip)]
    true_positives: Vec<usize>,
}

impl RocCurve {
    /// Build the curve; an [`Error::Metric`] if only one class is present.
    pub fn new(labels: &[bool], scores: &[f64]) -> Result<Self> {
        check_inputs(labels, scores)?;
        let ranking = Ranking::new(labels, scores);
        ranking
            .require_both_classes()
            .map_err(|reason| Error::Metric(format!("ROC curve is undefined: {reason}")))?;
        let (p, n) = (ranking.fractured as f64, ranking.not_fractured as f64);
        let rate = |counts: &[usize], total: f64| {
            std::iter::once(0.0)
                .chain(counts.iter().map(|&c| c as f64 / total))
                .collect::<Vec<_>>()
        };
        Ok(RocCurve {
            fpr: rate(&ranking.false_positives, n),
            tpr: rate(&ranking.true_positives, p),
            thresholds: std::iter::once(f64::INFINITY)
                .chain(ranking.thresholds.iter().copied())
                .collect(),
            auc: ranking.auc(),
            true_negatives: std::iter::once(ranking.not_fractured)
                .chain(
                    ranking
                        .false_positives
                        .iter()
                        .map(|&fp| ranking.not_fractured - fp),
                )
                .collect(),
            true_positives: std::iter::once(0)
                .chain(ranking.true_positives.iter().copied())
                .collect(),
            fractured: ranking.fractured,
            not_fractured: ranking.not_fractured,
        })
    }

    /// False-positive rates (1 − specificity), rising.
    pub fn fpr(&self) -> &[f64] {
        &self.fpr
    }

    /// True-positive rates (sensitivity), rising.
    pub fn tpr(&self) -> &[f64] {
        &self.tpr
    }

    /// Thresholds, falling; the first is `+∞`.
    pub fn thresholds(&self) -> &[f64] {
        &self.thresholds
    }

    /// Area under the curve (as [`roc_auc`]).
    pub fn auc(&self) -> f64 {
        self.auc
    }

    /// The operating point at curve index `k`.
    fn point(&self, k: usize) -> Option<OperatingPoint> {
        Some(OperatingPoint {
            threshold: *self.thresholds.get(k)?,
            sensitivity: *self.tpr.get(k)?,
            specificity: *self.true_negatives.get(k)? as f64 / self.not_fractured as f64,
        })
    }

    /// The threshold maximizing Youden's J = sensitivity + specificity − 1 (`tpr − fpr`), the
    /// highest one on ties; undefined if no threshold beats calling every case not fractured.
    ///
    /// J is compared exactly, as `tp · N − fp · P` in integers: in floating point two equal
    /// values of J can differ in the last bit (`1 − 2/3` exceeds `1/3`), which would break a
    /// tie towards a lower threshold.
    ///
    /// ```
    /// use fracture::metrics::RocCurve;
    /// // J = 1/3 at 0.9 (1 of 3 found, no false alarm), at 0.7 and at 0.2: the highest wins.
    /// let labels = [true, false, true, false, true, false];
    /// let scores = [0.9, 0.8, 0.7, 0.3, 0.2, 0.1];
    /// let roc = RocCurve::new(&labels, &scores)?;
    /// assert_eq!(roc.youden().value().unwrap().threshold, 0.9);
    /// # Ok::<(), fracture::Error>(())
    /// ```
    pub fn youden(&self) -> Metric<OperatingPoint> {
        // Index 0 (+∞) has J = 0: a finite threshold must do strictly better.
        let (p, n) = (self.fractured as i128, self.not_fractured as i128);
        let mut best = (0usize, 0i128);
        for (k, (&tp, &tn)) in self
            .true_positives
            .iter()
            .zip(&self.true_negatives)
            .enumerate()
        {
            // J · P · N = tp · N − fp · P.
            let j = tp as i128 * n - (n - tn as i128) * p;
            if j > best.1 {
                best = (k, j);
            }
        }
        match best.0 {
            0 => Metric::Undefined(Undefined::NoInformativeThreshold),
            k => self.point(k).map_or(
                Metric::Undefined(Undefined::NoInformativeThreshold),
                Metric::Defined,
            ),
        }
    }

    /// The highest threshold whose sensitivity reaches `target` (in `(0, 1]`).
    pub fn for_sensitivity(&self, target: f64) -> Result<OperatingPoint> {
        check_target("sensitivity", target)?;
        self.tpr
            .iter()
            .position(|&tpr| tpr >= target)
            .and_then(|k| self.point(k))
            .ok_or_else(|| {
                Error::Metric(format!(
                    "no threshold reaches sensitivity {target} ({} fractured cases)",
                    self.fractured
                ))
            })
    }

    /// The point of highest sensitivity among those whose specificity reaches `target` (in
    /// `(0, 1]`); on a tie in sensitivity the highest threshold, whose specificity is the
    /// highest. The strictest point (`+∞`, specificity 1, sensitivity 0) always qualifies, so
    /// this is never empty; no interpolation between points.
    ///
    /// ```
    /// use fracture::metrics::RocCurve;
    /// // Not fractured 0.9, 0.3; fractured 0.8, 0.7, 0.2.
    /// let roc = RocCurve::new(&[false, true, true, false, true], &[0.9, 0.8, 0.7, 0.3, 0.2])?;
    /// let point = roc.for_specificity(0.5)?;
    /// assert_eq!((point.threshold, point.sensitivity, point.specificity), (0.7, 2.0 / 3.0, 0.5));
    /// // Specificity 1 only at +∞: nothing found.
    /// assert_eq!(roc.for_specificity(1.0)?.sensitivity, 0.0);
    /// # Ok::<(), fracture::Error>(())
    /// ```
    pub fn for_specificity(&self, target: f64) -> Result<OperatingPoint> {
        check_target("specificity", target)?;
        // Specificity falls and sensitivity rises along the curve: the last index whose
        // specificity reaches the target has the highest sensitivity, and the first index with
        // that sensitivity the highest specificity.
        let reaching = self
            .true_negatives
            .iter()
            .take_while(|&&tn| tn as f64 / self.not_fractured as f64 >= target)
            .count();
        let best = reaching
            .checked_sub(1)
            .and_then(|last| self.tpr.get(last))
            .copied()
            .unwrap_or(0.0);
        self.tpr
            .iter()
            .position(|&tpr| tpr == best)
            .and_then(|k| self.point(k))
            .ok_or_else(|| Error::Internal("a ROC curve without its +∞ point".into()))
    }
}

/// An error unless a target rate lies in `(0, 1]`.
fn check_target(what: &str, target: f64) -> Result<()> {
    if !(target > 0.0 && target <= 1.0) {
        return Err(Error::InvalidInput(format!(
            "target {what} {target} is not in (0, 1]"
        )));
    }
    Ok(())
}

/// Sensitivity at a specificity: the highest sensitivity among the thresholds (every distinct
/// score, and `+∞`) whose specificity reaches `target`, without interpolating between them
/// ([`RocCurve::for_specificity`]). 0 when only calling nothing fractured reaches the target.
/// Undefined when only one class is present; an error for a target outside `(0, 1]`.
///
/// On scikit-learn's `roc_curve` points this is the largest `tpr` whose specificity
/// `1 - fpr` reaches `target`, compared exactly: the specificity is `tn / N` from counts, so a
/// point exactly at the target qualifies (a float test `fpr <= 1 - target` can drop it, as
/// `1 - 0.9` is below `0.1`). The fixture `tests/fixtures/metrics/sklearn_operating_points.json`
/// checks it against `roc_curve` with exact fractions.
///
/// ```
/// use fracture::metrics::{sensitivity_at_specificity, Metric};
/// let labels = [false, true, true, false, true];
/// let scores = [0.9, 0.8, 0.7, 0.3, 0.2];
/// // Specificity 0.5 allows one false alarm: thresholds down to 0.7 find 2 of 3 fractures.
/// assert_eq!(sensitivity_at_specificity(&labels, &scores, 0.5)?, Metric::Defined(2.0 / 3.0));
/// # Ok::<(), fracture::Error>(())
/// ```
pub fn sensitivity_at_specificity(labels: &[bool], scores: &[f64], target: f64) -> Result<Metric> {
    let [sensitivity] = sensitivities_at_specificities(labels, scores, [target])?;
    Ok(sensitivity)
}

/// [`sensitivity_at_specificity`] at each of `targets`, from one ROC curve.
pub(super) fn sensitivities_at_specificities<const K: usize>(
    labels: &[bool],
    scores: &[f64],
    targets: [f64; K],
) -> Result<[Metric; K]> {
    check_inputs(labels, scores)?;
    for target in targets {
        check_target("specificity", target)?;
    }
    if let Err(reason) = Ranking::new(labels, scores).require_both_classes() {
        return Ok([Metric::Undefined(reason); K]);
    }
    let roc = RocCurve::new(labels, scores)?;
    let mut out = [Metric::Undefined(Undefined::NoFractured); K];
    for (slot, target) in out.iter_mut().zip(targets) {
        *slot = Metric::Defined(roc.for_specificity(target)?.sensitivity);
    }
    Ok(out)
}

/// A threshold and what it achieves on the data it was chosen on.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct OperatingPoint {
    /// Predict fractured if `score >= threshold`.
    pub threshold: f64,
    /// Fraction of fractures found at this threshold.
    pub sensitivity: f64,
    /// Fraction of not-fractured cases cleared at this threshold.
    pub specificity: f64,
}

impl OperatingPoint {
    /// Youden's J statistic, `sensitivity + specificity − 1`.
    pub fn youden_j(&self) -> f64 {
        self.sensitivity + self.specificity - 1.0
    }
}

/// How to choose an operating threshold on validation data (recorded in a bundle with the
/// threshold it chose, as `"youden"`, `{"target_sensitivity": 0.9}` or
/// `{"target_specificity": 0.9}`).
///
/// ```
/// use fracture::metrics::ThresholdRule;
/// let rule = ThresholdRule::TargetSpecificity(0.9);
/// assert_eq!(serde_json::to_string(&rule).unwrap(), r#"{"target_specificity":0.9}"#);
/// assert_eq!(rule.to_string(), "target specificity 0.9");
/// assert!(ThresholdRule::TargetSensitivity(1.5).validate().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ThresholdRule {
    /// Maximize Youden's J (sensitivity + specificity − 1); the highest threshold on ties.
    Youden,
    /// The highest threshold whose sensitivity reaches this target, in `(0, 1]` (for a screening
    /// tool that must miss few fractures, e.g. `0.95`).
    TargetSensitivity(f64),
    /// The threshold of highest sensitivity whose specificity reaches this target, in `(0, 1]`
    /// (for a tool that must raise few false alarms, e.g. `0.90`); on a tie in sensitivity the
    /// highest such threshold (the highest specificity). See [`RocCurve::for_specificity`].
    TargetSpecificity(f64),
}

impl ThresholdRule {
    /// An error naming the target unless it lies in `(0, 1]`.
    pub fn validate(&self) -> Result<()> {
        match *self {
            ThresholdRule::Youden => Ok(()),
            ThresholdRule::TargetSensitivity(target) => check_target("sensitivity", target),
            ThresholdRule::TargetSpecificity(target) => check_target("specificity", target),
        }
    }
}

/// `Youden's J`, `target sensitivity 0.9` or `target specificity 0.9`.
impl fmt::Display for ThresholdRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ThresholdRule::Youden => f.write_str("Youden's J"),
            ThresholdRule::TargetSensitivity(target) => write!(f, "target sensitivity {target}"),
            ThresholdRule::TargetSpecificity(target) => write!(f, "target specificity {target}"),
        }
    }
}

/// Choose a threshold on validation `labels`/`scores` by `rule`; apply it to the test set.
///
/// Thresholds are the distinct scores (a case at exactly the threshold is called fractured).
/// Undefined when only one class is present, or (Youden, target specificity) when no threshold
/// does better than calling every case not fractured (no fracture found at a threshold that
/// reaches the target specificity). An error for a target outside `(0, 1]`.
///
/// ```
/// use fracture::metrics::{choose_threshold, Metric, ThresholdRule};
///
/// let labels = [true, true, false, false, true, false];
/// let scores = [0.9, 0.7, 0.6, 0.4, 0.3, 0.1];
/// let youden = choose_threshold(&labels, &scores, ThresholdRule::Youden)?.value().unwrap();
/// assert_eq!(youden.threshold, 0.7); // J = 2/3: two of three fractures, no false alarm
/// let screen = choose_threshold(&labels, &scores, ThresholdRule::TargetSensitivity(1.0))?;
/// assert_eq!(screen.value().unwrap().threshold, 0.3);
/// // Specificity 0.6 allows one false alarm in three, but 0.6 (one alarm) finds no more
/// // fractures than 0.7 (none): the tie goes to the higher threshold.
/// let few_alarms = choose_threshold(&labels, &scores, ThresholdRule::TargetSpecificity(0.6))?;
/// assert_eq!(few_alarms.value().unwrap().threshold, 0.7);
/// # Ok::<(), fracture::Error>(())
/// ```
pub fn choose_threshold(
    labels: &[bool],
    scores: &[f64],
    rule: ThresholdRule,
) -> Result<Metric<OperatingPoint>> {
    check_inputs(labels, scores)?;
    rule.validate()?;
    if let Err(reason) = Ranking::new(labels, scores).require_both_classes() {
        return Ok(Metric::Undefined(reason));
    }
    let roc = RocCurve::new(labels, scores)?;
    match rule {
        ThresholdRule::Youden => Ok(roc.youden()),
        ThresholdRule::TargetSensitivity(target) => {
            roc.for_sensitivity(target).map(Metric::Defined)
        }
        ThresholdRule::TargetSpecificity(target) => {
            let point = roc.for_specificity(target)?;
            Ok(if point.sensitivity > 0.0 {
                Metric::Defined(point)
            } else {
                Metric::Undefined(Undefined::NoInformativeThreshold)
            })
        }
    }
}

/// The precision-recall curve at every distinct score, highest threshold first, starting at
/// the point (recall 0, precision 1) for the threshold `+∞` as scikit-learn does.
///
/// ```
/// use fracture::metrics::PrCurve;
/// let pr = PrCurve::new(&[true, false, true], &[0.9, 0.5, 0.1])?;
/// assert_eq!(pr.recall(), &[0.0, 0.5, 0.5, 1.0]);
/// assert_eq!(pr.precision(), &[1.0, 1.0, 0.5, 2.0 / 3.0]);
/// # Ok::<(), fracture::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PrCurve {
    precision: Vec<f64>,
    recall: Vec<f64>,
    thresholds: Vec<f64>,
}

impl PrCurve {
    /// Build the curve; an [`Error::Metric`] if there is no fractured case.
    pub fn new(labels: &[bool], scores: &[f64]) -> Result<Self> {
        check_inputs(labels, scores)?;
        let ranking = Ranking::new(labels, scores);
        if ranking.fractured == 0 {
            return Err(Error::Metric(format!(
                "precision-recall curve is undefined: {}",
                Undefined::NoFractured
            )));
        }
        Ok(Self::from_ranking(&ranking))
    }

    /// The curve of a ranking with at least one fractured case.
    fn from_ranking(ranking: &Ranking) -> Self {
        let fractured = ranking.fractured as f64;
        let mut curve = PrCurve {
            precision: vec![1.0],
            recall: vec![0.0],
            thresholds: vec![f64::INFINITY],
        };
        for ((&tp, &fp), &threshold) in ranking
            .true_positives
            .iter()
            .zip(&ranking.false_positives)
            .zip(&ranking.thresholds)
        {
            // tp + fp >= 1: every threshold is the score of at least one case.
            curve.precision.push(tp as f64 / (tp + fp) as f64);
            curve.recall.push(tp as f64 / fractured);
            curve.thresholds.push(threshold);
        }
        curve
    }

    /// Precision at each threshold.
    pub fn precision(&self) -> &[f64] {
        &self.precision
    }

    /// Recall (sensitivity) at each threshold, rising.
    pub fn recall(&self) -> &[f64] {
        &self.recall
    }

    /// Thresholds, falling; the first is `+∞`.
    pub fn thresholds(&self) -> &[f64] {
        &self.thresholds
    }

    /// Average precision, `Σ (R_k − R_{k−1}) P_k` (as [`average_precision`]).
    pub fn average_precision(&self) -> f64 {
        self.recall
            .windows(2)
            .zip(self.precision.iter().skip(1))
            .map(|(recall, &precision)| match recall {
                [before, after] => (after - before) * precision,
                _ => 0.0,
            })
            .sum()
    }
}
