//! Explanations: class-activation maps (Grad-CAM, HiResCAM, Grad-CAM++) on the backbone's
//! last feature map, and overlays that draw them on the radiograph.
//!
//! # What a map is, and what it is not
//! A map says which positions of the backbone's last feature map (ResNetV2: `post_relu`;
//! EfficientNet-Lite: the 1280-channel head convolution after its ReLU6; both 7 x 7 cells for
//! a 224 x 224 input, so one cell covers 32 x 32 input pixels) carry the
//! features whose gradient raised the chosen score, here the fracture logit
//! ([`CamTarget::Fracture`]) or its negation. It shows **what drives the model's score**, at
//! the feature map's coarse resolution, bilinearly smoothed up to the image. It is **not** a
//! segmentation of the fracture, not a diagnosis, and not evidence that the model is right:
//! a model that learned a shortcut (a cast, a plate, a ruler, the image border) shows the
//! shortcut, which is exactly what a map is for. A map of a "not fractured" prediction still
//! shows where the fracture logit was raised most. Maps are divided by their maximum per
//! image, so they do not compare across images; a map of zeros means no position raised the
//! score. How often maps land on radiologists' fracture boxes is measured by
//! [`crate::metrics::localization`].
//!
//! # How the maps are computed
//! As in pytorch-grad-cam, one base does everything that is the same for every method (this
//! module: features, gradients, the weighted sum, ReLU, division by the maximum, resizing) and
//! each [`CamMethod`] only supplies its weights. The gradient `d(score)/d(features)` only
//! involves the head, so the backbone runs without autograd through [`FrozenBackbone`] (its
//! CPU fast path on a CPU, candle's ops elsewhere: CUDA, Metal, or
//! [`FrozenBackbone::without_fast_path`]); the features become a `candle_core::Var` and
//! candle's autograd differentiates the head, any head implementing [`LogitHead`].
//!
//! ```
//! use fracture::explain::{explain_batch, CamConfig, CamMethod};
//! use fracture::model::{Backbone, BackboneConfig, ClassifierHead, FrozenBackbone, HeadConfig, ResNetV2Config};
//! use candle_core::{DType, Device, Tensor};
//! let varmap = candle_nn::VarMap::new();
//! let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
//! let config = BackboneConfig::from(ResNetV2Config::custom(vec![2, 2], vec![4, 8]));
//! let backbone = FrozenBackbone::new(Backbone::new(&config, vb.clone())?, &Device::Cpu)?;
//! let head = ClassifierHead::new(32, &HeadConfig { hidden: 8, dropout: 0.5, localization: None }, vb.pp("head"))?;
//! let images = Tensor::randn(0f32, 1., (2, 3, 64, 64), &Device::Cpu)?;
//! let maps = explain_batch(&backbone, &head, &images, CamConfig::new(CamMethod::GradCamPlusPlus))?;
//! assert_eq!((maps[0].raw.height, maps[0].raw.width), (8, 8)); // the feature map
//! assert_eq!((maps[0].resized.height, maps[0].resized.width), (64, 64)); // the input
//! assert!(maps[1].normalized.data.iter().all(|v| (0.0..=1.0).contains(v)));
//! # Ok::<(), fracture::Error>(())
//! ```

mod cam;
mod overlay;
mod resize;

pub use cam::{CamMethod, CamTarget};
pub(crate) use overlay::draw_regions;
pub use overlay::{overlay, save_png, turbo, OverlayStyle};
pub use resize::{normalize_by_max, resize_bilinear};

use crate::error::{first_non_finite, Error, Result};
use crate::image::ImageF32;
use crate::model::{ClassifierHead, FrozenBackbone};
use candle_core::{DType, Tensor, Var};

/// Which map to compute: the method and the score it explains. Default: Grad-CAM of the
/// fracture logit.
///
/// ```
/// use fracture::explain::{CamConfig, CamMethod, CamTarget};
/// let config = CamConfig::new(CamMethod::HiResCam).with_target(CamTarget::NoFracture);
/// assert_eq!(config.to_string(), "HiResCAM of no fracture");
/// ```
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub struct CamConfig {
    /// The method (its weights).
    pub method: CamMethod,
    /// The score explained.
    pub target: CamTarget,
}

impl CamConfig {
    /// `method` on the fracture logit.
    pub fn new(method: CamMethod) -> Self {
        Self {
            method,
            target: CamTarget::Fracture,
        }
    }

    /// The same method on another target.
    pub fn with_target(self, target: CamTarget) -> Self {
        Self { target, ..self }
    }
}

impl std::fmt::Display for CamConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} of {}", self.method, self.target)
    }
}

