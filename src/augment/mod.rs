//! Training-time augmentation with the semantics of Keras's `ImageDataGenerator`, fused into
//! one resampling pass per image and reproducible from `(seed, epoch, index)`.
//!
//! The reference notebook augmented with
//! `ImageDataGenerator(rotation_range=10, width_shift_range=0.1, height_shift_range=0.1,
//! horizontal_flip=True, zoom_range=0.15, shear_range=0.1, fill_mode="nearest")`;
//! [`AugmentConfig::default`] is that generator. For each sample:
//!
//! 1. [`AugmentConfig::sample`] draws the parameters from Keras's distributions with a
//!    ChaCha8 generator keyed by `(seed, epoch, index)` alone, so the draw never depends on
//!    thread scheduling or on which other samples were drawn;
//! 2. the affine part (rotation, shifts, shear, zoom) is composed into one matrix about the
//!    image centre exactly as Keras does ([`AffineMatrix::keras`]) and the image is resampled
//!    once, bilinearly, with scipy's fill modes ([`warp_into`]); the horizontal flip is folded
//!    into the same pass;
//! 3. the optional intensity transforms ([`IntensityConfig`], off by default) follow.
//!
//! [`AugmentConfig`] implements [`SampleTransform`], the hook the loader calls on every decoded
//! training image in its parallel stage.
//!
//! ```
//! use fracture::augment::AugmentConfig;
//! use fracture::image::{ImageF32, SampleTransform};
//!
//! let config = AugmentConfig::default(); // the notebook's generator
//! let image = ImageF32::new(32, 32, 3, (0..32 * 32 * 3).map(|v| (v % 255) as f32).collect())?;
//! let a = config.apply(image.clone(), 42, 3, 17)?;
//! let b = config.apply(image, 42, 3, 17)?;
//! assert_eq!(a, b); // same (seed, epoch, index), same result
//! # Ok::<(), fracture::Error>(())
//! ```

mod affine;
mod clahe;
mod intensity;
mod tta;
mod warp;

pub use affine::{AffineMatrix, AffineParams, FillMode};
pub use clahe::{clahe, ClaheConfig};
pub use intensity::{adjust_brightness, adjust_contrast, adjust_gamma, IntensityConfig};
pub use tta::{warp_planes, TtaConfig};
pub use warp::{warp, warp_into, ImageShape, Pixel};

use crate::error::{Error, Result};
use crate::image::{ImageF32, SampleTransform};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The augmentation recipe: Keras `ImageDataGenerator` ranges plus optional intensity
/// transforms. [`Default`] is the reference notebook's generator. Serializable, so a training
/// configuration can record how its data were augmented.
///
/// ```
/// use fracture::augment::{AugmentConfig, FillMode};
/// let c = AugmentConfig::default();
/// assert_eq!(c.rotation_range, 10.0);
/// assert_eq!(c.zoom_range, [0.85, 1.15]);
/// assert_eq!(c.fill_mode, FillMode::Nearest);
/// assert!(c.intensity.is_disabled());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AugmentConfig {
    /// Rotation drawn from `U(-r, r)` degrees (Keras `rotation_range`).
    pub rotation_range: f64,
    /// Keras `width_shift_range`: below 1 a fraction of the width, else pixels; drawn from
    /// `U(-w, w)`.
    pub width_shift_range: f64,
    /// Keras `height_shift_range`: below 1 a fraction of the height, else pixels.
    pub height_shift_range: f64,
    /// Shear drawn from `U(-s, s)` **degrees** (Keras `shear_range`).
    pub shear_range: f64,
    /// Zoom factors `zx`, `zy` drawn independently from `U(lower, upper)` (Keras's
    /// `zoom_range=z` is `[1 - z, 1 + z]`); `[1, 1]` disables zoom.
    pub zoom_range: [f64; 2],
    /// Mirror columns with probability 1/2.
    pub horizontal_flip: bool,
    /// How positions outside the image are filled.
    pub fill_mode: FillMode,
    /// Optional intensity transforms, applied after the warp.
    pub intensity: IntensityConfig,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        Self {
            rotation_range: 10.0,
            width_shift_range: 0.1,
            height_shift_range: 0.1,
            shear_range: 0.1,
            zoom_range: [0.85, 1.15],
            horizontal_flip: true,
            fill_mode: FillMode::Nearest,
            intensity: IntensityConfig::default(),
        }
    }
}

