//! Explaining a [`FractureClassifier`]: class-activation maps of its predictions
//! ([`crate::explain`]), drawn over the radiograph, and how often they land on annotated
//! fractures of a dataset part ([`crate::metrics::localization`]).

use super::{FractureClassifier, Prediction};
use crate::dataset::annotations::{Annotations, FractureRegion};
use crate::dataset::{Label, Part};
use crate::error::{Error, Result};
use crate::explain::{explain_batch, overlay, CamConfig, CamMethod, Explanation, OverlayStyle};
use crate::image::ImageF32;
use crate::metrics::localization::{score_annotated_image, ImageLocalization};
use crate::metrics::{LocalizationConfig, LocalizationReport};
use crate::progress::Progress;
use image::{DynamicImage, RgbImage};
use rayon::prelude::*;
use std::path::{Path, PathBuf};

/// An image to score: its path, its annotated regions and the size they were drawn at.
type Annotated<'a> = (&'a Path, &'a [FractureRegion], Option<(f64, f64)>);

/// Images explained per step of [`FractureClassifier::localization`].
const CHUNK: usize = 8;

/// A prediction with its class-activation map.
#[derive(Debug, Clone, PartialEq)]
pub struct ExplainedImage {
    /// The classifier's answer (from the same forward pass as the map).
    pub prediction: Prediction,
    /// The map at the feature map's resolution, normalized, and at the model's input size.
    pub explanation: Explanation,
    /// Width of the decoded (EXIF-oriented) image.
    pub width: u32,
    /// Height of the decoded image.
    pub height: u32,
}

impl ExplainedImage {
    /// The normalized map in the decoded image's coordinates (its width and height).
    pub fn map_at_image_size(&self) -> Result<ImageF32> {
        self.explanation
            .at_size(self.height as usize, self.width as usize)
    }

    /// The map over `image` (the decoded image that was explained), with `regions` drawn.
    pub fn overlay(
        &self,
        image: &DynamicImage,
        regions: &[FractureRegion],
        style: &OverlayStyle,
    ) -> Result<RgbImage> {
        if (image.width(), image.height()) != (self.width, self.height) {
            return Err(Error::InvalidInput(format!(
                "overlay: the map was made for a {}x{} image, found {}x{}",
                self.width,
                self.height,
                image.width(),
                image.height()
            )));
        }
        overlay(image, &self.explanation.normalized, regions, style)
    }
}

impl FractureClassifier {
    /// Classify one image file and explain the answer with a class-activation map.
    ///
    /// ```no_run
    /// use fracture::explain::{CamConfig, CamMethod, OverlayStyle};
    /// # let clf = fracture::FractureClassifier::load("model_dir", &candle_core::Device::Cpu)?;
    /// let explained = clf.explain_path("xray.jpg", CamConfig::new(CamMethod::GradCam))?;
    /// println!("{}", explained.prediction);
    /// let image = fracture::dataset::decode::decode_file("xray.jpg")?;
    /// let picture = explained.overlay(&image, &[], &OverlayStyle::default())?;
    /// fracture::explain::save_png(&picture, "xray_gradcam.png")?;
    /// # Ok::<(), fracture::Error>(())
    /// ```
    pub fn explain_path(
        &self,
        path: impl AsRef<Path>,
        config: CamConfig,
    ) -> Result<ExplainedImage> {
        self.explain_image(&self.preprocess.decode_image(path.as_ref())?, config)
    }

    /// Classify one decoded image and explain the answer.
    pub fn explain_image(&self, image: &DynamicImage, config: CamConfig) -> Result<ExplainedImage> {
        self.explain_images(std::slice::from_ref(image), config)?
            .pop()
            .ok_or_else(|| Error::Internal("no explanation for one image".into()))
    }

