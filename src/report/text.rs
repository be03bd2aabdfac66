//! The report's text primitives: how numbers are read from `metrics.json` by pointer and
//! shown, HTML escaping, inlined images and cards. A leaf: the page (`html`), its sections
//! and the model card all use it, and it uses none of them.

use super::charts::RenderedChart;
use crate::error::{Error, Result};
use base64::Engine;
use serde_json::Value;

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
    pub(super) json: &'a Value,
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

    pub(super) fn show_confidence(&self, pointer: &str) -> Result<String> {
        let confidence = self
            .json
            .pointer(pointer)
            .and_then(Value::as_f64)
            .ok_or_else(|| Error::Internal(format!("report: no confidence at {pointer}")))?;
        Ok(format!("{:.0}", confidence * 100.0))
    }
}
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
