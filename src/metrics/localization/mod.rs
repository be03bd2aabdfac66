//! Localization: how often explanation maps land on the fractures radiologists marked.
//!
//! Three scores per image, computed on the map resized to the image (values in `[0, 1]`) and
//! the annotated boxes in that image's pixels:
//!
//! - **pointing game** (Zhang et al., 2018): is the map's maximum inside a box, within a
//!   tolerance ([`LocalizationConfig::tolerance_px`], 15 pixels at the annotated resolution)?
//!   When several pixels share the maximum, the score is the share of them that hit: the
//!   expected hit of picking one at random (so a uniform map scores the boxes' area share). A
//!   map of zeros has no maximum and misses;
//! - **energy-based pointing game** (Wang et al., Score-CAM, 2020): the share of the map's
//!   mass inside the boxes (0 for a map of zeros);
//! - **box IoU**: the box around the largest 8-connected region at or above 15 % of the peak,
//!   a hit when its intersection over union with some annotated box is at least 0.5.
//!
//! The scorer takes maps and boxes in the same pixels: placing annotations on a decoded image
//! is [`crate::dataset::annotations::ImageAnnotations::pixel_boxes`]'s job, making maps the
//! explanation's, and [`crate::FractureClassifier::localization`] joins them.
//!
//! Each is averaged over the images with a bootstrap 95 % interval, next to the same numbers
//! for two maps that know nothing about the image, a centred Gaussian and a uniform map
//! ([`BaselineMap`]): a method that does not beat them shows nothing. Whether it beats them is
//! read from the paired differences ([`BaselineDifferences`]): the mean per-image difference,
//! map minus baseline, at the same tolerance, with a bootstrap interval that resamples the same
//! images for both; overall and per body part.
//!
//! ```
//! use fracture::dataset::annotations::BoundingBox;
//! use fracture::image::ImageF32;
//! use fracture::metrics::localization::{score_map, LocalizationConfig};
//! // A 4 x 4 map whose peak is in the lower-right quarter, where the box is.
//! let mut values = vec![0.1; 16];
//! values[15] = 1.0;
//! let map = ImageF32::new(4, 4, 1, values)?;
//! let boxes = [BoundingBox::new(2.0, 2.0, 4.0, 4.0)];
//! let config = LocalizationConfig { tolerance_px: 0.0, ..LocalizationConfig::default() };
//! let scores = score_map(&map, &boxes, 0.0, &config)?;
//! assert_eq!(scores.pointing, 1.0);
//! assert!((scores.energy - 1.3 / 2.5).abs() < 1e-6); // summed in f32
//! # Ok::<(), fracture::Error>(())
//! ```

mod summary;

pub use summary::{
    BaselineDifferences, BodyPartLocalization, LocalizationReport, LocalizationSummary,
    UNKNOWN_BODY_PART,
};

use super::BootstrapConfig;
use crate::dataset::annotations::BoundingBox;
use crate::error::{Error, Result};
use crate::image::ImageF32;
use image::{GrayImage, Luma};
use imageproc::region_labelling::{connected_components, Connectivity};
use serde::Serialize;
use std::path::PathBuf;

/// Settings of the localization scores. Defaults: 15-pixel tolerance at the annotated
/// resolution, regions at 15 % of the peak, IoU 0.5, a Gaussian baseline with a standard
/// deviation of a quarter of each side, 1000 bootstrap resamples (seed 42).
///
/// ```
/// let config = fracture::metrics::LocalizationConfig::default();
/// assert_eq!((config.tolerance_px, config.region_threshold, config.iou_threshold), (15.0, 0.15, 0.5));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LocalizationConfig {
    /// How far (in pixels of the annotated image) the map's maximum may lie outside a box and
    /// still count as a hit in the pointing game.
    pub tolerance_px: f64,
    /// The share of the peak above which a pixel belongs to the map's region (box IoU).
    pub region_threshold: f64,
    /// The intersection over union that makes the region's box a hit.
    pub iou_threshold: f64,
    /// Standard deviation of the centred Gaussian baseline, as a share of each side.
    pub baseline_sigma: f64,
    /// Resampling of the intervals.
    #[serde(skip)]
    pub bootstrap: BootstrapConfig,
}

