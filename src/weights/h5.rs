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
    let format_error = |message: String| Error::Format {
        path: path.to_path_buf(),
        message,
    };
    // hdf5-pure returns errors for the malformed files we tried; the guard keeps a bug in a
    // third-party parser from taking the caller's process down on a hostile file.
    let read = std::panic::catch_unwind(|| read_file(path));
    let tensors = match read {
        Ok(result) => result.map_err(format_error)?,
        Err(_) => return Err(format_error(
            "the HDF5 reader failed on this file (it is malformed or uses an unsupported feature)"
                .into(),
        )),
    };
    if tensors.is_empty() {
        return Err(format_error(
            "no Keras weights found: expected a root `layer_names` attribute (Keras 2 / legacy \
             .h5) or a `layers/.../vars` tree (Keras 3 .weights.h5)"
                .into(),
        ));
    }
    Ok(tensors)
}

type Found = HashMap<String, Tensor>;

fn read_file(path: &Path) -> std::result::Result<Found, String> {
    let file = File::open(path).map_err(|e| format!("not a readable HDF5 file: {e}"))?;
    let limits = SizeLimit {
        file_bytes: file.file_size(),
    };
    let root = file.root();
    let groups = root.groups().map_err(|e| e.to_string())?;
    let mut found = Found::new();
    if string_list(&root, "layer_names")?.is_some() {
        read_legacy(&root, limits, &mut found)?;
    } else if groups.iter().any(|g| g == "model_weights") {
        let weights = root.group("model_weights").map_err(|e| e.to_string())?;
        read_legacy(&weights, limits, &mut found)?;
    } else if groups.iter().any(|g| g == "layers") {
        let layers = root.group("layers").map_err(|e| e.to_string())?;
        read_keras3(&layers, "layers", limits, &mut found)?;
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
fn read_legacy(
    group: &Group,
    limits: SizeLimit,
    found: &mut Found,
) -> std::result::Result<(), String> {
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
            let tensor = read_dataset(&dataset, &format!("{layer}/{weight_name}"), limits)?;
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

/// Keras 3 native layout: every `vars` group below `layers/`, named by its `name` attribute.
fn read_keras3(
    group: &Group,
    at: &str,
    limits: SizeLimit,
    found: &mut Found,
) -> std::result::Result<(), String> {
    for child in group.groups().map_err(|e| format!("{at}: {e}"))? {
        let child_group = group
            .group(&child)
            .map_err(|e| format!("{at}/{child}: {e}"))?;
        let child_at = format!("{at}/{child}");
        if child == "vars" {
            read_vars(&child_group, at, &child_at, limits, found)?;
        } else {
            read_keras3(&child_group, &child_at, limits, found)?;
        }
    }
    Ok(())
}

fn read_vars(
    vars: &Group,
    layer_at: &str,
    at: &str,
    limits: SizeLimit,
    found: &mut Found,
) -> std::result::Result<(), String> {
    let mut indexed = Vec::new();
    for name in vars.datasets().map_err(|e| format!("{at}: {e}"))? {
        let index: usize = name.parse().map_err(|_| {
            format!("{at}/{name}: expected a numbered variable (vars/0, vars/1, ...)")
        })?;
        indexed.push((index, name));
    }
    if indexed.is_empty() {
        return Ok(());
    }
    indexed.sort();
    let layer = string_list(vars, "name")?
        .and_then(|names| names.into_iter().next())
        .unwrap_or_else(|| layer_at.rsplit('/').next().unwrap_or(layer_at).to_string());
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
        tensors.push(read_dataset(&dataset, &format!("{at}/{name}"), limits)?);
    }
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

/// How much data a file can plausibly hold, to refuse a size read from a damaged file before
/// allocating for it.
#[derive(Debug, Clone, Copy)]
struct SizeLimit {
    file_bytes: u64,
}

impl SizeLimit {
    /// Compressed data can expand; Keras does not compress weights, and even zeros that
    /// compress well stay within this factor for any real layer.
    const MAX_EXPANSION: u64 = 1024;

    /// Check a dataset's declared size (`elements` of `element_bytes` each) against the file.
    fn check(
        self,
        elements: usize,
        element_bytes: usize,
        compressed: bool,
        at: &str,
    ) -> std::result::Result<(), String> {
        let bytes = u64::try_from(elements)
            .ok()
            .and_then(|n| n.checked_mul(element_bytes as u64));
        let allowed = if compressed {
            self.file_bytes.saturating_mul(Self::MAX_EXPANSION)
        } else {
            self.file_bytes
        };
        match bytes {
            Some(bytes) if bytes <= allowed => Ok(()),
            _ => Err(format!(
                "{at}: declares {elements} values of {element_bytes} bytes, more than a file of {} bytes can hold",
                self.file_bytes
            )),
        }
    }
}

fn read_dataset(
    dataset: &hdf5_pure::Dataset,
    at: &str,
    limits: SizeLimit,
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
        .ok_or_else(|| format!("{at}: shape {shape:?} has too many elements"))?;
    let dtype = dataset.dtype().map_err(|e| format!("{at}: {e}"))?;
    let element_bytes = match dtype {
        hdf5_pure::DType::F32 => 4,
        hdf5_pure::DType::F64 => 8,
        other => {
            return Err(format!(
                "{at}: unsupported dtype {other} (expected f32 or f64)"
            ))
        }
    };
    limits.check(expected, element_bytes, !dataset.filters().is_empty(), at)?;
    let values: Vec<f32> = if element_bytes == 4 {
        dataset.read_f32().map_err(|e| format!("{at}: {e}"))?
    } else {
        dataset
            .read_f64()
            .map_err(|e| format!("{at}: {e}"))?
            .into_iter()
            .map(|v| v as f32)
            .collect()
    };
    if values.len() != expected {
        return Err(format!(
            "{at}: {} values for shape {shape:?} ({expected} expected)",
            values.len()
        ));
    }
    Tensor::from_vec(values, shape, &Device::Cpu).map_err(|e| format!("{at}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::SizeLimit;

    #[test]
    fn declared_sizes_must_fit_in_the_file_and_never_overflow() {
        let limit = |file_bytes| SizeLimit { file_bytes };
        assert!(limit(4000).check(1000, 4, false, "x").is_ok());
        let err = limit(3999).check(1000, 4, false, "w").unwrap_err();
        assert!(err.contains("w: declares 1000 values"), "{err}");
        // usize::MAX elements of 4 bytes overflow u64: an error, not a wrap-around.
        assert!(limit(u64::MAX).check(usize::MAX, 4, false, "x").is_err());
        // Compressed data may expand, within a bound.
        assert!(limit(4).check(1000, 4, true, "x").is_ok());
        assert!(limit(4).check(1100, 4, true, "x").is_err());
    }
}