    /// Classify and explain several decoded images in one pass (in the order given).
    ///
    /// ```
    /// use fracture::explain::{CamConfig, CamMethod};
    /// use fracture::model::ResNetV2Config;
    /// use fracture::{FractureClassifier, WeightsSource};
    /// let clf = FractureClassifier::builder()
    ///     .backbone(ResNetV2Config::custom(vec![2, 2], vec![4, 8]))
    ///     .weights(WeightsSource::Random { seed: 0 })
    ///     .device(fracture::device::DeviceRequest::Cpu)
    ///     .image_size(64, 64)
    ///     .build()?;
    /// let image = image::DynamicImage::ImageLuma8(image::GrayImage::from_fn(90, 70, |x, y| image::Luma([(x * y % 251) as u8])));
    /// let explained = clf.explain_images(&[image], CamConfig::new(CamMethod::GradCam))?;
    /// assert_eq!((explained[0].width, explained[0].height), (90, 70));
    /// assert_eq!(explained[0].map_at_image_size()?.data.len(), 90 * 70);
    /// # Ok::<(), fracture::Error>(())
    /// ```
    pub fn explain_images(
        &self,
        images: &[DynamicImage],
        config: CamConfig,
    ) -> Result<Vec<ExplainedImage>> {
        if images.is_empty() {
            return Ok(Vec::new());
        }
        let batch = self.input_batch(images)?;
        let explanations = explain_batch(&self.inference, &self.net.head, &batch, config)?;
        Ok(explanations
            .into_iter()
            .zip(images)
            .map(|(explanation, image)| {
                let probability = self.probability_of(f64::from(explanation.logit));
                ExplainedImage {
                    prediction: self.prediction(probability),
                    explanation,
                    width: image.width(),
                    height: image.height(),
                }
            })
            .collect())
    }

    /// How often `method`'s maps of the fracture logit land on the annotated fractures of
    /// `part`'s fractured images, next to a centred Gaussian and a uniform map
    /// ([`crate::metrics::localization`]). Fractured images without annotated boxes are
    /// listed and left out; unreadable ones are listed as skipped. A progress bar shows on a
    /// terminal.
    ///
    /// ```no_run
    /// use fracture::dataset::{annotations::Annotations, FracAtlas, SplitConfig};
    /// use fracture::explain::CamMethod;
    /// use fracture::metrics::LocalizationConfig;
    /// # let clf = fracture::FractureClassifier::load("model_dir", &candle_core::Device::Cpu)?;
    /// let split = FracAtlas::open("FracAtlas")?.split(&SplitConfig::default())?;
    /// let annotations = Annotations::open_fracatlas("FracAtlas")?;
    /// let report = clf.localization(&split.test, &annotations, CamMethod::GradCam, &LocalizationConfig::default())?;
    /// println!("{report}");
    /// # Ok::<(), fracture::Error>(())
    /// ```
    pub fn localization(
        &self,
        part: &Part,
        annotations: &Annotations,
        method: CamMethod,
        config: &LocalizationConfig,
    ) -> Result<LocalizationReport> {
        config.validate()?;
        let cam = CamConfig::new(method);
        let mut without_annotations = Vec::new();
        let mut todo: Vec<Annotated<'_>> = Vec::new();
        for sample in part.samples.iter().filter(|s| s.label == Label::Fractured) {
            match annotations.for_path(&sample.path) {
                Some(a) if !a.regions.is_empty() => {
                    todo.push((
                        sample.path.as_path(),
                        a.regions.as_slice(),
                        a.annotated_size,
                    ));
                }
                _ => without_annotations.push(sample.path.clone()),
            }
        }
        let progress = Progress::items("localize", todo.len() as u64);
        let (mut scored, mut skipped) = (Vec::new(), Vec::new());
        for chunk in todo.chunks(CHUNK) {
            let decoded: Vec<Result<DynamicImage>> = chunk
                .par_iter()
                .map(|(path, _, _)| self.preprocess.decode_image(path))
                .collect();
            let mut images = Vec::with_capacity(chunk.len());
            let mut items = Vec::with_capacity(chunk.len());
            for (item, image) in chunk.iter().zip(decoded) {
                match image {
                    Ok(image) => {
                        images.push(image);
                        items.push(item);
                    }
                    Err(e) if e.is_bad_file() => {
                        skipped.push((item.0.to_path_buf(), e.to_string()))
                    }
                    Err(e) => return Err(e),
                }
            }
            let explained = self.explain_images(&images, cam)?;
            let results: Vec<Result<ImageLocalization>> = explained
                .par_iter()
                .zip(&items)
                .map(|(explained, (path, regions, annotated))| {
                    score_annotated_image(
                        PathBuf::from(path),
                        &explained.map_at_image_size()?,
                        regions,
                        *annotated,
                        config,
                    )
                })
                .collect();
            for (result, (path, _, _)) in results.into_iter().zip(&items) {
                match result {
                    Ok(image) => scored.push(image),
                    Err(Error::InvalidInput(reason)) => skipped.push((path.to_path_buf(), reason)),
                    Err(e) => return Err(e),
                }
            }
            progress.set_message(format!("{} skipped", skipped.len()));
            progress.inc(chunk.len() as u64);
        }
        progress.finish(&format!(
            "{} images scored, {} skipped",
            scored.len(),
            skipped.len()
        ));
        LocalizationReport::new(
            cam.to_string(),
            *config,
            scored,
            without_annotations,
            skipped,
        )
    }
}
