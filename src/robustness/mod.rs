//! Robustness: how far a classifier's fracture probability moves when the same radiograph
//! reaches it the way hospitals pass pictures around (issue 24, item 7).
//!
//! A [`Perturbation`] changes a decoded picture as another program would: re-encoded as JPEG,
//! with a gray level of noise, exported as 12-bit DICOM, or resized with another filter. Every
//! perturbed picture is then read the crate's normal way (JPEG and DICOM bytes through
//! [`crate::dataset::decode::decode_bytes_with`], so through the DICOM reader of
//! [`crate::dataset::dicom`]) and classified as any picture is
//! ([`crate::FractureClassifier::classify_batch`]: its resize, normalization and test-time
//! augmentation). [`crate::FractureClassifier::robustness`] does this for a dataset part and
//! summarizes the changes in a [`RobustnessReport`] (median, 95th percentile and largest
//! absolute change of the probability, decisions flipped at the classifier's threshold).
//!
//! Noise is seeded: image `i` of a part draws its noise from `ChaCha8Rng::seed_from_u64(seed)`
//! on stream `i`, so a report depends on the seed only, never on batching or threads, and the
//! noise of ±0.5 and ±1 gray level (rounded or not) is the same pattern, scaled.
//!
//! ```
//! use fracture::robustness::Perturbation;
//! let picture = image::DynamicImage::ImageLuma8(image::GrayImage::from_fn(40, 30, |x, y| {
//!     image::Luma([(x * 6 + y) as u8])
//! }));
//! let preprocess = fracture::preprocess::Preprocess::default();
//! let jpeg = Perturbation::Jpeg { quality: 75 }.apply(&picture, &preprocess, 7, 0, "x.png".as_ref())?;
//! assert_eq!((jpeg.width(), jpeg.height()), (40, 30));
//! assert_ne!(jpeg, picture); // JPEG at quality 75 loses detail
//! # Ok::<(), fracture::Error>(())
//! ```

mod dicom12;
mod report;

pub use dicom12::{twelve_bit_dicom, widen_to_12_bits};
pub use report::{PerturbationSummary, RobustnessCase, RobustnessReport};

use crate::dataset::decode;
use crate::error::{Error, Result};
use crate::preprocess::{FilterType, Preprocess};
use image::codecs::jpeg::JpegEncoder;
use image::{DynamicImage, ImageBuffer, Luma, Rgb};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::Path;

/// The size a [`Perturbation::Resize`] resizes a picture to.
///
/// ```
/// use fracture::robustness::ResizeTarget;
/// assert_eq!(ResizeTarget::Half.describe(), "half size");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResizeTarget {
    /// Half the width and height (rounded down, at least 1 pixel).
    Half,
    /// The model's input size ([`Preprocess::width`] x [`Preprocess::height`]): the model's
    /// own resize then has nothing left to do.
    ModelInput,
}

impl ResizeTarget {
    /// `half size` or `model input size`.
    ///
    /// ```
    /// use fracture::robustness::ResizeTarget;
    /// assert_eq!(ResizeTarget::ModelInput.describe(), "model input size");
    /// ```
    pub fn describe(&self) -> &'static str {
        match self {
            ResizeTarget::Half => "half size",
            ResizeTarget::ModelInput => "model input size",
        }
    }
}

/// One way a radiograph can change on its way to the classifier.
///
/// ```
/// use fracture::robustness::Perturbation;
/// let all = Perturbation::standard();
/// assert_eq!(all.len(), 12);
/// assert!(all.iter().all(|p| p.validate().is_ok()));
/// assert_eq!(all[0].describe(), "JPEG quality 75");
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Perturbation {
    /// The picture as decoded (a control: every change must be exactly 0).
    Identity,
    /// Encoded as an 8-bit JPEG at `quality` (1 to 100) by the `image` crate and decoded again
    /// (grayscale stays grayscale; 16-bit pictures are first reduced to 8 bits).
    Jpeg {
        /// JPEG quality, 1 to 100.
        quality: u8,
    },
    /// Seeded uniform noise in `[-amplitude, amplitude]` gray levels (0..255 scale), one draw
    /// per pixel added to each of its channels, the result clamped to 0..255 (a picture holds
    /// no other values). With `rounded` the picture is rounded back to 8 bits; without, it
    /// reaches the model's resize in floating point.
    Noise {
        /// Largest noise, in gray levels (0 to 255).
        amplitude: f32,
        /// Round the noisy picture back to 8 bits.
        rounded: bool,
    },
    /// Exported as 12-bit DICOM ([`twelve_bit_dicom`]: the 8-bit gray values `v` stored as
    /// `16 v + 8`, MONOCHROME2, a full-range window) and read back by the crate's DICOM reader.
    Dicom12Bit,
    /// Resized by another program with `filter` to `target`, kept at the picture's bit depth
    /// (as a lossless PNG or TIFF would keep it), then resized by the model as any picture.
    Resize {
        /// The other program's filter (for example Lanczos3 or CatmullRom).
        filter: FilterType,
        /// The size it resizes to.
        target: ResizeTarget,
    },
}

