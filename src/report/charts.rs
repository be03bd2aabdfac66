//! The report's charts, drawn with plotters: the same drawing code renders an SVG (text in
//! the browser's font) and a PNG (text in the bundled DejaVu Sans through `ab_glyph`, so the
//! picture is the same on every machine and needs no system font).

use super::data::{ReportData, SweepPoint};
use crate::error::{Error, Result};
use crate::metrics::{CalibrationBin, PrCurve, RocCurve};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::sync::OnceLock;

/// The font of the PNG charts (DejaVu Sans 2.37; licence in `assets/fonts/LICENSE`).
const FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";

const BLUE: RGBColor = RGBColor(31, 119, 180);
const ORANGE: RGBColor = RGBColor(255, 127, 14);
const GREEN: RGBColor = RGBColor(44, 160, 44);
const RED: RGBColor = RGBColor(214, 39, 40);
const PURPLE: RGBColor = RGBColor(148, 103, 189);
const GREY: RGBColor = RGBColor(150, 150, 150);

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

type DrawResult<DB> =
    std::result::Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

/// One chart: a name, a size and how to draw it on any backend.
trait Chart {
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
    if let Ok(roc) = RocCurve::new(&labels, &scores) {
        if labels.contains(&true) && labels.contains(&false) {
            charts.push(render(&RocChart { roc, markers })?);
        }
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
        temperature: evaluation.calibration.temperature,
    })?);
    if let Some(history) = data.history.filter(|h| !h.epochs.is_empty()) {
        charts.push(render(&TrainingChart { history })?);
    }
    Ok(charts)
}

/// A point of the classifier marked on the curves.
#[derive(Debug, Clone, Copy)]
struct OperatingMarker {
    threshold: f64,
    sensitivity: Option<f64>,
    specificity: Option<f64>,
    precision: Option<f64>,
}

/// The first marker is the classifier's threshold (red), the second 0.5 (purple).
fn marker_style(index: usize) -> (RGBColor, &'static str) {
    if index == 0 {
        (RED, "threshold")
    } else {
        (PURPLE, "0.5")
    }
}

fn unit_chart<'a, DB: DrawingBackend>(
    root: &'a DrawingArea<DB, Shift>,
    caption: &str,
    x_desc: &str,
    y_desc: &str,
) -> std::result::Result<
    ChartContext<
        'a,
        DB,
        Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
    >,
    DrawingAreaErrorKind<DB::ErrorType>,
> {
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

fn legend<'a, DB: DrawingBackend + 'a, X: Ranged, Y: Ranged>(
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

struct RocChart {
    roc: RocCurve,
    markers: [OperatingMarker; 2],
}

impl Chart for RocChart {
    fn name(&self) -> &'static str {
        "roc"
    }
    fn title(&self) -> String {
        format!("ROC curve, AUC {:.3}", self.roc.auc())
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let mut chart = unit_chart(
            root,
            &self.title(),
            "1 - specificity (false positive rate)",
            "sensitivity (true positive rate)",
        )?;
        chart.draw_series(LineSeries::new(
            [(0.0, 0.0), (1.0, 1.0)],
            GREY.stroke_width(1),
        ))?;
        let points: Vec<(f64, f64)> = self
            .roc
            .fpr()
            .iter()
            .copied()
            .zip(self.roc.tpr().iter().copied())
            .collect();
        chart
            .draw_series(LineSeries::new(points, BLUE.stroke_width(2)))?
            .label("ROC curve")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLUE.stroke_width(2)));
        for (index, marker) in self.markers.iter().enumerate() {
            let (color, what) = marker_style(index);
            if let (Some(sensitivity), Some(specificity)) = (marker.sensitivity, marker.specificity)
            {
                chart
                    .draw_series([Circle::new(
                        (1.0 - specificity, sensitivity),
                        6,
                        color.filled(),
                    )])?
                    .label(format!("{what} {:.3}", marker.threshold))
                    .legend(move |(x, y)| Circle::new((x + 10, y), 5, color.filled()));
            }
        }
        legend(&mut chart, SeriesLabelPosition::LowerRight)
    }
}

struct PrChart {
    pr: PrCurve,
    markers: [OperatingMarker; 2],
    prevalence: f64,
}

