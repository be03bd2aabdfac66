//! Saving a network's variables as safetensors in our naming, with the configuration in the
//! header metadata.

use super::read::{FORMAT_KEY, FORMAT_VALUE};
use super::validate::ValidationReport;
use crate::error::{Error, Result};
use crate::model::{BackboneConfig, HeadConfig, VariableSpec};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Metadata key holding the crate version that wrote the file.
pub const VERSION_KEY: &str = "fracture_version";
/// Metadata key holding the backbone's [`BackboneConfig`] as JSON.
pub const BACKBONE_KEY: &str = "backbone_config";
/// Metadata key holding the head's [`HeadConfig`] as JSON (absent for backbone-only files).
pub const HEAD_KEY: &str = "head_config";

/// Every variable of the whole network: the backbone at the root, then the head (if any).
///
/// ```
/// use fracture::model::{BackboneConfig, HeadConfig, ResNetV2Config};
/// let backbone = BackboneConfig::from(ResNetV2Config::custom(vec![2, 2], vec![4, 8]));
/// let all = fracture::weights::network_variables(&backbone, Some(&HeadConfig::default()));
/// assert_eq!(all.len(), backbone.variables().len() + 4);
/// assert_eq!(all.last().unwrap().name, "head.logit.bias");
/// ```
pub fn network_variables(
    backbone: impl Into<BackboneConfig>,
    head: Option<&HeadConfig>,
) -> Vec<VariableSpec> {
    let backbone = backbone.into();
    let mut vars = backbone.variables();
    if let Some(head) = head {
        vars.extend(head.variables(backbone.feature_channels()));
    }
    vars
}

/// Read the variables `specs` names out of any `VarBuilder` (a loaded file, a `VarMap`).
pub fn collect_tensors(vb: &VarBuilder, specs: &[VariableSpec]) -> Result<HashMap<String, Tensor>> {
    specs
        .iter()
        .map(|spec| {
            Ok((
                spec.name.clone(),
                vb.get(spec.shape.as_slice(), &spec.name)?,
            ))
        })
        .collect()
}

/// The current values of every variable of a `VarMap`, by name.
pub fn varmap_tensors(varmap: &VarMap) -> Result<HashMap<String, Tensor>> {
    let data = varmap
        .data()
        .lock()
        .map_err(|_| Error::Training("the VarMap's lock is poisoned".into()))?;
    Ok(data
        .iter()
        .map(|(name, var)| (name.clone(), var.as_tensor().clone()))
        .collect())
}

/// Write a network's variables to `path` as safetensors in our naming (f32, CPU order), with
/// the configuration and the crate version in the header metadata.
///
/// `tensors` must hold exactly the backbone's variables plus, when `head` is given, the head's
/// (under `head.`); anything missing, misshapen or extra is an error and nothing is written.
///
/// ```
/// use fracture::model::{FractureNet, HeadConfig, ResNetV2Config};
/// use fracture::weights::{network_variables, save_network, varmap_tensors, WeightsSource};
/// use candle_core::{DType, Device};
/// let config = ResNetV2Config::custom(vec![2, 2], vec![4, 8]);
/// let head = HeadConfig { hidden: 8, dropout: 0.5, localization: None };
/// let varmap = candle_nn::VarMap::new();
/// let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
/// FractureNet::new(&config, &head, vb)?;
/// let path = std::env::temp_dir().join("fracture-save-doctest.safetensors");
/// save_network(&path, &varmap_tensors(&varmap)?, &config, Some(&head))?;
/// let loaded = fracture::weights::read_tensors(&path, &Device::Cpu)?;
/// assert!(loaded.validate(&network_variables(&config, Some(&head)))?.unexpected.is_empty());
/// # std::fs::remove_file(&path).ok();
/// # Ok::<(), fracture::Error>(())
/// ```
pub fn save_network(
    path: impl AsRef<Path>,
    tensors: &HashMap<String, Tensor>,
    backbone: impl Into<BackboneConfig>,
    head: Option<&HeadConfig>,
) -> Result<()> {
    let path = path.as_ref();
    let backbone = &backbone.into();
    let expected = network_variables(backbone, head);
    let shapes: BTreeMap<String, Vec<usize>> = tensors
        .iter()
        .map(|(name, t)| (name.clone(), t.dims().to_vec()))
        .collect();
    let report = ValidationReport::compare(&shapes, &expected);
    let save_error = |message: String| Error::Weights {
        source_name: path.display().to_string(),
        message: format!("refusing to save: {message}"),
    };
    if !report.is_complete() || !report.unexpected.is_empty() {
        return Err(save_error(report.describe()));
    }
    let mut metadata = HashMap::from([
        (FORMAT_KEY.to_string(), FORMAT_VALUE.to_string()),
        (
            VERSION_KEY.to_string(),
            env!("CARGO_PKG_VERSION").to_string(),
        ),
        (
            "layout".to_string(),
            "candle: OIHW conv kernels, (out, in) dense kernels".to_string(),
        ),
        (BACKBONE_KEY.to_string(), to_json(backbone)?),
    ]);
    if let Some(head) = head {
        metadata.insert(HEAD_KEY.to_string(), to_json(head)?);
    }
    let mut views = Vec::with_capacity(expected.len());
    for spec in &expected {
        if let Some(tensor) = tensors.get(&spec.name) {
            views.push((spec.name.clone(), F32View::new(tensor)?));
        }
    }
    safetensors::serialize_to_file(views, Some(metadata), path)
        .map_err(|e| save_error(format!("{e:?}")))
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::InvalidConfig(e.to_string()))
}

