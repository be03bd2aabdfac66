//! The page itself: HTML assembled from [`ReportData`], every number read from its JSON by
//! pointer and marked with `data-key`, `data-value` and `data-format`, every image inlined.

use super::charts::RenderedChart;
use super::data::ReportData;
use super::gallery::{overlay_thumbnail, thumbnail, GalleryImage, GalleryKind};
use super::{encode_png, model_card};
use crate::error::{Error, Result};
use base64::Engine;
use serde_json::Value;
use std::fmt::Write;

/// How a number is shown. The page's `data-format` names it; tools re-format `data-value`
/// with it and compare with the text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Format {
    /// `81.2 %`
    Percent1,
    /// `0.812`
    Decimal3,
    /// `0.8123`
    Decimal4,
    /// `42`
    Count,
}

impl Format {
    fn name(self) -> &'static str {
        match self {
            Format::Percent1 => "percent1",
            Format::Decimal3 => "decimal3",
            Format::Decimal4 => "decimal4",
            Format::Count => "count",
        }
    }

    fn show(self, value: f64) -> String {
        match self {
            Format::Percent1 => format!("{:.1} %", value * 100.0),
            Format::Decimal3 => format!("{value:.3}"),
            Format::Decimal4 => format!("{value:.4}"),
            Format::Count => format!("{value:.0}"),
        }
    }
}

/// Escape text for HTML content and attribute values.
pub(super) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// One step of a JSON pointer (RFC 6901: `~` as `~0`, `/` as `~1`).
pub(super) fn pointer_step(name: &str) -> String {
    name.replace('~', "~0").replace('/', "~1")
}

/// Numbers of the page, looked up in the report's JSON.
pub(super) struct Numbers<'a> {
    json: &'a Value,
}

