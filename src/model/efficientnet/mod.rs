//! EfficientNet-Lite (Tan & Le, 2019; the Lite variants of TensorFlow's model garden) in
//! candle, with timm's names and layouts so that timm's `tf_efficientnet_lite*` weights load
//! as they are.
//!
//! * `arch`: the architecture as data: one timm-style string per stage ([`StageSpec`]),
//!   decoded into [`BlockSpec`]s with the width and depth multipliers applied in one place;
//!   TensorFlow "SAME" padding ([`same_padding`]).
//! * `config`: [`EfficientNetLiteConfig`] with timm's presets `lite0` ... `lite4`, the variable
//!   list, the fine-tuning units (stages).
//! * `ops`: the depthwise convolution and batch norm + ReLU6 as fused candle ops with backward
//!   passes on the CPU ([`LiteOps`], [`depthwise_conv2d_same`]).
//! * `blocks`, `lite`: the depthwise-separable and inverted-residual blocks and the network,
//!   [`EfficientNetLite`].
//! * `fast`: [`FastEfficientNetLite`], the inference-only CPU path (BN folded, NHWC, fused
//!   epilogues).

mod arch;
mod blocks;
mod config;
mod fast;
mod lite;
mod ops;
mod simd;

pub use arch::{
    round_channels, same_padding, scale_depth, BlockKind, BlockSpec, StageSpec, LITE_STAGES,
};
pub use config::EfficientNetLiteConfig;
pub use fast::FastEfficientNetLite;
pub use lite::{EfficientNetLite, LiteTaps};
pub use ops::depthwise::depthwise_conv2d_same;
pub use ops::LiteOps;
