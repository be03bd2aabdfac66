//! [`VariableSpec`]: the name and shape of one variable a network expects, the common
//! language of every backbone's configuration, the weights loaders and their validation.

/// One variable the network expects: its name (candle naming) and shape (candle layout).
///
/// ```
/// use fracture::model::ResNetV2Config;
/// let vars = ResNetV2Config::resnet50v2().variables();
/// assert_eq!(vars[0].name, "conv1_conv.weight");
/// assert_eq!(vars[0].shape, vec![64, 3, 7, 7]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VariableSpec {
    /// Full variable name, e.g. `conv2_block1_1_conv.weight`.
    pub name: String,
    /// Shape in candle layout (convolution kernels are OIHW).
    pub shape: Vec<usize>,
}