/// A tensor's values as little-endian `f32` bytes, for the safetensors writer.
struct F32View {
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl F32View {
    fn new(tensor: &Tensor) -> Result<Self> {
        let values = tensor
            .to_device(&Device::Cpu)?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Ok(Self {
            shape: tensor.dims().to_vec(),
            bytes: values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        })
    }
}

impl safetensors::View for F32View {
    fn dtype(&self) -> safetensors::Dtype {
        safetensors::Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// Rewrite a safetensors file written by [`save_network`] (or a bundle's `model.safetensors`)
/// with every `f32` tensor rounded to half precision and stored as `f16`: half the size, for
/// a model kept in a repository. The metadata stays; loading converts back to `f32` (the
/// rounded values). Written atomically; returns the number of tensors converted.
///
/// ```
/// use fracture::model::{BackboneConfig, HeadConfig, ResNetV2Config};
/// use fracture::weights::{network_variables, save_network, store_f16};
/// use candle_core::{Device, Tensor};
/// let config = BackboneConfig::from(ResNetV2Config::custom(vec![2], vec![4]));
/// let head = HeadConfig { hidden: 2, dropout: 0.5, localization: None };
/// let tensors = network_variables(&config, Some(&head))
///     .into_iter()
///     .map(|s| (s.name, Tensor::full(0.1f32, s.shape, &Device::Cpu).unwrap()))
///     .collect();
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("model.safetensors");
/// save_network(&path, &tensors, &config, Some(&head))?;
/// let f32_size = std::fs::metadata(&path)?.len();
/// assert!(store_f16(&path)? > 0);
/// assert!(std::fs::metadata(&path)?.len() < f32_size * 6 / 10);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn store_f16(path: impl AsRef<Path>) -> Result<usize> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let format_error = |message: String| Error::Format {
        path: path.into(),
        message,
    };
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| format_error(format!("not a safetensors file: {e:?}")))?;
    let metadata = header.metadata().clone();
    let file = safetensors::SafeTensors::deserialize(&bytes)
        .map_err(|e| format_error(format!("not a safetensors file: {e:?}")))?;
    let mut converted = 0;
    let mut views = Vec::new();
    for (name, view) in file.tensors() {
        let data = match view.dtype() {
            safetensors::Dtype::F32 => {
                converted += 1;
                let mut out = Vec::with_capacity(view.data().len() / 2);
                for b in view.data().chunks_exact(4) {
                    let v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    let h = half::f16::from_f32(v);
                    if v.is_finite() && !h.is_finite() {
                        return Err(format_error(format!(
                            "{name} holds {v}, beyond half precision's range: keep it in f32"
                        )));
                    }
                    out.extend(h.to_le_bytes());
                }
                out
            }
            _ => view.data().to_vec(),
        };
        let dtype = match view.dtype() {
            safetensors::Dtype::F32 => safetensors::Dtype::F16,
            other => other,
        };
        views.push((
            name,
            RawView {
                dtype,
                shape: view.shape().to_vec(),
                bytes: data,
            },
        ));
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| format_error("not a file name".into()))?
        .to_string_lossy()
        .to_string();
    crate::atomic::AtomicWriter::new(dir, None).write_with(&name, |tmp| {
        safetensors::serialize_to_file(views, metadata, tmp)
            .map_err(|e| format_error(format!("cannot write: {e:?}")))
    })?;
    Ok(converted)
}

/// Raw little-endian bytes of one tensor, for the safetensors writer.
struct RawView {
    dtype: safetensors::Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl safetensors::View for RawView {
    fn dtype(&self) -> safetensors::Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}