impl Perturbation {
    /// The perturbations of issue 24, item 7: JPEG at quality 75, 85 and 95; noise of ±0.5
    /// and ±1 gray level, in floating point and rounded to 8 bits; 12-bit DICOM; Lanczos3 and
    /// CatmullRom resizes to half size and to the model's input size.
    ///
    /// ```
    /// use fracture::robustness::Perturbation;
    /// assert!(!Perturbation::standard().contains(&Perturbation::Identity));
    /// ```
    pub fn standard() -> Vec<Perturbation> {
        let mut all: Vec<Perturbation> = [75, 85, 95]
            .into_iter()
            .map(|quality| Perturbation::Jpeg { quality })
            .collect();
        for rounded in [false, true] {
            for amplitude in [0.5, 1.0] {
                all.push(Perturbation::Noise { amplitude, rounded });
            }
        }
        all.push(Perturbation::Dicom12Bit);
        for target in [ResizeTarget::Half, ResizeTarget::ModelInput] {
            for filter in [FilterType::Lanczos3, FilterType::CatmullRom] {
                all.push(Perturbation::Resize { filter, target });
            }
        }
        all
    }

    /// A short name for tables and JSON: `JPEG quality 75`, `noise ±0.5 (float)`, ...
    ///
    /// ```
    /// use fracture::robustness::Perturbation;
    /// let noise = Perturbation::Noise { amplitude: 1.0, rounded: true };
    /// assert_eq!(noise.describe(), "noise ±1 (rounded to 8 bits)");
    /// ```
    pub fn describe(&self) -> String {
        match self {
            Perturbation::Identity => "identity".into(),
            Perturbation::Jpeg { quality } => format!("JPEG quality {quality}"),
            Perturbation::Noise { amplitude, rounded } => format!(
                "noise ±{amplitude} ({})",
                if *rounded {
                    "rounded to 8 bits"
                } else {
                    "float"
                }
            ),
            Perturbation::Dicom12Bit => "12-bit DICOM".into(),
            Perturbation::Resize { filter, target } => {
                format!("{filter:?} resize to {}", target.describe())
            }
        }
    }

