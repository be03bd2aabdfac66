//! [`WeightsSource`]: where a network's weights come from, and building the network from them.

use super::hub::{self, HubOptions};
use super::keras_imagenet::{KerasCache, KerasImageNet, ResNetV2Preset};
use super::read::{read_tensors, LoadedWeights};
use super::validate::ValidationReport;
use crate::error::{Error, Result};
use crate::model::{
    init_variables, Backbone, BackboneConfig, ClassifierHead, FractureNet, HeadConfig,
    ImageNetClassifier, VariableSpec,
};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use std::collections::HashMap;
use std::path::PathBuf;

/// Where a network's weights come from.
///
/// Files are recognized by content: a Keras HDF5 file (classic `*_notop.h5`, Keras 3
/// `.weights.h5`), Keras-layout safetensors, or our own safetensors (see
/// [`super::save_network`]), which are memory-mapped: do not modify such a file while a network
/// built from it is alive.
///
/// [`WeightsSource::imagenet`] is Keras's own ImageNet file of ResNet152V2, found in the Keras
/// cache or downloaded into it ([`KerasCache`]).
///
/// ```
/// use fracture::weights::WeightsSource;
/// let keras = WeightsSource::imagenet();
/// let imagenet = WeightsSource::hub("org/resnet152v2-imagenet");
/// let local = WeightsSource::file("resnet152v2_weights_tf_dim_ordering_tf_kernels_notop.h5");
/// let random = WeightsSource::Random { seed: 42 };
/// assert!(matches!(imagenet, WeightsSource::Hub { ref revision, .. } if revision == "main"));
/// # let _ = (keras, local, random);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WeightsSource {
    /// A file in a Hugging Face hub model repository, cached under `HF_HOME`.
    Hub {
        /// Repository id, `owner/name`.
        repo: String,
        /// Branch, tag or commit (`main` by default).
        revision: String,
        /// File inside the repository.
        file: String,
    },
    /// A local file.
    File(PathBuf),
    /// Keras's own ImageNet weights of a ResNetV2 preset, from the Keras cache
    /// (`$KERAS_HOME/models`) or downloaded into it, checked against Keras's MD5
    /// ([`KerasCache::fetch`]).
    KerasImageNet(KerasImageNet),
    /// Random weights, reproducible: the same seed gives the same weights on every run and
    /// device (drawn on the CPU with ChaCha8). Kernels are Glorot-uniform as in Keras, biases
    /// and BN offsets zero, BN scales and variances one, means zero.
    Random {
        /// Seed of the random generator.
        seed: u64,
    },
}

/// The file name [`WeightsSource::hub`] assumes.
pub const DEFAULT_HUB_FILE: &str = "model.safetensors";

impl WeightsSource {
    /// `model.safetensors` on the `main` revision of `repo`.
    pub fn hub(repo: impl Into<String>) -> Self {
        Self::Hub {
            repo: repo.into(),
            revision: "main".into(),
            file: DEFAULT_HUB_FILE.into(),
        }
    }

    /// A local file.
    pub fn file(path: impl Into<PathBuf>) -> Self {
        Self::File(path.into())
    }

    /// Keras's ImageNet weights of ResNet152V2 without the top, what the notebook's
    /// `ResNet152V2(weights="imagenet", include_top=False)` loads.
    ///
    /// ```
    /// use fracture::weights::{KerasImageNet, ResNetV2Preset, WeightsSource};
    /// assert_eq!(WeightsSource::imagenet(), WeightsSource::KerasImageNet(KerasImageNet::notop(ResNetV2Preset::ResNet152V2)));
    /// ```
    pub fn imagenet() -> Self {
        Self::KerasImageNet(KerasImageNet::notop(ResNetV2Preset::ResNet152V2))
    }

    /// How this source is named in errors and reports.
    pub fn describe(&self) -> String {
        match self {
            Self::Hub {
                repo,
                revision,
                file,
            } => format!("hub {repo}@{revision}/{file}"),
            Self::File(path) => path.display().to_string(),
            Self::KerasImageNet(weights) => weights.describe(),
            Self::Random { seed } => format!("random(seed {seed})"),
        }
    }

