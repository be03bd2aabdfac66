//! Importing a whole saved Keras model (the reference notebook's `ModelCheckpoint` file):
//! legacy HDF5 full models of Keras 2 and Keras 3 and Keras 3 `.keras` zips, recognised by
//! content.
//!
//! The model's own configuration says what it is: a ResNetV2 backbone with Keras's layer names
//! (50V2/101V2/152V2 or any stacks; [`resnet`]) and the notebook's head, found by structure
//! ([`head`]). The result, [`KerasModel`], is what [`crate::FractureClassifier`] needs: backbone
//! and head configurations, every tensor in our naming and layout, the input size, and the
//! meaning of the sigmoid. Anything else is an [`crate::Error::Format`] naming the file and
//! what was found.
//!
//! **Orientation.** The notebook's `flow_from_directory` sorts the class folders, so
//! `Fractured` is class 0 and its sigmoid is P(Not_Fractured). [`SigmoidOutput::NotFractured`]
//! (the default) assumes that and flips the final layer (weight and bias negated), so that the
//! imported logit is the fracture logit; [`SigmoidOutput::Fractured`] keeps it as it is.

mod container;
mod graph;
mod head;
mod resnet;

pub use container::KerasModelFormat;

use crate::error::{Error, Result};
use crate::model::{BackboneConfig, HeadConfig};
use crate::weights::keras::{candle_layout, candle_name};
use crate::weights::ValidationReport;
use candle_core::Tensor;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

/// What the saved model's sigmoid output is the probability of.
///
/// ```
/// use fracture::weights::keras_model::SigmoidOutput;
/// assert_eq!(SigmoidOutput::default(), SigmoidOutput::NotFractured); // the notebook's classes
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SigmoidOutput {
    /// P(Not_Fractured): class folders sorted alphabetically (`Fractured` = 0,
    /// `Not_Fractured` = 1), as the reference notebook's `flow_from_directory` makes them. The
    /// import negates the final layer so the classifier reports P(fracture).
    #[default]
    NotFractured,
    /// P(fracture): a model trained with fractures as class 1.
    Fractured,
}

/// Options of [`read_keras_model`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KerasModelOptions {
    /// What the model's sigmoid means (default: the notebook's P(Not_Fractured)).
    pub sigmoid: SigmoidOutput,
}

/// A saved Keras model, read and checked, in our naming.
///
/// ```
/// use fracture::weights::keras_model::{read_keras_model, KerasModelFormat, KerasModelOptions};
/// let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/keras_head/notebook_model.keras");
/// let model = read_keras_model(path, &KerasModelOptions::default())?;
/// assert_eq!(model.format, KerasModelFormat::KerasZip);
/// assert_eq!(model.image_size, Some((160, 128)));
/// assert_eq!(model.head.hidden, 8);
/// assert_eq!(model.tensors["head.logit.weight"].dims(), &[1, 8]);
/// # Ok::<(), fracture::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct KerasModel {
    /// The file it was read from.
    pub path: PathBuf,
    /// How it was saved.
    pub format: KerasModelFormat,
    /// The Keras version that wrote it, when recorded.
    pub keras_version: Option<String>,
    /// The backbone's shape, read from the layers.
    pub backbone: BackboneConfig,
    /// The head's width and dropout.
    pub head: HeadConfig,
    /// The model's input (height, width), `None` when the model leaves it open.
    pub image_size: Option<(usize, usize)>,
    /// The Keras names of the head's hidden and output Dense layers.
    pub head_layers: (String, String),
    /// What the saved sigmoid meant (the tensors already report P(fracture)).
    pub sigmoid: SigmoidOutput,
    /// Every variable in our naming and layout (backbone at the root, head under `head.`), on
    /// the CPU, the final layer oriented so that its logit is the fracture logit.
    pub tensors: HashMap<String, Tensor>,
}

/// Whether `path` is a file that starts like a saved Keras model (HDF5 or zip); a folder is
/// not. Checks the first bytes only.
///
/// ```
/// use fracture::weights::keras_model::looks_like_keras_model;
/// let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/keras_head");
/// assert!(looks_like_keras_model(format!("{dir}/notebook_model.keras"))?);
/// assert!(!looks_like_keras_model(format!("{dir}/config.json"))?);
/// assert!(!looks_like_keras_model(dir)?);
/// # Ok::<(), fracture::Error>(())
/// ```
pub fn looks_like_keras_model(path: impl AsRef<Path>) -> Result<bool> {
    container::looks_like_keras_model(path.as_ref())
}

