//! Keras HDF5 weight files, read with the pure-Rust `hdf5-pure` crate.
//!
//! Three layouts are understood, all matched by layer name, never by order:
//! * classic Keras 2 (`*_notop.h5` from keras-applications, `model.save_weights("x.h5")`): the
//!   root's `layer_names` attribute lists the layers, each layer group's `weight_names`
//!   attribute lists its datasets (`conv1_conv/kernel:0`);
//! * Keras 3's legacy writer: the same without the `:0` suffixes;
//! * Keras 3 native `.weights.h5`: `layers/<class auto name>/vars/0..N`, where the Keras layer
//!   name is the `name` attribute of the `vars` group and the variable's meaning follows from
//!   its position (see [`super::keras::LayerKind`]).
//!
//! A whole-model file (`model.save("x.h5")`) keeps the same structure under `model_weights`.
//! The result is Keras-named, Keras-layout tensors (`conv1_conv/kernel`); [`super::keras`]
//! turns them into ours.

use super::keras::LayerKind;
use crate::error::{Error, Result};
use candle_core::{Device, Tensor};
use hdf5_pure::{AttrValue, File, Group};
use std::collections::HashMap;
use std::path::Path;

/// The 8-byte signature every HDF5 file starts with (possibly after a user block).
pub const HDF5_SIGNATURE: [u8; 8] = [0x89, b'H', b'D', b'F', b'\r', b'\n', 0x1a, b'\n'];

/// Read every weight tensor of a Keras HDF5 file, keyed `layer/weight` (Keras names, Keras
/// layouts, `f32`, on the CPU).
///
/// ```
/// let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/keras_resnet_v2/tiny/legacy_tf_keras.h5");
/// let tensors = fracture::weights::h5::read_keras_h5(path)?;
/// assert_eq!(tensors["conv1_conv/kernel"].dims(), &[7, 7, 3, 64]);
/// # Ok::<(), fracture::Error>(())
/// ```
pub fn read_keras_h5(path: impl AsRef<Path>) -> Result<HashMap<String, Tensor>> {
    let path = path.as_ref();
    let tensors = with_h5(path, None, read_root)?;
    if tensors.is_empty() {
        return Err(Error::Format {
            path: path.to_path_buf(),
            message: "no Keras weights found: expected a root `layer_names` attribute (Keras 2 / \
                      legacy .h5) or a `layers/.../vars` tree (Keras 3 .weights.h5)"
                .into(),
        });
    }
    Ok(tensors)
}

/// Open an HDF5 file (from `bytes` when given, else from `path`) and run `read` on it; any
/// failure, a panic of the third-party parser included, becomes an [`Error::Format`] naming
/// `path` (the guard keeps a bug in the parser from taking the caller's process down on a
/// hostile file).
pub(crate) fn with_h5<T>(
    path: &Path,
    bytes: Option<Vec<u8>>,
    read: impl FnOnce(&File, Limit) -> std::result::Result<T, String>,
) -> Result<T> {
    let format_error = |message: String| Error::Format {
        path: path.to_path_buf(),
        message,
    };
    let guarded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let bytes = match bytes {
            Some(bytes) => bytes,
            None => std::fs::read(path).map_err(|e| format!("cannot read the file: {e}"))?,
        };
        // Keras never compresses weights: no dataset holds more values than the file has
        // bytes, which bounds what a damaged size field can make us allocate.
        let limit = Limit {
            max_values: bytes.len(),
        };
        let length = bytes.len() as u64;
        let file = File::from_bytes(bytes)
            .map_err(|e| format!("not a readable HDF5 file (truncated or damaged?): {e}"))?;
        // The superblock records where the file ends: a shorter file was cut off, even when
        // the part still there (weights before optimizer state) would read.
        let superblock = file.superblock();
        let end = superblock
            .eof_address
            .checked_add(superblock.base_address.get())
            .ok_or("the HDF5 superblock's end-of-file address overflows (damaged?)")?;
        if end > length {
            return Err(format!(
                "truncated: the file has {length} bytes, its HDF5 superblock says {end}"
            ));
        }
        read(&file, limit)
    }));
    match guarded {
        Ok(result) => result.map_err(format_error),
        Err(_) => Err(format_error(
            "the HDF5 reader failed on this file (it is malformed or uses an unsupported feature)"
                .into(),
        )),
    }
}

/// A string attribute of the root group (`model_config`, `keras_version`), if present.
pub(crate) fn root_string(file: &File, name: &str) -> std::result::Result<Option<String>, String> {
    Ok(string_list(&file.root(), name)?
        .and_then(|mut values| (values.len() == 1).then(|| values.remove(0))))
}

type Found = HashMap<String, Tensor>;

/// The most values a dataset of the file being read may declare.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limit {
    max_values: usize,
}