/// A head whose fracture logits `(N,)` candle can differentiate with respect to the
/// backbone's feature map `(N, C, h, w)`. Implemented for [`ClassifierHead`] and for any
/// closure `Fn(&Tensor) -> Result<Tensor>`.
///
/// ```
/// use fracture::explain::LogitHead;
/// use candle_core::{Device, Tensor};
/// // A head that sums the first channel: its map is that channel's positive part.
/// let head = |features: &Tensor| -> fracture::Result<Tensor> {
///     Ok(features.narrow(1, 0, 1)?.flatten_from(1)?.sum(1)?)
/// };
/// let features = Tensor::ones((1, 2, 3, 3), candle_core::DType::F32, &Device::Cpu)?;
/// assert_eq!(head.logits(&features)?.to_vec1::<f32>()?, vec![9.0]);
/// # Ok::<(), fracture::Error>(())
/// ```
pub trait LogitHead {
    /// Fracture logits `(N,)` of a feature map `(N, C, h, w)`, in inference mode.
    fn logits(&self, features: &Tensor) -> Result<Tensor>;
}

impl LogitHead for ClassifierHead {
    fn logits(&self, features: &Tensor) -> Result<Tensor> {
        self.forward(features)
    }
}

impl<F: Fn(&Tensor) -> Result<Tensor>> LogitHead for F {
    fn logits(&self, features: &Tensor) -> Result<Tensor> {
        self(features)
    }
}

/// One image's class-activation map, at three sizes.
#[derive(Debug, Clone, PartialEq)]
pub struct Explanation {
    /// What was computed.
    pub config: CamConfig,
    /// The image's fracture logit (a probability after a sigmoid).
    pub logit: f32,
    /// The map at the feature map's resolution, `h x w`, before any scaling.
    pub raw: ImageF32,
    /// `raw` divided by its maximum (all zeros when the maximum is 0); the model's own
    /// localization map ([`CamMethod::ModelMap`]) keeps its probabilities as they are.
    pub normalized: ImageF32,
    /// `normalized` resized to the model's input size (bilinear, half-pixel centres).
    pub resized: ImageF32,
}

impl Explanation {
    /// The normalized map resized to `height` x `width`, for example the original image's
    /// size: the model input is the whole image squeezed to the input size, so the feature
    /// grid covers the original image in the same way, and one resize from the feature map
    /// undoes both.
    pub fn at_size(&self, height: usize, width: usize) -> Result<ImageF32> {
        resize_bilinear(&self.normalized, height, width)
    }
}

/// Maps for a preprocessed batch `(N, 3, H, W)`: the backbone runs through `backbone` (its
/// fast path on the CPU), the head is differentiated by candle.
pub fn explain_batch(
    backbone: &FrozenBackbone,
    head: &impl LogitHead,
    images: &Tensor,
    config: CamConfig,
) -> Result<Vec<Explanation>> {
    let (_, _, height, width) = images.dims4()?;
    let features = backbone.features(images)?;
    explain_features(&features, head, config, (height, width))
}

/// Maps from a feature map `(N, C, h, w)` already computed (by any backbone, on any device),
/// resized to `input_size` `(H, W)`. The features are copied into a fresh `Var`, so a
/// feature map that is part of a larger graph is not changed. An image whose logit, features
/// or map (before the ReLU) hold a NaN or an infinity is an [`Error::NonFinite`] naming its
/// position in the batch: a broken map is never shown as "nothing here".
///
/// ```
/// use fracture::explain::{explain_features, CamConfig};
/// use candle_core::{Device, Tensor};
/// let head = |f: &Tensor| -> fracture::Result<Tensor> { Ok(f.flatten_from(1)?.sum(1)?) };
/// let features = Tensor::new(&[[[[1f32, f32::NAN]]], [[[1f32, 2.0]]]], &Device::Cpu)?;
/// let error = explain_features(&features, &head, CamConfig::default(), (2, 4)).unwrap_err();
/// assert!(error.to_string().starts_with("image 0 of the batch: the fracture logit is NaN"));
/// # Ok::<(), fracture::Error>(())
/// ```
pub fn explain_features(
    features: &Tensor,
    head: &impl LogitHead,
    config: CamConfig,
    input_size: (usize, usize),
) -> Result<Vec<Explanation>> {
    if config.method == CamMethod::ModelMap {
        return Err(Error::InvalidConfig(
            "the model's localization map is not a class-activation map: ask the classifier (FractureClassifier::explain_images) for it".into(),
        ));
    }
    let (n, channels, h, w) = features.dims4()?;
    let (logits, gradients) = feature_gradients(features, head, config.target, n)?;
    let positions = h * w;
    let activations = to_f64(features)?;
    let gradients = to_f64(&gradients)?;
    let per_image = channels * positions;
    (0..n)
        .map(|i| {
            let range = i * per_image..(i + 1) * per_image;
            let (a, g) = match (activations.get(range.clone()), gradients.get(range)) {
                (Some(a), Some(g)) => (a, g),
                _ => {
                    return Err(Error::Internal(
                        "feature buffer shorter than its shape".into(),
                    ))
                }
            };
            let logit = logits
                .get(i)
                .copied()
                .ok_or_else(|| Error::Internal("fewer logits than images".into()))?;
            if !logit.is_finite() {
                return Err(Error::non_finite(i, "fracture logit", f64::from(logit)));
            }
            if let Some((_, value)) = first_non_finite(a) {
                return Err(Error::non_finite(i, "backbone features", value));
            }
            let weights = config.method.weights(a, g, positions);
            // Before the ReLU, which would turn a NaN into 0 and hide it.
            let sums: Vec<f32> = (0..positions)
                .map(|p| {
                    let sum: f64 = (0..channels)
                        .map(|c| {
                            weights.at(c, p, positions)
                                * a.get(c * positions + p).copied().unwrap_or(0.0)
                        })
                        .sum();
                    sum as f32
                })
                .collect();
            if let Some((_, value)) = first_non_finite(&sums) {
                return Err(Error::non_finite(i, "class-activation map", value));
            }
            let raw = ImageF32::new(h, w, 1, sums.into_iter().map(|v| v.max(0.0)).collect())?;
            let normalized = normalize_by_max(&raw)?;
            let resized = resize_bilinear(&normalized, input_size.0, input_size.1)?;
            Ok(Explanation {
                config,
                logit,
                raw,
                normalized,
                resized,
            })
        })
        .collect()
}

