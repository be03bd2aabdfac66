//! The Keras → candle mapping of variable names and tensor layouts.
//!
//! ```
//! use fracture::weights::keras::{candle_name, split_keras_key};
//! assert_eq!(split_keras_key("conv1_conv/conv1_conv/kernel:0"), Some(("conv1_conv", "kernel")));
//! assert_eq!(candle_name("post_bn", "moving_variance").unwrap(), "post_bn.running_var");
//! ```

use crate::error::{Error, Result};
use candle_core::Tensor;
use std::collections::HashMap;

/// Split a Keras variable key into `(layer, weight)`.
///
/// Accepts the forms found in the wild: `layer.weight` (our Keras-layout safetensors),
/// `layer/weight`, `layer/weight:0` and the legacy HDF5 path `layer/layer/weight:0`.
pub fn split_keras_key(key: &str) -> Option<(&str, &str)> {
    let key = key.trim_start_matches('/');
    let key = key.strip_suffix(":0").unwrap_or(key);
    if let Some((layer, weight)) = key.rsplit_once('/') {
        // `layer/layer/weight` keeps the innermost layer name.
        let layer = layer.rsplit('/').next().unwrap_or(layer);
        return Some((layer, weight)).filter(|(l, w)| !l.is_empty() && !w.is_empty());
    }
    key.rsplit_once('.')
        .filter(|(l, w)| !l.is_empty() && !w.is_empty())
}

/// Our variable name for Keras's `layer`/`weight`.
pub fn candle_name(layer: &str, weight: &str) -> Result<String> {
    let ours = match weight {
        "kernel" | "gamma" => "weight",
        "bias" | "beta" => "bias",
        "moving_mean" => "running_mean",
        "moving_variance" => "running_var",
        other => {
            return Err(Error::InvalidInput(format!(
                "unknown Keras weight {other:?} in layer {layer:?} (expected kernel, bias, gamma, beta, moving_mean or moving_variance)"
            )))
        }
    };
    Ok(format!("{layer}.{ours}"))
}

/// Keras's layout → candle's: HWIO kernels become OIHW, `(in, out)` dense kernels become
/// `(out, in)`, vectors stay as they are.
pub fn candle_layout(tensor: &Tensor) -> Result<Tensor> {
    Ok(match tensor.rank() {
        4 => tensor.permute((3, 2, 0, 1))?.contiguous()?,
        2 => tensor.t()?.contiguous()?,
        _ => tensor.clone(),
    })
}

/// Candle's layout → Keras's (the inverse of [`candle_layout`]).
pub fn keras_layout(tensor: &Tensor) -> Result<Tensor> {
    Ok(match tensor.rank() {
        4 => tensor.permute((2, 3, 1, 0))?.contiguous()?,
        2 => tensor.t()?.contiguous()?,
        _ => tensor.clone(),
    })
}

/// Convert a whole set of Keras-named, Keras-layout tensors into our names and layouts.
///
/// Keys may be any form accepted by [`split_keras_key`]. Two keys mapping to the same name
/// are an error (they would silently overwrite each other).
///
/// ```
/// use candle_core::{Device, Tensor};
/// use std::collections::HashMap;
/// let mut keras = HashMap::new();
/// keras.insert("conv1_conv.kernel".to_string(), Tensor::zeros((7, 7, 3, 64), candle_core::DType::F32, &Device::Cpu)?);
/// let ours = fracture::weights::keras::to_candle(keras)?;
/// assert_eq!(ours["conv1_conv.weight"].dims(), &[64, 3, 7, 7]);
/// # Ok::<(), fracture::Error>(())
/// ```
pub fn to_candle(keras: HashMap<String, Tensor>) -> Result<HashMap<String, Tensor>> {
    let mut out = HashMap::with_capacity(keras.len());
    for (key, tensor) in keras {
        let (layer, weight) = split_keras_key(&key).ok_or_else(|| {
            Error::InvalidInput(format!(
                "Keras variable key {key:?} is not of the form layer/weight or layer.weight"
            ))
        })?;
        let name = candle_name(layer, weight)?;
        if out.insert(name.clone(), candle_layout(&tensor)?).is_some() {
            return Err(Error::InvalidInput(format!(
                "two Keras variables map to {name} (the second is {key:?})"
            )));
        }
    }
    Ok(out)
}

