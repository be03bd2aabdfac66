//! Test-time augmentation in the classifier: scoring each [`TtaConfig`] view of a batch and
//! averaging the logits (why logits: see [`crate::augment::TtaConfig`]'s module docs).

use super::FractureClassifier;
use crate::augment::{warp_planes, TtaConfig};
use crate::error::{Error, Result};
use candle_core::{Device, Tensor};
use rayon::prelude::*;

impl FractureClassifier {
    /// The test-time augmentation `classify` and `evaluate` use ([`TtaConfig::none`] unless
    /// set).
    pub fn tta(&self) -> &TtaConfig {
        &self.tta
    }

    /// Score every image as the mean logit over the views of `config` in `classify_*` and
    /// [`FractureClassifier::evaluate`] ([`TtaConfig::none`] turns it off). A runtime option:
    /// it is not saved in the bundle. Calibration and threshold are fitted on the logits as
    /// scored when they are fitted (training and `calibrate` use the TTA set then, and the
    /// calibration record names it); set TTA before training or calibrating to fit on the
    /// mean logits, and the report says when the evaluation's TTA differs from the fit's.
    ///
    /// ```
    /// use fracture::augment::TtaConfig;
    /// use fracture::device::DeviceRequest;
    /// use fracture::model::ResNetV2Config;
    /// let mut clf = fracture::FractureClassifier::builder()
    ///     .backbone(ResNetV2Config::custom(vec![2, 2], vec![4, 8]))
    ///     .weights(fracture::WeightsSource::Random { seed: 0 })
    ///     .device(DeviceRequest::Cpu)
    ///     .image_size(32, 32)
    ///     .build()?;
    /// clf.set_tta(TtaConfig::standard())?;
    /// let image = image::DynamicImage::new_luma8(40, 40);
    /// let p = clf.classify_image(&image)?.fracture_probability;
    /// assert!((0.0..=1.0).contains(&p));
    /// # Ok::<(), fracture::Error>(())
    /// ```
    pub fn set_tta(&mut self, config: TtaConfig) -> Result<()> {
        config.validate()?;
        self.tta = config;
        Ok(())
    }

    /// Logits of every view of a preprocessed NCHW batch, `[view][image]`, identity first; an
    /// [`Error::NonFinite`] naming the image's position when its pooled features or its logit
    /// are NaN or infinite (checked here, where every classify and evaluate path passes).
    pub(crate) fn view_logits(&self, images: &Tensor) -> Result<Vec<Vec<f64>>> {
        let views = self.tta.views();
        let (n, channels, height, width) = images.dims4()?;
        let host: Option<Vec<f32>> = if views.len() > 1 {
            Some(
                images
                    .to_device(&Device::Cpu)?
                    .flatten_all()?
                    .to_vec1::<f32>()?,
            )
        } else {
            None
        };
        let per_image = channels
            .checked_mul(height)
            .and_then(|v| v.checked_mul(width))
            .filter(|&v| v > 0)
            .ok_or_else(|| Error::InvalidInput(format!("an empty image batch {images:?}")))?;
        let mut all = Vec::with_capacity(views.len());
        for view in &views {
            let batch = match (&host, view.is_identity()) {
                (Some(data), false) => {
                    let warped = data
                        .par_chunks(per_image)
                        .map(|chw| warp_planes(chw, channels, height, width, view))
                        .collect::<Result<Vec<_>>>()?;
                    let flat: Vec<f32> = warped.into_iter().flatten().collect();
                    Tensor::from_vec(flat, (n, channels, height, width), &self.device)?
                }
                _ => images.clone(),
            };
            let pooled = self.inference.pooled(&batch)?;
            let features = pooled
                .to_device(&Device::Cpu)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            super::check_finite(&features, features.len() / n.max(1), "backbone features")?;
            let logits = self.net.head.forward(&pooled)?.to_vec1::<f32>()?;
            super::check_finite(&logits, 1, "fracture logit")?;
            all.push(logits.into_iter().map(f64::from).collect());
        }
        Ok(all)
    }
}

/// The mean over views of `[view][image]` logits, per image.
pub(super) fn mean_logits(views: &[Vec<f64>]) -> Result<Vec<f64>> {
    let first = views
        .first()
        .ok_or_else(|| Error::Internal("test-time augmentation produced no view".into()))?;
    let mut sum = first.clone();
    for view in views.iter().skip(1) {
        if view.len() != sum.len() {
            return Err(Error::Internal(
                "test-time augmentation views of different lengths".into(),
            ));
        }
        for (total, logit) in sum.iter_mut().zip(view) {
            *total += logit;
        }
    }
    let count = views.len() as f64;
    Ok(sum.into_iter().map(|total| total / count).collect())
}
