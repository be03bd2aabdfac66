//! Opening the reference notebook's own saved Keras model (`ModelCheckpoint`'s `*.h5`, or a
//! `*.keras` file) as a [`FractureClassifier`], and opening "a model" given as either a bundle
//! folder or such a file.
//!
//! ```no_run
//! use fracture::{FractureClassifier, classifier::KerasImport};
//! let clf = FractureClassifier::from_keras_model("best_model.h5", &KerasImport::default())?;
//! println!("{}", clf.classify_path("xray.jpg")?);       // P(fracture), whatever the notebook's classes
//! clf.save("bundle_dir")?;                              // threshold 0.5, marked as not chosen on data
//! # Ok::<(), fracture::Error>(())
//! ```

use super::{FractureClassifier, ThresholdSource};
use crate::device::{self, DeviceRequest};
use crate::error::Result;
use crate::preprocess::{ExifOrientation, FilterType, Normalization, Preprocess};
use crate::weights::keras_model::{read_keras_model, KerasModelOptions, SigmoidOutput};
use candle_core::Device;
use std::path::Path;

/// How to import a saved Keras model ([`FractureClassifier::from_keras_model`]).
///
/// The defaults are the reference notebook's: its sigmoid is P(Not_Fractured) (the class
/// folders sorted alphabetically make `Fractured` class 0), images read as Keras's
/// `flow_from_directory` reads them (`load_img`: EXIF orientation ignored, **nearest**
/// resizing) and scaled with Keras's `resnet_v2` `x / 127.5 - 1`
/// ([`Preprocess::keras_notebook`]). The file cannot tell how images were scaled in training
/// (a generator's `rescale=1/255` is not saved): set `normalization` to match yours.
///
/// The crate's own models read images differently (EXIF orientation applied, antialiased
/// `Triangle` resizing, [`Preprocess::default`]): a radiograph stored sideways with an EXIF
/// rotation reaches the two differently, and nearest resizing keeps aliasing that the
/// triangle filter smooths away. [`KerasImport::with_crate_preprocessing`] imports with the
/// crate's reading instead. Either way the choice is recorded in a saved bundle's
/// preprocessing (`filter`, `exif_orientation`).
///
/// ```
/// use fracture::classifier::KerasImport;
/// use fracture::preprocess::{ExifOrientation, FilterType};
/// use fracture::weights::keras_model::SigmoidOutput;
/// let options = KerasImport { sigmoid: SigmoidOutput::Fractured, ..KerasImport::default() };
/// assert!(options.fast_path);
/// assert_eq!((options.filter, options.exif), (FilterType::Nearest, ExifOrientation::Ignore));
/// let crate_way = KerasImport::default().with_crate_preprocessing();
/// assert_eq!((crate_way.filter, crate_way.exif), (FilterType::Triangle, ExifOrientation::Apply));
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct KerasImport {
    /// What the model's sigmoid is the probability of (default: Not_Fractured, the notebook's).
    pub sigmoid: SigmoidOutput,
    /// The compute device (default: the best available).
    pub device: DeviceRequest,
    /// Use the backbone's CPU fast path on the CPU (default) or candle's ops.
    pub fast_path: bool,
    /// Value scaling of the input (default: Keras's `resnet_v2` `x / 127.5 - 1`).
    pub normalization: Normalization,
    /// Resize filter (default: `Nearest`, as Keras's `load_img`).
    pub filter: FilterType,
    /// EXIF orientation (default: `Ignore`, as Keras's `load_img`).
    pub exif: ExifOrientation,
    /// Input (height, width) for a model whose config leaves it open (default 224 x 224);
    /// a model with a fixed input size always gets its own.
    pub image_size_if_open: (usize, usize),
}

impl Default for KerasImport {
    fn default() -> Self {
        let (height, width) = (Preprocess::default().height, Preprocess::default().width);
        let notebook = Preprocess::keras_notebook(height, width);
        Self {
            sigmoid: SigmoidOutput::default(),
            device: DeviceRequest::BestAvailable,
            fast_path: true,
            normalization: notebook.normalization,
            filter: notebook.filter,
            exif: notebook.exif,
            image_size_if_open: (height, width),
        }
    }
}

