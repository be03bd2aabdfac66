//! Opening a saved Keras model, recognised by content: a legacy HDF5 full model (Keras 2 or 3
//! `model.save("x.h5")`: `model_config` attribute, weights under `model_weights/`) or a Keras 3
//! `.keras` zip (`config.json`, `metadata.json`, `model.weights.h5`). Optimizer state is never
//! read.

use super::graph::Graph;
use crate::error::{Error, Result};
use crate::weights::h5::{self, Keras3Vars, HDF5_SIGNATURE};
use crate::weights::keras::LayerKind;
use candle_core::Tensor;
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// How a Keras model was saved.
///
/// ```
/// use fracture::weights::keras_model::{read_keras_model, KerasModelFormat};
/// let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/keras_head/notebook_model.h5");
/// let model = read_keras_model(path, &Default::default())?;
/// assert_eq!(model.format, KerasModelFormat::LegacyH5Keras3);
/// # Ok::<(), fracture::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KerasModelFormat {
    /// `model.save("x.h5")` by Keras 2 (tf_keras, TensorFlow up to 2.15).
    LegacyH5Keras2,
    /// `model.save("x.h5")` by Keras 3 (its legacy HDF5 writer).
    LegacyH5Keras3,
    /// `model.save("x.keras")` by Keras 3: a zip of `config.json` and `model.weights.h5`.
    KerasZip,
}

/// A saved model's parts: its config and its weights keyed `layer/weight` (Keras names).
pub(crate) struct Saved {
    pub format: KerasModelFormat,
    pub keras_version: Option<String>,
    pub graph: Graph,
    pub weights: HashMap<String, Tensor>,
}

/// The first bytes of a zip archive (a local file header, or an empty archive's end record).
const ZIP_SIGNATURES: [[u8; 4]; 2] = [*b"PK\x03\x04", *b"PK\x05\x06"];

/// The inner weights file of a `.keras` zip.
const ZIP_WEIGHTS: &str = "model.weights.h5";

