//! [`ViewAugmentation`]: the seeded perturbation of one picture in a
//! [`super::CacheView::Augmented`] view, and the geometry that carries its boxes along.
//!
//! A hospital's copy of a radiograph may have been resized by another program, re-encoded as
//! JPEG and carry a gray level of noise; it may also be framed, turned and mirrored a little
//! differently. An augmented view draws, per image, one such history: the picture-level part
//! ([`ViewAugmentation::resize`], [`ViewAugmentation::jpeg_quality`],
//! [`ViewAugmentation::noise`]) is applied by the caller to the decoded picture (the cache
//! does not decode pictures); the geometric part ([`ViewAugmentation::warp`]) to the picture
//! at the model's size, and [`ViewAugmentation::map_point`] moves a fracture box with it.
//!
//! The ranges below are part of the stage cache's format: change them, and the cache's
//! format version must change with them.

use crate::image::ImageF32;
use crate::preprocess::FilterType;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Largest rotation, in degrees either way.
const MAX_ROTATION_DEG: f64 = 10.0;
/// Zoom range (above 1: the content appears larger).
const SCALE: (f64, f64) = (0.9, 1.15);
/// Largest shift, as a fraction of the picture's height (and of its width).
const MAX_SHIFT: f64 = 0.05;
/// The filters another program may have resized with.
const FILTERS: [FilterType; 4] = [
    FilterType::Lanczos3,
    FilterType::CatmullRom,
    FilterType::Triangle,
    FilterType::Gaussian,
];

/// The perturbation an augmented view applies to one picture, drawn from the view's seed
/// and the picture's index in its part (the same picture gets the same perturbation every
/// time the cache is built).
///
/// ```
/// use fracture::train::ViewAugmentation;
/// let a = ViewAugmentation::draw(1, 17);
/// assert_eq!(a, ViewAugmentation::draw(1, 17));
/// assert_ne!(a, ViewAugmentation::draw(2, 17));
/// assert!(a.rotation_deg.abs() <= 10.0 && (0.9..=1.15).contains(&a.scale));
/// // A point and its image under the view's geometry:
/// let (x, y) = a.map_point(0.5, 0.5, 1.0);
/// assert!((x - 0.5).abs() <= 0.05 + 1e-12 && (y - 0.5).abs() <= 0.05 + 1e-12);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ViewAugmentation {
    /// Resized by another program before it reached us: to this fraction of its width and
    /// height, with this filter.
    pub resize: Option<(f64, FilterType)>,
    /// Re-encoded as JPEG at this quality.
    pub jpeg_quality: Option<u8>,
    /// Largest uniform noise added, in gray levels (0: none), kept in floating point.
    pub noise: f32,
    /// Rotation about the centre, in degrees.
    pub rotation_deg: f64,
    /// Zoom about the centre (above 1: the content appears larger).
    pub scale: f64,
    /// Shift of the content, as fractions of the picture's (width, height).
    pub shift: (f64, f64),
    /// Mirrored left to right after the rest.
    pub mirror: bool,
}

impl ViewAugmentation {
    /// The perturbation of picture `index` in the view seeded by `seed`.
    pub fn draw(seed: u64, index: usize) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(index as u64);
        let resize = rng
            .random_bool(0.5)
            .then(|| (rng.random_range(0.3..0.8), FILTERS[rng.random_range(0..4)]));
        let jpeg_quality = rng.random_bool(0.6).then(|| rng.random_range(60..=95));
        let noise = if rng.random_bool(0.5) {
            rng.random_range(0.0..2.0)
        } else {
            0.0
        };
        Self {
            resize,
            jpeg_quality,
            noise,
            rotation_deg: rng.random_range(-MAX_ROTATION_DEG..=MAX_ROTATION_DEG),
            scale: rng.random_range(SCALE.0..=SCALE.1),
            shift: (
                rng.random_range(-MAX_SHIFT..=MAX_SHIFT),
                rng.random_range(-MAX_SHIFT..=MAX_SHIFT),
            ),
            mirror: rng.random_bool(0.5),
        }
    }

    /// Where the point `(x, y)` of the picture (fractions of its width and height) lies
    /// after the geometric part, for a picture `aspect` = width / height times as wide as
    /// high (rotations turn true angles).
    pub fn map_point(&self, x: f64, y: f64, aspect: f64) -> (f64, f64) {
        let (sin, cos) = self.rotation_deg.to_radians().sin_cos();
        let (px, py) = ((x - 0.5) * aspect, y - 0.5);
        let qx = self.scale * (cos * px - sin * py) + self.shift.0 * aspect;
        let qy = self.scale * (sin * px + cos * py) + self.shift.1;
        let qx = if self.mirror { -qx } else { qx };
        (qx / aspect + 0.5, qy + 0.5)
    }

    /// The inverse of [`ViewAugmentation::map_point`]: which point of the picture lands at
    /// `(x, y)` of the view.
    fn source_point(&self, x: f64, y: f64, aspect: f64) -> (f64, f64) {
        let (sin, cos) = self.rotation_deg.to_radians().sin_cos();
        let qx = (x - 0.5) * aspect;
        let unmirrored = if self.mirror { -qx } else { qx };
        let qx = unmirrored - self.shift.0 * aspect;
        let qy = y - 0.5 - self.shift.1;
        let px = (cos * qx + sin * qy) / self.scale;
        let py = (-sin * qx + cos * qy) / self.scale;
        (px / aspect + 0.5, py + 0.5)
    }

    /// The geometric part applied to `image`: every output pixel reads the picture at its
    /// [`ViewAugmentation::map_point`] preimage, bilinearly, the edge repeated beyond it.
    ///
    /// ```
    /// use fracture::image::ImageF32;
    /// use fracture::train::ViewAugmentation;
    /// // A flat picture stays flat (to rounding: bilinear weights sum to 1 in f32).
    /// let flat = ImageF32::new(4, 4, 3, vec![7.0; 48])?;
    /// let warped = ViewAugmentation::draw(3, 0).warp(&flat);
    /// assert!(warped.data.iter().all(|v| (v - 7.0).abs() < 1e-5));
    /// # Ok::<(), fracture::Error>(())
    /// ```
    pub fn warp(&self, image: &ImageF32) -> ImageF32 {
        let (h, w, c) = (image.height, image.width, image.channels);
        let aspect = w as f64 / h as f64;
        let mut data = vec![0f32; h * w * c];
        let at = |r: usize, col: usize, ch: usize| image.data[(r * w + col) * c + ch];
        for r in 0..h {
            for col in 0..w {
                let (sx, sy) = self.source_point(
                    (col as f64 + 0.5) / w as f64,
                    (r as f64 + 0.5) / h as f64,
                    aspect,
                );
                // Pixel coordinates of the source point, clamped to the edge pixels' centres.
                let fx = (sx * w as f64 - 0.5).clamp(0.0, (w - 1) as f64);
                let fy = (sy * h as f64 - 0.5).clamp(0.0, (h - 1) as f64);
                let (x0, y0) = (fx.floor() as usize, fy.floor() as usize);
                let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
                let (ax, ay) = ((fx - x0 as f64) as f32, (fy - y0 as f64) as f32);
                for ch in 0..c {
                    let top = at(y0, x0, ch) * (1.0 - ax) + at(y0, x1, ch) * ax;
                    let bottom = at(y1, x0, ch) * (1.0 - ax) + at(y1, x1, ch) * ax;
                    data[(r * w + col) * c + ch] = top * (1.0 - ay) + bottom * ay;
                }
            }
        }
        ImageF32 {
            height: h,
            width: w,
            channels: c,
            data,
        }
    }
}