/// Every weight of a file in any of the three layouts, keyed `layer/weight`.
pub(crate) fn read_root(file: &File, limit: Limit) -> std::result::Result<Found, String> {
    let root = file.root();
    let groups = root.groups().map_err(|e| e.to_string())?;
    let mut found = Found::new();
    if string_list(&root, "layer_names")?.is_some() {
        read_legacy(&root, limit, &mut found)?;
    } else if groups.iter().any(|g| g == "model_weights") {
        let weights = root.group("model_weights").map_err(|e| e.to_string())?;
        read_legacy(&weights, limit, &mut found)?;
    } else if groups.iter().any(|g| g == "layers") {
        let layers = root.group("layers").map_err(|e| e.to_string())?;
        read_keras3(&layers, "layers", limit, &mut found)?;
    }
    Ok(found)
}

/// A string-list attribute, joining Keras's `name0`, `name1`, ... chunks for long lists.
fn string_list(group: &Group, name: &str) -> std::result::Result<Option<Vec<String>>, String> {
    let attrs = group.attrs().map_err(|e| e.to_string())?;
    if let Some(value) = attrs.get(name) {
        return Ok(Some(strings_of(value)));
    }
    let mut out: Option<Vec<String>> = None;
    for chunk in 0.. {
        match attrs.get(&format!("{name}{chunk}")) {
            Some(value) => out.get_or_insert_with(Vec::new).extend(strings_of(value)),
            None => break,
        }
    }
    Ok(out)
}

/// The strings an attribute holds; an empty list is stored by h5py as an empty float array.
fn strings_of(value: &AttrValue) -> Vec<String> {
    match value {
        AttrValue::StringArray(v)
        | AttrValue::AsciiStringArray(v)
        | AttrValue::VarLenStringArray(v)
        | AttrValue::VarLenAsciiStringArray(v)
        | AttrValue::VarLenAsciiCharArray(v) => v.clone(),
        AttrValue::StringArraySized { values, .. }
        | AttrValue::AsciiStringArraySized { values, .. } => values.clone(),
        AttrValue::String(s)
        | AttrValue::AsciiString(s)
        | AttrValue::VarLenString(s)
        | AttrValue::VarLenAsciiString(s) => vec![s.clone()],
        AttrValue::StringSized { value, .. } | AttrValue::AsciiStringSized { value, .. } => {
            vec![value.clone()]
        }
        _ => Vec::new(),
    }
    .into_iter()
    .map(|s| s.trim_end_matches('\0').to_string())
    .collect()
}

/// Keras 2 / legacy layout: `layer_names` on `group`, `weight_names` on each layer group.
fn read_legacy(group: &Group, limit: Limit, found: &mut Found) -> std::result::Result<(), String> {
    let layers = string_list(group, "layer_names")?
        .ok_or("the weights group has no `layer_names` attribute")?;
    for layer in layers {
        let layer_group = group
            .group(&layer)
            .map_err(|e| format!("layer {layer:?} is listed but has no group: {e}"))?;
        let weights = string_list(&layer_group, "weight_names")?.unwrap_or_default();
        for weight_name in weights {
            let dataset = layer_group
                .dataset(&weight_name)
                .map_err(|e| format!("{layer}/{weight_name}: {e}"))?;
            let tensor = read_dataset(&dataset, &format!("{layer}/{weight_name}"), limit)?;
            // Nested models list `inner_layer/kernel:0` under the outer layer: the innermost
            // layer name is the one we match on.
            let key = weight_name.strip_suffix(":0").unwrap_or(&weight_name);
            let mut parts = key.rsplit('/');
            let (weight, inner) = (parts.next().unwrap_or(key), parts.next());
            let key = format!("{}/{weight}", inner.unwrap_or(&layer));
            insert_unique(found, key, tensor)?;
        }
    }
    Ok(())
}

/// One `vars` group of a Keras 3 `.weights.h5` file.
pub(crate) struct Keras3Vars {
    /// Its folder below `layers/` (`conv2d_1`: Keras names it after the layer's class and its
    /// position in the model, not after the layer).
    pub path: String,
    /// The layer's name, when the writer recorded it (the `name` attribute).
    pub name: Option<String>,
    /// The variables in `vars/0`, `vars/1`, ... order.
    pub tensors: Vec<Tensor>,
}

/// Every non-empty `vars` group below `layers/`, keyed by where it is rather than by name.
pub(crate) fn read_keras3_vars(
    file: &File,
    limit: Limit,
) -> std::result::Result<Vec<Keras3Vars>, String> {
    let root = file.root();
    if !root
        .groups()
        .map_err(|e| e.to_string())?
        .iter()
        .any(|g| g == "layers")
    {
        return Err("no `layers` group (not a Keras 3 .weights.h5 file)".into());
    }
    let mut out = Vec::new();
    let layers = root.group("layers").map_err(|e| e.to_string())?;
    collect_vars(&layers, "", limit, &mut out)?;
    Ok(out)
}

fn collect_vars(
    group: &Group,
    at: &str,
    limit: Limit,
    out: &mut Vec<Keras3Vars>,
) -> std::result::Result<(), String> {
    for child in group.groups().map_err(|e| format!("layers/{at}: {e}"))? {
        let child_group = group
            .group(&child)
            .map_err(|e| format!("layers/{at}/{child}: {e}"))?;
        if child == "vars" {
            let tensors = numbered_tensors(&child_group, &format!("layers/{at}/vars"), limit)?;
            if !tensors.is_empty() {
                let name = string_list(&child_group, "name")?.and_then(|n| n.into_iter().next());
                out.push(Keras3Vars {
                    path: at.to_string(),
                    name,
                    tensors,
                });
            }
        } else {
            let child_at = match at {
                "" => child,
                _ => format!("{at}/{child}"),
            };
            collect_vars(&child_group, &child_at, limit, out)?;
        }
    }
    Ok(())
}

