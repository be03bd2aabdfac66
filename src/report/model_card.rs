//! The model card: the reporting items of TRIPOD+AI (Collins et al., BMJ 2024) and CLAIM
//! (Mongan et al., Radiology: AI 2020; 2024 update) that apply to a classifier evaluated on a
//! held-out part of its own data set: intended use and what the model is not for, data source
//! and split, reference standard, model and training, performance with intervals,
//! calibration, subgroups, and limitations in plain words.

use super::data::ReportData;
use super::text::{escape, Format, Numbers};
use super::Report;
use crate::error::Result;
use std::fmt::Write;

/// An interval wider than this (on a 0-1 scale) is called out as imprecise.
const WIDE_INTERVAL: f64 = 0.15;

/// The limitations the report can state from what it knows, then the data source's notes and
/// the caller's own.
pub(super) fn limitations(report: &Report<'_>) -> Vec<String> {
    let mut out = Vec::new();
    let evaluation = report.evaluation;
    let model = &report.model;
    match model.initial_weights.as_deref() {
        Some(w) if model.trained_from_scratch() => out.push(format!(
            "Trained from scratch ({w}): no ImageNet or other pretraining, so the features were \
             learned from this data set alone."
        )),
        Some(_) => {}
        None => out.push(
            "The initial weights are not recorded (a bundle written before fracture recorded \
             them), so the model's pretraining cannot be stated."
                .into(),
        ),
    }
    out.push(super::data::split_origin_sentence(
        &evaluation.part,
        evaluation.split_origin,
    ));
    out.push(format!(
        "{} On data with another prevalence or from other scanners, the calibration and the \
         balance of sensitivity and specificity will differ.",
        model.threshold_sentence()
    ));
    let fractured = evaluation.cases.iter().filter(|c| c.fractured).count();
    if let Some(ci) = evaluation.intervals.sensitivity.value()
        && ci.upper - ci.lower > WIDE_INTERVAL
    {
        out.push(format!(
            "Only {fractured} fractured images were evaluated: the sensitivity is known only \
                 to within {:.0} to {:.0} % ({:.0} % interval).",
            ci.lower * 100.0,
            ci.upper * 100.0,
            ci.confidence * 100.0
        ));
    }
    out.push(super::calibration_text::limitation(evaluation));
    out.extend(report.data_source.notes.iter().cloned());
    out.extend(report.extra_limitations.iter().cloned());
    out
}

/// One list item per reported specificity: the best sensitivity there, threshold-free.
fn at_specificity(data: &ReportData<'_>, n: &Numbers<'_>) -> Result<String> {
    let mut out = String::new();
    for (index, point) in data
        .evaluation
        .sensitivity_at_specificity
        .iter()
        .enumerate()
    {
        let _ = write!(
            out,
            "<li>Sensitivity at specificity {:.2} (best threshold on these images) {}</li>",
            point.specificity,
            n.interval(
                &format!("/evaluation/sensitivity_at_specificity/{index}/sensitivity"),
                Format::Percent1
            )?
        );
    }
    Ok(out)
}