/// The kind of a Keras layer, as far as its weights are concerned.
///
/// Keras 3's native `.weights.h5` files store a layer's variables as `vars/0`, `vars/1`, ...
/// without names; the kind says what each position holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerKind {
    /// `Conv2D`: kernel, then bias when the layer has one.
    Conv,
    /// `BatchNormalization`: gamma, beta, moving_mean, moving_variance.
    BatchNorm,
    /// `Dense`: kernel, then bias when the layer has one.
    Dense,
}

impl LayerKind {
    /// Infer the kind from the ranks of the layer's variables, in `vars/N` order.
    ///
    /// A rank-4 first variable is a convolution kernel, a rank-2 one a dense kernel, and four
    /// vectors are a batch normalization. Anything else is not a layer ResNetV2 or its head has.
    ///
    /// ```
    /// use fracture::weights::keras::LayerKind;
    /// assert_eq!(LayerKind::from_ranks(&[4, 1]), Some(LayerKind::Conv));
    /// assert_eq!(LayerKind::from_ranks(&[1, 1, 1, 1]), Some(LayerKind::BatchNorm));
    /// assert_eq!(LayerKind::from_ranks(&[1, 1]), None);
    /// ```
    pub fn from_ranks(ranks: &[usize]) -> Option<Self> {
        match ranks {
            [4] | [4, 1] => Some(Self::Conv),
            [2] | [2, 1] => Some(Self::Dense),
            [1, 1, 1, 1] => Some(Self::BatchNorm),
            _ => None,
        }
    }

    /// Keras's weight name for the variable at position `index` of a layer of this kind.
    ///
    /// ```
    /// use fracture::weights::keras::LayerKind;
    /// assert_eq!(LayerKind::BatchNorm.weight_name(3), Some("moving_variance"));
    /// assert_eq!(LayerKind::Conv.weight_name(2), None);
    /// ```
    pub fn weight_name(self, index: usize) -> Option<&'static str> {
        let names: &[&'static str] = match self {
            Self::Conv | Self::Dense => &["kernel", "bias"],
            Self::BatchNorm => &["gamma", "beta", "moving_mean", "moving_variance"],
        };
        names.get(index).copied()
    }
}

/// Whether a set of variable names is in Keras's naming (`kernel`, `gamma`, `moving_mean`,
/// ...) rather than ours (`weight`, `running_mean`, ...).
///
/// ```
/// use fracture::weights::keras::is_keras_naming;
/// assert!(is_keras_naming(["conv1_conv.kernel", "conv1_conv.bias"]));
/// assert!(!is_keras_naming(["conv1_conv.weight", "conv1_conv.bias"]));
/// ```
pub fn is_keras_naming<'a>(names: impl IntoIterator<Item = &'a str>) -> bool {
    names.into_iter().any(|name| {
        split_keras_key(name).is_some_and(|(_, weight)| {
            matches!(
                weight,
                "kernel" | "gamma" | "beta" | "moving_mean" | "moving_variance"
            )
        })
    })
}

/// Like [`to_candle`], but variables this mapping does not know (layers ResNetV2 does not
/// have, such as embeddings or a layer normalization) are set aside instead of failing the
/// whole file: they come back, under their original keys and unconverted, as the second map.
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use std::collections::HashMap;
/// let zeros = |n| Tensor::zeros(n, DType::F32, &Device::Cpu).unwrap();
/// let keras = HashMap::from([
///     ("post_bn/gamma".to_string(), zeros(8)),
///     ("token_embedding/embeddings".to_string(), zeros(4)),
/// ]);
/// let (ours, unknown) = fracture::weights::keras::to_candle_lenient(keras)?;
/// assert!(ours.contains_key("post_bn.weight"));
/// assert!(unknown.contains_key("token_embedding/embeddings"));
/// # Ok::<(), fracture::Error>(())
/// ```
pub fn to_candle_lenient(
    keras: HashMap<String, Tensor>,
) -> Result<(HashMap<String, Tensor>, HashMap<String, Tensor>)> {
    let (known, unknown): (HashMap<_, _>, HashMap<_, _>) =
        keras.into_iter().partition(|(key, _)| {
            split_keras_key(key).is_some_and(|(layer, weight)| candle_name(layer, weight).is_ok())
        });
    Ok((to_candle(known)?, unknown))
}
