//! # fracture
//!
//! Bone-fracture classification on X-ray radiographs, in pure Rust on top of
//! [candle](https://github.com/huggingface/candle): a Keras-exact ResNet152V2 (pre-activation
//! ResNet) backbone, the FracAtlas dataset with a leakage-free split, Keras-style
//! augmentation, a training loop and the metrics clinicians ask for.
//!
//! ```
//! use fracture::model::{ResNetV2, ResNetV2Config};
//! use candle_core::{Device, Tensor, DType};
//! use candle_nn::VarBuilder;
//!
//! // A tiny pre-activation ResNet with random weights, as the tests use.
//! let config = ResNetV2Config::custom(vec![2, 2], vec![4, 8]);
//! let varmap = candle_nn::VarMap::new();
//! let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
//! let model = ResNetV2::new(&config, vb)?;
//! let x = Tensor::zeros((1, 3, 64, 64), DType::F32, &Device::Cpu)?;
//! let pooled = model.forward_pooled(&x)?;
//! assert_eq!(pooled.dims(), &[1, 32]);
//! # Ok::<(), fracture::Error>(())
//! ```

pub mod augment;
pub mod batch;
pub mod classifier;
pub mod dataset;
pub mod device;
pub mod error;
pub mod image;
pub mod metrics;
pub mod model;
pub mod train;
pub mod weights;

pub use classifier::{FractureClassifier, Prediction};

/// The README's code examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
pub use error::{Error, Result};
pub use weights::WeightsSource;
