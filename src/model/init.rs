//! Keras's default initialisation of a variable, the one place that decides how a fresh
//! backbone ([`crate::WeightsSource::Random`]) and a fresh head (ImageNet "notop" weights,
//! training) get their values.
//!
//! Kernels (rank 2 and more) are Glorot-uniform, BN scales (1-D `weight`) and moving
//! variances one, everything else (biases, BN offsets, moving means) zero. Values are drawn on
//! the CPU with ChaCha8 from a seed, in the order of the specs, so the same seed gives the
//! same weights on every run and device.

use super::VariableSpec;
use crate::error::Result;
use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Fresh values for `specs`, in order, reproducible from `seed`.
///
/// ```
/// use fracture::model::{init_variables, VariableSpec};
/// let specs = vec![
///     VariableSpec { name: "dense.weight".into(), shape: vec![4, 3] },
///     VariableSpec { name: "bn.weight".into(), shape: vec![4] },
///     VariableSpec { name: "bn.running_var".into(), shape: vec![4] },
///     VariableSpec { name: "dense.bias".into(), shape: vec![4] },
/// ];
/// let a = init_variables(&specs, 7, &candle_core::Device::Cpu)?;
/// let b = init_variables(&specs, 7, &candle_core::Device::Cpu)?;
/// assert_eq!(a[0].1.to_vec2::<f32>()?, b[0].1.to_vec2::<f32>()?);
/// let limit = (6.0f32 / 7.0).sqrt();
/// assert!(a[0].1.flatten_all()?.to_vec1::<f32>()?.iter().all(|v| v.abs() <= limit));
/// assert_eq!(a[1].1.to_vec1::<f32>()?, vec![1.0; 4]);
/// assert_eq!(a[2].1.to_vec1::<f32>()?, vec![1.0; 4]);
/// assert_eq!(a[3].1.to_vec1::<f32>()?, vec![0.0; 4]);
/// # Ok::<(), fracture::Error>(())
/// ```
pub fn init_variables(
    specs: &[VariableSpec],
    seed: u64,
    device: &Device,
) -> Result<Vec<(String, Tensor)>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    specs
        .iter()
        .map(|spec| Ok((spec.name.clone(), init_tensor(spec, &mut rng, device)?)))
        .collect()
}

/// Keras's default initialisation of one variable, given our name and layout.
fn init_tensor(spec: &VariableSpec, rng: &mut ChaCha8Rng, device: &Device) -> Result<Tensor> {
    let shape = spec.shape.as_slice();
    let tensor = if spec.shape.len() >= 2 {
        // Glorot uniform: fan_in = in * receptive field, fan_out = out * receptive field.
        let receptive: usize = spec.shape.iter().skip(2).product();
        let fan_in = spec.shape.get(1).copied().unwrap_or(1) * receptive;
        let fan_out = spec.shape.first().copied().unwrap_or(1) * receptive;
        let limit = (6.0 / (fan_in + fan_out).max(1) as f64).sqrt() as f32;
        let numel: usize = spec.shape.iter().product();
        let values: Vec<f32> = (0..numel)
            .map(|_| rng.random_range(-limit..=limit))
            .collect();
        Tensor::from_vec(values, shape, device)?
    } else if spec.name.ends_with(".running_var") || spec.name.ends_with(".weight") {
        // A 1-D `weight` is a BN scale (kernels have rank 2 or more).
        Tensor::ones(shape, candle_core::DType::F32, device)?
    } else {
        Tensor::zeros(shape, candle_core::DType::F32, device)?
    };
    Ok(tensor)
}
