//! Keras's ResNetV2 ("Identity Mappings in Deep Residual Networks", He et al., 2016): its
//! configuration ([`ResNetV2Config`], presets 50/101/152 and any custom shape), the candle
//! network ([`ResNetV2`], trainable, every backend) and the CPU inference path
//! ([`FastResNetV2`], BN folded, NHWC, Winograd).

mod config;
mod fast;
mod network;

pub use config::ResNetV2Config;
pub use fast::FastResNetV2;
pub use network::{ResNetV2, Taps, MIN_INPUT_SIZE};