impl Chart for PrChart {
    fn name(&self) -> &'static str {
        "pr"
    }
    fn title(&self) -> String {
        format!(
            "Precision-recall curve, AP {:.3}",
            self.pr.average_precision()
        )
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let mut chart = unit_chart(
            root,
            &self.title(),
            "recall (sensitivity)",
            "precision (positive predictive value)",
        )?;
        chart
            .draw_series(LineSeries::new(
                [(0.0, self.prevalence), (1.0, self.prevalence)],
                GREY.stroke_width(1),
            ))?
            .label(format!("prevalence {:.3}", self.prevalence))
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], GREY));
        // Step-wise, as average precision integrates it.
        let mut points = Vec::new();
        let (recall, precision) = (self.pr.recall(), self.pr.precision());
        for (k, (&r, &p)) in recall.iter().zip(precision).enumerate() {
            if k > 0 {
                if let Some(&previous) = precision.get(k - 1) {
                    points.push((r, previous));
                }
            }
            points.push((r, p));
        }
        chart
            .draw_series(LineSeries::new(points, BLUE.stroke_width(2)))?
            .label("precision-recall curve")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLUE.stroke_width(2)));
        for (index, marker) in self.markers.iter().enumerate() {
            let (color, what) = marker_style(index);
            if let (Some(sensitivity), Some(precision)) = (marker.sensitivity, marker.precision) {
                chart
                    .draw_series([Circle::new((sensitivity, precision), 6, color.filled())])?
                    .label(format!("{what} {:.3}", marker.threshold))
                    .legend(move |(x, y)| Circle::new((x + 10, y), 5, color.filled()));
            }
        }
        legend(&mut chart, SeriesLabelPosition::LowerLeft)
    }
}

struct ConfusionChart {
    /// `[[TP, FN], [FP, TN]]`: rows are the truth, columns the prediction.
    rows: [[usize; 2]; 2],
    threshold: f64,
}

impl Chart for ConfusionChart {
    fn name(&self) -> &'static str {
        "confusion"
    }
    fn title(&self) -> String {
        format!("Confusion matrix at threshold {:.3}", self.threshold)
    }
    fn size(&self) -> (u32, u32) {
        (480, 420)
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(root)
            .caption(self.title(), (FAMILY, 20))
            .margin(14)
            .x_label_area_size(48)
            .y_label_area_size(100)
            .build_cartesian_2d(0f64..2f64, 0f64..2f64)?;
        let names = ["fractured", "not fractured"];
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(2)
            .y_labels(2)
            .x_label_formatter(&|v| cell_name(names, *v, false))
            .y_label_formatter(&|v| cell_name(names, *v, true))
            .x_desc("predicted")
            .y_desc("true label")
            .label_style((FAMILY, 14))
            .axis_desc_style((FAMILY, 15))
            .draw()?;
        let largest = self
            .rows
            .iter()
            .flatten()
            .copied()
            .max()
            .unwrap_or(0)
            .max(1) as f64;
        for (truth, row) in self.rows.iter().enumerate() {
            for (predicted, &count) in row.iter().enumerate() {
                let (x, y) = (predicted as f64, 1.0 - truth as f64);
                let correct = truth == predicted;
                let base = if correct { BLUE } else { ORANGE };
                let strength = 0.15 + 0.75 * count as f64 / largest;
                chart.draw_series([Rectangle::new(
                    [(x + 0.02, y + 0.02), (x + 0.98, y + 0.98)],
                    base.mix(strength).filled(),
                )])?;
                let label = match (truth, predicted) {
                    (0, 0) => "true positives",
                    (0, _) => "false negatives",
                    (_, 0) => "false positives",
                    _ => "true negatives",
                };
                chart.draw_series([
                    Text::new(count.to_string(), (x + 0.42, y + 0.55), (FAMILY, 26)),
                    Text::new(label.to_string(), (x + 0.25, y + 0.35), (FAMILY, 13)),
                ])?;
            }
        }
        Ok(())
    }
}

/// Axis label of a confusion-matrix cell centre.
fn cell_name(names: [&str; 2], value: f64, rows: bool) -> String {
    let index = if (value - 0.5).abs() < 0.25 {
        Some(if rows { 1 } else { 0 })
    } else if (value - 1.5).abs() < 0.25 {
        Some(if rows { 0 } else { 1 })
    } else {
        None
    };
    index
        .and_then(|i| names.get(i))
        .map(|n| n.to_string())
        .unwrap_or_default()
}

struct SweepChart<'a> {
    sweep: &'a [SweepPoint],
    threshold: f64,
}

impl Chart for SweepChart<'_> {
    fn name(&self) -> &'static str {
        "threshold_sweep"
    }
    fn title(&self) -> String {
        "Sensitivity, specificity, PPV and NPV by threshold".into()
    }
    fn size(&self) -> (u32, u32) {
        (720, 480)
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let mut chart = unit_chart(
            root,
            &self.title(),
            "threshold on the fracture probability",
            "value",
        )?;
        let series: [(&str, RGBColor, fn(&SweepPoint) -> Option<f64>); 4] = [
            ("sensitivity", BLUE, |p| p.sensitivity),
            ("specificity", ORANGE, |p| p.specificity),
            ("PPV (precision)", GREEN, |p| p.ppv),
            ("NPV", PURPLE, |p| p.npv),
        ];
        for (label, color, value) in series {
            // Undefined values (no case predicted on one side) break the line.
            let mut segments: Vec<Vec<(f64, f64)>> = vec![Vec::new()];
            for point in self.sweep {
                match value(point) {
                    Some(v) => {
                        if let Some(last) = segments.last_mut() {
                            last.push((point.threshold, v));
                        }
                    }
                    None => segments.push(Vec::new()),
                }
            }
            let mut first = true;
            for segment in segments.into_iter().filter(|s| !s.is_empty()) {
                let drawn = chart.draw_series(LineSeries::new(segment, color.stroke_width(2)))?;
                if first {
                    drawn.label(label).legend(move |(x, y)| {
                        PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2))
                    });
                    first = false;
                }
            }
        }
        for (index, threshold) in [self.threshold, 0.5].into_iter().enumerate() {
            let (color, what) = marker_style(index);
            chart
                .draw_series(LineSeries::new(
                    [(threshold, 0.0), (threshold, 1.0)],
                    color.stroke_width(1),
                ))?
                .label(format!("{what} {threshold:.3}"))
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color));
        }
        legend(&mut chart, SeriesLabelPosition::MiddleRight)
    }
}