impl Default for LocalizationConfig {
    fn default() -> Self {
        Self {
            tolerance_px: 15.0,
            region_threshold: 0.15,
            iou_threshold: 0.5,
            baseline_sigma: 0.25,
            bootstrap: BootstrapConfig::default(),
        }
    }
}

impl LocalizationConfig {
    /// Check the settings; the error names the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str, v: f64| {
            Err(Error::InvalidConfig(format!(
                "localization: {what} out of range, found {v}"
            )))
        };
        if !(self.tolerance_px.is_finite() && self.tolerance_px >= 0.0) {
            return bad("tolerance_px (>= 0)", self.tolerance_px);
        }
        if !(self.region_threshold > 0.0 && self.region_threshold <= 1.0) {
            return bad("region_threshold (in (0, 1])", self.region_threshold);
        }
        if !(self.iou_threshold > 0.0 && self.iou_threshold <= 1.0) {
            return bad("iou_threshold (in (0, 1])", self.iou_threshold);
        }
        if !(self.baseline_sigma.is_finite() && self.baseline_sigma > 0.0) {
            return bad("baseline_sigma (> 0)", self.baseline_sigma);
        }
        self.bootstrap.validate()
    }
}

/// One map's scores on one image.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MapScores {
    /// Pointing game: 1 when the maximum is within tolerance of a box, 0 when not (the share
    /// of hitting pixels when several share the maximum).
    pub pointing: f64,
    /// Energy-based pointing game: the share of the map's mass inside the boxes.
    pub energy: f64,
    /// The best intersection over union of the region's box with an annotated box.
    pub best_iou: f64,
    /// Whether `best_iou` reaches the threshold.
    pub iou_hit: bool,
}

/// Score one map (one channel, values `>= 0`, at the resolution of the boxes) against the
/// boxes of its image, with the pointing-game tolerance `tolerance_px` in the same pixels. A
/// map of zeros (no position raised the score) has no maximum: it misses, in the pointing game
/// as in the others. A NaN, infinite or negative value is an [`Error::InvalidInput`].
///
/// ```
/// use fracture::dataset::annotations::BoundingBox;
/// use fracture::image::ImageF32;
/// use fracture::metrics::localization::{score_map, LocalizationConfig};
/// let zeros = ImageF32::new(2, 2, 1, vec![0.0; 4])?;
/// let everywhere = [BoundingBox::new(0.0, 0.0, 2.0, 2.0)];
/// let scores = score_map(&zeros, &everywhere, 0.0, &LocalizationConfig::default())?;
/// assert_eq!((scores.pointing, scores.energy, scores.iou_hit), (0.0, 0.0, false));
/// # Ok::<(), fracture::Error>(())
/// ```
pub fn score_map(
    map: &ImageF32,
    boxes: &[BoundingBox],
    tolerance_px: f64,
    config: &LocalizationConfig,
) -> Result<MapScores> {
    let width = map.width;
    if boxes.is_empty() {
        return Err(Error::InvalidInput(
            "localization needs at least one box".into(),
        ));
    }
    let peak = map.map_peak()?;
    let centre = |i: usize| ((i % width) as f64 + 0.5, (i / width) as f64 + 0.5);
    let (mut tied, mut tied_hits) = (0usize, 0usize);
    let (mut total, mut inside) = (0f64, 0f64);
    for (i, &v) in map.data.iter().enumerate() {
        let (x, y) = centre(i);
        if v == peak {
            tied += 1;
            if boxes.iter().any(|b| b.distance_to(x, y) <= tolerance_px) {
                tied_hits += 1;
            }
        }
        total += f64::from(v);
        if boxes.iter().any(|b| b.distance_to(x, y) == 0.0) {
            inside += f64::from(v);
        }
    }
    let pointing = if peak > 0.0 {
        tied_hits as f64 / tied.max(1) as f64
    } else {
        0.0
    };
    let energy = if total > 0.0 { inside / total } else { 0.0 };
    let best_iou = match region_box(map, peak * config.region_threshold as f32) {
        Some(region) => boxes
            .iter()
            .map(|b| b.intersection_over_union(&region))
            .fold(0.0, f64::max),
        None => 0.0,
    };
    Ok(MapScores {
        pointing,
        energy,
        best_iou,
        iou_hit: best_iou >= config.iou_threshold,
    })
}