    /// The local path of the weights file (downloading it for `Hub` and `KerasImageNet`, the
    /// latter into [`KerasCache::from_env`]), `None` for `Random`.
    pub fn resolve(&self, options: &HubOptions) -> Result<Option<PathBuf>> {
        self.resolve_with(options, &KerasCache::from_env())
    }

    /// [`WeightsSource::resolve`] with an explicit Keras cache.
    pub fn resolve_with(
        &self,
        options: &HubOptions,
        keras: &KerasCache,
    ) -> Result<Option<PathBuf>> {
        Ok(match self {
            Self::Hub {
                repo,
                revision,
                file,
            } => Some(hub::fetch(repo, revision, file, options)?),
            Self::File(path) => Some(path.clone()),
            Self::KerasImageNet(weights) => Some(keras.fetch(*weights, options)?),
            Self::Random { .. } => None,
        })
    }

    /// Load and validate the weights of a network with this backbone and head.
    ///
    /// The backbone's variables must all be present with their shapes. The head's are
    /// optional: files with no `head.` tensors (the ImageNet "notop" case) get a freshly
    /// initialized head, seeded like [`WeightsSource::Random`] (seed 0 for files); a file
    /// with only some of the head's tensors, or with misshapen ones, is an error. Tensors the
    /// network does not use are listed in the report but are not an error.
    ///
    /// ```
    /// use fracture::model::{BackboneConfig, HeadConfig, ResNetV2Config};
    /// use fracture::weights::{HubOptions, WeightsSource};
    /// use candle_core::{Device, Tensor, DType};
    /// let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/keras_resnet_v2/tiny/model.weights.h5");
    /// let config = BackboneConfig::from(ResNetV2Config::custom(vec![2, 2, 2, 2], vec![4, 8, 16, 32]));
    /// let loaded = WeightsSource::file(path).load(&config, &HeadConfig::default(), &Device::Cpu, &HubOptions::from_env())?;
    /// assert!(!loaded.head_loaded);
    /// let (net, _head_vars) = loaded.into_network()?;
    /// let p = net.probabilities(&Tensor::zeros((1, 3, 64, 64), DType::F32, &Device::Cpu)?)?;
    /// assert_eq!(p.dims(), &[1]);
    /// # Ok::<(), fracture::Error>(())
    /// ```
    pub fn load(
        &self,
        backbone: impl Into<BackboneConfig>,
        head: &HeadConfig,
        device: &Device,
        options: &HubOptions,
    ) -> Result<LoadedNetwork> {
        self.load_with(backbone, head, device, options, &KerasCache::from_env())
    }

    /// [`WeightsSource::load`] with an explicit Keras cache (for [`WeightsSource::KerasImageNet`]).
    pub fn load_with(
        &self,
        backbone: impl Into<BackboneConfig>,
        head: &HeadConfig,
        device: &Device,
        options: &HubOptions,
        keras: &KerasCache,
    ) -> Result<LoadedNetwork> {
        let backbone = &backbone.into();
        backbone.validate()?;
        let (weights, head_seed) = match self {
            Self::Random { seed } => (random_weights(backbone, *seed, device)?, *seed),
            _ => (self.read(device, options, keras)?, 0),
        };
        let head_specs = head.variables(backbone.feature_channels());
        let head_present = head_specs
            .iter()
            .filter(|v| weights.contains(&v.name))
            .count();
        let head_loaded = head_present > 0;
        let mut expected = backbone.variables();
        if head_loaded {
            expected.extend(head_specs.iter().cloned());
        }
        let report = weights
            .validate(&expected)
            .map_err(|e| self.explain_mismatch(backbone, e))?;
        Ok(LoadedNetwork {
            backbone_config: backbone.clone(),
            head_config: head.clone(),
            head_specs,
            head_loaded,
            head_seed,
            report,
            weights,
        })
    }
}

