//! Reading a weights file of any supported format, recognized by its content.

use super::h5::{read_keras_h5, HDF5_SIGNATURE};
use super::keras;
use super::validate::{non_finite_weight, ValidationReport};
use crate::error::{Error, Result};
use crate::model::VariableSpec;
use candle_core::safetensors::MmapedSafetensors;
use candle_core::{DType, Device, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::Path;

/// Metadata key that marks a safetensors file written by this crate.
pub const FORMAT_KEY: &str = "format";
/// Value of [`FORMAT_KEY`] in our files.
pub const FORMAT_VALUE: &str = "fracture";

/// What a weights file turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightsFormat {
    /// safetensors in our naming and candle layouts (memory-mapped on load).
    Safetensors,
    /// safetensors with Keras names and layouts (`conv1_conv.kernel`, HWIO), converted on load.
    KerasSafetensors,
    /// A Keras HDF5 file (Keras 2 / legacy `.h5` or Keras 3 `.weights.h5`), converted on load.
    KerasHdf5,
}

/// The file's format from its first bytes: the HDF5 signature or a safetensors header.
///
/// ```
/// use fracture::weights::{sniff_format, WeightsFormat};
/// let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/keras_resnet_v2/tiny/");
/// assert_eq!(sniff_format(format!("{dir}model.weights.h5"))?, WeightsFormat::KerasHdf5);
/// assert_eq!(sniff_format(format!("{dir}weights.safetensors"))?, WeightsFormat::KerasSafetensors);
/// # Ok::<(), fracture::Error>(())
/// ```
pub fn sniff_format(path: impl AsRef<Path>) -> Result<WeightsFormat> {
    let path = path.as_ref();
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut head = [0u8; 9];
    let n = read_up_to(&mut file, &mut head).map_err(|e| Error::io(path, e))?;
    if n >= 8 && head[..8] == HDF5_SIGNATURE {
        return Ok(WeightsFormat::KerasHdf5);
    }
    if n == 9 && head[8] == b'{' {
        let header = read_safetensors_header(path)?;
        let ours = header
            .metadata
            .get(FORMAT_KEY)
            .is_some_and(|f| f == FORMAT_VALUE);
        let keras = !ours && keras::is_keras_naming(header.shapes.keys().map(String::as_str));
        return Ok(if keras {
            WeightsFormat::KerasSafetensors
        } else {
            WeightsFormat::Safetensors
        });
    }
    Err(Error::Format {
        path: path.to_path_buf(),
        message:
            "neither an HDF5 file (no HDF5 signature) nor a safetensors file (no JSON header): \
                  expected a Keras .h5 / .weights.h5 file or a .safetensors file"
                .into(),
    })
}

fn read_up_to(file: &mut std::fs::File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// What a safetensors header says: tensor names with shapes, and the metadata.
struct SafetensorsHeader {
    shapes: BTreeMap<String, Vec<usize>>,
    metadata: HashMap<String, String>,
}

#[derive(serde::Deserialize)]
struct HeaderEntry {
    shape: Vec<usize>,
}

/// The safetensors header of `path` (only the header is read; the data is checked when the
/// file is loaded).
fn read_safetensors_header(path: &Path) -> Result<SafetensorsHeader> {
    let format_error = |message: String| Error::Format {
        path: path.to_path_buf(),
        message,
    };
    let mut file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len)
        .map_err(|e| format_error(format!("truncated safetensors header: {e}")))?;
    let n = u64::from_le_bytes(len);
    // The header must fit in the file (and safetensors caps it at 100 MB): refuse a damaged
    // length before allocating for it.
    let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    if n > 100_000_000 || n > file_len.saturating_sub(8) {
        return Err(format_error(format!(
            "truncated safetensors header: it declares {n} bytes, the file has {file_len}"
        )));
    }
    let mut header = vec![0u8; n as usize];
    file.read_exact(&mut header)
        .map_err(|e| format_error(format!("truncated safetensors header: {e}")))?;
    let entries: HashMap<String, serde_json::Value> = serde_json::from_slice(&header)
        .map_err(|e| format_error(format!("invalid safetensors header: {e}")))?;
    let mut parsed = SafetensorsHeader {
        shapes: BTreeMap::new(),
        metadata: HashMap::new(),
    };
    for (name, value) in entries {
        if name == "__metadata__" {
            parsed.metadata = serde_json::from_value(value)
                .map_err(|e| format_error(format!("invalid safetensors metadata: {e}")))?;
        } else {
            let entry: HeaderEntry = serde_json::from_value(value)
                .map_err(|e| format_error(format!("invalid safetensors entry {name:?}: {e}")))?;
            parsed.shapes.insert(name, entry.shape);
        }
    }
    Ok(parsed)
}

