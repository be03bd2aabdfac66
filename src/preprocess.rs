//! [`Preprocess`]: from a file to the model's input, the same for training
//! ([`crate::dataset::loader`]) and for inference ([`crate::FractureClassifier`]): decode
//! (with or without the EXIF orientation), resize to the model size as RGB in `f32` whatever
//! the bit depth (grayscale replicated), then scale the 0..255 values ([`Normalization`]).

pub use crate::dataset::decode::ExifOrientation;
use crate::dataset::decode::{self, Decoded};
use crate::error::{Error, Result};
use crate::image::ImageF32;
use candle_core::{Device, Tensor};
pub use image::imageops::FilterType;
use image::DynamicImage;
use std::path::Path;

/// How 0..255 pixel values are scaled for the model.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Normalization {
    /// Keras `resnet_v2.preprocess_input`: `x / 127.5 - 1`, values in [-1, 1]. What the
    /// ImageNet weights of ResNet152V2 expect (the default).
    #[default]
    KerasResNetV2,
    /// `x / 255`, values in [0, 1] (what the seed notebook's README describes).
    UnitRange,
    /// Torchvision ImageNet statistics: `(x / 255 - mean) / std` per channel, with mean
    /// (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225).
    ImageNet,
}

impl Normalization {
    /// Scale one 0..255 value of channel `channel` (0 = R, 1 = G, 2 = B).
    ///
    /// ```
    /// use fracture::preprocess::Normalization;
    /// assert_eq!(Normalization::KerasResNetV2.apply(255.0, 0), 1.0);
    /// assert_eq!(Normalization::KerasResNetV2.apply(0.0, 0), -1.0);
    /// assert_eq!(Normalization::UnitRange.apply(51.0, 2), 0.2);
    /// ```
    pub fn apply(&self, value: f32, channel: usize) -> f32 {
        const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
        const STD: [f32; 3] = [0.229, 0.224, 0.225];
        match self {
            Normalization::KerasResNetV2 => value / 127.5 - 1.0,
            Normalization::UnitRange => value / 255.0,
            Normalization::ImageNet => {
                let c = channel.min(2);
                (value / 255.0 - MEAN[c]) / STD[c]
            }
        }
    }
}

/// Model input geometry and scaling. Default: EXIF orientation applied, 224x224, bilinear
/// (`Triangle`, antialiased when shrinking), Keras `x / 127.5 - 1`.
///
/// Keras's `flow_from_directory` and `load_img` resize with `nearest` and ignore EXIF
/// orientation: [`Preprocess::keras_notebook`] is that preprocessing (the default of a Keras
/// import, [`crate::classifier::KerasImport`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Preprocess {
    /// Output height in pixels.
    pub height: usize,
    /// Output width in pixels.
    pub width: usize,
    /// Resampling filter of the resize.
    pub filter: FilterType,
    /// Scaling of the 0..255 values.
    pub normalization: Normalization,
    /// Whether a file's EXIF orientation is applied when it is decoded.
    pub exif: ExifOrientation,
}

impl Default for Preprocess {
    fn default() -> Self {
        Self {
            height: 224,
            width: 224,
            filter: FilterType::Triangle,
            normalization: Normalization::KerasResNetV2,
            exif: ExifOrientation::Apply,
        }
    }
}

impl Preprocess {
    /// The reference notebook's preprocessing at `height x width`: Keras's `load_img` as
    /// `flow_from_directory` calls it (nearest resizing, EXIF orientation ignored) and
    /// `resnet_v2.preprocess_input` (`x / 127.5 - 1`).
    ///
    /// ```
    /// use fracture::preprocess::{ExifOrientation, FilterType, Preprocess};
    /// let p = Preprocess::keras_notebook(224, 224);
    /// assert_eq!((p.filter, p.exif), (FilterType::Nearest, ExifOrientation::Ignore));
    /// ```
    pub fn keras_notebook(height: usize, width: usize) -> Self {
        Self {
            height,
            width,
            filter: FilterType::Nearest,
            normalization: Normalization::KerasResNetV2,
            exif: ExifOrientation::Ignore,
        }
    }

    /// Check the geometry.
    pub fn validate(&self) -> Result<()> {
        if self.height == 0 || self.width == 0 || self.height > 8192 || self.width > 8192 {
            return Err(Error::InvalidConfig(format!(
                "image size must be between 1 and 8192 pixels, found {}x{}",
                self.height, self.width
            )));
        }
        Ok(())
    }