pub(crate) fn format_error(path: &Path, message: impl Into<String>) -> Error {
    Error::Format {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Whether the file at `path` starts like a saved Keras model could (HDF5 or zip).
pub(crate) fn looks_like_keras_model(path: &Path) -> Result<bool> {
    Ok(sniff(path)?.is_some())
}

#[derive(Clone, Copy)]
enum Container {
    Hdf5,
    Zip,
}

fn sniff(path: &Path) -> Result<Option<Container>> {
    if path.is_dir() {
        return Ok(None);
    }
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut head = Vec::with_capacity(8);
    file.by_ref()
        .take(8)
        .read_to_end(&mut head)
        .map_err(|e| Error::io(path, e))?;
    Ok(if head.starts_with(&HDF5_SIGNATURE) {
        Some(Container::Hdf5)
    } else if ZIP_SIGNATURES.iter().any(|s| head.starts_with(s)) {
        Some(Container::Zip)
    } else {
        None
    })
}

/// Open a saved model by content.
pub(crate) fn open(path: &Path) -> Result<Saved> {
    if path.is_dir() {
        return Err(format_error(
            path,
            "a folder, not a saved Keras model file: a TensorFlow SavedModel folder is not \
             supported (save with model.save(\"model.keras\") or model.save(\"model.h5\")); a \
             fracture bundle folder opens with FractureClassifier::load",
        ));
    }
    match sniff(path)? {
        Some(Container::Hdf5) => open_hdf5(path),
        Some(Container::Zip) => open_zip(path),
        None => Err(format_error(
            path,
            "not a saved Keras model: neither an HDF5 file (model.save(\"*.h5\")) nor a zip \
             (model.save(\"*.keras\"))",
        )),
    }
}

fn parse_graph(text: &str, path: &Path) -> Result<Graph> {
    Graph::parse(text).map_err(|e| format_error(path, e))
}

fn open_hdf5(path: &Path) -> Result<Saved> {
    let (config, version, weights) = h5::with_h5(path, None, |file, limit| {
        let config = h5::root_string(file, "model_config")?;
        let Some(config) = config else {
            let groups = file.root().groups().map_err(|e| e.to_string())?;
            let weights_only = groups.iter().any(|g| g == "layers")
                || file
                    .root()
                    .attrs()
                    .is_ok_and(|a| a.keys().any(|k| k.starts_with("layer_names")));
            return Err(if weights_only {
                "a weights-only file (model.save_weights / .weights.h5): it holds no architecture \
                 (no `model_config`); pass the whole saved model (model.save(\"*.h5\") or \
                 \"*.keras\"), or load these weights onto a backbone you configure with \
                 WeightsSource::file"
                    .to_string()
            } else {
                "an HDF5 file without a `model_config` attribute: not a saved Keras model".into()
            });
        };
        let version = h5::root_string(file, "keras_version")?;
        Ok((config, version, h5::read_root(file, limit)?))
    })?;
    let format = match version.as_deref() {
        Some(v) if v.starts_with('2') || v.starts_with('1') => KerasModelFormat::LegacyH5Keras2,
        _ => KerasModelFormat::LegacyH5Keras3,
    };
    Ok(Saved {
        format,
        keras_version: version,
        graph: parse_graph(&config, path)?,
        weights,
    })
}

fn open_zip(path: &Path) -> Result<Saved> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let zip_error = |e: zip::result::ZipError| {
        format_error(
            path,
            format!("not a readable .keras zip (truncated or damaged?): {e}"),
        )
    };
    let mut archive = zip::ZipArchive::new(file).map_err(zip_error)?;
    let names: Vec<String> = archive
        .file_names()
        .filter_map(|n| n.ok().map(|n| n.into_owned()))
        .collect();
    let mut entry = |name: &str| -> Result<Vec<u8>> {
        let mut inner = archive.by_name(name).map_err(|e| match e {
            zip::result::ZipError::FileNotFound => format_error(
                path,
                format!("no {name} in the zip (it holds {names:?}): not a Keras 3 .keras model"),
            ),
            other => zip_error(other),
        })?;
        // A stored entry cannot be larger than the archive; refuse a damaged size field.
        if inner.size() > file_len {
            return Err(format_error(
                path,
                format!("{name}: size {} exceeds the zip", inner.size()),
            ));
        }
        let mut bytes = Vec::new();
        inner
            .by_ref()
            .take(file_len)
            .read_to_end(&mut bytes)
            .map_err(|e| format_error(path, format!("{name}: cannot read it from the zip: {e}")))?;
        Ok(bytes)
    };
    let config = String::from_utf8(entry("config.json")?)
        .map_err(|_| format_error(path, "config.json is not UTF-8 text"))?;
    let version = entry("metadata.json")
        .ok()
        .and_then(|m| serde_json::from_slice::<serde_json::Value>(&m).ok())
        .and_then(|m| m.get("keras_version")?.as_str().map(str::to_string));
    let weights_bytes = entry(ZIP_WEIGHTS)?;
    let graph = parse_graph(&config, path)?;
    let inner_path: PathBuf = path.join(ZIP_WEIGHTS);
    let vars = h5::with_h5(&inner_path, Some(weights_bytes), h5::read_keras3_vars)?;
    let weights = name_by_position(&graph, vars).map_err(|e| format_error(&inner_path, e))?;
    Ok(Saved {
        format: KerasModelFormat::KerasZip,
        keras_version: version,
        graph,
        weights,
    })
}

/// Keras 3 files its layers' variables under `layers/<class name>[_n]` (the n-th layer of that
/// class in the model, counted from 0), not under the layers' names: the same walk over the
/// config gives each folder its layer, as Keras's own loader does. A recorded `name` attribute
/// must agree.
fn name_by_position(
    graph: &Graph,
    vars: Vec<Keras3Vars>,
) -> std::result::Result<HashMap<String, Tensor>, String> {
    let mut counters: HashMap<String, usize> = HashMap::new();
    let mut by_folder = HashMap::new();
    for layer in &graph.layers {
        let base = snake_case(&layer.class);
        let count = counters.entry(base.clone()).or_insert(0);
        let folder = match *count {
            0 => base,
            n => format!("{base}_{n}"),
        };
        *count += 1;
        by_folder.insert(folder, layer);
    }
    let mut weights = HashMap::new();
    for entry in vars {
        let layer = by_folder.get(&entry.path).ok_or_else(|| {
            format!(
                "weights under layers/{}, a layer the config does not have",
                entry.path
            )
        })?;
        if let Some(name) = entry.name.as_ref().filter(|n| **n != layer.name) {
            return Err(format!(
                "the weights under layers/{} are named `{name}`, but the config puts `{}` there",
                entry.path, layer.name
            ));
        }
        let kind = match layer.class.as_str() {
            "Conv2D" => LayerKind::Conv,
            "Dense" => LayerKind::Dense,
            "BatchNormalization" => LayerKind::BatchNorm,
            _ => {
                return Err(format!(
                    "weights under layers/{} for {}, a layer that has none in the notebook's model",
                    entry.path,
                    layer.describe()
                ))
            }
        };
        for (index, tensor) in entry.tensors.into_iter().enumerate() {
            let weight = kind.weight_name(index).ok_or_else(|| {
                format!(
                    "layer {} has more variables than a {} has",
                    layer.describe(),
                    layer.class
                )
            })?;
            weights.insert(format!("{}/{weight}", layer.name), tensor);
        }
    }
    Ok(weights)
}

/// Keras's `to_snake_case` of a class name (`BatchNormalization` → `batch_normalization`,
/// `GlobalAveragePooling2D` → `global_average_pooling2d`): drop non-word characters, then
/// `(.)([A-Z][a-z]+)` → `\1_\2`, then `([a-z])([A-Z])` → `\1_\2`, then lower case.
pub(crate) fn snake_case(name: &str) -> String {
    let chars: Vec<char> = name
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    let mut first = Vec::with_capacity(chars.len() + 4);
    let mut i = 0;
    while let Some(&c) = chars.get(i) {
        let next = chars.get(i + 1).copied();
        let after = chars.get(i + 2).copied();
        if next.is_some_and(|n| n.is_ascii_uppercase())
            && after.is_some_and(|a| a.is_ascii_lowercase())
        {
            first.extend([c, '_']);
            first.extend(next);
            let mut j = i + 2;
            while let Some(&l) = chars.get(j).filter(|l| l.is_ascii_lowercase()) {
                first.push(l);
                j += 1;
            }
            i = j;
        } else {
            first.push(c);
            i += 1;
        }
    }
    let mut out = String::with_capacity(first.len() + 4);
    let mut i = 0;
    while let Some(&c) = first.get(i) {
        match first.get(i + 1) {
            Some(&n) if c.is_ascii_lowercase() && n.is_ascii_uppercase() => {
                out.extend([c, '_', n]);
                i += 2;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    out.to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::snake_case;

    #[test]
    fn snake_case_matches_keras() {
        for (class, folder) in [
            ("BatchNormalization", "batch_normalization"),
            ("GlobalAveragePooling2D", "global_average_pooling2d"),
            ("ZeroPadding2D", "zero_padding2d"),
            ("MaxPooling2D", "max_pooling2d"),
            ("Conv2D", "conv2d"),
            ("InputLayer", "input_layer"),
            ("Dense", "dense"),
            ("Add", "add"),
        ] {
            assert_eq!(snake_case(class), folder);
        }
    }
}
