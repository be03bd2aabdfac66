//! Explaining a [`FractureClassifier`]: class-activation maps of its predictions
//! ([`crate::explain`]), drawn over the radiograph, and how often they land on annotated
//! fractures of a dataset part ([`crate::metrics::localization`]).

use super::predict::{single, ImageNames};
use super::{FractureClassifier, Prediction};
use crate::dataset::annotations::{Annotations, FractureRegion, ImageAnnotations, PixelBoxes};
use crate::dataset::{Label, Part};
use crate::error::{Error, Result};
use crate::explain::{
    explain_batch, explain_localization_maps, overlay, CamConfig, CamMethod, CamTarget,
    Explanation, OverlayStyle,
};
use crate::image::ImageF32;
use crate::metrics::localization::{score_image, ImageLocalization};
use crate::metrics::{LocalizationConfig, LocalizationReport};
use crate::progress::Progress;
use candle_core::Tensor;
use image::{DynamicImage, RgbImage};
use rayon::prelude::*;
use std::path::Path;

/// An image to score: its path, its annotations and its body part (when known).
type Annotated<'a> = (&'a Path, &'a ImageAnnotations, Option<String>);

/// Images explained per step of [`FractureClassifier::localization`].
const CHUNK: usize = 8;

/// A prediction with its class-activation map.
#[derive(Debug, Clone, PartialEq)]
pub struct ExplainedImage {
    /// The classifier's answer, exactly as [`FractureClassifier::classify_batch`] gives it
    /// (with test-time augmentation on, the mean logit over its views; the map is of the image
    /// alone).
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
        let path = path.as_ref();
        let image = self.preprocess.decode_image(path)?;
        let name = |_: usize| Some(path.display().to_string());
        single(self.explain_named(std::slice::from_ref(&image), config, &name)?)
    }

    /// Classify one decoded image and explain the answer.
    pub fn explain_image(&self, image: &DynamicImage, config: CamConfig) -> Result<ExplainedImage> {
        single(self.explain_images(std::slice::from_ref(image), config)?)
    }

    /// Classify and explain several decoded images (in the order given). The prediction is
    /// [`Self::classify_batch`]'s own, so a map is never shown next to another answer than
    /// `classify`'s (it costs one more backbone pass, one per view with test-time
    /// augmentation). An image whose logit, features or map hold a NaN or an infinity is an
    /// [`Error::NonFinite`] naming its position.
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
        self.explain_named(images, config, &|_| None)
    }

    /// [`Self::explain_images`], an [`Error::NonFinite`] naming image `i` by `name(i)`.
    fn explain_named(
        &self,
        images: &[DynamicImage],
        config: CamConfig,
        name: &ImageNames<'_>,
    ) -> Result<Vec<ExplainedImage>> {
        if images.is_empty() {
            return Ok(Vec::new());
        }
        let batch = self.input_batch(images)?;
        let explanations = self.maps(&batch, config, name)?;
        let probabilities = self
            .probabilities(&batch)
            .map_err(|e| e.naming_image(name))?;
        explanations
            .into_iter()
            .zip(probabilities)
            .zip(images)
            .map(|((explanation, probability), image)| {
                Ok(ExplainedImage {
                    prediction: self.prediction(probability)?,
                    explanation,
                    width: image.width(),
                    height: image.height(),
                })
            })
            .collect()
    }

    /// The maps of a preprocessed batch (no prediction), a non-finite one named by `name`.
    fn maps(
        &self,
        batch: &Tensor,
        config: CamConfig,
        name: &ImageNames<'_>,
    ) -> Result<Vec<Explanation>> {
        let maps = if config.method == CamMethod::ModelMap {
            self.localization_maps(batch, config)
        } else {
            explain_batch(&self.inference, &self.net.head, batch, config)
        };
        maps.map_err(|e| e.naming_image(name))
    }

    /// The model's own localization maps of a preprocessed batch, from one pass of the
    /// backbone as inference runs it (the fast path on the CPU).
    fn localization_maps(&self, batch: &Tensor, config: CamConfig) -> Result<Vec<Explanation>> {
        let head = self.net.head.localization().ok_or_else(|| {
            Error::InvalidConfig(
                "this classifier has no localization map (it was not trained with boxes): explain it with a class-activation method such as gradcam".into(),
            )
        })?;
        if config.target != CamTarget::Fracture {
            return Err(Error::InvalidConfig(
                "the model's localization map shows where a fracture is; it has no map of what speaks against one (use a class-activation method for that target)".into(),
            ));
        }
        let (_, _, height, width) = batch.dims4()?;
        let (fine, features) = self
            .inference
            .stage_and_features(batch, head.config().stage)?;
        let maps = head.forward(&fine, &features)?;
        let logits = self.net.head.forward(&features)?.to_vec1::<f32>()?;
        explain_localization_maps(&logits, &maps, config, (height, width))
    }

    /// The explanation this classifier serves unless told otherwise: its own localization
    /// map when it has one (what it was trained to use as evidence), Grad-CAM otherwise.
    ///
    /// ```
    /// use fracture::explain::CamMethod;
    /// use fracture::model::ResNetV2Config;
    /// use fracture::{FractureClassifier, WeightsSource};
    /// let clf = FractureClassifier::builder()
    ///     .backbone(ResNetV2Config::custom(vec![2, 2], vec![4, 8]))
    ///     .weights(WeightsSource::Random { seed: 0 })
    ///     .device(fracture::device::DeviceRequest::Cpu)
    ///     .build()?;
    /// assert_eq!(clf.default_explanation(), CamMethod::GradCam);
    /// # Ok::<(), fracture::Error>(())
    /// ```
    pub fn default_explanation(&self) -> CamMethod {
        if self.net.head.localization().is_some() {
            CamMethod::ModelMap
        } else {
            CamMethod::GradCam
        }
    }

    /// How often `method`'s maps of the fracture logit land on the annotated fractures of
    /// `part`'s fractured images, next to a centred Gaussian and a uniform map, with the paired
    /// differences from them, overall and per body part (from the samples' metadata)
    /// ([`crate::metrics::localization`]). Fractured images without annotated boxes are
    /// listed and left out; unreadable ones, and ones decoded in another shape than annotated
    /// ([`ImageAnnotations::pixel_boxes`]), are listed as skipped. Any other failure (a
    /// non-finite map included) is an error. A progress bar shows on a terminal.
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
                Some(a) if !a.regions.is_empty() => todo.push((
                    sample.path.as_path(),
                    a,
                    sample.metadata.as_ref().map(|m| m.body_part.to_string()),
                )),
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
            let mut items: Vec<(&Path, PixelBoxes, &Option<String>)> =
                Vec::with_capacity(chunk.len());
            for ((path, annotated, part), image) in chunk.iter().zip(decoded) {
                let path = *path;
                match image {
                    Ok(image) => match annotated.pixel_boxes(image.width(), image.height()) {
                        Ok(placed) => {
                            images.push(image);
                            items.push((path, placed, part));
                        }
                        Err(reason) => skipped.push((path.to_path_buf(), reason)),
                    },
                    Err(e) if e.is_bad_file() => skipped.push((path.to_path_buf(), e.to_string())),
                    Err(e) => return Err(e),
                }
            }
            if !images.is_empty() {
                let name = |i: usize| items.get(i).map(|(p, _, _)| p.display().to_string());
                let maps = self.maps(&self.input_batch(&images)?, cam, &name)?;
                let results: Vec<Result<ImageLocalization>> = maps
                    .par_iter()
                    .zip(&items)
                    .zip(&images)
                    .map(|((explanation, (path, placed, part)), image)| {
                        let map =
                            explanation.at_size(image.height() as usize, image.width() as usize)?;
                        let tolerance = config.tolerance_px * placed.scale;
                        let mut scored = score_image(
                            path.to_path_buf(),
                            &map,
                            &placed.boxes,
                            tolerance,
                            config,
                        )?;
                        scored.body_part = (*part).clone();
                        Ok(scored)
                    })
                    .collect();
                for result in results {
                    scored.push(result?);
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
