//! Localization scores summed up over images: each map's averages with bootstrap intervals,
//! the paired differences against the baselines (overall and per body part), and the report.

use super::{BaselineMap, ImageLocalization, LocalizationConfig, MapScores};
use crate::error::{Error, Result};
use crate::metrics::uncertainty::bootstrap_picks;
use crate::metrics::{bootstrap_mean, BootstrapConfig, Interval, Metric};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

/// The group of images whose body part is not known.
pub const UNKNOWN_BODY_PART: &str = "unknown";

/// Each image's value of the three statistics, in the order of
/// [`LocalizationSummary::STATISTICS`].
const VALUES: [fn(&MapScores) -> f64; 3] = [
    |s| s.pointing,
    |s| s.energy,
    |s| f64::from(u8::from(s.iou_hit)),
];

/// The three scores of one map averaged over images, with bootstrap intervals; or, in
/// [`BaselineDifferences`], the mean per-image difference of two maps' scores.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LocalizationSummary {
    /// Pointing-game hit rate.
    pub pointing_game: Interval,
    /// Mean share of the map's mass inside the boxes.
    pub energy_pointing_game: Interval,
    /// Box-IoU hit rate.
    pub box_iou_hit_rate: Interval,
}

impl LocalizationSummary {
    /// Average per-image scores, each with a percentile-bootstrap interval.
    pub fn of(scores: &[MapScores], bootstrap: BootstrapConfig) -> Result<Self> {
        let [pointing, energy, iou] =
            VALUES.map(|f| bootstrap_mean(&scores.iter().map(f).collect::<Vec<_>>(), bootstrap));
        Ok(Self {
            pointing_game: pointing?,
            energy_pointing_game: energy?,
            box_iou_hit_rate: iou?,
        })
    }

    /// Each statistic's name in reports and its field in the serialized summary, in report
    /// order.
    pub const STATISTICS: [(&'static str, &'static str); 3] = [
        ("pointing game", "pointing_game"),
        ("energy in boxes", "energy_pointing_game"),
        ("box IoU hit rate", "box_iou_hit_rate"),
    ];

    /// The three intervals with their names, in report order.
    pub fn rows(&self) -> [(&'static str, &Interval); 3] {
        let [(pointing, _), (energy, _), (iou, _)] = Self::STATISTICS;
        [
            (pointing, &self.pointing_game),
            (energy, &self.energy_pointing_game),
            (iou, &self.box_iou_hit_rate),
        ]
    }
}

/// The explanation map against each baseline, image by image: for each statistic the mean of
/// `map − baseline` over the images (the difference of the two averages), with a paired
/// percentile-bootstrap interval. Every resample draws one set of images (seeded) and scores
/// the map and both baselines on those same images, at the tolerance they were scored with, so
/// the interval is that of the difference, not of two separate uncertainties. An interval
/// wholly above 0 says the map beats the baseline on such images.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BaselineDifferences {
    /// Map minus centred Gaussian.
    pub centred_gaussian: LocalizationSummary,
    /// Map minus uniform map.
    pub uniform: LocalizationSummary,
}