/// The box around the largest 8-connected region of pixels at or above `threshold` (the
/// first such region in reading order on a tie); `None` when the map is all zeros.
fn region_box(map: &ImageF32, threshold: f32) -> Option<BoundingBox> {
    if !map.data.iter().any(|&v| v > 0.0) {
        return None;
    }
    let (width, height) = (
        u32::try_from(map.width).ok()?,
        u32::try_from(map.height).ok()?,
    );
    let mask = GrayImage::from_fn(width, height, |x, y| {
        let v = map
            .data
            .get(y as usize * map.width + x as usize)
            .copied()
            .unwrap_or(0.0);
        Luma([if v >= threshold { 255 } else { 0 }])
    });
    let labels = connected_components(&mask, Connectivity::Eight, Luma([0u8]));
    // Per label: pixel count and extent, in order of first appearance.
    let mut regions: Vec<(usize, u32, u32, u32, u32)> = Vec::new();
    for (x, y, label) in labels.enumerate_pixels() {
        let Some(index) = (label.0[0] as usize).checked_sub(1) else {
            continue;
        };
        if regions.len() <= index {
            regions.resize(index + 1, (0, u32::MAX, u32::MAX, 0, 0));
        }
        if let Some(r) = regions.get_mut(index) {
            *r = (r.0 + 1, r.1.min(x), r.2.min(y), r.3.max(x), r.4.max(y));
        }
    }
    let mut best: Option<&(usize, u32, u32, u32, u32)> = None;
    for region in &regions {
        if best.is_none_or(|b| region.0 > b.0) {
            best = Some(region);
        }
    }
    let &(count, x0, y0, x1, y1) = best?;
    (count > 0).then(|| {
        BoundingBox::new(
            f64::from(x0),
            f64::from(y0),
            f64::from(x1) + 1.0,
            f64::from(y1) + 1.0,
        )
    })
}

/// Maps that know nothing about the image, to compare explanations with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum BaselineMap {
    /// A Gaussian centred on the image, with a standard deviation of
    /// [`LocalizationConfig::baseline_sigma`] times each side: "fractures are in the middle".
    CentredGaussian,
    /// The same value everywhere: its pointing game is the boxes' area share (chance).
    Uniform,
}

impl BaselineMap {
    /// Both baselines, in report order.
    pub const ALL: [BaselineMap; 2] = [BaselineMap::CentredGaussian, BaselineMap::Uniform];

    /// The baseline at `height` x `width`, peak 1.
    ///
    /// ```
    /// use fracture::metrics::localization::BaselineMap;
    /// let g = BaselineMap::CentredGaussian.map(5, 5, 0.25);
    /// assert_eq!(g.data[12], 1.0); // the centre pixel
    /// assert!(g.data[0] < 0.1);
    /// assert!(BaselineMap::Uniform.map(2, 3, 0.25).data.iter().all(|&v| v == 1.0));
    /// ```
    pub fn map(self, height: usize, width: usize, sigma: f64) -> ImageF32 {
        let data = match self {
            BaselineMap::Uniform => vec![1.0; height * width],
            BaselineMap::CentredGaussian => {
                let (sx, sy) = (sigma * width as f64, sigma * height as f64);
                let (cx, cy) = (width as f64 / 2.0, height as f64 / 2.0);
                (0..height * width)
                    .map(|i| {
                        let dx = ((i % width) as f64 + 0.5 - cx) / sx;
                        let dy = ((i / width) as f64 + 0.5 - cy) / sy;
                        (-(dx * dx + dy * dy) / 2.0).exp() as f32
                    })
                    .collect()
            }
        };
        ImageF32 {
            height,
            width,
            channels: 1,
            data,
        }
    }

    /// The name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            BaselineMap::CentredGaussian => "centred Gaussian",
            BaselineMap::Uniform => "uniform",
        }
    }
}

/// One image's scores: the explanation map's and the two baselines'.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImageLocalization {
    /// The image.
    pub path: PathBuf,
    /// Its body part, from the data set's metadata (`None`: not known; [`score_image`] leaves
    /// it so, its caller fills it in).
    pub body_part: Option<String>,
    /// Number of annotated boxes.
    pub boxes: usize,
    /// The explanation map.
    pub map: MapScores,
    /// The centred Gaussian.
    pub centred_gaussian: MapScores,
    /// The uniform map.
    pub uniform: MapScores,
}

