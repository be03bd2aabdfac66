//! The confusion matrix, the reliability diagram before and after calibration, and the
//! training history.

use super::{legend, unit_chart, Chart, DrawResult, UnitChart, BLUE, FAMILY, GREY, ORANGE};
use crate::metrics::CalibrationBin;
use plotters::coord::Shift;
use plotters::prelude::*;

pub(super) struct ConfusionChart {
    /// `[[TP, FN], [FP, TN]]`: rows are the truth, columns the prediction.
    pub(super) rows: [[usize; 2]; 2],
    pub(super) threshold: f64,
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

pub(super) struct ReliabilityChart<'a> {
    pub(super) before: &'a [CalibrationBin],
    pub(super) after: &'a [CalibrationBin],
    pub(super) ece: (f64, f64),
    /// The calibration map applied for "after" (`T = 0.745`, or Platt's slope and intercept).
    pub(super) map: String,
}

impl Chart for ReliabilityChart<'_> {
    fn name(&self) -> &'static str {
        "reliability"
    }
    fn title(&self) -> String {
        format!("Reliability diagram ({})", self.map)
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
            line_with_dots(&mut chart, points, color, label, 4)?;
        }
        legend(&mut chart, SeriesLabelPosition::UpperLeft)
    }
}

pub(super) struct TrainingChart<'a> {
    pub(super) history: &'a crate::train::History,
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
        let panels: [Panel<'_, DB>; 2] = [
            (
                &left,
                "loss (cross-entropy)",
                top,
                // Losses fall: the lower left is free.
                SeriesLabelPosition::LowerLeft,
                [
                    ("training loss", BLUE, |e| Some(e.train_loss)),
                    ("validation loss", ORANGE, |e| Some(e.val_loss)),
                ],
            ),
            (
                &right,
                "ROC AUC",
                1.0001,
                // AUCs of useful models sit high on the 0..1 axis: the lower right is free.
                SeriesLabelPosition::LowerRight,
                [
                    ("training AUC", BLUE, |e| e.train_auc),
                    ("validation AUC", ORANGE, |e| e.val_auc),
                ],
            ),
        ];
        for (area, what, top, position, series) in panels {
            let mut chart = ChartBuilder::on(area)
                .caption(what, (FAMILY, 18))
                .margin(12)
                .x_label_area_size(44)
                .y_label_area_size(56)
                .build_cartesian_2d(1f64..last, 0f64..top)?;
            chart
                .configure_mesh()
                .x_desc("epoch")
                // One label per epoch up to 10, and only at whole epochs (plotters puts
                // ticks at fractions, which "{:.0}" printed as repeated epoch numbers).
                .x_labels((last as usize).min(10))
                .x_label_formatter(&|v| {
                    if (v - v.round()).abs() < 1e-6 {
                        format!("{v:.0}")
                    } else {
                        String::new()
                    }
                })
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
                line_with_dots(&mut chart, points, color, label, 3)?;
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
            legend(&mut chart, position)?;
        }
        Ok(())
    }
}

/// One training panel: where, what, the top of its y axis, its legend's corner, its lines.
type Panel<'x, DB> = (
    &'x DrawingArea<DB, Shift>,
    &'static str,
    f64,
    SeriesLabelPosition,
    [Series; 2],
);

type Series = (
    &'static str,
    RGBColor,
    fn(&crate::train::EpochRecord) -> Option<f64>,
);

/// A labelled line through `points` with a dot of `radius` pixels on each.
fn line_with_dots<'a, DB: DrawingBackend + 'a>(
    chart: &mut UnitChart<'a, DB>,
    points: Vec<(f64, f64)>,
    color: RGBColor,
    label: impl Into<String>,
    radius: i32,
) -> DrawResult<DB> {
    chart
        .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
        .label(label)
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
    chart.draw_series(
        points
            .into_iter()
            .map(|p| Circle::new(p, radius, color.filled())),
    )?;
    Ok(())
}