/// Keras 3 native layout: every `vars` group below `layers/`, named by its `name` attribute.
fn read_keras3(
    group: &Group,
    at: &str,
    limit: Limit,
    found: &mut Found,
) -> std::result::Result<(), String> {
    for child in group.groups().map_err(|e| format!("{at}: {e}"))? {
        let child_group = group
            .group(&child)
            .map_err(|e| format!("{at}/{child}: {e}"))?;
        let child_at = format!("{at}/{child}");
        if child == "vars" {
            read_vars(&child_group, at, &child_at, limit, found)?;
        } else {
            read_keras3(&child_group, &child_at, limit, found)?;
        }
    }
    Ok(())
}

fn read_vars(
    vars: &Group,
    layer_at: &str,
    at: &str,
    limit: Limit,
    found: &mut Found,
) -> std::result::Result<(), String> {
    let tensors = numbered_tensors(vars, at, limit)?;
    if tensors.is_empty() {
        return Ok(());
    }
    let layer = string_list(vars, "name")?
        .and_then(|names| names.into_iter().next())
        .unwrap_or_else(|| layer_at.rsplit('/').next().unwrap_or(layer_at).to_string());
    let ranks: Vec<usize> = tensors.iter().map(Tensor::rank).collect();
    // A layer ResNetV2 does not have keeps positional names (`layer/vars/0`); the loader
    // reports it as unexpected rather than refusing the file.
    let kind = LayerKind::from_ranks(&ranks);
    for (index, tensor) in tensors.into_iter().enumerate() {
        let key = match kind.and_then(|k| k.weight_name(index)) {
            Some(weight) => format!("{layer}/{weight}"),
            None => format!("{layer}/vars/{index}"),
        };
        insert_unique(found, key, tensor)?;
    }
    Ok(())
}

/// The datasets `0`, `1`, ... of a `vars` group, in numeric order.
fn numbered_tensors(
    vars: &Group,
    at: &str,
    limit: Limit,
) -> std::result::Result<Vec<Tensor>, String> {
    let mut indexed = Vec::new();
    for name in vars.datasets().map_err(|e| format!("{at}: {e}"))? {
        let index: usize = name.parse().map_err(|_| {
            format!("{at}/{name}: expected a numbered variable (vars/0, vars/1, ...)")
        })?;
        indexed.push((index, name));
    }
    indexed.sort();
    let mut tensors = Vec::with_capacity(indexed.len());
    for (position, (index, name)) in indexed.iter().enumerate() {
        if *index != position {
            return Err(format!(
                "{at}: variables are not numbered 0..{}",
                indexed.len()
            ));
        }
        let dataset = vars
            .dataset(name)
            .map_err(|e| format!("{at}/{name}: {e}"))?;
        tensors.push(read_dataset(&dataset, &format!("{at}/{name}"), limit)?);
    }
    Ok(tensors)
}

fn insert_unique(
    found: &mut Found,
    key: String,
    tensor: Tensor,
) -> std::result::Result<(), String> {
    if found.contains_key(&key) {
        return Err(format!("two variables are named {key:?}"));
    }
    found.insert(key, tensor);
    Ok(())
}

fn read_dataset(
    dataset: &hdf5_pure::Dataset,
    at: &str,
    limit: Limit,
) -> std::result::Result<Tensor, String> {
    let shape: Vec<usize> = dataset
        .shape()
        .map_err(|e| format!("{at}: {e}"))?
        .into_iter()
        .map(|d| usize::try_from(d).map_err(|_| format!("{at}: dimension {d} too large")))
        .collect::<std::result::Result<_, _>>()?;
    let expected = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .filter(|&n| n <= limit.max_values)
        .ok_or_else(|| {
            format!("{at}: shape {shape:?} holds more values than the file has bytes (damaged?)")
        })?;
    let dtype = dataset.dtype().map_err(|e| format!("{at}: {e}"))?;
    let values: Vec<f32> = match dtype {
        hdf5_pure::DType::F32 => dataset.read_f32().map_err(|e| format!("{at}: {e}"))?,
        hdf5_pure::DType::F64 => dataset
            .read_f64()
            .map_err(|e| format!("{at}: {e}"))?
            .into_iter()
            .map(|v| v as f32)
            .collect(),
        other => {
            return Err(format!(
                "{at}: unsupported dtype {other} (expected f32 or f64)"
            ))
        }
    };
    if values.len() != expected {
        return Err(format!(
            "{at}: {} values for shape {shape:?} ({expected} expected)",
            values.len()
        ));
    }
    if let Some(message) = super::validate::non_finite_weight(at, &values) {
        return Err(message);
    }
    Tensor::from_vec(values, shape, &Device::Cpu).map_err(|e| format!("{at}: {e}"))
}
