//! Optional intensity augmentations for radiographs: brightness, contrast, gamma and CLAHE.
//!
//! All of them are off by default (the notebook used none). They work on `f32` HWC images whose
//! values span a known `value_range` (`[0, 255]` by default, the loader's scale before
//! normalization) and clamp their results into it.

use super::clahe::ClaheConfig;
use crate::error::{Error, Result};

/// Which intensity transforms to draw, and from which ranges. `None` disables one.
///
/// ```
/// use fracture::augment::IntensityConfig;
/// let radiograph = IntensityConfig {
///     brightness: Some([0.9, 1.1]),
///     gamma: Some([0.8, 1.25]),
///     ..IntensityConfig::default()
/// };
/// radiograph.validate()?;
/// assert!(IntensityConfig::default().is_disabled());
/// # Ok::<(), fracture::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct IntensityConfig {
    /// Values the image spans (and results are clamped to).
    pub value_range: [f32; 2],
    /// Brightness factor range (Keras's `brightness_range`, PIL `ImageEnhance.Brightness`):
    /// `v' = lo + factor * (v - lo)`.
    pub brightness: Option<[f32; 2]>,
    /// Contrast factor range (PIL `ImageEnhance.Contrast`): `v' = mean + factor * (v - mean)`
    /// with `mean` the image's mean value.
    pub contrast: Option<[f32; 2]>,
    /// Gamma range: `v' = lo + (hi - lo) * ((v - lo) / (hi - lo))^gamma`; gamma below 1
    /// brightens dark regions (soft tissue), above 1 darkens them.
    pub gamma: Option<[f32; 2]>,
    /// Contrast-limited adaptive histogram equalization, applied with
    /// [`ClaheConfig::probability`]. Its `value_range` is replaced by this config's.
    pub clahe: Option<ClaheConfig>,
}

impl Default for IntensityConfig {
    fn default() -> Self {
        Self {
            value_range: [0.0, 255.0],
            brightness: None,
            contrast: None,
            gamma: None,
            clahe: None,
        }
    }
}

impl IntensityConfig {
    /// True when no intensity transform is enabled.
    pub fn is_disabled(&self) -> bool {
        self.brightness.is_none()
            && self.contrast.is_none()
            && self.gamma.is_none()
            && self.clahe.is_none()
    }

    /// Check ranges: finite, increasing value range, positive factor ranges with `lo <= hi`.
    pub fn validate(&self) -> Result<()> {
        let [lo, hi] = self.value_range;
        if !(lo.is_finite() && hi.is_finite() && lo < hi) {
            return Err(Error::InvalidConfig(format!(
                "intensity value range must be finite and increasing, found [{lo}, {hi}]"
            )));
        }
        for (name, range) in [
            ("brightness", self.brightness),
            ("contrast", self.contrast),
            ("gamma", self.gamma),
        ] {
            if let Some([a, b]) = range
                && !(a.is_finite() && b.is_finite() && 0.0 < a && a <= b)
            {
                return Err(Error::InvalidConfig(format!(
                    "{name} range must be positive with lower <= upper, found [{a}, {b}]"
                )));
            }
        }
        if let Some(clahe) = &self.clahe {
            ClaheConfig {
                value_range: self.value_range,
                ..*clahe
            }
            .validate()?;
        }
        Ok(())
    }
}

/// Scale brightness: `v' = lo + factor * (v - lo)`, clamped to `[lo, hi]`.
///
/// ```
/// let mut px = vec![0.0, 100.0, 200.0];
/// fracture::augment::adjust_brightness(&mut px, 1.5, [0.0, 255.0]);
/// assert_eq!(px, vec![0.0, 150.0, 255.0]);
/// ```
pub fn adjust_brightness(data: &mut [f32], factor: f32, value_range: [f32; 2]) {
    let [lo, hi] = value_range;
    for v in data {
        *v = (lo + factor * (*v - lo)).clamp(lo, hi);
    }
}

/// Scale contrast about the image mean: `v' = mean + factor * (v - mean)`, clamped.
///
/// ```
/// let mut px = vec![100.0, 140.0];
/// fracture::augment::adjust_contrast(&mut px, 2.0, [0.0, 255.0]);
/// assert_eq!(px, vec![80.0, 160.0]);
/// ```
pub fn adjust_contrast(data: &mut [f32], factor: f32, value_range: [f32; 2]) {
    if data.is_empty() {
        return;
    }
    let [lo, hi] = value_range;
    let mean = (data.iter().map(|&v| v as f64).sum::<f64>() / data.len() as f64) as f32;
    for v in data {
        *v = (mean + factor * (*v - mean)).clamp(lo, hi);
    }
}

/// Gamma curve on the normalized value: `v' = lo + (hi - lo) * t^gamma`, `t = (v - lo) / (hi - lo)`.
///
/// ```
/// let mut px = vec![0.0, 63.75, 255.0];
/// fracture::augment::adjust_gamma(&mut px, 0.5, [0.0, 255.0]);
/// assert_eq!(px, vec![0.0, 127.5, 255.0]);
/// ```
pub fn adjust_gamma(data: &mut [f32], gamma: f32, value_range: [f32; 2]) {
    let [lo, hi] = value_range;
    let span = hi - lo;
    for v in data {
        let t = ((*v - lo) / span).clamp(0.0, 1.0);
        *v = lo + span * t.powf(gamma);
    }
}