impl BaselineDifferences {
    /// The paired differences over `images` (at least one), resampled as `bootstrap` says.
    ///
    /// ```
    /// use fracture::metrics::localization::{BaselineDifferences, ImageLocalization, MapScores};
    /// use fracture::metrics::BootstrapConfig;
    /// let scores = |pointing: f64| MapScores { pointing, energy: 0.5, best_iou: 0.0, iou_hit: false };
    /// // A map that always hits, on images where the Gaussian hits 1 in 4 and the uniform map never.
    /// let images: Vec<ImageLocalization> = (0..8)
    ///     .map(|i| ImageLocalization {
    ///         path: format!("{i}.jpg").into(),
    ///         body_part: None,
    ///         boxes: 1,
    ///         map: scores(1.0),
    ///         centred_gaussian: scores(if i % 4 == 0 { 1.0 } else { 0.0 }),
    ///         uniform: scores(0.0),
    ///     })
    ///     .collect();
    /// let d = BaselineDifferences::of(&images, BootstrapConfig::default())?;
    /// assert_eq!(d.centred_gaussian.pointing_game.estimate, 0.75);
    /// assert_eq!(d.uniform.pointing_game.estimate, 1.0);
    /// assert_eq!(d.uniform.energy_pointing_game.estimate, 0.0);
    /// # Ok::<(), fracture::Error>(())
    /// ```
    pub fn of(images: &[ImageLocalization], bootstrap: BootstrapConfig) -> Result<Self> {
        if images.is_empty() {
            return Err(Error::InvalidInput(
                "localization: no images to compare with the baselines".into(),
            ));
        }
        // Six columns of per-image differences: the three statistics against the Gaussian,
        // then against the uniform map.
        let baselines: [fn(&ImageLocalization) -> &MapScores; 2] =
            [|i| &i.centred_gaussian, |i| &i.uniform];
        let mut columns = Vec::with_capacity(6);
        for baseline in baselines {
            for statistic in VALUES {
                columns.push(
                    images
                        .iter()
                        .map(|image| statistic(&image.map) - statistic(baseline(image)))
                        .collect::<Vec<f64>>(),
                );
            }
        }
        let columns: [Vec<f64>; 6] = columns
            .try_into()
            .map_err(|_| Error::Internal("localization: six difference columns".into()))?;
        if let Some(bad) = columns.iter().flatten().find(|v| !v.is_finite()) {
            return Err(Error::InvalidInput(format!(
                "localization: a score difference is {bad}; scores must be finite"
            )));
        }
        let mean_over = |column: &[f64], picks: &mut dyn Iterator<Item = usize>| {
            let (mut sum, mut count) = (0.0, 0usize);
            for i in picks {
                sum += column.get(i).copied().unwrap_or_default();
                count += 1;
            }
            sum / count.max(1) as f64
        };
        let n = images.len();
        let estimates = columns
            .each_ref()
            .map(|column| Metric::Defined(mean_over(column, &mut (0..n))));
        let intervals = bootstrap_picks(n, estimates, bootstrap, |picks| {
            Ok(columns
                .each_ref()
                .map(|column| Metric::Defined(mean_over(column, &mut picks.iter().copied()))))
        })?;
        let defined = |interval: Metric<Interval>| {
            interval.defined_or("a localization difference (every resample defines it)")
        };
        let [gp, ge, gi, up, ue, ui] = intervals;
        Ok(Self {
            centred_gaussian: LocalizationSummary {
                pointing_game: defined(gp)?,
                energy_pointing_game: defined(ge)?,
                box_iou_hit_rate: defined(gi)?,
            },
            uniform: LocalizationSummary {
                pointing_game: defined(up)?,
                energy_pointing_game: defined(ue)?,
                box_iou_hit_rate: defined(ui)?,
            },
        })
    }

    /// The two comparisons with the baselines' names, in report order.
    pub fn rows(&self) -> [(&'static str, &LocalizationSummary); 2] {
        [
            (BaselineMap::CentredGaussian.name(), &self.centred_gaussian),
            (BaselineMap::Uniform.name(), &self.uniform),
        ]
    }
}

/// The images of one body part: the map's averages and its paired differences from the
/// baselines.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BodyPartLocalization {
    /// Images of the part that were scored.
    pub images: usize,
    /// The explanation map's summary on them.
    pub map: LocalizationSummary,
    /// Map minus each baseline on them.
    pub differences: BaselineDifferences,
}

/// Localization of one kind of map on a dataset part, next to the baselines.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LocalizationReport {
    /// What the map is (`Grad-CAM of fracture`).
    pub map_name: String,
    /// The settings used.
    pub config: LocalizationConfig,
    /// The explanation map's summary.
    pub map: LocalizationSummary,
    /// The centred Gaussian's.
    pub centred_gaussian: LocalizationSummary,
    /// The uniform map's.
    pub uniform: LocalizationSummary,
    /// The map minus each baseline, paired image by image.
    pub differences: BaselineDifferences,
    /// Per body part (images without one in [`UNKNOWN_BODY_PART`]); empty when no image has
    /// one.
    pub by_body_part: BTreeMap<String, BodyPartLocalization>,
    /// Every scored image.
    pub images: Vec<ImageLocalization>,
    /// Fractured images of the part without annotated boxes (left out).
    pub without_annotations: Vec<PathBuf>,
    /// Images that could not be scored, with the reason (unreadable, size mismatch).
    pub skipped: Vec<(PathBuf, String)>,
}

