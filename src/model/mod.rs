//! The network: backbones ([`Backbone`], configured by [`BackboneConfig`]: Keras's ResNetV2),
//! the binary classification head ([`ClassifierHead`]) and the two together ([`FractureNet`]);
//! Keras's ImageNet top on a backbone ([`ImageNetClassifier`]) to check ImageNet weights.
//!
//! Tensors are NCHW `f32`. Each backbone keeps its own variable names (ResNetV2: Keras layer
//! names with candle's variable names, `conv2_block1_preact_bn.running_mean`); the head lives
//! under `head.`. [`FrozenBackbone`] is the one place that chooses between a backbone's CPU
//! fast path and candle's ops for inference; [`init_variables`] the one place that
//! initialises fresh variables.

mod backbone;
mod cpu;
mod efficientnet;
mod head;
mod imagenet;
mod inference;
mod init;
mod localization;
mod network;
mod precision;
mod resnet_v2;
#[cfg(test)]
mod testing;
mod variables;

pub(crate) use backbone::deserialize_backbone_config;
pub use backbone::{global_average_pool, Backbone, BackboneConfig};
pub use efficientnet::*;
pub use head::{ClassifierHead, HeadConfig};
pub use imagenet::ImageNetClassifier;
pub use inference::FrozenBackbone;
pub use init::init_variables;
pub use localization::{LocalizationHead, LocalizationHeadConfig};
pub use network::FractureNet;
pub use precision::Precision;
pub use resnet_v2::{FastResNetV2, ResNetV2, ResNetV2Config, Taps, MIN_INPUT_SIZE};
pub use variables::VariableSpec;
