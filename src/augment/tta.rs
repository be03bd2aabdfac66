//! Test-time augmentation: the views of an image a classifier scores and averages.
//!
//! [`TtaConfig`] lists the views (always the image itself, optionally its mirror image and
//! small rotations); [`warp_planes`] makes one view of a preprocessed CHW image with the same
//! affine warp as training augmentation ([`super::warp_into`], nearest fill). The classifier
//! averages the views' **logits**, not their probabilities: the mean logit stays on the scale
//! the temperature and the threshold were fitted on (averaging probabilities squashed by the
//! sigmoid would give a number that no temperature describes), and one confident view cannot
//! pin the mean at 0 or 1 the way a probability mean near saturation does.
//!
//! ```
//! use fracture::augment::TtaConfig;
//! assert_eq!(TtaConfig::none().views().len(), 1); // off: the image alone
//! let standard = TtaConfig::standard();
//! assert_eq!(standard.views().len(), 4); // identity, mirror, -5°, +5°
//! assert!(standard.views()[0].is_identity());
//! ```

use super::{warp_into, AffineParams, FillMode, ImageShape};
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// Which views test-time augmentation scores (the image itself always comes first).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct TtaConfig {
    /// Also score the horizontally mirrored image.
    pub horizontal_flip: bool,
    /// Also score the image rotated by each of these angles, in degrees (positive turns the
    /// content counter-clockwise); small ones (a few degrees) are what radiographs tolerate.
    pub rotations_deg: Vec<f64>,
}

impl TtaConfig {
    /// No augmentation: the image alone (the default).
    pub fn none() -> Self {
        Self::default()
    }

    /// The image, its mirror image, and rotations by -5° and +5°.
    pub fn standard() -> Self {
        Self {
            horizontal_flip: true,
            rotations_deg: vec![-5.0, 5.0],
        }
    }

    /// Whether more than the image itself is scored.
    ///
    /// ```
    /// use fracture::augment::TtaConfig;
    /// assert!(!TtaConfig::none().is_enabled() && TtaConfig::standard().is_enabled());
    /// ```
    pub fn is_enabled(&self) -> bool {
        self.views().len() > 1
    }

    /// The views' warps, identity first (then the mirror image, then the rotations in the
    /// order given; a rotation of 0 is left out, it is the identity).
    pub fn views(&self) -> Vec<AffineParams> {
        let mut views = vec![AffineParams::IDENTITY];
        if self.horizontal_flip {
            views.push(AffineParams {
                flip_horizontal: true,
                ..AffineParams::IDENTITY
            });
        }
        views.extend(
            self.rotations_deg
                .iter()
                .filter(|&&r| r != 0.0)
                .map(|&rotation_deg| AffineParams {
                    rotation_deg,
                    ..AffineParams::IDENTITY
                }),
        );
        views
    }

    /// Check that every rotation is finite and at most 45° either way.
    ///
    /// ```
    /// use fracture::augment::TtaConfig;
    /// assert!(TtaConfig::standard().validate().is_ok());
    /// let wild = TtaConfig { horizontal_flip: false, rotations_deg: vec![90.0] };
    /// assert!(wild.validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<()> {
        for &r in &self.rotations_deg {
            if !(r.is_finite() && r.abs() <= 45.0) {
                return Err(Error::InvalidConfig(format!(
                    "test-time augmentation rotations must be finite and within ±45°, found {r}"
                )));
            }
        }
        Ok(())
    }

    /// A short description for logs and reports: `identity + horizontal flip + rotations
    /// -5°, 5°`.
    pub fn describe(&self) -> String {
        let mut parts = vec!["identity".to_string()];
        if self.horizontal_flip {
            parts.push("horizontal flip".into());
        }
        let rotations: Vec<String> = self
            .rotations_deg
            .iter()
            .filter(|&&r| r != 0.0)
            .map(|r| format!("{r}°"))
            .collect();
        if !rotations.is_empty() {
            parts.push(format!("rotations {}", rotations.join(", ")));
        }
        parts.join(" + ")
    }
}

/// One view of a CHW image (`channels` planes of `height` x `width`, as the model takes it):
/// each plane warped by `params` with nearest fill.
///
/// ```
/// use fracture::augment::{warp_planes, AffineParams};
/// let image = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]; // 1 channel, 2 rows, 3 columns
/// let flip = AffineParams { flip_horizontal: true, ..AffineParams::IDENTITY };
/// assert_eq!(warp_planes(&image, 1, 2, 3, &flip)?, vec![3.0, 2.0, 1.0, 6.0, 5.0, 4.0]);
/// # Ok::<(), fracture::Error>(())
/// ```
pub fn warp_planes(
    chw: &[f32],
    channels: usize,
    height: usize,
    width: usize,
    params: &AffineParams,
) -> Result<Vec<f32>> {
    let plane = ImageShape {
        height,
        width,
        channels: 1,
    };
    let expected = plane.len().checked_mul(channels);
    if expected != Some(chw.len()) || plane.is_empty() {
        return Err(Error::InvalidInput(format!(
            "test-time augmentation: a buffer of {} values is not {channels}x{height}x{width}",
            chw.len()
        )));
    }
    let mut out = vec![0.0; chw.len()];
    for (src, dst) in chw
        .chunks_exact(plane.len())
        .zip(out.chunks_exact_mut(plane.len()))
    {
        warp_into(src, dst, plane, params, FillMode::Nearest)?;
    }
    Ok(out)
}