impl Numbers<'_> {
    /// A `<span>` showing the number at `pointer` (or `n/a` when it is `null`, an undefined
    /// metric); an error if the pointer leads nowhere or to something else (a bug).
    pub(super) fn show(&self, pointer: &str, format: Format) -> Result<String> {
        let value = self.json.pointer(pointer).ok_or_else(|| {
            Error::Internal(format!("report: no value at {pointer} in metrics.json"))
        })?;
        let (raw, text) = match value {
            Value::Null => ("null".to_string(), "n/a".to_string()),
            Value::Number(n) => {
                let v = n.as_f64().ok_or_else(|| {
                    Error::Internal(format!("report: {pointer} is not a finite number"))
                })?;
                (n.to_string(), format.show(v))
            }
            other => {
                return Err(Error::Internal(format!(
                    "report: {pointer} is {other}, not a number"
                )))
            }
        };
        Ok(format!(
            "<span class=\"num\" data-key=\"{}\" data-value=\"{}\" data-format=\"{}\">{}</span>",
            escape(pointer),
            escape(&raw),
            format.name(),
            escape(&text)
        ))
    }

    /// `estimate (95 % CI lower to upper)` of a serialized [`crate::metrics::Interval`] (or
    /// `n/a`).
    pub(super) fn interval(&self, pointer: &str, format: Format) -> Result<String> {
        if self.json.pointer(pointer).is_none_or(Value::is_null) {
            return Ok(format!(
                "<span class=\"num\" data-key=\"{}\" data-value=\"null\" data-format=\"{}\">n/a</span>",
                escape(pointer),
                format.name()
            ));
        }
        Ok(format!(
            "{} <span class=\"ci\">({} % CI {} to {})</span>",
            self.show(&format!("{pointer}/estimate"), format)?,
            self.show_confidence(&format!("{pointer}/confidence"))?,
            self.show(&format!("{pointer}/lower"), format)?,
            self.show(&format!("{pointer}/upper"), format)?
        ))
    }

    fn show_confidence(&self, pointer: &str) -> Result<String> {
        let confidence = self
            .json
            .pointer(pointer)
            .and_then(Value::as_f64)
            .ok_or_else(|| Error::Internal(format!("report: no confidence at {pointer}")))?;
        Ok(format!("{:.0}", confidence * 100.0))
    }
}

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
    section("headline", "Headline", headline(data, &n)?);
    section(
        "curves",
        "ROC and precision-recall curves",
        format!(
            "<p>The red point is the classifier's threshold, the purple one 0.5.</p><div class=\"charts\">{}{}</div>",
            chart_image(charts, "roc"),
            chart_image(charts, "pr")
        ),
    );
    section("confusion", "Confusion matrix", confusion(&n)?);
    section(
        "threshold-sweep",
        "Threshold sweep",
        threshold_sweep(data, &n, charts)?,
    );
    section("calibration", "Calibration", calibration(&n, charts)?);
    section("tta", "Test-time augmentation", tta(data, &n)?);
    section("subgroups", "Subgroups", subgroups(data, &n)?);
    section("training", "Training", training(data, &n, charts)?);
    section("split", "Data and split", split(data, &n)?);
    section(
        "provenance",
        "Model and weights provenance",
        provenance(data)?,
    );
    section("gallery", "Gallery", gallery_section(gallery, &n)?);
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
figure img{display:block;margin:0 auto 4px}figcaption{font-size:12px;word-break:break-all}\
.pair{display:flex;gap:4px;justify-content:center}.pair img{max-width:49%}\
.warn{color:#a33}ul{margin:4px 0 8px;padding-left:22px}li{margin:3px 0}p{margin:6px 0;font-size:14px;line-height:1.45}\
dl{display:grid;grid-template-columns:max-content 1fr;gap:4px 14px;font-size:13px}dt{font-weight:bold}dd{margin:0}";

fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The chart as an inline PNG (the same picture as the `.png` file beside the page).
fn chart_image(charts: &[RenderedChart], name: &str) -> String {
    match charts.iter().find(|c| c.name == name) {
        Some(chart) => format!(
            "<img id=\"chart-{name}\" src=\"data:image/png;base64,{}\" alt=\"{}\">",
            base64(&chart.png),
            escape(&chart.title)
        ),
        None => format!("<p class=\"warn\" id=\"chart-{name}-missing\">No {name} chart: the evaluated part holds a single class.</p>"),
    }
}

fn card(label: &str, value: String, note: &str) -> String {
    format!(
        "<div class=\"card\"><div class=\"label\">{}</div><div class=\"value\">{value}</div><div class=\"note\">{note}</div></div>",
        escape(label)
    )
}

fn headline(data: &ReportData<'_>, n: &Numbers<'_>) -> Result<String> {
    let threshold = n.show("/evaluation/at_threshold/threshold", Format::Decimal3)?;
    let cards = [
        card(
            "Sensitivity (fractures found)",
            n.interval("/evaluation/intervals/sensitivity", Format::Percent1)?,
            &format!(
                "at threshold {threshold}; {} of {} fractures",
                n.show(
                    "/evaluation/at_threshold/confusion/true_positives",
                    Format::Count
                )?,
                n.show("/summary/fractured", Format::Count)?
            ),
        ),
        card(
            "Specificity (normals cleared)",
            n.interval("/evaluation/intervals/specificity", Format::Percent1)?,
            &format!(
                "at threshold {threshold}; {} of {} not fractured",
                n.show(
                    "/evaluation/at_threshold/confusion/true_negatives",
                    Format::Count
                )?,
                n.show("/summary/not_fractured", Format::Count)?
            ),
        ),
        card(
            "ROC AUC",
            n.interval("/evaluation/intervals/auc", Format::Decimal3)?,
            "bootstrap, 1000 resamples",
        ),
        card(
            "Prevalence (fraction fractured)",
            n.show("/summary/prevalence", Format::Percent1)?,
            &format!(
                "{} images evaluated",
                n.show("/summary/cases", Format::Count)?
            ),
        ),
        card(
            "Accuracy",
            n.show("/evaluation/at_threshold/accuracy", Format::Percent1)?,
            &format!(
                "always answering \"not fractured\" scores {}",
                n.show(
                    "/evaluation/at_threshold/majority_baseline_accuracy",
                    Format::Percent1
                )?
            ),
        ),
        card(
            "Average precision",
            n.show(
                "/evaluation/at_threshold/average_precision",
                Format::Decimal3,
            )?,
            &format!(
                "a random ranking scores the prevalence, {}",
                n.show("/summary/prevalence", Format::Decimal3)?
            ),
        ),
    ];
    let mut out = format!("<div class=\"cards\">{}</div>", cards.join(""));
    let _ = write!(
        out,
        "<p>Threshold {threshold} (chosen on the validation part); probabilities at temperature {}. \
         At the reference notebook's 0.5: sensitivity {}, specificity {}.</p>",
        n.show("/evaluation/temperature", Format::Decimal3)?,
        n.show("/evaluation/at_half/sensitivity", Format::Percent1)?,
        n.show("/evaluation/at_half/specificity", Format::Percent1)?
    );
    if data.summary.skipped > 0 {
        let _ = write!(
            out,
            "<p class=\"warn\">{} unreadable image(s) were left out (listed under Data and split).</p>",
            n.show("/summary/skipped", Format::Count)?
        );
    }
    Ok(out)
}

fn confusion(n: &Numbers<'_>) -> Result<String> {
    let c = |name: &str| {
        n.show(
            &format!("/evaluation/at_threshold/confusion/{name}"),
            Format::Count,
        )
    };
    Ok(format!(
        "<table id=\"confusion-table\"><tr><th class=\"name\">true \\ predicted</th><th>fractured</th><th>not fractured</th></tr>\
         <tr><td class=\"name\">fractured</td><td>{}</td><td>{}</td></tr>\
         <tr><td class=\"name\">not fractured</td><td>{}</td><td>{}</td></tr></table>\
         <p>Positive predictive value {}, negative predictive value {} at threshold {}.</p>",
        c("true_positives")?,
        c("false_negatives")?,
        c("false_positives")?,
        c("true_negatives")?,
        n.show("/summary/ppv", Format::Percent1)?,
        n.show("/summary/npv", Format::Percent1)?,
        n.show("/evaluation/at_threshold/threshold", Format::Decimal3)?,
    ))
}

fn threshold_sweep(
    data: &ReportData<'_>,
    n: &Numbers<'_>,
    charts: &[RenderedChart],
) -> Result<String> {
    let mut rows = String::new();
    for (index, point) in data.threshold_sweep.iter().enumerate() {
        if index % 10 != 0 || index == 0 || index == super::data::SWEEP_STEPS {
            continue;
        }
        let cell = |what: &str| {
            n.show(
                &format!("/threshold_sweep/{index}/{what}"),
                Format::Percent1,
            )
        };
        let _ = write!(
            rows,
            "<tr><td>{:.1}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            point.threshold,
            cell("sensitivity")?,
            cell("specificity")?,
            cell("ppv")?,
            cell("npv")?
        );
    }
    Ok(format!(
        "<div class=\"charts\">{}</div><table id=\"sweep-table\"><tr><th>threshold</th><th>sensitivity</th><th>specificity</th><th>PPV</th><th>NPV</th></tr>{rows}</table>",
        chart_image(charts, "threshold_sweep")
    ))
}

fn calibration(n: &Numbers<'_>, charts: &[RenderedChart]) -> Result<String> {
    let c = |what: &str| n.show(&format!("/evaluation/calibration/{what}"), Format::Decimal4);
    Ok(format!(
        "<div class=\"charts\">{}</div>\
         <table id=\"calibration-table\"><tr><th class=\"name\"></th><th>ECE (15 bins)</th><th>Brier score</th></tr>\
         <tr><td class=\"name\">before (T = 1)</td><td>{}</td><td>{}</td></tr>\
         <tr><td class=\"name\">after (T = {})</td><td>{}</td><td>{}</td></tr></table>\
         <p>Temperature scaling divides every logit by one number T fitted on the validation part; it changes the \
         probabilities, not their order, so the ROC AUC and the decisions at the threshold stay the same.</p>",
        chart_image(charts, "reliability"),
        c("before/ece")?,
        c("before/brier")?,
        n.show("/evaluation/calibration/temperature", Format::Decimal3)?,
        c("after/ece")?,
        c("after/brier")?,
    ))
}

fn tta(data: &ReportData<'_>, n: &Numbers<'_>) -> Result<String> {
    let Some(tta) = &data.evaluation.tta else {
        return Ok("<p id=\"tta-off\">Off: every image was scored once, as it is.</p>".into());
    };
    Ok(format!(
        "<p>Views: {} (the logits are averaged). ROC AUC without {}, with {}; paired-bootstrap difference \
         (with − without) {}.</p>",
        escape(&tta.config.describe()),
        n.show("/evaluation/tta/auc_without", Format::Decimal4)?,
        n.show("/evaluation/tta/auc_with", Format::Decimal4)?,
        n.interval("/evaluation/tta/difference", Format::Decimal4)?
    ))
}

fn subgroup_table(
    id: &str,
    groups: Option<&crate::metrics::SubgroupMetrics>,
    pointer: &str,
    n: &Numbers<'_>,
) -> Result<String> {
    let Some(groups) = groups else {
        return Ok(format!(
            "<p id=\"{id}-missing\">Not available: the images carry no metadata.</p>"
        ));
    };
    let mut rows = String::new();
    for (name, _) in groups.iter() {
        let base = format!("{pointer}/groups/{}", pointer_step(name));
        let v = |what: &str, format| n.show(&format!("{base}/{what}"), format);
        let _ = write!(
            rows,
            "<tr><td class=\"name\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(name),
            v("report/fractured/support", Format::Count)?,
            v("report/not_fractured/support", Format::Count)?,
            v("sensitivity", Format::Percent1)?,
            v("specificity", Format::Percent1)?,
            v("roc_auc", Format::Decimal3)?,
            v("accuracy", Format::Percent1)?
        );
    }
    Ok(format!(
        "<table id=\"{id}\"><tr><th class=\"name\">group</th><th>fractured</th><th>not fractured</th><th>sensitivity</th>\
         <th>specificity</th><th>ROC AUC</th><th>accuracy</th></tr>{rows}</table>"
    ))
}

fn subgroups(data: &ReportData<'_>, n: &Numbers<'_>) -> Result<String> {
    Ok(format!(
        "<p>At the classifier's threshold. Small groups have wide uncertainty; n/a: the group lacks one class.</p>\
         <h3>By body part</h3>{}<h3>By visible surgical hardware</h3>{}",
        subgroup_table("body-part-table", data.evaluation.by_body_part.as_ref(), "/evaluation/by_body_part", n)?,
        subgroup_table("hardware-table", data.evaluation.by_hardware.as_ref(), "/evaluation/by_hardware", n)?
    ))
}

fn training(data: &ReportData<'_>, n: &Numbers<'_>, charts: &[RenderedChart]) -> Result<String> {
    let Some(history) = data.history.filter(|h| !h.epochs.is_empty()) else {
        return Ok("<p id=\"training-missing\">No training history in this bundle.</p>".into());
    };
    let best = history
        .best_epoch()
        .and_then(|b| history.epochs.iter().position(|e| e.epoch == b.epoch));
    let best_text = match best {
        Some(index) => format!(
            "Best epoch {} of {} by validation loss ({}; validation AUC {}); its weights are the model's.",
            n.show(&format!("/history/epochs/{index}/epoch"), Format::Count)?,
            history.epochs.len(),
            n.show(&format!("/history/epochs/{index}/val_loss"), Format::Decimal4)?,
            n.show(&format!("/history/epochs/{index}/val_auc"), Format::Decimal3)?
        ),
        None => String::new(),
    };
    Ok(format!(
        "<div class=\"charts\">{}</div><p>{best_text}</p>",
        chart_image(charts, "training")
    ))
}

fn split(data: &ReportData<'_>, n: &Numbers<'_>) -> Result<String> {
    let mut out = String::new();
    match &data.split {
        Some(parts) => {
            let mut rows = String::new();
            for (index, part) in parts.iter().enumerate() {
                let v = |what: &str| n.show(&format!("/split/{index}/{what}"), Format::Count);
                let _ = write!(
                    rows,
                    "<tr><td class=\"name\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    escape(&part.part),
                    v("images")?,
                    v("fractured")?,
                    v("not_fractured")?
                );
            }
            let _ = write!(
                out,
                "<p>Stratified by label; byte-identical images are kept in one part.</p><table id=\"split-table\">\
                 <tr><th class=\"name\">part</th><th>images</th><th>fractured</th><th>not fractured</th></tr>{rows}</table>"
            );
        }
        None => {
            out.push_str("<p id=\"split-missing\">The split is not recorded in this bundle.</p>")
        }
    }
    let _ = write!(
        out,
        "<p>Data source: {}</p>",
        escape(&data.data_source.name)
    );
    if !data.data_source.excluded.is_empty() {
        out.push_str(
            "<h3>Left out or noticed when the data set was opened</h3><ul id=\"excluded\">",
        );
        for (index, (what, _)) in data.data_source.excluded.iter().enumerate() {
            let _ = write!(
                out,
                "<li>{}: {}</li>",
                escape(what),
                n.show(&format!("/data_source/excluded/{index}/1"), Format::Count)?
            );
        }
        out.push_str("</ul>");
    }
    let skipped = &data.evaluation.skipped;
    let _ = write!(
        out,
        "<h3>Unreadable images of the evaluated part</h3><p>{}</p>",
        n.show("/summary/skipped", Format::Count)?
    );
    if !skipped.is_empty() {
        out.push_str("<ul id=\"skipped\">");
        for (path, reason) in skipped {
            let name = path
                .file_name()
                .map(|f| f.to_string_lossy())
                .unwrap_or_default();
            let _ = write!(out, "<li>{}: {}</li>", escape(&name), escape(reason));
        }
        out.push_str("</ul>");
    }
    Ok(out)
}

fn provenance(data: &ReportData<'_>) -> Result<String> {
    let m = &data.model;
    let unknown = || "not recorded".to_string();
    let training = m.training.as_ref().map_or_else(unknown, |t| {
        format!(
            "{} epochs, batch {}, learning rate {}, backbone {:?}, augmentation {}, class weights {}",
            t.epochs,
            t.batch_size,
            t.learning_rate,
            t.backbone,
            if t.augment { "on" } else { "off" },
            if t.class_weights.is_some() { "on" } else { "off" }
        )
    });
    let rows = [
        ("fracture version", m.crate_version.clone()),
        ("backbone", m.backbone.clone()),
        ("backbone parameters", m.backbone_parameters.to_string()),
        (
            "head",
            format!(
                "dense {} + ReLU, dropout {}, one logit",
                m.head.hidden, m.head.dropout
            ),
        ),
        (
            "input",
            format!(
                "{}x{}, {} resize, {} scaling",
                m.preprocess.width,
                m.preprocess.height,
                m.preprocess.filter,
                m.preprocess.normalization
            ),
        ),
        (
            "initial weights",
            m.initial_weights.clone().unwrap_or_else(unknown),
        ),
        ("training", training),
        ("threshold", format!("{:.4}", m.threshold)),
        ("temperature", format!("{:.4}", m.temperature)),
        ("test-time augmentation", m.tta.describe()),
        ("bundle", m.bundle.clone().unwrap_or_else(unknown)),
        (
            "weights SHA-256",
            m.weights_sha256.clone().unwrap_or_else(unknown),
        ),
    ];
    let mut out = String::from("<dl id=\"provenance-list\">");
    for (what, value) in rows {
        let _ = write!(out, "<dt>{}</dt><dd>{}</dd>", escape(what), escape(&value));
    }
    out.push_str("</dl>");
    Ok(out)
}

fn data_uri(image: &image::DynamicImage) -> Result<String> {
    Ok(format!(
        "data:image/png;base64,{}",
        base64(&encode_png(image)?)
    ))
}

fn gallery_section(gallery: &[GalleryImage], n: &Numbers<'_>) -> Result<String> {
    let mut out = String::from(
        "<p>The most confident misses and false alarms, and the clearest hits, at the classifier's threshold. \
         Red boxes: annotated fractures; right: the explanation overlay, where one was given.</p>",
    );
    for kind in GalleryKind::ALL {
        let _ = write!(out, "<h3>{}s</h3>", escape(kind.name()));
        let members: Vec<(usize, &GalleryImage)> = gallery
            .iter()
            .enumerate()
            .filter(|(_, g)| g.kind == kind)
            .collect();
        if members.is_empty() {
            out.push_str("<p>None.</p>");
            continue;
        }
        out.push_str("<div class=\"gallery\">");
        for (index, image) in members {
            let name = image
                .path
                .file_name()
                .map(|f| f.to_string_lossy())
                .unwrap_or_default();
            let picture = match thumbnail(image) {
                Ok(thumb) => format!(
                    "<img src=\"{}\" alt=\"{}\">",
                    data_uri(&thumb)?,
                    escape(&name)
                ),
                Err(e) => format!(
                    "<p class=\"warn\">cannot show the image: {}</p>",
                    escape(&e.to_string())
                ),
            };
            let overlay = match &image.overlay {
                Some(overlay) => match overlay_thumbnail(overlay) {
                    Ok(thumb) => format!(
                        "<img src=\"{}\" alt=\"overlay of {}\">",
                        data_uri(&thumb)?,
                        escape(&name)
                    ),
                    Err(e) => format!(
                        "<p class=\"warn\">cannot show the overlay: {}</p>",
                        escape(&e.to_string())
                    ),
                },
                None => String::new(),
            };
            let _ = write!(
                out,
                "<figure><div class=\"pair\">{picture}{overlay}</div><figcaption>{} — {}, probability {}</figcaption></figure>",
                escape(&name),
                if image.fractured { "fractured" } else { "not fractured" },
                n.show(&format!("/gallery/{index}/probability"), Format::Decimal3)?
            );
        }
        out.push_str("</div>");
    }
    Ok(out)
}
