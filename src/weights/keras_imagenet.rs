//! Keras's own ImageNet weights of ResNet50V2 / 101V2 / 152V2, the files
//! `keras.applications.ResNet152V2(weights="imagenet")` uses: found in the Keras cache
//! (`$KERAS_HOME/models`, default `~/.keras/models`) or downloaded into it from Keras's address,
//! and accepted only with the MD5 Keras publishes for them.
//!
//! ```no_run
//! use fracture::{FractureClassifier, WeightsSource};
//! let clf = FractureClassifier::builder().weights(WeightsSource::imagenet()).build()?;
//! # Ok::<(), fracture::Error>(())
//! ```

use super::download::{download_verified, file_md5};
use super::hub::HubOptions;
use crate::error::{Error, Result};
use crate::model::ResNetV2Config;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Where Keras downloads its ResNet weight files from (the file name is appended).
pub const KERAS_RESNET_WEIGHTS_URL: &str =
    "https://storage.googleapis.com/tensorflow/keras-applications/resnet/";

/// The ResNetV2 depths Keras publishes ImageNet weights for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResNetV2Preset {
    /// `ResNet50V2`: blocks 3, 4, 6, 3.
    ResNet50V2,
    /// `ResNet101V2`: blocks 3, 4, 23, 3.
    ResNet101V2,
    /// `ResNet152V2`: blocks 3, 8, 36, 3 (the reference notebook's backbone).
    ResNet152V2,
}

impl ResNetV2Preset {
    /// Every preset.
    pub const ALL: [Self; 3] = [Self::ResNet50V2, Self::ResNet101V2, Self::ResNet152V2];

    /// Keras's lowercase name, the start of its weight file names (`resnet152v2`).
    ///
    /// ```
    /// use fracture::weights::ResNetV2Preset;
    /// assert_eq!(ResNetV2Preset::ResNet101V2.keras_name(), "resnet101v2");
    /// assert_eq!(ResNetV2Preset::from_name("ResNet50V2"), Some(ResNetV2Preset::ResNet50V2));
    /// ```
    pub fn keras_name(self) -> &'static str {
        match self {
            Self::ResNet50V2 => "resnet50v2",
            Self::ResNet101V2 => "resnet101v2",
            Self::ResNet152V2 => "resnet152v2",
        }
    }

    /// The preset named `name` (`resnet152v2`, any case), if there is one.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.keras_name().eq_ignore_ascii_case(name))
    }

    /// The backbone shape the weights are for.
    ///
    /// ```
    /// use fracture::weights::ResNetV2Preset;
    /// assert_eq!(ResNetV2Preset::ResNet152V2.config().blocks, vec![3, 8, 36, 3]);
    /// ```
    pub fn config(self) -> ResNetV2Config {
        match self {
            Self::ResNet50V2 => ResNetV2Config::resnet50v2(),
            Self::ResNet101V2 => ResNetV2Config::resnet101v2(),
            Self::ResNet152V2 => ResNetV2Config::resnet152v2(),
        }
    }
}

/// Keras's published MD5 of each file (`WEIGHTS_HASHES` in `keras/src/applications/resnet.py`):
/// preset, whether it is the "top" file (with the 1000-class `predictions` layer), hash.
pub const KERAS_IMAGENET_MD5: [(ResNetV2Preset, bool, &str); 6] = [
    (
        ResNetV2Preset::ResNet50V2,
        true,
        "3ef43a0b657b3be2300d5770ece849e0",
    ),
    (
        ResNetV2Preset::ResNet50V2,
        false,
        "fac2f116257151a9d068a22e544a4917",
    ),
    (
        ResNetV2Preset::ResNet101V2,
        true,
        "6343647c601c52e1368623803854d971",
    ),
    (
        ResNetV2Preset::ResNet101V2,
        false,
        "c0ed64b8031c3730f411d2eb4eea35b5",
    ),
    (
        ResNetV2Preset::ResNet152V2,
        true,
        "a49b44d1979771252814e80f8ec446f9",
    ),
    (
        ResNetV2Preset::ResNet152V2,
        false,
        "ed17cf2e0169df9d443503ef94b23b33",
    ),
];

/// One of Keras's ImageNet weight files: a preset, with or without the classification top.
///
/// ```
/// use fracture::weights::{KerasImageNet, ResNetV2Preset};
/// let notop = KerasImageNet::notop(ResNetV2Preset::ResNet152V2);
/// assert_eq!(notop.file_name(), "resnet152v2_weights_tf_dim_ordering_tf_kernels_notop.h5");
/// assert_eq!(KerasImageNet::top(ResNetV2Preset::ResNet50V2).file_name(),
///            "resnet50v2_weights_tf_dim_ordering_tf_kernels.h5");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KerasImageNet {
    /// Which network.
    pub model: ResNetV2Preset,
    /// The "top" file: the backbone plus Keras's 1000-class `predictions` layer. Without it
    /// ("notop"), the backbone alone, what fine-tuning starts from.
    pub include_top: bool,
}

impl KerasImageNet {
    /// The backbone-only ("notop") file of `model`.
    pub fn notop(model: ResNetV2Preset) -> Self {
        Self {
            model,
            include_top: false,
        }
    }

    /// The file of `model` with its ImageNet classifier (`predictions`, 1000 classes).
    pub fn top(model: ResNetV2Preset) -> Self {
        Self {
            model,
            include_top: true,
        }
    }

    /// Keras's file name (`resnet152v2_weights_tf_dim_ordering_tf_kernels_notop.h5`).
    pub fn file_name(&self) -> String {
        let suffix = if self.include_top { "" } else { "_notop" };
        format!(
            "{}_weights_tf_dim_ordering_tf_kernels{suffix}.h5",
            self.model.keras_name()
        )
    }

