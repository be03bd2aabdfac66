//! The saved classifier: a folder that says everything about how to use the model.
//!
//! ```text
//! model_dir/
//!   bundle.json         format, crate version, backbone and head configs, preprocessing, threshold
//!                       and where it came from, calibration (method, map, where it came from),
//!                       initial weights and training configuration
//!   model.safetensors   every variable (backbone at the root, head under `head.`), candle layout
//!   split.csv           the split the model was trained, validated and tested on (if known)
//!   history.json        per-epoch training history (if trained)
//!   metrics.json        the last evaluation (if evaluated)
//! ```
//! Image paths in `split.csv` and `metrics.json` are written relative to the data root, or as
//! salted hashes ([`FractureClassifier::set_path_form`], [`crate::dataset::stored_path`]);
//! a loaded bundle's [`FractureClassifier::split`] holds them so: join them to the folder
//! the images are in with [`Split::rooted_at`].
//! Every file is written to a temporary name and renamed; `bundle.json` is written last, so a
//! folder without it is an incomplete save.

use super::{Calibration, FractureClassifier};
use crate::atomic::AtomicWriter;
use crate::dataset::Split;
use crate::error::{Error, Result};
use crate::metrics::ThresholdRule;
use crate::model::{BackboneConfig, HeadConfig};
use crate::preprocess::{ExifOrientation, FilterType, Normalization, Preprocess};
use crate::train::{History, TrainConfig};
use crate::weights::{network_variables, read_tensors, save_network};
use candle_core::Device;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// The `format` field of every bundle.
pub const BUNDLE_FORMAT: &str = "fracture-classifier-bundle";
/// The newest bundle layout this version reads and the one it writes (3: a temperature, which
/// an older reader would silently ignore, hence a new layout; 4: the calibration record, whose
/// Platt intercept an older reader would silently drop; 5: the rule of a threshold chosen on
/// validation, `threshold_source: {"validation": {"rule": ...}}`, which a reader of layout 4
/// cannot parse).
pub const BUNDLE_FORMAT_VERSION: u32 = 5;

const MANIFEST: &str = "bundle.json";
const WEIGHTS: &str = "model.safetensors";
const SPLIT: &str = "split.csv";
const HISTORY: &str = "history.json";
const METRICS: &str = "metrics.json";

/// Preprocessing as written in `bundle.json`.
///
/// ```
/// use fracture::classifier::PreprocessSpec;
/// use fracture::preprocess::Preprocess;
/// let spec = PreprocessSpec::from(&Preprocess::default());
/// assert_eq!((spec.filter.as_str(), spec.normalization.as_str()), ("triangle", "keras_resnet_v2"));
/// assert_eq!(spec.to_preprocess().unwrap(), Preprocess::default());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreprocessSpec {
    /// Model input height.
    pub height: usize,
    /// Model input width.
    pub width: usize,
    /// Resize filter: nearest, triangle, catmull_rom, gaussian or lanczos3.
    pub filter: String,
    /// Value scaling: keras_resnet_v2 (`x/127.5 - 1`), unit_range (`x/255`) or imagenet.
    pub normalization: String,
    /// EXIF orientation: apply or ignore (absent in bundles written before it was recorded,
    /// which all applied it).
    #[serde(default = "exif_apply")]
    pub exif_orientation: String,
}

fn exif_apply() -> String {
    "apply".into()
}

impl From<&Preprocess> for PreprocessSpec {
    fn from(p: &Preprocess) -> Self {
        let filter = match p.filter {
            FilterType::Nearest => "nearest",
            FilterType::Triangle => "triangle",
            FilterType::CatmullRom => "catmull_rom",
            FilterType::Gaussian => "gaussian",
            FilterType::Lanczos3 => "lanczos3",
        };
        let normalization = match p.normalization {
            Normalization::KerasResNetV2 => "keras_resnet_v2",
            Normalization::UnitRange => "unit_range",
            Normalization::ImageNet => "imagenet",
        };
        let exif_orientation = match p.exif {
            ExifOrientation::Apply => "apply",
            ExifOrientation::Ignore => "ignore",
        };
        Self {
            height: p.height,
            width: p.width,
            filter: filter.into(),
            normalization: normalization.into(),
            exif_orientation: exif_orientation.into(),
        }
    }
}

