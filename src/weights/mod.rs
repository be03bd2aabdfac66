//! Weights: where a network's variables come from and how Keras's names and layouts map
//! onto ours.
//!
//! Keras stores convolution kernels as HWIO `(kh, kw, in, out)` and dense kernels as
//! `(in, out)`; candle wants OIHW and `(out, in)`. Keras calls the BN variables
//! `gamma`/`beta`/`moving_mean`/`moving_variance`; candle calls them
//! `weight`/`bias`/`running_mean`/`running_var`. [`keras`] is the only place that knows
//! this mapping; every loader (safetensors in Keras layout, Keras HDF5 files) goes through it.
//!
//! * [`WeightsSource`] names the weights (hub file, local file, seeded random) and
//!   [`WeightsSource::load`] validates them against a network and builds it.
//! * [`read_tensors`] reads any supported file, recognized by content ([`sniff_format`]):
//!   Keras HDF5 ([`h5`]), Keras-layout safetensors, or our safetensors (memory-mapped).
//! * [`hub`] downloads into the standard Hugging Face cache; [`HubOptions`] reads `HF_HOME`,
//!   `HF_ENDPOINT`, `HF_HUB_OFFLINE` and `HF_TOKEN`.
//! * [`keras_model`] imports a whole saved Keras model (the notebook's `.h5` / `.keras`): the
//!   architecture from its own config, the head found by structure.
//! * [`keras_imagenet`] finds Keras's own ImageNet files in the Keras cache or downloads them
//!   into it ([`KerasCache`]), checked against Keras's published MD5.
//! * [`save_network`] writes backbone + head as safetensors in our naming, with the
//!   configuration and crate version in the metadata.
//! * Every load is checked ([`ValidationReport`]): missing or misshapen variables are an error
//!   listing the first names with expected and found shapes and the count of each problem.

mod download;
pub mod h5;
pub mod hub;
pub mod keras;
pub mod keras_imagenet;
pub mod keras_model;
mod read;
mod save;
mod source;
mod validate;

pub use download::file_md5;
pub use hub::HubOptions;
pub use keras_imagenet::{KerasCache, KerasImageNet, ResNetV2Preset, KERAS_IMAGENET_MD5};
pub use read::{
    read_tensors, sniff_format, LoadedWeights, WeightsFormat, FORMAT_KEY, FORMAT_VALUE,
};
pub use save::{
    collect_tensors, network_variables, save_network, store_f16, varmap_tensors, BACKBONE_KEY,
    HEAD_KEY, VERSION_KEY,
};
pub use source::{LoadedNetwork, WeightsSource, DEFAULT_HUB_FILE};
pub use validate::{ShapeMismatch, ValidationReport};
