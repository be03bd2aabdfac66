//! The report's sentences about calibration, each built from the calibration record the
//! evaluation carries ([`crate::classifier::Calibration`]: method, map, where it came from),
//! never assumed: a classifier that was not calibrated, was calibrated by hand, on another
//! part, on too few images or on other test-time augmentation says so.

use super::text::{escape, Format, Numbers};
use crate::classifier::{CalibrationMethod, CalibrationSource, Evaluation};
use crate::error::Result;

/// `value (C % CI lower to upper)` of the ECE or Brier score (`what`: `ece` or `brier`) of
/// the calibration summary `when` (`before` or `after`); their intervals are always defined.
pub(super) fn with_interval(n: &Numbers<'_>, when: &str, what: &str) -> Result<String> {
    let at = |tail: &str| format!("/evaluation/calibration/{when}/{tail}");
    Ok(format!(
        "{} <span class=\"ci\">({} % CI {} to {})</span>",
        n.show(&at(what), Format::Decimal4)?,
        n.show_confidence(&at(&format!("{what}_interval/confidence")))?,
        n.show(&at(&format!("{what}_interval/lower")), Format::Decimal4)?,
        n.show(&at(&format!("{what}_interval/upper")), Format::Decimal4)?
    ))
}

/// The test-time augmentation the evaluation scored with, described as the record describes
/// it (`None`: the image alone).
fn evaluated_tta(evaluation: &Evaluation) -> Option<String> {
    evaluation.tta.as_ref().map(|t| t.config.describe())
}

/// What the probabilities are and where their calibration came from, as HTML (numbers from
/// `metrics.json`).
pub(super) fn sentence(evaluation: &Evaluation, n: &Numbers<'_>) -> Result<String> {
    let record = &evaluation.calibrated_by;
    let map = match record.method {
        CalibrationMethod::None => "not calibrated: they are the network's sigmoid(logit), \
                                    not fitted to observed fracture rates"
            .to_string(),
        CalibrationMethod::Temperature => format!(
            "temperature scaling, sigmoid(logit / T) with T = {}",
            n.show("/evaluation/temperature", Format::Decimal3)?
        ),
        CalibrationMethod::Platt => format!(
            "Platt scaling, sigmoid(a &middot; logit + b) with a = {}, b = {}",
            n.show("/evaluation/calibrated_by/map/slope", Format::Decimal3)?,
            n.show("/evaluation/calibrated_by/map/intercept", Format::Decimal3)?
        ),
    };
    let source = match &record.source {
        CalibrationSource::NotFitted { reason: Some(why) } => {
            format!(" (no fit: {})", escape(why))
        }
        CalibrationSource::NotFitted { reason: None } => String::new(),
        CalibrationSource::Manual => ", set by hand, not fitted on data".into(),
        CalibrationSource::Unknown => ", of unknown origin (the bundle was written before \
                                      fracture recorded where its calibration came from)"
            .into(),
        CalibrationSource::Fitted {
            part, tta, forced, ..
        } => {
            let mut text = format!(
                ", fitted on the {} part ({} images, {} fractured; {})",
                escape(part),
                n.show("/evaluation/calibrated_by/source/cases", Format::Count)?,
                n.show("/evaluation/calibrated_by/source/fractured", Format::Count)?,
                match tta {
                    Some(views) => format!("mean logits over {}", escape(views)),
                    None => "each image alone, no test-time augmentation".into(),
                }
            );
            if *forced {
                text.push_str(
                    "; <strong>forced</strong> past the checks (a part other than validation, \
                     or fewer images than a fit needs)",
                );
            }
            if *part == evaluation.part {
                text.push_str(
                    "; that is the part evaluated here, so the calibration measured after it \
                     is optimistic",
                );
            }
            if *tta != evaluated_tta(evaluation) {
                text.push_str(
                    "; the logits evaluated here were scored with other test-time \
                     augmentation than the fit",
                );
            }
            text
        }
    };
    Ok(format!("Probabilities: {map}{source}."))
}

/// The limitation the calibration record implies, in plain words.
pub(super) fn limitation(evaluation: &Evaluation) -> String {
    let record = &evaluation.calibrated_by;
    match &record.source {
        CalibrationSource::NotFitted { reason } => format!(
            "No calibration was fitted{}: the probabilities are the network's own and need not \
             match observed fracture rates; read them as scores.",
            reason
                .as_ref()
                .map(|why| format!(" ({why})"))
                .unwrap_or_default()
        ),
        CalibrationSource::Manual => "The calibration was set by hand, not fitted on data: \
                                      the probabilities were not shown to match observed \
                                      fracture rates."
            .into(),
        CalibrationSource::Unknown => "Where the calibration came from is not recorded (an \
                                       older bundle): the probabilities may not match observed \
                                       fracture rates."
            .into(),
        CalibrationSource::Fitted {
            part,
            cases,
            forced,
            ..
        } => format!(
            "The calibration was fitted on the {part} part ({cases} images){}; on data with \
             another prevalence or from other scanners the probabilities will not mean the same.",
            if *forced {
                ", forced past the checks on part and size"
            } else {
                ""
            }
        ),
    }
}
