//! Planning [`FastResNetV2`] from variables or from a built [`ResNetV2`]: batch norms folded
//! into the convolutions before them, kernels packed for the matrix products.

use super::kernels::ConvPlan;
use super::{FastBlock, FastResNetV2, FastShortcut, Workspace};
use crate::error::{Error, Result};
use crate::model::cpu::ScaleShift;
use crate::model::resnet_v2::config::{block_name, ResNetV2Config};
use crate::model::resnet_v2::network::ResNetV2;
use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;
use std::collections::HashMap;
use std::sync::Mutex;

/// Reads one variable by its full name and expected shape as `f32` values.
pub(super) type Getter<'a> = dyn Fn(&str, &[usize]) -> Result<Vec<f32>> + 'a;

fn tensor_values(t: &Tensor, name: &str, shape: &[usize], source: &str) -> Result<Vec<f32>> {
    if t.dims() != shape {
        return Err(Error::Weights {
            source_name: source.to_string(),
            message: format!(
                "tensor {name} has shape {:?}, the fast path expects {shape:?}",
                t.dims()
            ),
        });
    }
    Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
}

impl FastResNetV2 {
    /// Plan the fast path from the same variables [`ResNetV2::new`] reads (Keras layer names,
    /// candle layouts).
    ///
    /// ```
    /// use fracture::model::{FastResNetV2, ResNetV2Config};
    /// use candle_core::{Device, DType, Tensor};
    /// let varmap = candle_nn::VarMap::new();
    /// let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    /// let fast = FastResNetV2::new(&ResNetV2Config::custom(vec![2, 2], vec![4, 8]), vb)?;
    /// let x = Tensor::zeros((1, 3, 64, 64), DType::F32, &Device::Cpu)?;
    /// assert_eq!(fast.forward_features(&x)?.dims(), &[1, 32, 8, 8]);
    /// # Ok::<(), fracture::Error>(())
    /// ```
    pub fn new(config: &ResNetV2Config, vb: VarBuilder) -> Result<Self> {
        let get = |name: &str, shape: &[usize]| -> Result<Vec<f32>> {
            let t = vb.get(shape, name)?;
            tensor_values(&t, name, shape, "VarBuilder")
        };
        Self::build(config, &get)
    }

    /// Plan the fast path from a built [`ResNetV2`] (its current weights and BN statistics).
    pub fn from_model(model: &ResNetV2) -> Result<Self> {
        let config = model.config();
        let mut map: HashMap<String, Tensor> = HashMap::new();
        let mut conv = |layer: &str, c: &candle_nn::Conv2d| {
            map.insert(format!("{layer}.weight"), c.weight().clone());
            if let Some(b) = c.bias() {
                map.insert(format!("{layer}.bias"), b.clone());
            }
        };
        conv("conv1_conv", &model.conv1);
        for (s, stack) in model.stacks.iter().enumerate() {
            for (b, block) in stack.iter().enumerate() {
                let name = block_name(s, b + 1);
                if let Some(c0) = block.projection() {
                    conv(&format!("{name}_0_conv"), c0);
                }
                conv(&format!("{name}_1_conv"), &block.conv1);
                conv(&format!("{name}_2_conv"), &block.conv2);
                conv(&format!("{name}_3_conv"), &block.conv3);
            }
        }
        let mut bn = |layer: String, b: &candle_nn::BatchNorm| {
            if let Some((w, bias)) = b.weight_and_bias() {
                map.insert(format!("{layer}.weight"), w.clone());
                map.insert(format!("{layer}.bias"), bias.clone());
            }
            map.insert(format!("{layer}.running_mean"), b.running_mean().clone());
            map.insert(format!("{layer}.running_var"), b.running_var().clone());
        };
        for (s, stack) in model.stacks.iter().enumerate() {
            for (b, block) in stack.iter().enumerate() {
                let name = block_name(s, b + 1);
                bn(format!("{name}_preact_bn"), &block.preact_bn);
                bn(format!("{name}_1_bn"), &block.bn1);
                bn(format!("{name}_2_bn"), &block.bn2);
            }
        }
        bn("post_bn".to_string(), &model.post_bn);
        let get = |name: &str, shape: &[usize]| -> Result<Vec<f32>> {
            let t = map.get(name).ok_or_else(|| Error::Weights {
                source_name: "ResNetV2 model".into(),
                message: format!(
                    "the model has no tensor {name} (affine BN and conv biases are required)"
                ),
            })?;
            tensor_values(t, name, shape, "ResNetV2 model")
        };
        Self::build(config, &get)
    }

