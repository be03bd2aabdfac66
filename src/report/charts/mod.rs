//! The report's charts, drawn with plotters: the same drawing code renders an SVG (text in
//! the browser's font) and a PNG (text in the bundled DejaVu Sans through `ab_glyph`, so the
//! picture is the same on every machine and needs no system font).
//!
//! [`curves`] holds the ROC, precision-recall and threshold-sweep charts, [`panels`] the
//! confusion matrix, reliability diagram and training history.

mod curves;
mod panels;

use curves::{PrChart, RocChart, SweepChart};
use panels::{ConfusionChart, ReliabilityChart, TrainingChart};

use super::data::ReportData;
use crate::error::{Error, Result};
use crate::metrics::{PrCurve, RocCurve};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::sync::OnceLock;

/// The font of the PNG charts (DejaVu Sans 2.37; licence in `assets/fonts/LICENSE`).
const FONT: &[u8] = include_bytes!("../../../assets/fonts/DejaVuSans.ttf");
pub(super) const FAMILY: &str = "sans-serif";

pub(super) const BLUE: RGBColor = RGBColor(31, 119, 180);
pub(super) const ORANGE: RGBColor = RGBColor(255, 127, 14);
pub(super) const GREEN: RGBColor = RGBColor(44, 160, 44);
pub(super) const RED: RGBColor = RGBColor(214, 39, 40);
pub(super) const PURPLE: RGBColor = RGBColor(148, 103, 189);
pub(super) const GREY: RGBColor = RGBColor(150, 150, 150);

/// A chart rendered both ways.
#[derive(Debug, Clone)]
pub(super) struct RenderedChart {
    /// File stem (`roc` gives `roc.png` and `roc.svg`).
    pub(super) name: &'static str,
    /// What it shows, for the page's `alt` text.
    pub(super) title: String,
    /// The chart as an SVG document.
    pub(super) svg: String,
    /// The chart as a PNG file.
    pub(super) png: Vec<u8>,
}

pub(super) type DrawResult<DB> =
    std::result::Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

/// One chart: a name, a size and how to draw it on any backend.
pub(super) trait Chart {
    fn name(&self) -> &'static str;
    fn title(&self) -> String;
    fn size(&self) -> (u32, u32) {
        (640, 480)
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB>;
}

/// Register the bundled font with plotters once (an error if the bytes do not parse).
fn register_font() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED
        .get_or_init(|| plotters::style::register_font(FAMILY, FontStyle::Normal, FONT).is_ok());
    if ok {
        Ok(())
    } else {
        Err(Error::Internal(
            "the bundled chart font does not parse".into(),
        ))
    }
}

fn draw_error(chart: &str, format: &str, e: impl std::fmt::Display) -> Error {
    Error::Format {
        path: format!("{chart}.{format}").into(),
        message: format!("cannot draw the chart: {e}"),
    }
}

fn render(chart: &impl Chart) -> Result<RenderedChart> {
    register_font()?;
    let (width, height) = chart.size();
    let name = chart.name();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
        chart.draw(&root).map_err(|e| draw_error(name, "svg", e))?;
        root.present().map_err(|e| draw_error(name, "svg", e))?;
    }
    let pixels = (width as usize)
        .checked_mul(height as usize)
        .and_then(|n| n.checked_mul(3))
        .ok_or_else(|| Error::Internal(format!("chart {name} is too large")))?;
    let mut buffer = vec![255u8; pixels];
    {
        let root = BitMapBackend::with_buffer(&mut buffer, (width, height)).into_drawing_area();
        chart.draw(&root).map_err(|e| draw_error(name, "png", e))?;
        root.present().map_err(|e| draw_error(name, "png", e))?;
    }
    let image = image::RgbImage::from_raw(width, height, buffer)
        .ok_or_else(|| Error::Internal(format!("chart {name}: buffer size")))?;
    Ok(RenderedChart {
        name,
        title: chart.title(),
        svg,
        png: super::encode_png(&image.into())?,
    })
}

/// Every chart of the report.
pub(super) fn render_all(data: &ReportData<'_>) -> Result<Vec<RenderedChart>> {
    let evaluation = data.evaluation;
    let (labels, scores) = evaluation.labels_and_probabilities();
    let mut charts = Vec::new();
    let at = |m: &crate::metrics::BinaryMetrics| OperatingMarker {
        threshold: m.threshold,
        sensitivity: m.sensitivity.value(),
        specificity: m.specificity.value(),
        precision: m.confusion.precision().value(),
    };
    let markers = [at(&evaluation.at_threshold), at(&evaluation.at_half)];
    if let Ok(roc) = RocCurve::new(&labels, &scores)
        && labels.contains(&true)
        && labels.contains(&false)
    {
        charts.push(render(&RocChart { roc, markers })?);
    }
    if labels.contains(&true) {
        let pr = PrCurve::new(&labels, &scores)?;
        charts.push(render(&PrChart {
            pr,
            markers,
            prevalence: data.summary.prevalence,
        })?);
    }
    charts.push(render(&ConfusionChart {
        rows: evaluation.at_threshold.confusion.rows(),
        threshold: evaluation.at_threshold.threshold,
    })?);
    charts.push(render(&SweepChart {
        sweep: &data.threshold_sweep,
        threshold: evaluation.at_threshold.threshold,
    })?);
    charts.push(render(&ReliabilityChart {
        before: &evaluation.calibration.before.bins,
        after: &evaluation.calibration.after.bins,
        ece: (
            evaluation.calibration.before.ece,
            evaluation.calibration.after.ece,
        ),
        map: evaluation.calibration.map.describe(),
    })?);
    if let Some(history) = data.history.filter(|h| !h.epochs.is_empty()) {
        charts.push(render(&TrainingChart { history })?);
    }
    Ok(charts)
}

/// A point of the classifier marked on the curves.
#[derive(Debug, Clone, Copy)]
pub(super) struct OperatingMarker {
    pub(super) threshold: f64,
    pub(super) sensitivity: Option<f64>,
    pub(super) specificity: Option<f64>,
    pub(super) precision: Option<f64>,
}

/// The first marker is the classifier's threshold (red), the second 0.5 (purple).
pub(super) fn marker_style(index: usize) -> (RGBColor, &'static str) {
    if index == 0 {
        (RED, "threshold")
    } else {
        (PURPLE, "notebook's")
    }
}

/// A chart with `f64` axes.
pub(super) type UnitChart<'a, DB> = ChartContext<
    'a,
    DB,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

pub(super) fn unit_chart<'a, DB: DrawingBackend>(
    root: &'a DrawingArea<DB, Shift>,
    caption: &str,
    x_desc: &str,
    y_desc: &str,
) -> std::result::Result<UnitChart<'a, DB>, DrawingAreaErrorKind<DB::ErrorType>> {
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(root)
        .caption(caption, (FAMILY, 20))
        .margin(14)
        .x_label_area_size(48)
        .y_label_area_size(58)
        .build_cartesian_2d(0f64..1f64, 0f64..1.0001f64)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .label_style((FAMILY, 14))
        .axis_desc_style((FAMILY, 15))
        .light_line_style(RGBColor(238, 238, 238))
        .draw()?;
    Ok(chart)
}

pub(super) fn legend<'a, DB: DrawingBackend + 'a, X: Ranged, Y: Ranged>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>,
    position: SeriesLabelPosition,
) -> DrawResult<DB> {
    chart
        .configure_series_labels()
        .position(position)
        .label_font((FAMILY, 14))
        .background_style(WHITE.mix(0.85))
        .border_style(GREY)
        .draw()
}
