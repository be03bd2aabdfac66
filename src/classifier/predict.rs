//! Classifying images: one file, one decoded image, a batch, or a whole folder.

use super::FractureClassifier;
use crate::dataset::Label;
use crate::error::{Error, Result};
use crate::progress::Progress;
use candle_core::Tensor;
use image::DynamicImage;
use rayon::prelude::*;
use std::fmt;
use std::path::{Path, PathBuf};

/// The classifier's answer for one image.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Prediction {
    /// `Fractured` when `fracture_probability >= threshold`.
    pub label: Label,
    /// The model's probability that the image shows a fracture, under the classifier's
    /// calibration ([`FractureClassifier::calibration`]). It matches observed fracture rates
    /// only when that calibration was fitted on validation data like the image's
    /// ([`super::Calibration::fitted_on_validation`]); uncalibrated, it is the network's own
    /// `sigmoid(logit)`, a score rather than a frequency.
    pub fracture_probability: f64,
    /// The decision threshold that was applied.
    pub threshold: f64,
}

impl fmt::Display for Prediction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (fracture probability {:.4}, threshold {:.4})",
            self.label, self.fracture_probability, self.threshold
        )
    }
}

/// The result of [`FractureClassifier::classify_dir`]: predictions for the readable images
/// and, for every other file, why it was skipped.
#[derive(Debug, Clone, Default)]
pub struct ClassifiedDir {
    /// Each readable image with its prediction, in path order.
    pub predictions: Vec<(PathBuf, Prediction)>,
    /// Each file that could not be classified, with the reason.
    pub skipped: Vec<(PathBuf, String)>,
}

/// Images decoded and classified per step of [`FractureClassifier::classify_dir`].
const DIR_CHUNK: usize = 16;

impl FractureClassifier {
    /// Classify one image file (JPEG, PNG, ...; EXIF orientation applied).
    ///
    /// ```no_run
    /// # let clf = fracture::FractureClassifier::load("model_dir", &fracture::candle_core::Device::Cpu)?;
    /// let prediction = clf.classify_path("xray.jpg")?;
    /// println!("{prediction}");
    /// # Ok::<(), fracture::Error>(())
    /// ```
    pub fn classify_path(&self, path: impl AsRef<Path>) -> Result<Prediction> {
        let path = path.as_ref();
        let image = self.preprocess.decode_image(path)?;
        let name = |_: usize| Some(path.display().to_string());
        single(self.classify_named(std::slice::from_ref(&image), &name)?)
    }

    /// Classify one decoded image.
    pub fn classify_image(&self, image: &DynamicImage) -> Result<Prediction> {
        single(self.classify_batch(std::slice::from_ref(image))?)
    }

    /// Classify several decoded images in one forward pass (in the order given); with
    /// test-time augmentation on ([`Self::set_tta`]), one pass per view and the mean logit.
    /// An image whose features or fracture logit come out NaN or infinite (corrupt weights)
    /// is an [`Error::NonFinite`] naming its position, never a "not fractured".
    pub fn classify_batch(&self, images: &[DynamicImage]) -> Result<Vec<Prediction>> {
        self.classify_named(images, &|_| None)
    }

    /// [`Self::classify_batch`], an [`Error::NonFinite`] naming image `i` by `name(i)`.
    fn classify_named(
        &self,
        images: &[DynamicImage],
        name: &ImageNames<'_>,
    ) -> Result<Vec<Prediction>> {
        if images.is_empty() {
            return Ok(Vec::new());
        }
        let batch = self.input_batch(images)?;
        self.probabilities(&batch)
            .map_err(|e| e.naming_image(name))?
            .into_iter()
            .map(|p| self.prediction(p))
            .collect()
    }

    /// The prediction for a fracture probability at this classifier's threshold (an error
    /// for a NaN probability).
    pub(crate) fn prediction(&self, fracture_probability: f64) -> Result<Prediction> {
        Ok(Prediction {
            label: self.label_for(fracture_probability)?,
            fracture_probability,
            threshold: self.threshold,
        })
    }

    /// Decoded images as the model's normalized `(N, 3, H, W)` input on its device.
    pub(crate) fn input_batch(&self, images: &[DynamicImage]) -> Result<Tensor> {
        let buffers = images
            .par_iter()
            .map(|image| {
                self.preprocess
                    .normalize_chw(&self.preprocess.resize_rgb(image))
            })
            .collect::<Result<Vec<_>>>()?;
        let (h, w) = (self.preprocess.height, self.preprocess.width);
        let data: Vec<f32> = buffers.into_iter().flatten().collect();
        Ok(Tensor::from_vec(
            data,
            (images.len(), 3, h, w),
            &self.device,
        )?)
    }

    /// Classify every file under `dir` (recursively, following links, in path order),
    /// streaming in small batches, with a progress bar on a terminal (a line every few hundred
    /// images otherwise). Files that are not readable images, folders that cannot be read and
    /// links that lead nowhere or back into the tree (a loop) are listed in
    /// [`ClassifiedDir::skipped`] with the reason; nothing inside the folder makes this panic
    /// or stop early. Only a `dir` that cannot be read at all is an error.
    pub fn classify_dir(&self, dir: impl AsRef<Path>) -> Result<ClassifiedDir> {
        let dir = dir.as_ref();
        if !dir.is_dir() {
            return Err(Error::Dataset {
                path: dir.to_path_buf(),
                message: "not a folder (or it cannot be read)".into(),
            });
        }
        let walk = crate::dataset::walk::files_under(dir)?;
        let (files, mut result) = (walk.files, ClassifiedDir::default());
        result.skipped = walk.skipped;
        let progress = Progress::items("classify", files.len() as u64);
        for chunk in files.chunks(DIR_CHUNK) {
            let decoded: Vec<(PathBuf, Result<DynamicImage>)> = chunk
                .par_iter()
                .map(|path| (path.clone(), self.preprocess.decode_image(path)))
                .collect();
            let mut paths = Vec::with_capacity(decoded.len());
            let mut images = Vec::with_capacity(decoded.len());
            for (path, image) in decoded {
                match image {
                    Ok(image) => {
                        paths.push(path);
                        images.push(image);
                    }
                    Err(e) => result.skipped.push((path, e.to_string())),
                }
            }
            let name = |i: usize| paths.get(i).map(|p| p.display().to_string());
            let predictions = self.classify_named(&images, &name)?;
            result
                .predictions
                .extend(paths.into_iter().zip(predictions));
            progress.set_message(format!("{} skipped", result.skipped.len()));
            progress.inc(chunk.len() as u64);
        }
        progress.finish(&format!(
            "{} images classified, {} skipped",
            result.predictions.len(),
            result.skipped.len()
        ));
        result.skipped.sort();
        Ok(result)
    }
}

/// How an error names image `i` of a batch: its path, when the caller knows it.
pub(super) type ImageNames<'a> = dyn Fn(usize) -> Option<String> + 'a;

/// The one answer of a batch of one image.
pub(super) fn single<T>(mut answers: Vec<T>) -> Result<T> {
    answers
        .pop()
        .ok_or_else(|| Error::Internal("the model returned no prediction for one image".into()))
}