enum Storage {
    /// Tensors already in memory (converted from Keras).
    Memory(HashMap<String, Tensor>),
    /// Our safetensors, memory-mapped: data is read when a variable is built.
    Mapped(MmapedSafetensors),
}

/// The tensors of a weights file in our naming and layouts, ready to validate and to build a
/// network from.
///
/// ```
/// use fracture::model::ResNetV2Config;
/// use candle_core::Device;
/// let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/keras_resnet_v2/tiny/legacy_keras3.h5");
/// let weights = fracture::weights::read_tensors(path, &Device::Cpu)?;
/// let config = ResNetV2Config::custom(vec![2, 2, 2, 2], vec![4, 8, 16, 32]);
/// let report = weights.validate(&config.variables())?;
/// assert_eq!(report.matched, 142);
/// # Ok::<(), fracture::Error>(())
/// ```
pub struct LoadedWeights {
    source_name: String,
    format: WeightsFormat,
    metadata: HashMap<String, String>,
    shapes: BTreeMap<String, Vec<usize>>,
    storage: Storage,
    device: Device,
}

impl std::fmt::Debug for LoadedWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedWeights")
            .field("source_name", &self.source_name)
            .field("format", &self.format)
            .field("tensors", &self.shapes.len())
            .field("metadata", &self.metadata)
            .finish()
    }
}

/// Read a weights file (format recognized by content) into our naming and layouts.
///
/// Keras-named inputs (`.h5`, Keras-layout safetensors) are converted through
/// [`keras::to_candle_lenient`] and placed on `device`; variables the mapping does not know
/// keep their Keras keys, so validation reports them as unexpected. Our own safetensors are
/// memory-mapped. Every tensor is read once here and refused when it holds a NaN or an
/// infinity ([`Error::Weights`] naming the file and the tensor). Nothing else is validated yet: call [`LoadedWeights::validate`] with what the
/// network expects.
pub fn read_tensors(path: impl AsRef<Path>, device: &Device) -> Result<LoadedWeights> {
    let path = path.as_ref();
    let source_name = path.display().to_string();
    let format = sniff_format(path)?;
    let keras_error = |e: Error| Error::Weights {
        source_name: source_name.clone(),
        message: e.to_string(),
    };
    let (storage, metadata) = match format {
        WeightsFormat::KerasHdf5 => {
            let tensors = read_keras_h5(path)?;
            let converted = convert_keras(tensors).map_err(keras_error)?;
            (
                Storage::Memory(to_device(converted, device)?),
                HashMap::new(),
            )
        }
        WeightsFormat::KerasSafetensors => {
            let header = read_safetensors_header(path)?;
            let tensors = candle_core::safetensors::load(path, &Device::Cpu)
                .map_err(|e| format_error(path, e))?;
            for (name, tensor) in &tensors {
                check_finite(name, tensor, &source_name)?;
            }
            let converted = convert_keras(tensors).map_err(keras_error)?;
            let metadata = header.metadata;
            (Storage::Memory(to_device(converted, device)?), metadata)
        }
        WeightsFormat::Safetensors => {
            let header = read_safetensors_header(path)?;
            // SAFETY: the file is mapped read-only; as with every memory-mapped file, changing
            // it on disk while it is mapped is undefined behaviour (documented on WeightsSource).
            let mapped =
                unsafe { MmapedSafetensors::new(path) }.map_err(|e| format_error(path, e))?;
            for (name, _) in mapped.tensors() {
                let tensor = mapped
                    .load(&name, &Device::Cpu)
                    .map_err(|e| format_error(path, e))?;
                check_finite(&name, &tensor, &source_name)?;
            }
            let metadata = header.metadata;
            (Storage::Mapped(mapped), metadata)
        }
    };
    let shapes = match &storage {
        Storage::Memory(tensors) => tensors
            .iter()
            .map(|(name, t)| (name.clone(), t.dims().to_vec()))
            .collect(),
        Storage::Mapped(mapped) => mapped
            .tensors()
            .into_iter()
            .map(|(name, view)| (name, view.shape().to_vec()))
            .collect(),
    };
    Ok(LoadedWeights {
        source_name,
        format,
        metadata,
        shapes,
        storage,
        device: device.clone(),
    })
}