impl PreprocessSpec {
    /// The preprocessing this describes; an unknown filter or normalization is an error.
    pub fn to_preprocess(&self) -> Result<Preprocess> {
        let filter = match self.filter.as_str() {
            "nearest" => FilterType::Nearest,
            "triangle" => FilterType::Triangle,
            "catmull_rom" => FilterType::CatmullRom,
            "gaussian" => FilterType::Gaussian,
            "lanczos3" => FilterType::Lanczos3,
            other => {
                return Err(Error::InvalidConfig(format!(
                    "unknown resize filter {other:?}"
                )))
            }
        };
        let normalization = match self.normalization.as_str() {
            "keras_resnet_v2" => Normalization::KerasResNetV2,
            "unit_range" => Normalization::UnitRange,
            "imagenet" => Normalization::ImageNet,
            other => {
                return Err(Error::InvalidConfig(format!(
                    "unknown normalization {other:?}"
                )))
            }
        };
        let exif = match self.exif_orientation.as_str() {
            "apply" => ExifOrientation::Apply,
            "ignore" => ExifOrientation::Ignore,
            other => {
                return Err(Error::InvalidConfig(format!(
                    "unknown EXIF orientation {other:?} (apply or ignore)"
                )))
            }
        };
        let preprocess = Preprocess {
            height: self.height,
            width: self.width,
            filter,
            normalization,
            exif,
        };
        preprocess.validate()?;
        Ok(preprocess)
    }
}

/// Where a classifier's decision threshold came from (recorded in `bundle.json` as
/// `threshold_source`: `"default"`, `"manual"`, or `{"validation": {"rule": RULE}}` with the
/// [`ThresholdRule`] that chose it; the plain `"validation"` of bundles written before the rule
/// was recorded reads as a rule unknown).
///
/// ```
/// use fracture::classifier::ThresholdSource;
/// use fracture::metrics::ThresholdRule;
/// assert_eq!(serde_json::to_string(&ThresholdSource::Default).unwrap(), r#""default""#);
/// assert_eq!(ThresholdSource::of_unchosen(0.5), ThresholdSource::Default);
/// assert_eq!(ThresholdSource::of_unchosen(0.3), ThresholdSource::Manual);
/// let chosen = ThresholdSource::Validation { rule: Some(ThresholdRule::TargetSpecificity(0.9)) };
/// let json = serde_json::to_string(&chosen).unwrap();
/// assert_eq!(json, r#"{"validation":{"rule":{"target_specificity":0.9}}}"#);
/// assert_eq!(serde_json::from_str::<ThresholdSource>(&json).unwrap(), chosen);
/// let old: ThresholdSource = serde_json::from_str(r#""validation""#).unwrap();
/// assert_eq!(old, ThresholdSource::Validation { rule: None });
/// assert_eq!(chosen.to_string(), "validation (target specificity 0.9)");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", try_from = "serde_json::Value")]
pub enum ThresholdSource {
    /// 0.5, never chosen on data (a fresh or imported classifier).
    Default,
    /// Chosen on the validation part (by training, or `choose_threshold`).
    Validation {
        /// The rule that chose it (`None`: a bundle written before the rule was recorded).
        rule: Option<ThresholdRule>,
    },
    /// Set by hand (`set_threshold`, or a builder threshold other than 0.5).
    Manual,
}

impl ThresholdSource {
    /// The source of a threshold that was not chosen on data: `Default` for
    /// [`super::DEFAULT_THRESHOLD`], else `Manual`.
    pub fn of_unchosen(threshold: f64) -> Self {
        if threshold == super::DEFAULT_THRESHOLD {
            Self::Default
        } else {
            Self::Manual
        }
    }
}

/// `default`, `manual`, `validation (Youden's J)` or `validation (rule not recorded)`.
impl fmt::Display for ThresholdSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Default => f.write_str("default"),
            Self::Manual => f.write_str("manual"),
            Self::Validation { rule: Some(rule) } => write!(f, "validation ({rule})"),
            Self::Validation { rule: None } => f.write_str("validation (rule not recorded)"),
        }
    }
}

/// The recorded form: a name, or `{"validation": {"rule": ...}}`.
impl TryFrom<serde_json::Value> for ThresholdSource {
    type Error = String;

    fn try_from(value: serde_json::Value) -> std::result::Result<Self, String> {
        use serde_json::Value;
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Chosen {
            rule: Option<ThresholdRule>,
        }
        match value {
            Value::String(name) => match name.as_str() {
                "default" => Ok(Self::Default),
                "manual" => Ok(Self::Manual),
                "validation" => Ok(Self::Validation { rule: None }),
                other => Err(format!(
                    "unknown threshold source {other:?} (default, manual or validation)"
                )),
            },
            Value::Object(mut fields) if fields.len() == 1 && fields.contains_key("validation") => {
                let chosen = fields.remove("validation").unwrap_or_default();
                let chosen: Chosen = serde_json::from_value(chosen)
                    .map_err(|e| format!("threshold source validation: {e}"))?;
                if let Some(rule) = chosen.rule {
                    rule.validate().map_err(|e| e.to_string())?;
                }
                Ok(Self::Validation { rule: chosen.rule })
            }
            other => Err(format!(
                "threshold source {other} is neither a name nor {{\"validation\": {{\"rule\": ...}}}}"
            )),
        }
    }
}

