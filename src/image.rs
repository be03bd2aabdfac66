//! In-memory images shared by the loader and the augmentation stage.
//!
//! [`ImageF32`] is a plain HWC buffer of `f32` values; [`SampleTransform`] is what the
//! loader calls on every decoded training image in its parallel stage (augmentation
//! implements it). Keeping both here lets `dataset` and `augment` stay independent.

/// An image stored row-major as height x width x channels `f32` values.
///
/// ```
/// use fracture::image::ImageF32;
/// let img = ImageF32::new(2, 3, 1, vec![0.0; 6]).unwrap();
/// assert_eq!(img.get(1, 2, 0), 0.0);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ImageF32 {
    /// Number of rows.
    pub height: usize,
    /// Number of columns.
    pub width: usize,
    /// Number of channels (1 for grayscale, 3 for RGB).
    pub channels: usize,
    /// `height * width * channels` values, channel fastest.
    pub data: Vec<f32>,
}

impl ImageF32 {
    /// Wrap a buffer, checking that its length matches the dimensions.
    ///
    /// ```
    /// use fracture::image::ImageF32;
    /// assert!(ImageF32::new(2, 2, 3, vec![0.0; 5]).is_err());
    /// ```
    pub fn new(
        height: usize,
        width: usize,
        channels: usize,
        data: Vec<f32>,
    ) -> crate::Result<Self> {
        let expected = height * width * channels;
        if data.len() != expected {
            return Err(crate::Error::InvalidInput(format!(
                "image buffer of {} values does not match {height}x{width}x{channels} = {expected}",
                data.len()
            )));
        }
        Ok(Self {
            height,
            width,
            channels,
            data,
        })
    }

    /// The value at (row, column, channel). Panics if out of bounds, like slice indexing.
    ///
    /// ```
    /// use fracture::image::ImageF32;
    /// let img = ImageF32::new(1, 2, 1, vec![1.0, 2.0]).unwrap();
    /// assert_eq!(img.get(0, 1, 0), 2.0);
    /// ```
    pub fn get(&self, row: usize, col: usize, channel: usize) -> f32 {
        self.data[(row * self.width + col) * self.channels + channel]
    }

    /// An [`crate::Error::InvalidInput`] unless this is a non-empty one-channel map (an
    /// explanation map, or a map scored by [`crate::metrics::localization`]).
    pub(crate) fn check_map(&self) -> crate::Result<()> {
        let expected = self.height.checked_mul(self.width);
        if self.channels != 1 || expected != Some(self.data.len()) || self.data.is_empty() {
            return Err(crate::Error::InvalidInput(format!(
                "expected a non-empty one-channel map, found {}x{}x{} with {} values",
                self.height,
                self.width,
                self.channels,
                self.data.len()
            )));
        }
        Ok(())
    }

    /// The maximum of a map ([`Self::check_map`]) whose values are all finite and non-negative
    /// (an [`crate::Error::InvalidInput`] otherwise: maps are ReLU'd, so a bad value means
    /// bad features). The one place that rule is written, for the explanations and the
    /// localization scores.
    pub(crate) fn map_peak(&self) -> crate::Result<f32> {
        self.check_map()?;
        let mut peak = 0f32;
        for &v in &self.data {
            if !v.is_finite() || v < 0.0 {
                return Err(crate::Error::InvalidInput(format!(
                    "a map must hold finite non-negative values, found {v}"
                )));
            }
            peak = peak.max(v);
        }
        Ok(peak)
    }
}

/// A per-sample transform the loader applies in its parallel decode stage.
///
/// The result must depend only on the image and `(seed, epoch, index)`, never on thread
/// scheduling, so that training is reproducible whatever the number of threads. An error
/// stops the epoch (it is not a bad file to skip): an image the transform cannot handle means
/// the transform or its settings are wrong.
///
/// ```
/// use fracture::image::{ImageF32, SampleTransform};
/// struct Invert;
/// impl SampleTransform for Invert {
///     fn apply(&self, mut image: ImageF32, _seed: u64, _epoch: u64, _index: u64) -> fracture::Result<ImageF32> {
///         image.data.iter_mut().for_each(|v| *v = 255.0 - *v);
///         Ok(image)
///     }
/// }
/// let out = Invert.apply(ImageF32::new(1, 2, 1, vec![0.0, 55.0])?, 0, 0, 0)?;
/// assert_eq!(out.data, vec![255.0, 200.0]);
/// assert!(Invert.validate().is_ok());
/// # Ok::<(), fracture::Error>(())
/// ```
pub trait SampleTransform: Send + Sync {
    /// Transform one image. `index` is the sample's index in its dataset part.
    fn apply(&self, image: ImageF32, seed: u64, epoch: u64, index: u64) -> crate::Result<ImageF32>;

    /// Check the transform's settings before any image is loaded; the loader calls it when an
    /// epoch starts, so a bad setting is an error before any work, not on every image.
    fn validate(&self) -> crate::Result<()> {
        Ok(())
    }
}
