//! EfficientNet-Lite's two block types in candle, with timm's variable names.

use super::arch::{BlockKind, BlockSpec};
use super::config::EfficientNetLiteConfig;
use super::ops::batch_norm::BatchNormAct;
use super::ops::{depthwise::depthwise, pointwise, LiteOps};
use crate::error::Result;
use candle_core::Tensor;
use candle_nn::{init, VarBuilder};

/// A convolution kernel `name.weight` of `shape` (OIHW), Kaiming-normal when initialized.
pub(crate) fn kernel(vb: &VarBuilder, name: &str, shape: [usize; 4]) -> Result<Tensor> {
    Ok(vb
        .pp(name)
        .get_with_hints(shape.to_vec(), "weight", init::DEFAULT_KAIMING_NORMAL)?)
}

/// A batch norm `name` with ReLU6 (`relu6`) or without, with the config's epsilon and momentum.
pub(crate) fn bn(
    config: &EfficientNetLiteConfig,
    vb: &VarBuilder,
    name: &str,
    channels: usize,
    relu6: bool,
) -> Result<BatchNormAct> {
    BatchNormAct::new(
        channels,
        config.bn_epsilon,
        config.bn_momentum,
        relu6,
        vb.pp(name),
    )
}

/// One block's layers, in the order they run.
#[derive(Debug, Clone)]
pub(crate) enum Layers {
    /// `conv_dw`, `bn1` + ReLU6, `conv_pw`, `bn2`.
    DepthwiseSeparable {
        conv_dw: Tensor,
        bn1: BatchNormAct,
        conv_pw: Tensor,
        bn2: BatchNormAct,
    },
    /// `conv_pw`, `bn1` + ReLU6, `conv_dw`, `bn2` + ReLU6, `conv_pwl`, `bn3`.
    InvertedResidual {
        conv_pw: Tensor,
        bn1: BatchNormAct,
        conv_dw: Tensor,
        bn2: BatchNormAct,
        conv_pwl: Tensor,
        bn3: BatchNormAct,
    },
}

/// One block: its shape and its layers.
#[derive(Debug, Clone)]
pub(crate) struct Block {
    pub(crate) spec: BlockSpec,
    pub(crate) layers: Layers,
}

impl Block {
    /// Build block `spec` from the variables under `vb` (`blocks.S.I`).
    pub(crate) fn new(
        spec: BlockSpec,
        config: &EfficientNetLiteConfig,
        vb: &VarBuilder,
    ) -> Result<Self> {
        let (mid, out, k) = (spec.mid_channels, spec.out_channels, spec.kernel);
        let layers = match spec.kind {
            BlockKind::DepthwiseSeparable => Layers::DepthwiseSeparable {
                conv_dw: kernel(vb, "conv_dw", [mid, 1, k, k])?,
                bn1: bn(config, vb, "bn1", mid, true)?,
                conv_pw: kernel(vb, "conv_pw", [out, mid, 1, 1])?,
                bn2: bn(config, vb, "bn2", out, false)?,
            },
            BlockKind::InvertedResidual => Layers::InvertedResidual {
                conv_pw: kernel(vb, "conv_pw", [mid, spec.in_channels, 1, 1])?,
                bn1: bn(config, vb, "bn1", mid, true)?,
                conv_dw: kernel(vb, "conv_dw", [mid, 1, k, k])?,
                bn2: bn(config, vb, "bn2", mid, true)?,
                conv_pwl: kernel(vb, "conv_pwl", [out, mid, 1, 1])?,
                bn3: bn(config, vb, "bn3", out, false)?,
            },
        };
        Ok(Self { spec, layers })
    }

    /// Run the block; BN uses batch statistics when `train`.
    pub(crate) fn forward_t(&self, x: &Tensor, train: bool, ops: LiteOps) -> Result<Tensor> {
        let stride = self.spec.stride;
        let y = match &self.layers {
            Layers::DepthwiseSeparable {
                conv_dw,
                bn1,
                conv_pw,
                bn2,
            } => {
                let t = bn1.forward_t(&depthwise(x, conv_dw, stride, ops)?, train, ops)?;
                bn2.forward_t(&pointwise(&t, conv_pw)?, train, ops)?
            }
            Layers::InvertedResidual {
                conv_pw,
                bn1,
                conv_dw,
                bn2,
                conv_pwl,
                bn3,
            } => {
                let t = bn1.forward_t(&pointwise(x, conv_pw)?, train, ops)?;
                let t = bn2.forward_t(&depthwise(&t, conv_dw, stride, ops)?, train, ops)?;
                bn3.forward_t(&pointwise(&t, conv_pwl)?, train, ops)?
            }
        };
        Ok(if self.spec.has_residual() {
            (y + x)?
        } else {
            y
        })
    }
}