/// The content of `bundle.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BundleManifest {
    /// Always [`BUNDLE_FORMAT`].
    pub format: String,
    /// Layout version ([`BUNDLE_FORMAT_VERSION`] when written by this crate version).
    pub format_version: u32,
    /// Version of `fracture` that wrote the bundle.
    pub crate_version: String,
    /// The backbone's architecture and shape (layout version 1 held a bare ResNetV2
    /// configuration, read as one).
    #[serde(deserialize_with = "crate::model::deserialize_backbone_config")]
    pub backbone: BackboneConfig,
    /// The head's shape.
    pub head: HeadConfig,
    /// Input preprocessing.
    pub preprocess: PreprocessSpec,
    /// Decision threshold on the fracture probability.
    pub threshold: f64,
    /// Temperature of the probabilities, `sigmoid(logit / T)`: written when the calibration is
    /// a temperature (or none, `T = 1`), for tools that read only this field; absent in layouts
    /// before 3 (`T = 1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    /// The calibration: method, map and where it came from (layout 4). A bundle without it
    /// loads with its temperature as [`crate::classifier::CalibrationSource::Unknown`], or as
    /// not fitted when that is 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<Calibration>,
    /// Where the initial weights came from, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial_weights: Option<String>,
    /// How the model was trained, when it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub training: Option<TrainConfig>,
    /// Where the threshold came from, with the rule when chosen on validation (layout 5); absent
    /// in bundles written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold_source: Option<ThresholdSource>,
    /// Optional files present in the bundle (weights are always `model.safetensors`).
    pub files: Vec<String>,
}

/// The calibration a manifest records (checked), or what an older bundle's temperature means.
fn manifest_calibration(manifest: &BundleManifest) -> Result<Calibration> {
    let Some(calibration) = &manifest.calibration else {
        return Calibration::of_old_bundle(manifest.temperature.unwrap_or(1.0));
    };
    let map = crate::metrics::LogitMap::new(calibration.map.slope, calibration.map.intercept)
        .map_err(|e| Error::InvalidConfig(format!("calibration: {e}")))?;
    if let Some(temperature) = manifest.temperature {
        crate::metrics::check_temperature(temperature)?;
        if map.as_temperature() != Some(temperature) {
            return Err(Error::InvalidConfig(format!(
                "the temperature {temperature} disagrees with the calibration ({})",
                map.describe()
            )));
        }
    }
    Ok(calibration.clone())
}

