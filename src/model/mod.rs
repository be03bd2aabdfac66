//! The network: Keras's ResNetV2 backbone ([`ResNetV2`]), the binary classification head
//! ([`ClassifierHead`]) and the two together ([`FractureNet`]).
//!
//! Tensors are NCHW `f32`. Variable names are Keras layer names with candle's variable names
//! (`conv2_block1_preact_bn.running_mean`), the head lives under `head.`.

mod config;
mod fast;
mod head;
mod network;
mod resnet_v2;

pub use config::{ResNetV2Config, VariableSpec};
pub use fast::FastResNetV2;
pub use head::{ClassifierHead, HeadConfig};
pub use network::FractureNet;
pub use resnet_v2::{global_average_pool, ResNetV2, Taps, MIN_INPUT_SIZE};