/// Keras names and layouts to ours; variables the mapping does not know stay under their Keras
/// keys (so validation lists them as unexpected).
fn convert_keras(tensors: HashMap<String, Tensor>) -> Result<HashMap<String, Tensor>> {
    let (mut converted, unknown) = keras::to_candle_lenient(tensors)?;
    converted.extend(unknown);
    Ok(converted)
}

/// An [`Error::Weights`] naming `source_name` and the tensor when one of its values is NaN or
/// infinite (HDF5 files are checked as they are read, in [`super::h5`]).
fn check_finite(name: &str, tensor: &Tensor, source_name: &str) -> Result<()> {
    let values = tensor
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    match non_finite_weight(name, &values) {
        Some(message) => Err(Error::Weights {
            source_name: source_name.to_string(),
            message,
        }),
        None => Ok(()),
    }
}

fn format_error(path: &Path, e: candle_core::Error) -> Error {
    Error::Format {
        path: path.to_path_buf(),
        message: format!("invalid safetensors file: {e}"),
    }
}

fn to_device(tensors: HashMap<String, Tensor>, device: &Device) -> Result<HashMap<String, Tensor>> {
    tensors
        .into_iter()
        .map(|(name, t)| Ok((name, t.to_device(device)?)))
        .collect()
}

impl LoadedWeights {
    /// Build from tensors already in our naming (used for random weights).
    pub(crate) fn from_tensors(
        source_name: String,
        tensors: HashMap<String, Tensor>,
        device: &Device,
    ) -> Self {
        let shapes = tensors
            .iter()
            .map(|(name, t)| (name.clone(), t.dims().to_vec()))
            .collect();
        Self {
            source_name,
            format: WeightsFormat::Safetensors,
            metadata: HashMap::new(),
            shapes,
            storage: Storage::Memory(tensors),
            device: device.clone(),
        }
    }

    /// Where the weights came from (a path, a hub file, `random(seed)`), as used in errors.
    pub fn source_name(&self) -> &str {
        &self.source_name
    }

    /// Rename the source used in error messages (for example to add the hub repository).
    pub(crate) fn rename_source(&mut self, name: String) {
        self.source_name = name;
    }

    /// The device the tensors are loaded onto.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The format the file was recognized as.
    pub fn format(&self) -> WeightsFormat {
        self.format
    }

    /// The safetensors header metadata (empty for HDF5 files).
    pub fn metadata(&self) -> &HashMap<String, String> {
        &self.metadata
    }

    /// Every tensor name (our naming) with its shape (our layout).
    pub fn shapes(&self) -> &BTreeMap<String, Vec<usize>> {
        &self.shapes
    }

    /// Whether a tensor of this name is present.
    pub fn contains(&self, name: &str) -> bool {
        self.shapes.contains_key(name)
    }

    /// Compare with `expected`; an [`Error::Weights`] lists what is missing or misshapen.
    pub fn validate(&self, expected: &[VariableSpec]) -> Result<ValidationReport> {
        ValidationReport::compare(&self.shapes, expected).into_result(&self.source_name)
    }

    /// One tensor as `f32` on the load device.
    pub fn get(&self, name: &str) -> Result<Tensor> {
        let tensor = match &self.storage {
            Storage::Memory(tensors) => tensors.get(name).cloned(),
            Storage::Mapped(mapped) => match mapped.get(name) {
                Ok(_) => Some(mapped.load(name, &self.device)?),
                Err(_) => None,
            },
        };
        let tensor = tensor.ok_or_else(|| Error::Weights {
            source_name: self.source_name.clone(),
            message: format!("no tensor named {name}"),
        })?;
        Ok(tensor.to_dtype(DType::F32)?.to_device(&self.device)?)
    }

    /// A `VarBuilder` over these tensors (`f32`, on the load device). Memory-mapped files
    /// stay mapped: each variable is read when the network asks for it.
    pub fn into_var_builder(self) -> VarBuilder<'static> {
        let backend: Box<dyn SimpleBackend> = match self.storage {
            Storage::Memory(tensors) => Box::new(tensors),
            Storage::Mapped(mapped) => Box::new(mapped),
        };
        VarBuilder::from_backend(backend, DType::F32, self.device)
    }
}
