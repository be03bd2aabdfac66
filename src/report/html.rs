//! The page itself: HTML assembled from [`ReportData`], every number read from its JSON by
//! pointer and marked with `data-key`, `data-value` and `data-format`, every image inlined.

use super::charts::RenderedChart;
use super::data::ReportData;
use super::gallery::GalleryImage;
use super::text::{chart_image, escape, Format, Numbers};
use super::{localization, model_card, sections};
use crate::error::Result;
use serde_json::Value;
use std::fmt::Write;

/// The page.
pub(super) fn page(
    data: &ReportData<'_>,
    json: &Value,
    charts: &[RenderedChart],
    gallery: &[GalleryImage],
) -> Result<String> {
    let n = Numbers { json };
    let mut body = String::new();
    let mut section = |id: &str, title: &str, content: String| {
        let _ = write!(
            body,
            "<section id=\"{id}\"><h2>{}</h2>\n{content}</section>\n",
            escape(title)
        );
    };
    section("headline", "Headline", sections::headline(data, &n)?);
    section(
        "curves",
        "ROC and precision-recall curves",
        format!(
            "<p>The red point is the classifier's threshold, the purple one {}.</p><div class=\"charts\">{}{}</div>",
            crate::classifier::DEFAULT_THRESHOLD,
            chart_image(charts, "roc"),
            chart_image(charts, "pr")
        ),
    );
    section(
        "operating-points",
        "Sensitivity at fixed specificity",
        sections::operating_points(data, &n)?,
    );
    section("confusion", "Confusion matrix", sections::confusion(&n)?);
    section(
        "threshold-sweep",
        "Threshold sweep",
        sections::threshold_sweep(data, &n, charts)?,
    );
    section(
        "calibration",
        "Calibration",
        sections::calibration(data, &n, charts)?,
    );
    section("tta", "Test-time augmentation", sections::tta(data, &n)?);
    section("subgroups", "Subgroups", sections::subgroups(data, &n)?);
    section(
        "localization",
        "Localization",
        localization::section(data.localization.as_ref(), &n)?,
    );
    section(
        "training",
        "Training",
        sections::training(data, &n, charts)?,
    );
    section("split", "Data and split", sections::split(data, &n)?);
    section(
        "provenance",
        "Model and weights provenance",
        sections::provenance(data)?,
    );
    section(
        "gallery",
        "Gallery",
        sections::gallery_section(gallery, &n)?,
    );
    section("model-card", "Model card", model_card::section(data, &n)?);
    Ok(format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; \
         style-src 'unsafe-inline'; script-src 'unsafe-inline'\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{title}</title>\n<style>{STYLE}</style></head>\n<body>\n<header><h1>{title}</h1>\
         <p>{cases} images of the {part} part; model {backbone}; fracture {version}. This page \
         needs no network: every picture is inside it.</p></header>\n<main>\n{body}</main>\n\
         <script>{SCRIPT}</script>\n</body></html>\n",
        title = escape(&data.title),
        cases = n.show("/summary/cases", Format::Count)?,
        part = escape(&data.evaluation.part),
        backbone = escape(&data.model.backbone),
        version = escape(&data.model.crate_version),
    ))
}

/// After loading, the page records on `<body>` how many images it has, how many failed to
/// decode (each one also a console error) and its full height, for headless checks.
const SCRIPT: &str = "window.addEventListener('load', function () {\n\
  var images = document.querySelectorAll('img');\n\
  var broken = 0;\n\
  images.forEach(function (img) {\n\
    if (!img.complete || img.naturalWidth === 0) { broken += 1; console.error('image did not load: ' + img.alt); }\n\
  });\n\
  document.body.setAttribute('data-images', String(images.length));\n\
  document.body.setAttribute('data-images-broken', String(broken));\n\
  document.body.setAttribute('data-page-height', String(document.documentElement.scrollHeight));\n\
});";

const STYLE: &str = "body{font-family:'DejaVu Sans',Verdana,sans-serif;margin:0;color:#222;background:#fafafa}\
header{background:#1f3b57;color:#fff;padding:18px 32px}header h1{margin:0 0 6px;font-size:24px}\
header p{margin:0;font-size:14px;opacity:.9}main{max-width:1320px;margin:0 auto;padding:8px 32px 40px}\
section{background:#fff;border:1px solid #ddd;border-radius:6px;padding:12px 20px 16px;margin:18px 0}\
h2{font-size:19px;margin:4px 0 10px;color:#1f3b57}h3{font-size:15px;margin:12px 0 6px}\
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(240px,1fr));gap:12px}\
.card{border:1px solid #e2e2e2;border-radius:6px;padding:10px 12px;background:#f7f9fb}\
.card .label{font-size:13px;color:#555}.card .value{font-size:22px;font-weight:bold;margin:4px 0}\
.card .value .ci{font-size:13px;font-weight:normal;color:#555}.card .note{font-size:12px;color:#666}\
.charts{display:flex;flex-wrap:wrap;gap:12px}.charts img{max-width:100%;border:1px solid #eee}\
table{border-collapse:collapse;font-size:13px;margin:6px 0}th,td{border:1px solid #ddd;padding:4px 8px;text-align:right}\
th{background:#f0f3f6}td.name,th.name{text-align:left}.ci{color:#555}\
.gallery{display:grid;grid-template-columns:repeat(auto-fill,minmax(250px,1fr));gap:12px}\
figure{margin:0;border:1px solid #ddd;border-radius:6px;padding:6px;background:#fcfcfc}\
figure img{display:block;margin:0 auto 4px}figcaption{font-size:12px;overflow-wrap:anywhere}\
.pair{display:flex;gap:4px;justify-content:center}.pair img{max-width:49%}\
.warn{color:#a33}ul{margin:4px 0 8px;padding-left:22px}li{margin:3px 0}p{margin:6px 0;font-size:14px;line-height:1.45}\
dl{display:grid;grid-template-columns:max-content 1fr;gap:4px 14px;font-size:13px}dt{font-weight:bold}dd{margin:0}";
