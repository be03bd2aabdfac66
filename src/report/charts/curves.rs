//! The ROC and precision-recall curves with the operating point and the 0.5 point, and the
//! threshold sweep.

use super::{
    legend, marker_style, unit_chart, Chart, DrawResult, OperatingMarker, BLUE, GREEN, GREY,
    ORANGE, PURPLE,
};
use crate::metrics::{PrCurve, RocCurve};
use crate::report::data::SweepPoint;
use plotters::coord::Shift;
use plotters::prelude::*;

pub(super) struct RocChart {
    pub(super) roc: RocCurve,
    pub(super) markers: [OperatingMarker; 2],
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

pub(super) struct PrChart {
    pub(super) pr: PrCurve,
    pub(super) markers: [OperatingMarker; 2],
    pub(super) prevalence: f64,
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
            if k > 0
                && let Some(&previous) = precision.get(k - 1)
            {
                points.push((r, previous));
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

pub(super) struct SweepChart<'a> {
    pub(super) sweep: &'a [SweepPoint],
    pub(super) threshold: f64,
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
        let series: [SweepSeries; 4] = [
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
        for (index, threshold) in [self.threshold, crate::classifier::DEFAULT_THRESHOLD]
            .into_iter()
            .enumerate()
        {
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

/// One line of the threshold sweep: its label, colour and value at a point.
type SweepSeries = (&'static str, RGBColor, fn(&SweepPoint) -> Option<f64>);