/// Score one image: its explanation map (at the image's resolution) and both baselines,
/// against its boxes (pixels of the image), with the tolerance in the same pixels.
pub fn score_image(
    path: PathBuf,
    map: &ImageF32,
    boxes: &[BoundingBox],
    tolerance_px: f64,
    config: &LocalizationConfig,
) -> Result<ImageLocalization> {
    let baseline = |kind: BaselineMap| {
        score_map(
            &kind.map(map.height, map.width, config.baseline_sigma),
            boxes,
            tolerance_px,
            config,
        )
    };
    Ok(ImageLocalization {
        path,
        body_part: None,
        boxes: boxes.len(),
        map: score_map(map, boxes, tolerance_px, config)?,
        centred_gaussian: baseline(BaselineMap::CentredGaussian)?,
        uniform: baseline(BaselineMap::Uniform)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(height: usize, width: usize, data: Vec<f32>) -> ImageF32 {
        ImageF32::new(height, width, 1, data).unwrap()
    }

    #[test]
    fn tied_maxima_score_the_share_that_hits() {
        // Uniform 4 x 4, box covering the left half: half of the tied maxima hit.
        let scores = score_map(
            &map(4, 4, vec![1.0; 16]),
            &[BoundingBox::new(0.0, 0.0, 2.0, 4.0)],
            0.0,
            &LocalizationConfig::default(),
        )
        .unwrap();
        assert_eq!(scores.pointing, 0.5);
        assert_eq!(scores.energy, 0.5);
        // The region is the whole image: IoU 8 / 16.
        assert_eq!(scores.best_iou, 0.5);
        assert!(scores.iou_hit);
    }

    #[test]
    fn tolerance_extends_the_boxes_for_the_pointing_game_only() {
        let mut values = vec![0.0; 16];
        values[3] = 1.0; // pixel (3, 0), centre (3.5, 0.5)
        let boxes = [BoundingBox::new(0.0, 0.0, 2.0, 2.0)];
        let config = LocalizationConfig::default();
        let miss = score_map(&map(4, 4, values.clone()), &boxes, 1.0, &config).unwrap();
        assert_eq!(miss.pointing, 0.0);
        let hit = score_map(&map(4, 4, values), &boxes, 1.5, &config).unwrap();
        assert_eq!(hit.pointing, 1.0);
        assert_eq!(hit.energy, 0.0);
    }

    #[test]
    fn the_region_is_the_largest_connected_one() {
        // Two regions above 15 % of the peak: one pixel (the peak) and a 2 x 2 block.
        let values = vec![
            1.0, 0.0, 0.0, 0.0, //
            0.0, 0.0, 0.5, 0.5, //
            0.0, 0.0, 0.5, 0.5, //
            0.0, 0.0, 0.0, 0.0,
        ];
        let region = region_box(&map(4, 4, values), 0.15).unwrap();
        assert_eq!(region, BoundingBox::new(2.0, 1.0, 4.0, 3.0));
    }

    #[test]
    fn diagonal_neighbours_are_connected() {
        let values = vec![1.0, 0.0, 0.0, 1.0];
        let region = region_box(&map(2, 2, values), 0.5).unwrap();
        assert_eq!(region, BoundingBox::new(0.0, 0.0, 2.0, 2.0));
    }

    #[test]
    fn a_zero_map_has_no_energy_and_no_region() {
        let scores = score_map(
            &map(2, 2, vec![0.0; 4]),
            &[BoundingBox::new(0.0, 0.0, 1.0, 1.0)],
            0.0,
            &LocalizationConfig::default(),
        )
        .unwrap();
        assert_eq!(
            (scores.energy, scores.best_iou, scores.iou_hit),
            (0.0, 0.0, false)
        );
        assert_eq!(scores.pointing, 0.0); // no maximum: a miss, not chance
    }

    #[test]
    fn nan_maps_are_refused() {
        let err = score_map(
            &map(1, 2, vec![f32::NAN, 1.0]),
            &[BoundingBox::new(0.0, 0.0, 1.0, 1.0)],
            0.0,
            &LocalizationConfig::default(),
        );
        assert!(err.is_err());
    }
}