struct ReliabilityChart<'a> {
    before: &'a [CalibrationBin],
    after: &'a [CalibrationBin],
    ece: (f64, f64),
    temperature: f64,
}

impl Chart for ReliabilityChart<'_> {
    fn name(&self) -> &'static str {
        "reliability"
    }
    fn title(&self) -> String {
        format!("Reliability diagram (T = {:.3})", self.temperature)
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        let mut chart = unit_chart(
            root,
            &self.title(),
            "mean predicted fracture probability (15 bins)",
            "observed fraction fractured",
        )?;
        chart
            .draw_series(LineSeries::new(
                [(0.0, 0.0), (1.0, 1.0)],
                GREY.stroke_width(1),
            ))?
            .label("perfect calibration")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], GREY));
        let curves = [
            (
                self.before,
                ORANGE,
                format!("before (T = 1), ECE {:.3}", self.ece.0),
            ),
            (self.after, BLUE, format!("after, ECE {:.3}", self.ece.1)),
        ];
        for (bins, color, label) in curves {
            let points: Vec<(f64, f64)> = bins
                .iter()
                .map(|b| (b.mean_score, b.fraction_fractured))
                .collect();
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
                .label(label)
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2))
                });
            chart.draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 4, color.filled())),
            )?;
        }
        legend(&mut chart, SeriesLabelPosition::UpperLeft)
    }
}

struct TrainingChart<'a> {
    history: &'a crate::train::History,
}

impl Chart for TrainingChart<'_> {
    fn name(&self) -> &'static str {
        "training"
    }
    fn title(&self) -> String {
        "Training history".into()
    }
    fn size(&self) -> (u32, u32) {
        (960, 420)
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult<DB> {
        root.fill(&WHITE)?;
        let (left, right) = root.split_horizontally(480);
        let epochs = &self.history.epochs;
        let last = epochs.last().map_or(1, |e| e.epoch).max(2) as f64;
        let best = self.history.best_epoch().map(|e| e.epoch as f64);
        let losses: Vec<f64> = epochs
            .iter()
            .flat_map(|e| [e.train_loss, e.val_loss])
            .filter(|v| v.is_finite())
            .collect();
        let top = losses.iter().copied().fold(0.0f64, f64::max).max(1e-3) * 1.1;
        let panels: [(&DrawingArea<DB, Shift>, &str, f64, [Series; 2]); 2] = [
            (
                &left,
                "loss (cross-entropy)",
                top,
                [
                    ("training loss", BLUE, |e| Some(e.train_loss)),
                    ("validation loss", ORANGE, |e| Some(e.val_loss)),
                ],
            ),
            (
                &right,
                "ROC AUC",
                1.0001,
                [
                    ("training AUC", BLUE, |e| e.train_auc),
                    ("validation AUC", ORANGE, |e| e.val_auc),
                ],
            ),
        ];
        for (area, what, top, series) in panels {
            let mut chart = ChartBuilder::on(area)
                .caption(what, (FAMILY, 18))
                .margin(12)
                .x_label_area_size(44)
                .y_label_area_size(56)
                .build_cartesian_2d(1f64..last, 0f64..top)?;
            chart
                .configure_mesh()
                .x_desc("epoch")
                .y_desc(what)
                .label_style((FAMILY, 13))
                .axis_desc_style((FAMILY, 14))
                .light_line_style(RGBColor(238, 238, 238))
                .draw()?;
            for (label, color, value) in series {
                let points: Vec<(f64, f64)> = epochs
                    .iter()
                    .filter_map(|e| Some((e.epoch as f64, value(e)?)))
                    .filter(|p| p.1.is_finite())
                    .collect();
                chart
                    .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
                    .label(label)
                    .legend(move |(x, y)| {
                        PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2))
                    });
                chart.draw_series(
                    points
                        .into_iter()
                        .map(|p| Circle::new(p, 3, color.filled())),
                )?;
            }
            if let Some(best) = best {
                chart
                    .draw_series(LineSeries::new(
                        [(best, 0.0), (best, top)],
                        GREY.stroke_width(1),
                    ))?
                    .label(format!("best epoch {best}"))
                    .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], GREY));
            }
            legend(&mut chart, SeriesLabelPosition::UpperRight)?;
        }
        Ok(())
    }
}

type Series = (
    &'static str,
    RGBColor,
    fn(&crate::train::EpochRecord) -> Option<f64>,
);