    /// Resize a decoded image to the model size as RGB values on the 0..255 scale (HWC).
    ///
    /// ```
    /// use fracture::preprocess::Preprocess;
    /// let gray = image::DynamicImage::ImageLuma8(image::GrayImage::from_pixel(40, 30, image::Luma([200])));
    /// let rgb = Preprocess { height: 8, width: 8, ..Default::default() }.resize_rgb(&gray);
    /// assert_eq!((rgb.height, rgb.width, rgb.channels), (8, 8, 3));
    /// assert!(rgb.data.iter().all(|&v| (v - 200.0).abs() < 1e-4));
    /// ```
    ///
    /// One path for every bit depth: the image is converted to `f32` in [0, 1] (8-bit `v / 255`,
    /// 16-bit `v / 65535`, so a 16-bit `g * 257` is exactly the 8-bit `g`), resized in `f32`
    /// and scaled to 0..255 without rounding. Equal display values give an equal model input,
    /// whether the picture came as an 8-bit PNG or JPEG, a 16-bit PNG or a DICOM file.
    /// Grayscale images are resized before being replicated to RGB (the same values, a third
    /// of the work).
    pub fn resize_rgb(&self, image: &DynamicImage) -> ImageF32 {
        let (w, h) = (self.width as u32, self.height as u32);
        let data: Vec<f32> = if image.color().has_color() {
            let rgb = image::imageops::resize(&image.to_rgb32f(), w, h, self.filter);
            rgb.into_raw().into_iter().map(|v| v * 255.0).collect()
        } else {
            let gray = image::imageops::resize(&image.to_luma32f(), w, h, self.filter);
            gray.into_raw()
                .into_iter()
                .flat_map(|v| [v * 255.0; 3])
                .collect()
        };
        ImageF32 {
            height: self.height,
            width: self.width,
            channels: 3,
            data,
        }
    }

    /// Normalize an RGB 0..255 HWC image into a CHW buffer.
    pub fn normalize_chw(&self, image: &ImageF32) -> Result<Vec<f32>> {
        if (image.height, image.width, image.channels) != (self.height, self.width, 3) {
            return Err(Error::InvalidInput(format!(
                "expected a {}x{}x3 image after the sample transform, found {}x{}x{}",
                self.height, self.width, image.height, image.width, image.channels
            )));
        }
        let plane = self.height * self.width;
        let mut out = vec![0f32; 3 * plane];
        for (pixel, rgb) in image.data.chunks_exact(3).enumerate() {
            for (c, &value) in rgb.iter().enumerate() {
                out[c * plane + pixel] = self.normalization.apply(value, c);
            }
        }
        Ok(out)
    }

    /// Decode one file as this preprocessing does (EXIF orientation per [`Preprocess::exif`]),
    /// with what decoding noticed ([`Decoded::warnings`]).
    ///
    /// ```
    /// use fracture::preprocess::Preprocess;
    /// let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("x.png");
    /// image::GrayImage::new(5, 3).save(&path)?;
    /// let decoded = Preprocess::default().decode(&path)?;
    /// assert_eq!((decoded.image.width(), decoded.warnings.len()), (5, 0));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn decode(&self, path: impl AsRef<Path>) -> Result<Decoded> {
        decode::decode_file_with(path, self.exif)
    }

    /// Decode one file as this preprocessing does; its warnings are written to standard
    /// error, naming the file ([`Preprocess::decode`] returns them instead).
    pub fn decode_image(&self, path: impl AsRef<Path>) -> Result<DynamicImage> {
        let path = path.as_ref();
        Ok(self.decode(path)?.into_image_warning(path))
    }

    /// Decode and resize one file: RGB, 0..255, HWC, model size (warnings to standard error,
    /// as [`Preprocess::decode_image`]).
    pub fn load(&self, path: impl AsRef<Path>) -> Result<ImageF32> {
        Ok(self.resize_rgb(&self.decode_image(path)?))
    }

    /// One file as a normalized `(1, 3, H, W)` tensor on `device`, ready for the model.
    ///
    /// ```
    /// use fracture::preprocess::Preprocess;
    /// let dir = tempfile::tempdir()?;
    /// let path = dir.path().join("x.png");
    /// image::GrayImage::new(50, 60).save(&path)?;
    /// let t = Preprocess::default().image_tensor(&path, &candle_core::Device::Cpu)?;
    /// assert_eq!(t.dims(), &[1, 3, 224, 224]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn image_tensor(&self, path: impl AsRef<Path>, device: &Device) -> Result<Tensor> {
        self.validate()?;
        let chw = self.normalize_chw(&self.load(path)?)?;
        Ok(Tensor::from_vec(
            chw,
            (1, 3, self.height, self.width),
            device,
        )?)
    }
}
