//! # fracture
//!
//! Bone-fracture classification on X-ray radiographs, in pure Rust on top of
//! [candle](https://github.com/huggingface/candle): open a radiograph dataset, split it without
//! leakage, fine-tune an ImageNet-pretrained backbone (Keras-exact ResNet152V2), measure it the
//! way clinicians and reviewers expect, and classify new images, on CPU, CUDA or Metal.
//!
//! A user starts with the facade, [`FractureClassifier`]:
//!
//! ```
//! use fracture::dataset::{synthetic::SyntheticConfig, FracAtlas, SplitConfig};
//! use fracture::device::DeviceRequest;
//! use fracture::model::ResNetV2Config;
//! use fracture::train::TrainConfig;
//! use fracture::{FractureClassifier, WeightsSource};
//!
//! # let tmp = tempfile::tempdir()?;
//! # let root = tmp.path();
//! # SyntheticConfig { n_fractured: 10, n_not_fractured: 10, ..SyntheticConfig::default() }.generate_to(root)?;
//! // 1. Open the data (FracAtlas's layout; class folders and CSV manifests work too).
//! let data = FracAtlas::open(root)?;
//! // 2. Split it: stratified 70/10/20, byte-identical images kept in one part.
//! let split = data.split(&SplitConfig::default())?;
//! // 3. Build a classifier with explicit weights (Keras's ImageNet weights for real work:
//! //    `WeightsSource::imagenet()`, from ~/.keras/models or downloaded there).
//! let mut clf = FractureClassifier::builder()
//!     .backbone(ResNetV2Config::custom(vec![2, 2], vec![4, 8])) // ResNetV2Config::resnet152v2()
//!     .weights(WeightsSource::Random { seed: 0 })
//!     .device(DeviceRequest::Cpu)
//!     .image_size(64, 64)
//!     .build()?;
//! // 4. Train (best epoch by validation loss, threshold chosen on the validation part).
//! let config = TrainConfig { epochs: 1, batch_size: 8, progress: false, ..TrainConfig::default() };
//! clf.train(&split, config)?;
//! // 5. Evaluate on the test part: sensitivity, specificity, AUC with confidence intervals.
//! let evaluation = clf.evaluate(&split.test)?;
//! println!("{evaluation}");
//! // 6. Classify new images, save the classifier as a bundle, load it again.
//! println!("{}", clf.classify_path(&split.test.samples[0].path)?);
//! clf.save(root.join("bundle"))?;
//! // The candle and image types of the API come re-exported: no need to pin their versions.
//! let again = FractureClassifier::load(root.join("bundle"), &fracture::candle_core::Device::Cpu)?;
//! let picture: fracture::DynamicImage = fracture::dataset::decode::decode_file(&split.test.samples[0].path)?;
//! assert_eq!(again.classify_image(&picture)?, clf.classify_image(&picture)?);
//! # let _ = again;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The pipeline's stages, each usable alone:
//!
//! - [`dataset`]: FracAtlas, class folders, CSV manifests, the leak-free split, the loader.
//! - [`preprocess`]: from a decoded image to the model's input.
//! - [`augment`]: Keras `ImageDataGenerator` augmentation.
//! - [`model`]: backbones ([`model::BackboneConfig`]), the head, the whole network.
//! - [`weights`]: where weights come from (files, the hub, seeded random) and their checks.
//! - [`train`]: the training loop, checkpoints, resume.
//! - [`metrics`]: sklearn-exact metrics, curves, thresholds, bootstrap intervals.
//! - [`explain`]: class-activation maps (Grad-CAM family) and overlays; localization scores
//!   against annotated fractures are in [`metrics::localization`].
//! - [`classifier`]: the facade and its saved bundle.
//! - [`progress`]: progress of long work (a bar on a terminal, plain lines in a log).
//! - [`report`]: the evaluation report, one self-contained HTML page with its charts.
//! - [`robustness`]: how far predictions move under JPEG re-encoding, noise, 12-bit DICOM
//!   export and other programs' resizing.
//! - [`score`]: scoring an archive in shards on a cluster (Slurm arrays, Kubernetes Indexed
//!   Jobs), resumable, and merging the shards.

mod atomic;
pub mod augment;
pub mod batch;
pub mod classifier;
pub mod dataset;
pub mod device;
pub mod error;
pub mod explain;
pub mod image;
pub mod metrics;
pub mod model;
pub mod preprocess;
pub mod progress;
pub mod report;
pub mod robustness;
pub mod score;
pub mod train;
pub mod weights;

pub use classifier::{FractureClassifier, Prediction};

/// The `image` crate types that appear in public signatures, from the version this crate is
/// built with (`fracture::image` is this crate's own module of `f32` images).
pub use ::image::{DynamicImage, GrayImage, ImageBuffer, Luma, Rgb, RgbImage};
/// The `candle_core` this crate is built with: its [`candle_core::Device`] and
/// [`candle_core::Tensor`] appear in public signatures, so use them from here
/// (`fracture::candle_core::Device::Cpu`) rather than pinning a matching version.
pub use candle_core;

/// The README's code examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
pub use error::{Error, Result};
pub use weights::WeightsSource;

/// Where a clone of the repository keeps the model it ships: EfficientNet-Lite0 at 384 px,
/// trained on FracAtlas with its fracture boxes (its `MODEL_CARD.md` and `report/` say how,
/// and what it measured). The examples `classify`, `explain` and `evaluate` use it when no
/// model is named. Not part of the crate package: present in a clone, absent from crates.io.
///
/// ```
/// assert!(fracture::SHIPPED_MODEL.ends_with("models/fracatlas-lite0-384"));
/// ```
pub const SHIPPED_MODEL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/models/fracatlas-lite0-384");
