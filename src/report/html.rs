//! The page itself: HTML assembled from [`ReportData`], every number read from its JSON by
//! pointer and marked with `data-key`, `data-value` and `data-format`, every image inlined.

use super::charts::RenderedChart;
use super::data::ReportData;
use super::gallery::GalleryImage;
use super::{model_card, sections};
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
    /// A `<span>` showing the number at `pointer`; an error naming the pointer if it leads
    /// nowhere, to `null` (a NaN is written as `null`, so it is refused here rather than shown
    /// as "n/a") or to something other than a number.
    pub(super) fn show(&self, pointer: &str, format: Format) -> Result<String> {
        self.render(pointer, format, false)
    }

    /// [`Self::show`] for a metric that may be undefined (`null`: a
    /// [`crate::metrics::Metric::Undefined`] or an absent value), shown as `n/a`.
    pub(super) fn show_or_undefined(&self, pointer: &str, format: Format) -> Result<String> {
        self.render(pointer, format, true)
    }

    fn render(&self, pointer: &str, format: Format, may_be_undefined: bool) -> Result<String> {
        let value = self.json.pointer(pointer).ok_or_else(|| {
            Error::Internal(format!("report: no value at {pointer} in metrics.json"))
        })?;
        let (raw, text) = match value {
            Value::Null if may_be_undefined => ("null".to_string(), "n/a".to_string()),
            Value::Null => {
                return Err(Error::InvalidInput(format!(
                    "report: {pointer} is not a number (NaN or missing), and the report shows no \
                     made-up value"
                )))
            }
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

    /// The text at `pointer` (a stored image path, a reason), not escaped; an error if
    /// the pointer leads nowhere or to something else (a bug).
    pub(super) fn text(&self, pointer: &str) -> Result<String> {
        match self.json.pointer(pointer) {
            Some(Value::String(text)) => Ok(text.clone()),
            other => Err(Error::Internal(format!(
                "report: {pointer} is {other:?}, not a text in metrics.json"
            ))),
        }
    }

    /// `estimate (95 % CI lower to upper)` of a serialized [`crate::metrics::Interval`], or
    /// `n/a` when it is `null` (an undefined interval); an error naming the pointer if it leads
    /// nowhere.
    pub(super) fn interval(&self, pointer: &str, format: Format) -> Result<String> {
        let value = self.json.pointer(pointer).ok_or_else(|| {
            Error::Internal(format!("report: no interval at {pointer} in metrics.json"))
        })?;
        if value.is_null() {
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

pub(super) fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The chart as an inline PNG (the same picture as the `.png` file beside the page).
pub(super) fn chart_image(charts: &[RenderedChart], name: &str) -> String {
    match charts.iter().find(|c| c.name == name) {
        Some(chart) => format!(
            "<img id=\"chart-{name}\" src=\"data:image/png;base64,{}\" alt=\"{}\">",
            base64(&chart.png),
            escape(&chart.title)
        ),
        None => format!("<p class=\"warn\" id=\"chart-{name}-missing\">No {name} chart: the evaluated part holds a single class.</p>"),
    }
}

pub(super) fn card(label: &str, value: String, note: &str) -> String {
    format!(
        "<div class=\"card\"><div class=\"label\">{}</div><div class=\"value\">{value}</div><div class=\"note\">{note}</div></div>",
        escape(label)
    )
}

#[cfg(test)]
mod tests {
    use super::{Format, Numbers};
    use serde_json::json;

    #[test]
    fn a_missing_or_null_number_is_an_error_unless_it_may_be_undefined() {
        let json = json!({"ece": null, "auc": null, "ci": null, "n": 3});
        let n = Numbers { json: &json };
        for pointer in ["/ece", "/missing"] {
            let message = n.show(pointer, Format::Decimal4).unwrap_err().to_string();
            assert!(message.contains(pointer), "{message}");
        }
        assert!(n
            .show_or_undefined("/auc", Format::Decimal3)
            .unwrap()
            .ends_with(">n/a</span>"));
        assert!(n.show_or_undefined("/missing", Format::Decimal3).is_err());
        assert!(n
            .interval("/ci", Format::Decimal3)
            .unwrap()
            .ends_with(">n/a</span>"));
        let message = n
            .interval("/nowhere", Format::Decimal3)
            .unwrap_err()
            .to_string();
        assert!(message.contains("/nowhere"), "{message}");
        assert!(n.show("/n", Format::Count).unwrap().ends_with(">3</span>"));
    }
}