/// The model card section of the page.
pub(super) fn section(data: &ReportData<'_>, n: &Numbers<'_>) -> Result<String> {
    let mut out = String::new();
    let item = |out: &mut String, title: &str, body: String| {
        let _ = write!(out, "<h3>{}</h3>{body}", escape(title));
    };
    item(
        &mut out,
        "Intended use",
        "<p>Research and method development on bone-fracture classification of plain \
         radiographs: a prototype second reader that ranks or flags radiographs for a \
         qualified reader to look at first.</p>"
            .into(),
    );
    item(
        &mut out,
        "Not for",
        "<ul><li>Diagnosis or treatment decisions without a qualified reader: this is not a \
         certified medical device.</li><li>Ruling a fracture out: a negative answer misses \
         fractures at the rate shown under Performance.</li><li>Other images than those it was \
         evaluated on (other body parts, children, CT or MRI, other hospitals) until validated \
         there.</li><li>Localizing the fracture: the model answers one question per image; \
         explanation overlays show where it looked, not where the fracture is.</li></ul>"
            .into(),
    );
    let mut data_text = format!("<p>{}</p>", escape(&data.data_source.name));
    if let Some(parts) = &data.split {
        let counts: Vec<String> = parts
            .iter()
            .map(|p| format!("{} {} ({} fractured)", p.part, p.images, p.fractured))
            .collect();
        // Only what the recorded split shows: its parts and whether any content lies in two
        // of them (how it was made, stratified or by hand, is not recorded).
        let copies = match data.split_copies_across_parts {
            Some(0) => "; no image's content is in two parts (checked by hash)".to_string(),
            Some(k) => format!("; {k} contents are in more than one part (checked by hash)"),
            None => String::new(),
        };
        let _ = write!(
            data_text,
            "<p>Split by image: {}{}.</p>",
            escape(&counts.join(", ")),
            escape(&copies)
        );
    }
    let left_out: usize = data.data_source.excluded.iter().map(|(_, k)| k).sum();
    let _ = write!(
        data_text,
        "<p>Unreadable images left out of this evaluation: {}; files left out or noticed when \
         the data set was opened: {} (itemized under Data and split).</p>",
        n.show("/summary/skipped", Format::Count)?,
        if data.data_source.excluded.is_empty() {
            "not recorded".to_string()
        } else {
            left_out.to_string()
        }
    );
    item(&mut out, "Data source and split", data_text);
    item(
        &mut out,
        "Reference standard",
        "<p>The data set's image-level label (fractured or not fractured), as its authors \
         assigned it; no second reading was done for this evaluation.</p>"
            .into(),
    );
    let m = &data.model;
    item(
        &mut out,
        "Model and weights",
        format!(
            "<p>{}: a backbone and a small head giving one logit, from which the \
             probability is computed. {} {} {} Full provenance above.</p>",
            escape(&m.backbone),
            escape(&m.weights_sentence()),
            escape(&m.threshold_sentence()),
            super::calibration_text::sentence(data.evaluation, n)?
        ),
    );
    item(
        &mut out,
        &format!(
            "Performance ({:.0} % bootstrap intervals)",
            data.evaluation.bootstrap.confidence * 100.0
        ),
        format!(
            "<ul><li>Sensitivity {}</li><li>Specificity {}</li><li>ROC AUC {}</li>\
             {}<li>Accuracy {} against {} for always answering \"not fractured\"</li></ul>",
            n.interval("/evaluation/intervals/sensitivity", Format::Percent1)?,
            n.interval("/evaluation/intervals/specificity", Format::Percent1)?,
            n.interval("/evaluation/intervals/auc", Format::Decimal3)?,
            at_specificity(data, n)?,
            n.show("/evaluation/at_threshold/accuracy", Format::Percent1)?,
            n.show(
                "/evaluation/at_threshold/majority_baseline_accuracy",
                Format::Percent1
            )?
        ),
    );
    item(
        &mut out,
        "Calibration",
        format!(
            "<p>Expected calibration error {} before and {} after calibration; Brier score {} \
             and {}; calibration slope {} and intercept {} after. {}</p>",
            super::calibration_text::with_interval(n, "before", "ece")?,
            super::calibration_text::with_interval(n, "after", "ece")?,
            super::calibration_text::with_interval(n, "before", "brier")?,
            super::calibration_text::with_interval(n, "after", "brier")?,
            n.show_or_undefined("/evaluation/calibration/after/slope", Format::Decimal3)?,
            n.show_or_undefined("/evaluation/calibration/after/intercept", Format::Decimal3)?,
            super::calibration_text::sentence(data.evaluation, n)?
        ),
    );
    item(
        &mut out,
        "Localization",
        super::localization::card_sentence(data.localization.as_ref(), n)?,
    );
    item(&mut out, "Robustness", robustness_text(data));
    item(
        &mut out,
        "Subgroups",
        match (
            data.evaluation.by_body_part.is_some(),
            data.evaluation.by_hardware.is_some(),
        ) {
            (false, false) => "<p>No subgroups were recorded with this evaluation.</p>".into(),
            (body, hardware) => format!(
                "<p>{} in the Subgroups section; groups with few fractures are too small for \
                 firm conclusions.</p>",
                match (body, hardware) {
                    (true, true) => "Per body part and by visible surgical hardware",
                    (true, false) => "Per body part",
                    _ => "By visible surgical hardware",
                }
            ),
        },
    );
    let mut list = String::from("<ul id=\"limitations\">");
    for text in &data.limitations {
        let _ = write!(list, "<li>{}</li>", escape(text));
    }
    list.push_str("</ul>");
    item(&mut out, "Limitations", list);
    Ok(out)
}

/// The robustness table (each row as measured), or a sentence saying it was not measured.
fn robustness_text(data: &ReportData<'_>) -> String {
    let Some(r) = &data.robustness else {
        return "<p>Not measured with this evaluation (see <code>FractureClassifier::robustness</code>).</p>".into();
    };
    let mut out = format!(
        "<p>The same {} images changed as hospitals change pictures (noise seed {}): the \
         absolute change of the fracture probability, and the decisions flipped at the \
         threshold.</p><table><tr><th>perturbation</th><th>median</th><th>95th percentile</th>\
         <th>largest</th><th>decisions flipped</th></tr>",
        r.images, r.seed
    );
    for p in r.perturbations {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{:.4}</td><td>{:.4}</td><td>{:.4}</td><td>{} ({:.2} %)</td></tr>",
            escape(&p.perturbation),
            p.median_change,
            p.p95_change,
            p.max_change,
            p.flipped,
            100.0 * p.flipped_share
        );
    }
    out.push_str("</table>");
    out
}
