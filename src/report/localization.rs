//! The report's localization section: where the explanation maps land on the annotated
//! fractures, next to the baselines, with the paired differences overall and per body part
//! ([`crate::metrics::localization`]). Its data leave the image paths out.

use super::text::{escape, pointer_step, Format, Numbers};
use crate::error::Result;
use crate::metrics::localization::{
    BaselineDifferences, BaselineMap, BodyPartLocalization, LocalizationSummary,
};
use crate::metrics::{LocalizationConfig, LocalizationReport};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;

/// What `metrics.json` holds of a [`LocalizationReport`]: its summaries, not its images.
#[derive(Debug, Clone, Serialize)]
pub struct LocalizationData<'a> {
    /// What the map is (`Grad-CAM of fracture`).
    pub map_name: &'a str,
    /// The settings used (tolerance, region and IoU thresholds, baseline width).
    pub config: &'a LocalizationConfig,
    /// Bootstrap resamples of every interval.
    pub bootstrap_resamples: usize,
    /// Seed of the resampling.
    pub bootstrap_seed: u64,
    /// Coverage of every interval (e.g. 0.95).
    pub bootstrap_confidence: f64,
    /// Annotated fractured images scored.
    pub images: usize,
    /// Fractured images without annotated boxes (left out).
    pub without_annotations: usize,
    /// Images that could not be scored.
    pub skipped: usize,
    /// The explanation map's summary.
    pub map: &'a LocalizationSummary,
    /// The centred Gaussian's.
    pub centred_gaussian: &'a LocalizationSummary,
    /// The uniform map's.
    pub uniform: &'a LocalizationSummary,
    /// The map minus each baseline, paired image by image.
    pub differences: &'a BaselineDifferences,
    /// The same per body part.
    pub by_body_part: &'a BTreeMap<String, BodyPartLocalization>,
}

impl<'a> LocalizationData<'a> {
    /// The summaries of `report`.
    pub fn of(report: &'a LocalizationReport) -> Self {
        Self {
            map_name: &report.map_name,
            config: &report.config,
            bootstrap_resamples: report.config.bootstrap.n_resamples,
            bootstrap_seed: report.config.bootstrap.seed,
            bootstrap_confidence: report.config.bootstrap.confidence,
            images: report.images.len(),
            without_annotations: report.without_annotations.len(),
            skipped: report.skipped.len(),
            map: &report.map,
            centred_gaussian: &report.centred_gaussian,
            uniform: &report.uniform,
            differences: &report.differences,
            by_body_part: &report.by_body_part,
        }
    }
}

/// The intervals of one summary at `pointer`, one cell per statistic.
fn cells(n: &Numbers<'_>, pointer: &str) -> Result<String> {
    let mut out = String::new();
    for (_, field) in LocalizationSummary::STATISTICS {
        let _ = write!(
            out,
            "<td>{}</td>",
            n.interval(&format!("{pointer}/{field}"), Format::Decimal3)?
        );
    }
    Ok(out)
}