impl KerasImport {
    /// These options with the crate's own image reading ([`Preprocess::default`]'s filter and
    /// EXIF orientation) instead of Keras's `load_img`'s; the normalization is kept.
    pub fn with_crate_preprocessing(self) -> Self {
        let own = Preprocess::default();
        Self {
            filter: own.filter,
            exif: own.exif,
            ..self
        }
    }
}

/// How [`FractureClassifier::initial_weights`] starts for a classifier imported from a saved
/// Keras model (its weights were trained outside fracture).
pub(crate) const KERAS_IMPORT_PREFIX: &str = "imported from the Keras model";

impl FractureClassifier {
    /// Open a saved Keras model: a legacy HDF5 full model of Keras 2 (tf_keras) or Keras 3, or
    /// a Keras 3 `.keras` zip, recognised by content. Its own config must describe a ResNetV2
    /// backbone with Keras's layer names and the notebook's head (`GlobalAveragePooling2D →
    /// Dense(relu) → Dropout → Dense(1, sigmoid)`, found by structure); its input size becomes
    /// the classifier's image size; optimizer state is ignored.
    ///
    /// The classifier always reports P(fracture): with the default
    /// [`SigmoidOutput::NotFractured`] the final layer is flipped. The threshold is 0.5, and a
    /// saved bundle records that it was not chosen on validation data
    /// ([`ThresholdSource::Default`]).
    ///
    /// ```
    /// use fracture::{FractureClassifier, classifier::KerasImport};
    /// use fracture::device::DeviceRequest;
    /// let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/keras_head/notebook_model.h5");
    /// let options = KerasImport { device: DeviceRequest::Cpu, ..KerasImport::default() };
    /// let clf = FractureClassifier::from_keras_model(path, &options)?;
    /// assert_eq!((clf.preprocess().height, clf.preprocess().width), (160, 128));
    /// assert_eq!(clf.threshold(), 0.5);
    /// # Ok::<(), fracture::Error>(())
    /// ```
    pub fn from_keras_model(path: impl AsRef<Path>, options: &KerasImport) -> Result<Self> {
        let device = device::select(options.device)?;
        Self::import_keras(path.as_ref(), options, &device)
    }

    fn import_keras(path: &Path, options: &KerasImport, device: &Device) -> Result<Self> {
        let model = read_keras_model(
            path,
            &KerasModelOptions {
                sigmoid: options.sigmoid,
            },
        )?;
        let (height, width) = model.image_size.unwrap_or(options.image_size_if_open);
        let preprocess = Preprocess {
            height,
            width,
            filter: options.filter,
            normalization: options.normalization,
            exif: options.exif,
        };
        preprocess.validate()?;
        let tensors = model
            .tensors
            .into_iter()
            .map(|(name, t)| Ok((name, t.to_device(device)?)))
            .collect::<Result<_>>()?;
        let mut clf = Self::from_tensors(
            model.backbone,
            model.head,
            tensors,
            preprocess,
            super::DEFAULT_THRESHOLD,
            device,
        )?;
        clf.threshold_source = Some(ThresholdSource::Default);
        // The weights were trained outside fracture: say so, and name the file they came from.
        let file = path.file_name().map_or_else(
            || path.display().to_string(),
            |name| name.to_string_lossy().into_owned(),
        );
        clf.initial_weights = Some(format!("{KERAS_IMPORT_PREFIX} {file}"));
        if !options.fast_path {
            clf.set_fast_path(false)?;
        }
        Ok(clf)
    }

    /// Open "a model": a bundle folder ([`FractureClassifier::load`]) or a saved Keras model
    /// file ([`FractureClassifier::from_keras_model`] with the notebook's defaults), told apart
    /// by what is at `path`.
    ///
    /// ```
    /// use fracture::FractureClassifier;
    /// let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/keras_head/notebook_model.keras");
    /// let clf = FractureClassifier::open(path, &candle_core::Device::Cpu)?;
    /// assert_eq!(clf.preprocess().height, 160);
    /// # Ok::<(), fracture::Error>(())
    /// ```
    pub fn open(path: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let path = path.as_ref();
        if path.is_dir() {
            return Self::load(path, device);
        }
        Self::import_keras(path, &KerasImport::default(), device)
    }
}