    pub(super) fn build(config: &ResNetV2Config, get: &Getter<'_>) -> Result<Self> {
        config.validate()?;
        let eps = config.bn_epsilon;
        let bn = |layer: &str, c: usize| -> Result<ScaleShift> {
            Ok(ScaleShift::from_batch_norm(
                &get(&format!("{layer}.weight"), &[c])?,
                &get(&format!("{layer}.bias"), &[c])?,
                &get(&format!("{layer}.running_mean"), &[c])?,
                &get(&format!("{layer}.running_var"), &[c])?,
                eps,
            ))
        };
        let kernel = |layer: &str, dims: [usize; 4]| get(&format!("{layer}.weight"), &dims);
        let bias = |layer: &str, c: usize| get(&format!("{layer}.bias"), &[c]);

        let stem_dims = [config.stem_filters, config.in_channels, 7, 7];
        let stem = ConvPlan::pack(
            &kernel("conv1_conv", stem_dims)?,
            stem_dims,
            2,
            3,
            None,
            bias("conv1_conv", config.stem_filters)?,
        );
        let mut c_in = config.stem_filters;
        let mut blocks = Vec::new();
        for (s, (&count, &f)) in config.blocks.iter().zip(&config.filters).enumerate() {
            let out = config.expansion * f;
            for b in 1..=count {
                let name = block_name(s, b);
                let stride = if b == count {
                    config.strides.get(s).copied().unwrap_or(1)
                } else {
                    1
                };
                let shortcut = if b == 1 {
                    let dims = [out, c_in, 1, 1];
                    let layer = format!("{name}_0_conv");
                    FastShortcut::Projection(ConvPlan::pack(
                        &kernel(&layer, dims)?,
                        dims,
                        stride,
                        0,
                        None,
                        bias(&layer, out)?,
                    ))
                } else if stride > 1 {
                    FastShortcut::Subsample(stride)
                } else {
                    FastShortcut::Identity
                };
                let bn1 = bn(&format!("{name}_1_bn"), f)?;
                let bn2 = bn(&format!("{name}_2_bn"), f)?;
                let (d1, d2, d3) = ([f, c_in, 1, 1], [f, f, 3, 3], [out, f, 1, 1]);
                let layer3 = format!("{name}_3_conv");
                blocks.push(FastBlock {
                    preact: bn(&format!("{name}_preact_bn"), c_in)?,
                    shortcut,
                    conv1: ConvPlan::pack(
                        &kernel(&format!("{name}_1_conv"), d1)?,
                        d1,
                        1,
                        0,
                        Some(&bn1.scale),
                        bn1.shift.clone(),
                    ),
                    conv2: ConvPlan::pack(
                        &kernel(&format!("{name}_2_conv"), d2)?,
                        d2,
                        stride,
                        1,
                        Some(&bn2.scale),
                        bn2.shift.clone(),
                    ),
                    conv3: ConvPlan::pack(
                        &kernel(&layer3, d3)?,
                        d3,
                        1,
                        0,
                        None,
                        bias(&layer3, out)?,
                    ),
                });
                c_in = out;
            }
        }
        let post = bn("post_bn", c_in)?;
        Ok(Self {
            config: config.clone(),
            stem,
            blocks,
            post,
            bf16: None,
            workspace: Mutex::new(Workspace::default()),
        })
    }
}