/// A shift as drawn: a fraction of the image size (Keras range below 1) or pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Shift {
    /// Multiply by the image size along the axis Keras scales it by.
    Fraction(f64),
    /// Already in pixels.
    Pixels(f64),
}

impl Shift {
    /// The shift in pixels for an axis of `size` pixels.
    pub fn pixels(self, size: usize) -> f64 {
        match self {
            Shift::Fraction(f) => f * size as f64,
            Shift::Pixels(p) => p,
        }
    }
}

/// One draw of every random parameter, independent of the image size.
///
/// Turn it into pixels with [`AugmentSample::affine`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AugmentSample {
    /// Rotation in degrees.
    pub rotation_deg: f64,
    /// Keras's `tx` draw, from `height_shift_range`.
    pub height_shift: Shift,
    /// Keras's `ty` draw, from `width_shift_range`.
    pub width_shift: Shift,
    /// Shear in degrees.
    pub shear_deg: f64,
    /// Zoom along columns (Keras `zx`).
    pub zoom_x: f64,
    /// Zoom along rows (Keras `zy`).
    pub zoom_y: f64,
    /// Mirror the columns.
    pub flip_horizontal: bool,
    /// Brightness factor, when enabled.
    pub brightness: Option<f32>,
    /// Contrast factor, when enabled.
    pub contrast: Option<f32>,
    /// Gamma, when enabled.
    pub gamma: Option<f32>,
    /// Whether CLAHE is applied to this sample.
    pub clahe: bool,
}

impl AugmentSample {
    /// The affine parameters for an image of `height` x `width`, as Keras's
    /// `get_random_transform` + `apply_transform` produce them: `tx` is the height-shift draw
    /// times the **height**, `ty` the width-shift draw times the **width**, and (Keras's axis
    /// convention, see [`AffineParams`]) `tx` moves columns, `ty` rows. For square images,
    /// and for the notebook's equal ranges, this is the plain reading.
    ///
    /// ```
    /// use fracture::augment::{AugmentSample, Shift};
    /// let s = AugmentSample {
    ///     rotation_deg: 0.0, height_shift: Shift::Fraction(0.1), width_shift: Shift::Pixels(3.0),
    ///     shear_deg: 0.0, zoom_x: 1.0, zoom_y: 1.0, flip_horizontal: false,
    ///     brightness: None, contrast: None, gamma: None, clahe: false,
    /// };
    /// let p = s.affine(200, 100);
    /// assert_eq!((p.shift_cols, p.shift_rows), (20.0, 3.0));
    /// ```
    pub fn affine(&self, height: usize, width: usize) -> AffineParams {
        AffineParams::from_keras(
            self.rotation_deg,
            self.height_shift.pixels(height),
            self.width_shift.pixels(width),
            self.shear_deg,
            self.zoom_x,
            self.zoom_y,
            self.flip_horizontal,
        )
    }
}

/// Domain tag mixed into the generator key, so other seeded streams of the crate that use the
/// same `(seed, epoch, index)` draw different numbers.
const RNG_DOMAIN: u64 = u64::from_le_bytes(*b"augment1");