fn format_error(path: &Path, message: impl Into<String>) -> Error {
    Error::Format {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

impl FractureClassifier {
    /// Save the classifier as a self-describing folder (created if needed; files inside are
    /// replaced atomically, `bundle.json` last).
    ///
    /// ```
    /// use fracture::FractureClassifier;
    /// use fracture::model::ResNetV2Config;
    /// use fracture::device::DeviceRequest;
    /// let clf = FractureClassifier::builder()
    ///     .backbone(ResNetV2Config::custom(vec![2, 2], vec![4, 8]))
    ///     .weights(fracture::WeightsSource::Random { seed: 0 })
    ///     .device(DeviceRequest::Cpu)
    ///     .image_size(32, 32)
    ///     .build()?;
    /// let dir = std::env::temp_dir().join("fracture-bundle-doctest");
    /// clf.save(&dir)?;
    /// let again = FractureClassifier::load(&dir, &fracture::candle_core::Device::Cpu)?;
    /// assert_eq!(again.threshold(), clf.threshold());
    /// # std::fs::remove_dir_all(&dir).ok();
    /// # Ok::<(), fracture::Error>(())
    /// ```
    pub fn save(&self, dir: impl AsRef<Path>) -> Result<PathBuf> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let mut writer = AtomicWriter::new(dir, None);
        writer.write_with(WEIGHTS, |tmp| {
            save_network(tmp, &self.tensors, &self.backbone, Some(&self.head))
        })?;
        let mut files = Vec::new();
        let evaluation_paths = self
            .evaluation
            .as_ref()
            .map(super::stored::evaluation_paths)
            .unwrap_or_default();
        let root = super::stored::evaluation_root(self.split.as_ref(), &evaluation_paths);
        if let Some(split) = &self.split {
            let stored = split.stored(&self.path_form, &split.data_root().unwrap_or_default());
            writer.write_with(SPLIT, |tmp| stored.save_stored_manifest(tmp))?;
            files.push(SPLIT.to_string());
        }
        if let Some(history) = &self.history {
            writer.write_bytes(HISTORY, history.to_json()?.as_bytes())?;
            files.push(HISTORY.to_string());
        }
        if let Some(metrics) = &self.evaluation {
            let mut metrics = metrics.clone();
            super::stored::store_evaluation_paths(&mut metrics, &self.path_form, &root);
            writer.write_json(METRICS, &metrics)?;
            files.push(METRICS.to_string());
        }
        let manifest = BundleManifest {
            format: BUNDLE_FORMAT.into(),
            format_version: BUNDLE_FORMAT_VERSION,
            crate_version: env!("CARGO_PKG_VERSION").into(),
            backbone: self.backbone.clone(),
            head: self.head.clone(),
            preprocess: PreprocessSpec::from(&self.preprocess),
            threshold: self.threshold,
            temperature: self.calibration.map.as_temperature(),
            calibration: Some(self.calibration.clone()),
            initial_weights: self.initial_weights.clone(),
            training: self.train_config.clone(),
            threshold_source: self.threshold_source,
            files,
        };
        writer.write_json(MANIFEST, &manifest)?;
        Ok(dir.to_path_buf())
    }

    /// Load a folder written by [`FractureClassifier::save`] onto `device`. A missing or
    /// corrupt file, a bundle of another format or a newer layout is an error naming the file.
    pub fn load(dir: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let dir = dir.as_ref();
        if !dir.is_dir() {
            return Err(Error::Dataset {
                path: dir.to_path_buf(),
                message: "no classifier bundle here (not a folder)".into(),
            });
        }
        let manifest_path = dir.join(MANIFEST);
        let text = std::fs::read_to_string(&manifest_path).map_err(|e| {
            Error::io(
                &manifest_path,
                std::io::Error::new(e.kind(), format!("{e} (a bundle needs its {MANIFEST})")),
            )
        })?;
        let manifest: BundleManifest = serde_json::from_str(&text).map_err(|e| {
            format_error(&manifest_path, format!("not a valid bundle manifest: {e}"))
        })?;
        if manifest.format != BUNDLE_FORMAT {
            return Err(format_error(
                &manifest_path,
                format!("format {:?}, expected {BUNDLE_FORMAT:?}", manifest.format),
            ));
        }
        if manifest.format_version > BUNDLE_FORMAT_VERSION {
            return Err(format_error(
                &manifest_path,
                format!(
                    "bundle layout version {} written by fracture {} is newer than this version reads ({BUNDLE_FORMAT_VERSION}); upgrade fracture",
                    manifest.format_version, manifest.crate_version
                ),
            ));
        }
        manifest.backbone.validate()?;
        super::check_threshold(manifest.threshold)?;
        let calibration = manifest_calibration(&manifest)
            .map_err(|e| format_error(&manifest_path, e.to_string()))?;
        let preprocess = manifest.preprocess.to_preprocess()?;
        let weights_path = dir.join(WEIGHTS);
        let weights = read_tensors(&weights_path, device)?;
        let expected = network_variables(&manifest.backbone, Some(&manifest.head));
        let report = weights.validate(&expected)?;
        if !report.unexpected.is_empty() {
            return Err(format_error(
                &weights_path,
                format!("unexpected tensors: {}", report.describe()),
            ));
        }
        let tensors = expected
            .iter()
            .map(|spec| Ok((spec.name.clone(), weights.get(&spec.name)?)))
            .collect::<Result<HashMap<_, _>>>()?;
        let mut clf = Self::from_tensors(
            manifest.backbone.clone(),
            manifest.head.clone(),
            tensors,
            preprocess,
            manifest.threshold,
            device,
        )?;
        clf.calibration = calibration;
        clf.initial_weights = manifest.initial_weights.clone();
        clf.train_config = manifest.training.clone();
        clf.threshold_source = manifest.threshold_source;
        let has = |name: &str| manifest.files.iter().any(|f| f == name);
        if has(SPLIT) {
            clf.split = Some(Split::load_stored_manifest(&dir.join(SPLIT))?);
        }
        if has(HISTORY) {
            clf.history = Some(History::load_json(dir.join(HISTORY))?);
        }
        if has(METRICS) {
            let path = dir.join(METRICS);
            let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
            clf.evaluation = Some(
                serde_json::from_str(&text)
                    .map_err(|e| format_error(&path, format!("not valid JSON: {e}")))?,
            );
        }
        Ok(clf)
    }

    /// The split this classifier was trained on, when known. Its paths are those given to
    /// [`Self::train`], or for a loaded bundle as `split.csv` stores them (relative to the data
    /// root or hashed, see [`Self::set_path_form`]; bundles before this stored absolute paths):
    /// find the images with [`Split::locate`] in a data set opened where they are now.
    pub fn split(&self) -> Option<&Split> {
        self.split.as_ref()
    }
}