/// Explanations from a model's own localization maps: `maps` `(N, h, w)` of logits (the
/// [`LocalizationHead`](crate::model::LocalizationHead)'s output), `logits` the images'
/// fracture logits. The raw map is the sigmoid of the map's logits, a probability per cell
/// already in [0, 1]: `normalized` keeps it as it is (not divided by its maximum, so a map
/// that sees no fracture stays low instead of lighting up). A NaN or infinite one is an
/// [`Error::NonFinite`] naming the image.
///
/// ```
/// use fracture::explain::{explain_localization_maps, CamConfig, CamMethod};
/// use candle_core::{Device, Tensor};
/// let maps = Tensor::new(&[[[0f32, 2.], [-2., 0.]]], &Device::Cpu)?;
/// let e = explain_localization_maps(&[1.5], &maps, CamConfig::new(CamMethod::ModelMap), (4, 4))?;
/// assert_eq!(e[0].normalized.data[0], 0.5); // sigmoid(0)
/// assert!(e[0].normalized.data[1] > 0.88 && e[0].normalized.data[2] < 0.12);
/// assert_eq!(e[0].resized.data.len(), 16);
/// # Ok::<(), fracture::Error>(())
/// ```
pub fn explain_localization_maps(
    logits: &[f32],
    maps: &Tensor,
    config: CamConfig,
    input_size: (usize, usize),
) -> Result<Vec<Explanation>> {
    let (n, h, w) = maps.dims3()?;
    if logits.len() != n {
        return Err(Error::Internal(format!(
            "{} logits for {n} localization maps",
            logits.len()
        )));
    }
    let values = maps.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    values
        .chunks_exact(h * w)
        .zip(logits)
        .enumerate()
        .map(|(i, (map, &logit))| {
            if !logit.is_finite() {
                return Err(Error::non_finite(i, "fracture logit", f64::from(logit)));
            }
            if let Some((_, value)) = first_non_finite(map) {
                return Err(Error::non_finite(i, "localization map", value));
            }
            let sigmoid = map.iter().map(|&z| 1.0 / (1.0 + (-z).exp())).collect();
            let raw = ImageF32::new(h, w, 1, sigmoid)?;
            let normalized = raw.clone();
            let resized = resize_bilinear(&normalized, input_size.0, input_size.1)?;
            Ok(Explanation {
                config,
                logit,
                raw,
                normalized,
                resized,
            })
        })
        .collect()
}

/// The logits `(N,)` and `d(sign * logit)/d(features)`, one image's score depending only on
/// its own features (the head works image by image), so one backward pass of the batch sum
/// gives every image's gradient.
fn feature_gradients(
    features: &Tensor,
    head: &impl LogitHead,
    target: CamTarget,
    n: usize,
) -> Result<(Vec<f32>, Tensor)> {
    let var = Var::from_tensor(&features.detach().to_dtype(DType::F32)?)?;
    let logits = head.logits(var.as_tensor())?;
    if logits.dims() != [n] {
        return Err(Error::InvalidInput(format!(
            "the head must give one logit per image, shape [{n}], found {:?}",
            logits.dims()
        )));
    }
    let score = (logits.affine(target.sign(), 0.0)?).sum_all()?;
    let grads = score.backward()?;
    // A head whose logit does not depend on the features has a zero gradient.
    let gradient = match grads.get(var.as_tensor()) {
        Some(g) => g.clone(),
        None => var.as_tensor().zeros_like()?,
    };
    Ok((logits.to_dtype(DType::F32)?.to_vec1()?, gradient))
}

/// All values as `f64` on the CPU (through `f32`, which every device supports).
fn to_f64(tensor: &Tensor) -> Result<Vec<f64>> {
    let values = tensor
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    Ok(values.into_iter().map(f64::from).collect())
}