/// The per-sample generator: ChaCha8 keyed by `(seed, epoch, index, domain)`.
fn sample_rng(seed: u64, epoch: u64, index: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    for (chunk, word) in key
        .chunks_exact_mut(8)
        .zip([seed, epoch, index, RNG_DOMAIN])
    {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    ChaCha8Rng::from_seed(key)
}

fn uniform(rng: &mut ChaCha8Rng, low: f64, high: f64) -> f64 {
    low + (high - low) * rng.random::<f64>()
}

fn shift_draw(rng: &mut ChaCha8Rng, range: f64) -> Shift {
    let value = uniform(rng, -range, range);
    if range < 1.0 {
        Shift::Fraction(value)
    } else {
        Shift::Pixels(value)
    }
}

impl AugmentConfig {
    /// No augmentation at all (every sample is the identity).
    pub fn disabled() -> Self {
        Self {
            rotation_range: 0.0,
            width_shift_range: 0.0,
            height_shift_range: 0.0,
            shear_range: 0.0,
            zoom_range: [1.0, 1.0],
            horizontal_flip: false,
            fill_mode: FillMode::Nearest,
            intensity: IntensityConfig::default(),
        }
    }

    /// Check every range (finite, non-negative, zoom `0 < lower <= upper`) and the
    /// intensity settings.
    ///
    /// ```
    /// use fracture::augment::AugmentConfig;
    /// assert!(AugmentConfig::default().validate().is_ok());
    /// let bad = AugmentConfig { zoom_range: [1.2, 0.8], ..AugmentConfig::default() };
    /// assert!(bad.validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<()> {
        for (name, range) in [
            ("rotation_range", self.rotation_range),
            ("width_shift_range", self.width_shift_range),
            ("height_shift_range", self.height_shift_range),
            ("shear_range", self.shear_range),
        ] {
            if !(range.is_finite() && range >= 0.0) {
                return Err(Error::InvalidConfig(format!(
                    "augmentation {name} must be finite and non-negative, found {range}"
                )));
            }
        }
        let [lower, upper] = self.zoom_range;
        if !(lower.is_finite() && upper.is_finite() && 0.0 < lower && lower <= upper) {
            return Err(Error::InvalidConfig(format!(
                "augmentation zoom_range must satisfy 0 < lower <= upper, found [{lower}, {upper}]"
            )));
        }
        if let FillMode::Constant(cval) = self.fill_mode
            && !cval.is_finite()
        {
            return Err(Error::InvalidConfig(format!(
                "constant fill value must be finite, found {cval}"
            )));
        }
        self.intensity.validate()
    }

    /// Draw the parameters of sample `index` in `epoch` (Keras's distributions; the same
    /// triple always gives the same draw).
    ///
    /// Every parameter is drawn in a fixed order whether or not it is enabled, so turning one
    /// transform on or off does not change the others' values.
    ///
    /// ```
    /// use fracture::augment::AugmentConfig;
    /// let c = AugmentConfig::default();
    /// let s = c.sample(42, 0, 7);
    /// assert_eq!(s, c.sample(42, 0, 7));
    /// assert_ne!(s, c.sample(42, 1, 7));
    /// assert!(s.rotation_deg.abs() <= 10.0 && (0.85..=1.15).contains(&s.zoom_x));
    /// ```
    pub fn sample(&self, seed: u64, epoch: u64, index: u64) -> AugmentSample {
        let mut rng = sample_rng(seed, epoch, index);
        let rotation_deg = uniform(&mut rng, -self.rotation_range, self.rotation_range);
        let height_shift = shift_draw(&mut rng, self.height_shift_range);
        let width_shift = shift_draw(&mut rng, self.width_shift_range);
        let shear_deg = uniform(&mut rng, -self.shear_range, self.shear_range);
        let [lower, upper] = self.zoom_range;
        let zoom_x = uniform(&mut rng, lower, upper);
        let zoom_y = uniform(&mut rng, lower, upper);
        let flip = rng.random::<f64>() < 0.5;
        let brightness_u = rng.random::<f64>();
        let contrast_u = rng.random::<f64>();
        let gamma_u = rng.random::<f64>();
        let clahe_u = rng.random::<f64>();
        let factor = |range: Option<[f32; 2]>, u: f64| {
            range.map(|[a, b]| (a as f64 + (b as f64 - a as f64) * u) as f32)
        };
        // Gamma is drawn log-uniformly, so [0.8, 1.25] is symmetric about 1.
        let gamma = self.intensity.gamma.map(|[a, b]| {
            let (la, lb) = ((a as f64).ln(), (b as f64).ln());
            (la + (lb - la) * gamma_u).exp() as f32
        });
        AugmentSample {
            rotation_deg,
            height_shift,
            width_shift,
            shear_deg,
            zoom_x,
            zoom_y,
            flip_horizontal: self.horizontal_flip && flip,
            brightness: factor(self.intensity.brightness, brightness_u),
            contrast: factor(self.intensity.contrast, contrast_u),
            gamma,
            clahe: self
                .intensity
                .clahe
                .is_some_and(|c| clahe_u < c.probability),
        }
    }

    /// Apply a drawn sample to an image: one affine resampling pass, then the enabled
    /// intensity transforms (CLAHE, brightness, contrast, gamma, in that order).
    pub fn apply_sample(&self, sample: &AugmentSample, image: &ImageF32) -> Result<ImageF32> {
        let mut out = image.clone();
        let mut scratch = Vec::new();
        self.apply_sample_in_place(sample, &mut out, &mut scratch)?;
        Ok(out)
    }

    /// [`AugmentConfig::apply_sample`] without allocating: the warp writes into `scratch`
    /// (resized as needed), which is then swapped with the image's buffer, so `scratch` comes
    /// back holding the old pixels, ready for the next image of the same size. On error the
    /// image is left unchanged.
    ///
    /// ```
    /// use fracture::augment::AugmentConfig;
    /// use fracture::image::ImageF32;
    /// let config = AugmentConfig::default();
    /// let mut scratch = Vec::new();
    /// let mut image = ImageF32::new(16, 16, 1, (0..256).map(|v| v as f32).collect())?;
    /// let expected = config.apply_sample(&config.sample(1, 2, 3), &image)?;
    /// config.apply_sample_in_place(&config.sample(1, 2, 3), &mut image, &mut scratch)?;
    /// assert_eq!(image, expected);
    /// # Ok::<(), fracture::Error>(())
    /// ```
    pub fn apply_sample_in_place(
        &self,
        sample: &AugmentSample,
        image: &mut ImageF32,
        scratch: &mut Vec<f32>,
    ) -> Result<()> {
        let (height, width, channels) = (image.height, image.width, image.channels);
        let shape = ImageShape {
            height,
            width,
            channels,
        };
        let params = sample.affine(height, width);
        scratch.resize(image.data.len(), 0.0);
        warp_into(&image.data, scratch, shape, &params, self.fill_mode)?;
        let intensity = &self.intensity;
        let range = intensity.value_range;
        if let (true, Some(config)) = (sample.clahe, intensity.clahe) {
            let config = ClaheConfig {
                value_range: range,
                ..config
            };
            clahe(scratch, height, width, channels, &config)?;
        }
        if let Some(factor) = sample.brightness {
            adjust_brightness(scratch, factor, range);
        }
        if let Some(factor) = sample.contrast {
            adjust_contrast(scratch, factor, range);
        }
        if let Some(gamma) = sample.gamma {
            adjust_gamma(scratch, gamma, range);
        }
        std::mem::swap(&mut image.data, scratch);
        Ok(())
    }

    /// Draw and apply: the augmented version of sample `index` of `epoch`.
    ///
    /// ```
    /// use fracture::augment::AugmentConfig;
    /// use fracture::image::ImageF32;
    /// let image = ImageF32::new(8, 8, 1, vec![5.0; 64])?;
    /// let out = AugmentConfig::default().augment(&image, 1, 0, 0)?;
    /// assert_eq!(out, image); // a flat image stays flat under any warp with nearest fill
    /// # Ok::<(), fracture::Error>(())
    /// ```
    pub fn augment(&self, image: &ImageF32, seed: u64, epoch: u64, index: u64) -> Result<ImageF32> {
        self.apply_sample(&self.sample(seed, epoch, index), image)
    }
}

/// The loader hook: augment each decoded training image from `(seed, epoch, index)`.
///
/// [`SampleTransform::validate`] is [`AugmentConfig::validate`]; an image the warp cannot
/// handle (a buffer that does not match its dimensions) is an error, never passed on
/// unaugmented.
///
/// Each worker thread keeps one scratch buffer, so in steady state augmenting an image
/// allocates nothing.
impl SampleTransform for AugmentConfig {
    fn apply(&self, mut image: ImageF32, seed: u64, epoch: u64, index: u64) -> Result<ImageF32> {
        let sample = self.sample(seed, epoch, index);
        SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut scratch) => {
                self.apply_sample_in_place(&sample, &mut image, &mut scratch)?;
                Ok(image)
            }
            Err(_) => self.apply_sample(&sample, &image),
        })
    }

    fn validate(&self) -> Result<()> {
        AugmentConfig::validate(self)
    }
}

thread_local! {
    /// Per-thread warp destination reused by [`SampleTransform::apply`].
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}