/// The section; a note when no localization was scored.
pub(super) fn section(data: Option<&LocalizationData<'_>>, n: &Numbers<'_>) -> Result<String> {
    let Some(data) = data else {
        return Ok(
            "<p id=\"localization-missing\">Not scored for this report (evaluate with \
                   --localization and the data set's annotated boxes).</p>"
                .into(),
        );
    };
    let map = escape(data.map_name);
    let header: String = LocalizationSummary::STATISTICS
        .iter()
        .map(|(name, _)| format!("<th>{}</th>", escape(name)))
        .collect();
    let mut out = format!(
        "<p>On {} annotated fractured images ({} without annotations, {} skipped). Pointing game: \
         the map's maximum within {} px (at the annotated resolution) of a box; energy: the share \
         of the map inside the boxes; box IoU: the box around the largest region at or above {} \
         % of the peak, a hit at IoU {} or more. The baselines know nothing about the image: a \
         map that does not beat them shows nothing. Intervals: {} % bootstrap over the images, \
         {} resamples.</p>\
         <table id=\"localization-table\"><tr><th class=\"name\">map</th>{header}</tr>",
        n.show("/localization/images", Format::Count)?,
        n.show("/localization/without_annotations", Format::Count)?,
        n.show("/localization/skipped", Format::Count)?,
        data.config.tolerance_px,
        data.config.region_threshold * 100.0,
        data.config.iou_threshold,
        n.show_confidence("/localization/bootstrap_confidence")?,
        n.show("/localization/bootstrap_resamples", Format::Count)?,
    );
    for (name, key) in [
        (map.clone(), "map"),
        (
            BaselineMap::CentredGaussian.name().into(),
            "centred_gaussian",
        ),
        (BaselineMap::Uniform.name().into(), "uniform"),
    ] {
        let _ = write!(
            out,
            "<tr><td class=\"name\">{name}</td>{}</tr>",
            cells(n, &format!("/localization/{key}"))?
        );
    }
    let _ = write!(
        out,
        "</table><h3>Paired differences ({map} minus baseline)</h3><p>The mean per-image \
         difference, with an interval that resamples the same images for the map and the \
         baseline: an interval wholly above 0 says the map beats the baseline.</p>\
         <table id=\"localization-differences\"><tr><th class=\"name\">comparison</th>{header}</tr>"
    );
    for (name, key) in [
        (BaselineMap::CentredGaussian.name(), "centred_gaussian"),
        (BaselineMap::Uniform.name(), "uniform"),
    ] {
        let _ = write!(
            out,
            "<tr><td class=\"name\">{map} minus {}</td>{}</tr>",
            escape(name),
            cells(n, &format!("/localization/differences/{key}"))?
        );
    }
    out.push_str("</table>");
    if data.by_body_part.is_empty() {
        out.push_str(
            "<p id=\"localization-parts-missing\">No body part is known for these images.</p>",
        );
        return Ok(out);
    }
    let _ = write!(
        out,
        "<h3>By body part</h3><table id=\"localization-body-parts\"><tr><th class=\"name\">part</th>\
         <th>images</th><th class=\"name\">statistic</th><th>{map}</th><th>minus centred Gaussian</th>\
         <th>minus uniform</th></tr>"
    );
    for part in data.by_body_part.keys() {
        let base = format!("/localization/by_body_part/{}", pointer_step(part));
        for (statistic, field) in LocalizationSummary::STATISTICS {
            let at = |path: &str| n.interval(&format!("{base}/{path}/{field}"), Format::Decimal3);
            let _ = write!(
                out,
                "<tr><td class=\"name\">{}</td><td>{}</td><td class=\"name\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(part),
                n.show(&format!("{base}/images"), Format::Count)?,
                escape(statistic),
                at("map")?,
                at("differences/centred_gaussian")?,
                at("differences/uniform")?
            );
        }
    }
    out.push_str("</table><p>Parts with few images have wide intervals.</p>");
    Ok(out)
}

/// The model card's sentence on localization, when it was scored.
pub(super) fn card_sentence(
    data: Option<&LocalizationData<'_>>,
    n: &Numbers<'_>,
) -> Result<String> {
    let Some(data) = data else {
        return Ok("<p>Localization was not scored for this report.</p>".into());
    };
    Ok(format!(
        "<p>{}: pointing game {} on {} annotated fractured images; minus a centred Gaussian {}, \
         minus a uniform map {} (paired, {} % bootstrap intervals). Details under Localization.</p>",
        escape(data.map_name),
        n.interval("/localization/map/pointing_game", Format::Decimal3)?,
        n.show("/localization/images", Format::Count)?,
        n.interval("/localization/differences/centred_gaussian/pointing_game", Format::Decimal3)?,
        n.interval("/localization/differences/uniform/pointing_game", Format::Decimal3)?,
        n.show_confidence("/localization/bootstrap_confidence")?,
    ))
}