impl WeightsSource {
    /// The file's tensors (not `Random`), named after the source in errors.
    fn read(&self, device: &Device, hub: &HubOptions, keras: &KerasCache) -> Result<LoadedWeights> {
        let path = self
            .resolve_with(hub, keras)?
            .ok_or_else(|| Error::InvalidConfig(format!("{} has no file", self.describe())))?;
        let mut weights = read_tensors(&path, device)?;
        if matches!(self, Self::Hub { .. } | Self::KerasImageNet(_)) {
            weights.rename_source(format!("{} ({})", self.describe(), path.display()));
        }
        Ok(weights)
    }

    /// A validation error, with a hint when Keras's ImageNet file of one preset meets another
    /// backbone.
    fn explain_mismatch(&self, backbone: &BackboneConfig, error: Error) -> Error {
        let (
            Self::KerasImageNet(weights),
            Error::Weights {
                source_name,
                message,
            },
        ) = (self, &error)
        else {
            return error;
        };
        let preset = weights.model.config();
        if backbone
            .as_resnet_v2()
            .is_some_and(|c| c.blocks == preset.blocks)
        {
            return error;
        }
        Error::Weights {
            source_name: source_name.clone(),
            message: format!(
                "{message} (these are the weights of ResNetV2 {:?}; the backbone is {})",
                preset.blocks,
                backbone.describe()
            ),
        }
    }

    /// Load Keras's ImageNet classifier from a "top" file (backbone, `avg_pool`, `predictions`):
    /// the backbone's variables and `predictions.{weight,bias}` must all be present with
    /// matching shapes (the class count is the file's).
    ///
    /// ```no_run
    /// use fracture::model::ResNetV2Config;
    /// use fracture::weights::{HubOptions, KerasCache, KerasImageNet, ResNetV2Preset, WeightsSource};
    /// use fracture::preprocess::Preprocess;
    /// let top = WeightsSource::KerasImageNet(KerasImageNet::top(ResNetV2Preset::ResNet152V2));
    /// let clf = top.load_imagenet_classifier(ResNetV2Config::resnet152v2(), &candle_core::Device::Cpu,
    ///     &HubOptions::from_env(), &KerasCache::from_env())?;
    /// let photo = image::open("dog.jpg").unwrap();
    /// println!("{:?}", clf.top_k(&photo, &Preprocess::default(), 5)?); // (ImageNet class, probability)
    /// # Ok::<(), fracture::Error>(())
    /// ```
    pub fn load_imagenet_classifier(
        &self,
        backbone: impl Into<BackboneConfig>,
        device: &Device,
        hub: &HubOptions,
        keras: &KerasCache,
    ) -> Result<ImageNetClassifier> {
        let backbone = &backbone.into();
        backbone.validate()?;
        let weights = match self {
            Self::Random { .. } => return Err(Error::InvalidConfig(
                "an ImageNet classifier needs weights with a `predictions` layer, not random ones"
                    .into(),
            )),
            _ => self.read(device, hub, keras)?,
        };
        let classes = match weights
            .shapes()
            .get("predictions.weight")
            .map(Vec::as_slice)
        {
            Some([classes, _]) => *classes,
            other => {
                return Err(Error::Weights {
                    source_name: weights.source_name().to_string(),
                    message: format!(
                        "no ImageNet top: expected a `predictions` dense layer (Keras's \"top\" \
                         file, not the \"notop\" one), found {}",
                        other.map_or("none".to_string(), |s| format!("shape {s:?}"))
                    ),
                })
            }
        };
        let mut expected = backbone.variables();
        let channels = backbone.feature_channels();
        for (name, shape) in [("weight", vec![classes, channels]), ("bias", vec![classes])] {
            expected.push(VariableSpec {
                name: format!("predictions.{name}"),
                shape,
            });
        }
        weights
            .validate(&expected)
            .map_err(|e| self.explain_mismatch(backbone, e))?;
        ImageNetClassifier::new(backbone, classes, weights.into_var_builder(), device)
    }
}

