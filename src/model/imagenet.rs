//! [`ImageNetClassifier`]: a backbone with Keras's ImageNet top (global average pool, then the
//! `predictions` dense layer), the quickest way to see that ImageNet weights are right: a photo
//! of a dog should come out as a dog.

use super::{Backbone, BackboneConfig, FrozenBackbone};
use crate::error::{Error, Result};
use crate::preprocess::Preprocess;
use candle_core::{Device, Module, Tensor};
use candle_nn::{Linear, VarBuilder};
use image::DynamicImage;

/// A backbone and Keras's `predictions` layer: images in, class scores out.
///
/// Variables: the backbone's at the root, `predictions.weight` `(classes, channels)` and
/// `predictions.bias` `(classes,)`. Class `i` is Keras's ImageNet class index `i` (its
/// `imagenet_class_index.json` names them). Load Keras's "top" file with
/// [`crate::weights::WeightsSource::load_imagenet_classifier`].
///
/// ```
/// use fracture::model::{BackboneConfig, ImageNetClassifier, ResNetV2Config};
/// use candle_core::{Device, DType, Tensor};
/// let varmap = candle_nn::VarMap::new();
/// let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
/// let config = BackboneConfig::from(ResNetV2Config::custom(vec![2, 2], vec![4, 8]));
/// let clf = ImageNetClassifier::new(&config, 10, vb, &Device::Cpu)?;
/// let p = clf.probabilities(&Tensor::zeros((2, 3, 64, 64), DType::F32, &Device::Cpu)?)?;
/// assert_eq!(p.dims(), &[2, 10]);
/// # Ok::<(), fracture::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct ImageNetClassifier {
    backbone: FrozenBackbone,
    predictions: Linear,
    classes: usize,
    device: Device,
}

impl ImageNetClassifier {
    /// Build from `vb` (backbone at the root, `predictions.*` for the top), for inference on
    /// `device` (the backbone's fast path on the CPU).
    pub fn new(
        config: &BackboneConfig,
        classes: usize,
        vb: VarBuilder,
        device: &Device,
    ) -> Result<Self> {
        if classes == 0 {
            return Err(Error::InvalidConfig(
                "an ImageNet classifier needs at least one class".into(),
            ));
        }
        let predictions =
            candle_nn::linear(config.feature_channels(), classes, vb.pp("predictions"))?;
        let backbone = FrozenBackbone::new(Backbone::new(config, vb)?, device)?;
        Ok(Self {
            backbone,
            predictions,
            classes,
            device: device.clone(),
        })
    }

    /// Run the backbone through candle's ops even on the CPU (see
    /// [`FrozenBackbone::without_fast_path`]).
    pub fn without_fast_path(self) -> Self {
        Self {
            backbone: FrozenBackbone::without_fast_path(self.backbone.backbone().clone()),
            ..self
        }
    }

    /// Whether the backbone runs through its CPU fast path.
    pub fn uses_fast_path(&self) -> bool {
        self.backbone.uses_fast_path()
    }

    /// Number of classes (1000 for Keras's ImageNet files).
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Pre-softmax scores `(N, classes)` of a preprocessed NCHW batch.
    pub fn logits(&self, images: &Tensor) -> Result<Tensor> {
        Ok(self.predictions.forward(&self.backbone.pooled(images)?)?)
    }

    /// Class probabilities `(N, classes)` (softmax, as Keras's `predictions` layer applies).
    pub fn probabilities(&self, images: &Tensor) -> Result<Tensor> {
        Ok(candle_nn::ops::softmax_last_dim(&self.logits(images)?)?)
    }

    /// The `k` most probable classes of one image as `(class index, probability)`, most
    /// probable first. `preprocess` must be what the weights expect: the default (224 x 224,
    /// Keras's `x / 127.5 - 1`) for Keras's ResNetV2 files.
    pub fn top_k(
        &self,
        image: &DynamicImage,
        preprocess: &Preprocess,
        k: usize,
    ) -> Result<Vec<(usize, f32)>> {
        preprocess.validate()?;
        let chw = preprocess.normalize_chw(&preprocess.resize_rgb(image))?;
        let batch = Tensor::from_vec(
            chw,
            (1, 3, preprocess.height, preprocess.width),
            &self.device,
        )?;
        let probabilities: Vec<f32> = self.probabilities(&batch)?.flatten_all()?.to_vec1()?;
        let mut ranked: Vec<(usize, f32)> = probabilities.into_iter().enumerate().collect();
        // A NaN score is dropped: a broken network must not look confident.
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        ranked.retain(|(_, p)| !p.is_nan());
        ranked.truncate(k);
        Ok(ranked)
    }
}