impl LocalizationReport {
    /// Summarize per-image scores: averages, paired differences from the baselines, and both
    /// per body part when the images carry one. An error when no image was scored.
    pub fn new(
        map_name: impl Into<String>,
        config: LocalizationConfig,
        images: Vec<ImageLocalization>,
        without_annotations: Vec<PathBuf>,
        skipped: Vec<(PathBuf, String)>,
    ) -> Result<Self> {
        if images.is_empty() {
            return Err(Error::InvalidInput(format!(
                "localization: no annotated fractured image could be scored ({} without \
                 annotations, {} skipped)",
                without_annotations.len(),
                skipped.len()
            )));
        }
        let summary = |pick: fn(&ImageLocalization) -> MapScores| {
            let scores: Vec<MapScores> = images.iter().map(pick).collect();
            LocalizationSummary::of(&scores, config.bootstrap)
        };
        let mut parts: BTreeMap<String, Vec<ImageLocalization>> = BTreeMap::new();
        if images.iter().any(|i| i.body_part.is_some()) {
            for image in &images {
                let part = image.body_part.as_deref().unwrap_or(UNKNOWN_BODY_PART);
                parts
                    .entry(part.to_string())
                    .or_default()
                    .push(image.clone());
            }
        }
        let by_body_part = parts
            .into_iter()
            .map(|(part, members)| {
                let scores: Vec<MapScores> = members.iter().map(|i| i.map).collect();
                Ok((
                    part,
                    BodyPartLocalization {
                        images: members.len(),
                        map: LocalizationSummary::of(&scores, config.bootstrap)?,
                        differences: BaselineDifferences::of(&members, config.bootstrap)?,
                    },
                ))
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            map_name: map_name.into(),
            map: summary(|i| i.map)?,
            centred_gaussian: summary(|i| i.centred_gaussian)?,
            uniform: summary(|i| i.uniform)?,
            differences: BaselineDifferences::of(&images, config.bootstrap)?,
            by_body_part,
            config,
            images,
            without_annotations,
            skipped,
        })
    }

    /// The summaries with their names, the map first.
    pub fn rows(&self) -> [(&str, &LocalizationSummary); 3] {
        [
            (self.map_name.as_str(), &self.map),
            (BaselineMap::CentredGaussian.name(), &self.centred_gaussian),
            (BaselineMap::Uniform.name(), &self.uniform),
        ]
    }
}

impl fmt::Display for LocalizationReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        writeln!(
            f,
            "== localization on {} annotated fractured images ({} without annotations, {} \
             skipped)",
            self.images.len(),
            self.without_annotations.len(),
            self.skipped.len()
        )?;
        writeln!(
            f,
            "pointing game: map maximum within {} px (annotated resolution) of a box; energy: \
             share of the map inside the boxes;\nbox IoU: box around the largest region >= {}% \
             of the peak, hit when IoU >= {}",
            c.tolerance_px,
            c.region_threshold * 100.0,
            c.iou_threshold
        )?;
        writeln!(
            f,
            "{:<24} {:<30} {:<30} {:<30}",
            "map", "pointing game", "energy in boxes", "box IoU hit rate"
        )?;
        for (name, s) in self.rows() {
            writeln!(
                f,
                "{:<24} {:<30} {:<30} {:<30}",
                name,
                format!("{:.3}", s.pointing_game),
                format!("{:.3}", s.energy_pointing_game),
                format!("{:.3}", s.box_iou_hit_rate)
            )?;
        }
        writeln!(
            f,
            "paired differences, {} minus baseline (mean over the same images, resampled \
             together; {} resamples):",
            self.map_name, c.bootstrap.n_resamples
        )?;
        for (index, (statistic, _)) in LocalizationSummary::STATISTICS.iter().enumerate() {
            for (baseline, difference) in self.differences.rows() {
                if let Some((_, interval)) = difference.rows().get(index) {
                    writeln!(f, "{statistic} minus {baseline}: {interval:.3}")?;
                }
            }
        }
        if !self.by_body_part.is_empty() {
            writeln!(
                f,
                "by body part ({}; minus {}; minus {}):",
                self.map_name,
                BaselineMap::CentredGaussian.name(),
                BaselineMap::Uniform.name()
            )?;
            for (part, scores) in &self.by_body_part {
                let [gaussian, uniform] = scores.differences.rows();
                for ((statistic, map), ((_, g), (_, u))) in scores
                    .map
                    .rows()
                    .into_iter()
                    .zip(gaussian.1.rows().into_iter().zip(uniform.1.rows()))
                {
                    writeln!(
                        f,
                        "  {part}, {} images, {statistic}: {map:.3}; minus {}: {g:.3}; minus {}: \
                         {u:.3}",
                        scores.images, gaussian.0, uniform.0
                    )?;
                }
            }
        }
        for (path, reason) in &self.skipped {
            writeln!(f, "  skipped {}: {reason}", path.display())?;
        }
        Ok(())
    }
}