    /// An [`Error::InvalidConfig`] for a JPEG quality outside 1..=100 or a noise amplitude that
    /// is not a finite number of gray levels in 0..=255.
    ///
    /// ```
    /// use fracture::robustness::Perturbation;
    /// assert!(Perturbation::Jpeg { quality: 0 }.validate().is_err());
    /// assert!(Perturbation::Noise { amplitude: f32::NAN, rounded: false }.validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<()> {
        match *self {
            Perturbation::Jpeg { quality } if !(1..=100).contains(&quality) => Err(
                Error::InvalidConfig(format!("JPEG quality must be 1 to 100, found {quality}")),
            ),
            Perturbation::Noise { amplitude, .. } if !(0.0..=255.0).contains(&amplitude) => {
                Err(Error::InvalidConfig(format!(
                    "noise amplitude must be 0 to 255 gray levels, found {amplitude}"
                )))
            }
            _ => Ok(()),
        }
    }

    /// The picture `image` (image `index` of its part, read from `path`, which only names it
    /// in errors) as it reaches a classifier preprocessing with `preprocess` after this
    /// perturbation; noise is drawn from `seed` and `index` (see the module docs).
    ///
    /// ```
    /// use fracture::robustness::Perturbation;
    /// let picture = image::DynamicImage::ImageLuma8(image::GrayImage::from_pixel(8, 6, image::Luma([100])));
    /// let p = fracture::preprocess::Preprocess::default();
    /// let noisy = Perturbation::Noise { amplitude: 1.0, rounded: true };
    /// let a = noisy.apply(&picture, &p, 1, 0, "x.png".as_ref())?.to_luma8();
    /// assert!(a.pixels().all(|v| (99..=101).contains(&v[0])));
    /// assert_eq!(noisy.apply(&picture, &p, 1, 0, "x.png".as_ref())?.to_luma8(), a);
    /// # Ok::<(), fracture::Error>(())
    /// ```
    pub fn apply(
        &self,
        image: &DynamicImage,
        preprocess: &Preprocess,
        seed: u64,
        index: usize,
        path: &Path,
    ) -> Result<DynamicImage> {
        self.validate()?;
        match *self {
            Perturbation::Identity => Ok(image.clone()),
            Perturbation::Jpeg { quality } => {
                let bytes = jpeg_bytes(image, quality, path)?;
                Ok(decode::decode_bytes_with(&bytes, path, preprocess.exif)?.image)
            }
            Perturbation::Noise { amplitude, rounded } => {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                rng.set_stream(index as u64);
                with_noise(image, amplitude, rounded, &mut rng, path)
            }
            Perturbation::Dicom12Bit => {
                let bytes = twelve_bit_dicom(image, path)?;
                Ok(decode::decode_bytes_with(&bytes, path, preprocess.exif)?.image)
            }
            Perturbation::Resize { filter, target } => {
                let (w, h) = match target {
                    ResizeTarget::Half => ((image.width() / 2).max(1), (image.height() / 2).max(1)),
                    ResizeTarget::ModelInput => (preprocess.width as u32, preprocess.height as u32),
                };
                Ok(image.resize_exact(w, h, filter))
            }
        }
    }
}

/// The picture as 8-bit gray or RGB (what a JPEG or an 8-bit export holds).
fn eight_bit(image: &DynamicImage) -> DynamicImage {
    if image.color().has_color() {
        DynamicImage::ImageRgb8(image.to_rgb8())
    } else {
        DynamicImage::ImageLuma8(image.to_luma8())
    }
}

/// The picture encoded as a baseline JPEG at `quality`.
fn jpeg_bytes(image: &DynamicImage, quality: u8, path: &Path) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    eight_bit(image)
        .write_with_encoder(JpegEncoder::new_with_quality(&mut bytes, quality))
        .map_err(|e| Error::Image {
            path: path.to_path_buf(),
            message: format!("re-encoding as JPEG at quality {quality}: {e}"),
        })?;
    Ok(bytes)
}

/// The picture with uniform noise of `amplitude` gray levels, clamped to 0..255: 8-bit when
/// `rounded`, else `f32` RGB in [0, 1] (grayscale replicated, as the model's resize does).
fn with_noise(
    image: &DynamicImage,
    amplitude: f32,
    rounded: bool,
    rng: &mut ChaCha8Rng,
    path: &Path,
) -> Result<DynamicImage> {
    let (w, h) = (image.width(), image.height());
    let color = image.color().has_color();
    let channels = if color { 3 } else { 1 };
    let values: Vec<f32> = if color {
        image.to_rgb32f().into_raw()
    } else {
        image.to_luma32f().into_raw()
    };
    let mut noisy = Vec::with_capacity(values.len());
    for pixel in values.chunks_exact(channels) {
        let noise: f32 = rng.random_range(-amplitude..=amplitude);
        noisy.extend(pixel.iter().map(|&v| (v * 255.0 + noise).clamp(0.0, 255.0)));
    }
    let size_error = || {
        Error::Internal(format!(
            "noisy picture of {} does not fill {w}x{h}",
            path.display()
        ))
    };
    if rounded {
        let bytes: Vec<u8> = noisy.iter().map(|v| v.round() as u8).collect();
        return if color {
            ImageBuffer::<Rgb<u8>, _>::from_raw(w, h, bytes).map(DynamicImage::ImageRgb8)
        } else {
            ImageBuffer::<Luma<u8>, _>::from_raw(w, h, bytes).map(DynamicImage::ImageLuma8)
        }
        .ok_or_else(size_error);
    }
    let rgb: Vec<f32> = if color {
        noisy.into_iter().map(|v| v / 255.0).collect()
    } else {
        noisy.into_iter().flat_map(|v| [v / 255.0; 3]).collect()
    };
    ImageBuffer::<Rgb<f32>, _>::from_raw(w, h, rgb)
        .map(DynamicImage::ImageRgb32F)
        .ok_or_else(size_error)
}