/// Read a saved Keras model and check that it is the notebook's architecture, with weights
/// that match its configuration.
///
/// ```
/// use fracture::weights::keras_model::{read_keras_model, KerasModelOptions};
/// let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/keras_head");
/// let model = read_keras_model(format!("{dir}/notebook_model_tf_keras.h5"), &KerasModelOptions::default())?;
/// assert_eq!(model.backbone.describe(), "ResNetV2 [2, 2, 2, 2]");
/// assert_eq!(model.head_layers, ("dense".to_string(), "dense_1".to_string()));
/// let err = read_keras_model(format!("{dir}/notebook_io.safetensors"), &KerasModelOptions::default());
/// assert!(err.unwrap_err().to_string().contains("not a saved Keras model"));
/// # Ok::<(), fracture::Error>(())
/// ```
pub fn read_keras_model(path: impl AsRef<Path>, options: &KerasModelOptions) -> Result<KerasModel> {
    let path = path.as_ref();
    let saved = container::open(path)?;
    let fail = |message: String| container::format_error(path, message);
    let graph = &saved.graph;
    if !matches!(graph.class.as_str(), "Functional" | "Model") {
        return Err(fail(format!(
            "a {} model; the notebook's model is Functional (ResNetV2 base_model.output → head)",
            graph.class
        )));
    }
    let inputs: Vec<&graph::Layer> = graph
        .layers
        .iter()
        .filter(|l| l.class == "InputLayer")
        .collect();
    let input = match inputs.as_slice() {
        [one] => *one,
        other => return Err(fail(format!("{} input layers; expected one", other.len()))),
    };
    let (height, width, channels) = graph::input_shape(input).ok_or_else(|| {
        fail(format!(
            "input layer {} has no (batch, height, width, channels) shape",
            input.describe()
        ))
    })?;
    if channels.is_some_and(|c| c != 3) {
        return Err(fail(format!(
            "the model takes {channels:?} input channels; images are read as RGB (3)"
        )));
    }
    if let Some(nested) = graph
        .layers
        .iter()
        .find(|l| matches!(l.class.as_str(), "Functional" | "Model" | "Sequential"))
    {
        return Err(fail(format!(
            "unexpected layer {}: a nested model; build the model on base_model.output as the \
             notebook does (a flat model whose layers are the backbone's own)",
            nested.describe()
        )));
    }
    let head = head::find(graph).map_err(&fail)?;
    let backbone = resnet::find(graph, &input.name, 3).map_err(&fail)?;
    let extra: Vec<String> = graph
        .layers
        .iter()
        .filter(|l| {
            l.name != input.name
                && !backbone.layers.contains(&l.name)
                && !head.layers.contains(&l.name)
        })
        .map(graph::Layer::describe)
        .collect();
    if !extra.is_empty() {
        return Err(fail(format!(
            "unexpected layer {}: not part of Keras's ResNetV2 or the notebook's head{}",
            extra.join(", "),
            if extra.len() > 1 { " (each)" } else { "" }
        )));
    }
    let head_config = HeadConfig {
        hidden: head.hidden,
        dropout: head.dropout,
        localization: None,
    };
    let backbone_config = BackboneConfig::from(backbone.config);
    let tensors = convert(saved.weights, &head.dense, &head.logit)?;
    let mut expected = backbone_config.variables();
    expected.extend(head_config.variables(backbone_config.feature_channels()));
    let shapes: BTreeMap<String, Vec<usize>> = tensors
        .iter()
        .map(|(n, t)| (n.clone(), t.dims().to_vec()))
        .collect();
    let report = ValidationReport::compare(&shapes, &expected);
    if !report.is_complete() || !report.unexpected.is_empty() {
        return Err(fail(format!(
            "the stored weights disagree with the model's config: {}",
            report.describe()
        )));
    }
    let tensors = orient(tensors, options.sigmoid)?;
    let dimension = |d: Option<u64>| d.and_then(|d| usize::try_from(d).ok());
    Ok(KerasModel {
        path: path.to_path_buf(),
        format: saved.format,
        keras_version: saved.keras_version,
        backbone: backbone_config,
        head: head_config,
        image_size: dimension(height).zip(dimension(width)),
        head_layers: (head.dense, head.logit),
        sigmoid: options.sigmoid,
        tensors,
    })
}

/// Keras names (`layer/weight`) and layouts to ours; the head's two Dense layers become
/// `head.dense` and `head.logit`.
fn convert(
    weights: HashMap<String, Tensor>,
    dense: &str,
    logit: &str,
) -> Result<HashMap<String, Tensor>> {
    let mut out = HashMap::with_capacity(weights.len());
    for (key, tensor) in weights {
        let (layer, weight) = key.rsplit_once('/').unwrap_or(("", key.as_str()));
        let name = if layer == dense || layer == logit {
            let ours = if layer == dense { "dense" } else { "logit" };
            let short = candle_name(ours, weight)?;
            format!("head.{short}")
        } else {
            // A weight this mapping does not know keeps its key: validation lists it.
            candle_name(layer, weight).unwrap_or(key.clone())
        };
        if out.insert(name.clone(), candle_layout(&tensor)?).is_some() {
            return Err(Error::InvalidInput(format!(
                "two Keras variables map to {name}"
            )));
        }
    }
    Ok(out)
}

/// Negate the final layer when the saved sigmoid is P(Not_Fractured):
/// `1 - sigmoid(z) = sigmoid(-z)`.
fn orient(
    mut tensors: HashMap<String, Tensor>,
    sigmoid: SigmoidOutput,
) -> Result<HashMap<String, Tensor>> {
    if sigmoid == SigmoidOutput::NotFractured {
        for name in ["head.logit.weight", "head.logit.bias"] {
            if let Some(value) = tensors.get_mut(name) {
                *value = value.neg()?;
            }
        }
    }
    Ok(tensors)
}