    /// The MD5 Keras publishes for this file ([`KERAS_IMAGENET_MD5`]).
    ///
    /// ```
    /// use fracture::weights::{KerasImageNet, ResNetV2Preset};
    /// assert_eq!(KerasImageNet::top(ResNetV2Preset::ResNet101V2).published_md5(), "6343647c601c52e1368623803854d971");
    /// ```
    pub fn published_md5(&self) -> &'static str {
        KERAS_IMAGENET_MD5
            .iter()
            .find(|(model, top, _)| *model == self.model && *top == self.include_top)
            .map_or("", |(_, _, md5)| md5)
    }

    /// How the file is named in messages (`Keras ImageNet resnet152v2 (notop)`).
    pub fn describe(&self) -> String {
        let top = if self.include_top { "top" } else { "notop" };
        format!("Keras ImageNet {} ({top})", self.model.keras_name())
    }
}

/// The Keras cache and the expected hashes.
///
/// [`KerasCache::from_env`] (also the `Default`) is what Keras uses: `$KERAS_HOME/models`,
/// default `~/.keras/models`, Keras's download address and its published hashes. Tests point
/// `dir` at a temporary folder, `base_url` at a local server and put their own hashes in `md5`.
///
/// ```
/// use fracture::weights::{KerasCache, KerasImageNet, ResNetV2Preset};
/// let mut cache = KerasCache::from_env();
/// let file = KerasImageNet::notop(ResNetV2Preset::ResNet152V2).file_name();
/// assert_eq!(cache.md5[&file], "ed17cf2e0169df9d443503ef94b23b33");
/// cache.dir = std::env::temp_dir().join("keras-models");
/// assert!(cache.path_of(&file).ends_with("keras-models/resnet152v2_weights_tf_dim_ordering_tf_kernels_notop.h5"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KerasCache {
    /// The folder the files live in (`$KERAS_HOME/models`).
    pub dir: PathBuf,
    /// The address files are downloaded from (`base_url` + file name).
    pub base_url: String,
    /// Expected MD5 (lowercase hex) by file name; a file not listed is never accepted.
    pub md5: HashMap<String, String>,
}

impl Default for KerasCache {
    fn default() -> Self {
        Self::from_env()
    }
}

impl KerasCache {
    /// Keras's cache (`$KERAS_HOME/models`, else `~/.keras/models`), address and hashes.
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        let keras_home = var("KERAS_HOME").map(PathBuf::from).unwrap_or_else(|| {
            var("HOME")
                .or_else(|| var("USERPROFILE"))
                .map_or_else(|| PathBuf::from("."), PathBuf::from)
                .join(".keras")
        });
        let md5 = KERAS_IMAGENET_MD5
            .iter()
            .map(|&(model, include_top, md5)| {
                let file = KerasImageNet { model, include_top }.file_name();
                (file, md5.to_string())
            })
            .collect();
        Self {
            dir: keras_home.join("models"),
            base_url: KERAS_RESNET_WEIGHTS_URL.to_string(),
            md5,
        }
    }

    /// Where `file` lives in the cache.
    pub fn path_of(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// The address `file` is downloaded from.
    pub fn url_of(&self, file: &str) -> String {
        format!("{}/{file}", self.base_url.trim_end_matches('/'))
    }

    /// The local path of `weights`: the cached file if its MD5 is the expected one, else a fresh
    /// download into the cache (checked the same way, then renamed into place so Keras finds it
    /// too). With `hub.offline` (`HF_HUB_OFFLINE`, the setting the hub source honours) nothing
    /// is downloaded: the error names the file, its address and where to put it. A file with
    /// another hash is never used; a cached one is replaced only by a verified download.
    ///
    /// ```no_run
    /// use fracture::weights::{HubOptions, KerasCache, KerasImageNet, ResNetV2Preset};
    /// let path = KerasCache::from_env()
    ///     .fetch(KerasImageNet::notop(ResNetV2Preset::ResNet152V2), &HubOptions::from_env())?;
    /// # Ok::<(), fracture::Error>(())
    /// ```
    pub fn fetch(&self, weights: KerasImageNet, hub: &HubOptions) -> Result<PathBuf> {
        let file = weights.file_name();
        let path = self.path_of(&file);
        let url = self.url_of(&file);
        let expected = self.md5.get(&file).ok_or_else(|| Error::Download {
            url: url.clone(),
            message: format!("no expected MD5 for {file}: the file cannot be checked"),
        })?;
        let cached = match path.is_file() {
            true => Some(file_md5(&path)?),
            false => None,
        };
        if cached.as_ref() == Some(expected) {
            return Ok(path);
        }
        if hub.offline {
            return Err(offline_error(
                &file,
                &url,
                &path,
                expected,
                cached.as_deref(),
            ));
        }
        download_verified(&url, &path, expected, hub.progress)?;
        Ok(path)
    }
}

fn offline_error(
    file: &str,
    url: &str,
    path: &Path,
    expected: &str,
    cached: Option<&str>,
) -> Error {
    let found = match cached {
        Some(md5) => format!(
            "{} has MD5 {md5}, not Keras's {expected} (incomplete or not Keras's file)",
            path.display()
        ),
        None => format!("{} is not there", path.display()),
    };
    Error::Download {
        url: url.to_string(),
        message: format!(
            "offline mode (HF_HUB_OFFLINE) is on and {found}; download {file} from {url} and put \
             it at {} (or unset HF_HUB_OFFLINE to download it)",
            path.display()
        ),
    }
}