/// Validated weights, ready to become a [`FractureNet`].
#[derive(Debug)]
pub struct LoadedNetwork {
    backbone_config: BackboneConfig,
    head_config: HeadConfig,
    head_specs: Vec<VariableSpec>,
    /// Whether the head came from the weights (`false`: it will be freshly initialized).
    pub head_loaded: bool,
    head_seed: u64,
    /// What validation found (unexpected tensors are listed here).
    pub report: ValidationReport,
    weights: LoadedWeights,
}

impl LoadedNetwork {
    /// The loaded weights themselves.
    pub fn weights(&self) -> &LoadedWeights {
        &self.weights
    }

    /// The head's variables (names without the `head.` prefix): taken from the weights when
    /// they hold a head, else freshly and reproducibly initialized ([`init_variables`]).
    fn head_tensors(&self) -> Result<Vec<(String, Tensor)>> {
        let values = if self.head_loaded {
            self.head_specs
                .iter()
                .map(|spec| Ok((spec.name.clone(), self.weights.get(&spec.name)?)))
                .collect::<Result<Vec<_>>>()?
        } else {
            init_variables(&self.head_specs, self.head_seed, self.weights.device())?
        };
        Ok(values
            .into_iter()
            .map(|(name, value)| {
                let short = name.strip_prefix("head.").unwrap_or(&name).to_string();
                (short, value)
            })
            .collect())
    }

    /// Every variable of the network by its full name (backbone at the root, head under
    /// `head.`), the head initialized as [`LoadedNetwork::into_network`] does.
    ///
    /// ```
    /// use fracture::model::{BackboneConfig, HeadConfig, ResNetV2Config};
    /// use fracture::weights::{HubOptions, WeightsSource};
    /// let config = BackboneConfig::from(ResNetV2Config::custom(vec![2, 2], vec![4, 8]));
    /// let loaded = WeightsSource::Random { seed: 1 }
    ///     .load(&config, &HeadConfig::default(), &candle_core::Device::Cpu, &HubOptions::from_env())?;
    /// let tensors = loaded.into_tensors()?;
    /// assert_eq!(tensors.len(), config.variables().len() + 4);
    /// assert_eq!(tensors["head.logit.weight"].dims(), &[1, 256]);
    /// # Ok::<(), fracture::Error>(())
    /// ```
    pub fn into_tensors(self) -> Result<HashMap<String, Tensor>> {
        let mut tensors = self
            .backbone_config
            .variables()
            .into_iter()
            .map(|spec| Ok((spec.name.clone(), self.weights.get(&spec.name)?)))
            .collect::<Result<HashMap<_, _>>>()?;
        for (name, value) in self.head_tensors()? {
            tensors.insert(format!("head.{name}"), value);
        }
        Ok(tensors)
    }

    /// Build the network: the backbone reads its variables from the weights (constants, not
    /// trained), the head's variables live in the returned `VarMap` (what an optimizer gets),
    /// initialized from the weights when they hold a head, else freshly and reproducibly.
    pub fn into_network(self) -> Result<(FractureNet, VarMap)> {
        let device = self.weights.device().clone();
        let varmap = VarMap::new();
        {
            let mut data = varmap
                .data()
                .lock()
                .map_err(|_| Error::Training("the VarMap's lock is poisoned".into()))?;
            for (name, value) in self.head_tensors()? {
                data.insert(name, Var::from_tensor(&value)?);
            }
        }
        let vb = self.weights.into_var_builder();
        let backbone = Backbone::new(&self.backbone_config, vb)?;
        let head_vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
        let head = ClassifierHead::new(
            self.backbone_config.feature_channels(),
            &self.head_config,
            head_vb,
        )?;
        Ok((FractureNet::from_parts(backbone, head), varmap))
    }
}

/// Random backbone weights for `config`, reproducible from `seed` ([`init_variables`]).
fn random_weights(config: &BackboneConfig, seed: u64, device: &Device) -> Result<LoadedWeights> {
    let tensors = init_variables(&config.variables(), seed, device)?
        .into_iter()
        .collect::<HashMap<_, _>>();
    Ok(LoadedWeights::from_tensors(
        format!("random(seed {seed})"),
        tensors,
        device,
    ))
}

impl std::str::FromStr for WeightsSource {
    type Err = Error;

    /// Parse a command-line description: `random`, `random:SEED`,
    /// `hub:OWNER/NAME[@REVISION][:FILE]`, `imagenet` (Keras's ResNet152V2 file, no top),
    /// `imagenet:MODEL[:top]` (`resnet50v2`, `resnet101v2` or `resnet152v2`), or a path to a
    /// file.
    ///
    /// ```
    /// use fracture::WeightsSource;
    /// let hub: WeightsSource = "hub:org/resnet152v2@v1:notop.h5".parse()?;
    /// assert_eq!(hub, WeightsSource::Hub { repo: "org/resnet152v2".into(), revision: "v1".into(), file: "notop.h5".into() });
    /// assert_eq!("random:7".parse::<WeightsSource>()?, WeightsSource::Random { seed: 7 });
    /// assert_eq!("w.safetensors".parse::<WeightsSource>()?, WeightsSource::file("w.safetensors"));
    /// assert!("random:x".parse::<WeightsSource>().is_err());
    /// assert_eq!("imagenet".parse::<WeightsSource>()?, WeightsSource::imagenet());
    /// use fracture::weights::{KerasImageNet, ResNetV2Preset};
    /// assert_eq!("imagenet:resnet50v2:top".parse::<WeightsSource>()?,
    ///            WeightsSource::KerasImageNet(KerasImageNet::top(ResNetV2Preset::ResNet50V2)));
    /// assert!("imagenet:resnet18".parse::<WeightsSource>().is_err());
    /// # Ok::<(), fracture::Error>(())
    /// ```
    fn from_str(text: &str) -> Result<Self> {
        if text == "random" {
            return Ok(Self::Random { seed: 0 });
        }
        if let Some(seed) = text.strip_prefix("random:") {
            let seed = seed.parse().map_err(|_| {
                Error::InvalidConfig(format!("bad seed in {text:?}: expected random:NUMBER"))
            })?;
            return Ok(Self::Random { seed });
        }
        if text == "imagenet" {
            return Ok(Self::imagenet());
        }
        if let Some(spec) = text.strip_prefix("imagenet:") {
            return parse_imagenet(text, spec);
        }
        if let Some(spec) = text.strip_prefix("hub:") {
            let (repo_rev, file) = match spec.split_once(':') {
                Some((r, f)) if !f.is_empty() => (r, f.to_string()),
                _ => (spec, DEFAULT_HUB_FILE.to_string()),
            };
            let (repo, revision) = match repo_rev.split_once('@') {
                Some((r, rev)) if !rev.is_empty() => (r, rev.to_string()),
                _ => (repo_rev, "main".to_string()),
            };
            if repo.split('/').filter(|p| !p.is_empty()).count() != 2 {
                return Err(Error::InvalidConfig(format!(
                    "bad hub repository in {text:?}: expected hub:OWNER/NAME[@REVISION][:FILE]"
                )));
            }
            return Ok(Self::Hub {
                repo: repo.to_string(),
                revision,
                file,
            });
        }
        Ok(Self::File(PathBuf::from(text)))
    }
}

/// `MODEL[:top|:notop]` after `imagenet:`.
fn parse_imagenet(text: &str, spec: &str) -> Result<WeightsSource> {
    let (model, top) = match spec.split_once(':') {
        Some((model, "top")) => (model, true),
        Some((model, "notop")) => (model, false),
        Some(_) => (spec, false),
        None => (spec, false),
    };
    let model = ResNetV2Preset::from_name(model).ok_or_else(|| {
        Error::InvalidConfig(format!(
            "bad ImageNet weights {text:?}: expected imagenet:MODEL[:top] with MODEL one of {}",
            ResNetV2Preset::ALL.map(|p| p.keras_name()).join(", ")
        ))
    })?;
    Ok(WeightsSource::KerasImageNet(KerasImageNet {
        model,
        include_top: top,
    }))
}
