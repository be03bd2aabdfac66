//! Binary cross-entropy computed from logits in the numerically stable form.
//!
//! `candle_nn::loss::binary_cross_entropy_with_logit` takes a sigmoid and then a log, which
//! gives `log(0) = -inf` for large logits. Here the loss of logit `x` and label `y` is
//! `max(x, 0) - x * y + log(1 + exp(-|x|))`, finite for every finite `x`.

use super::config::ClassWeights;
use crate::error::{Error, Result};
use candle_core::Tensor;

/// Per-sample binary cross-entropy `(N,)` of logits `(N,)` against labels `(N,)` in [0, 1].
///
/// ```
/// use candle_core::{Device, Tensor};
/// let logits = Tensor::new(&[0f32, 200.0, -200.0], &Device::Cpu)?;
/// let labels = Tensor::new(&[1f32, 1.0, 1.0], &Device::Cpu)?;
/// let loss = fracture::train::bce_with_logits_per_sample(&logits, &labels)?.to_vec1::<f32>()?;
/// assert!((loss[0] - 2f32.ln()).abs() < 1e-6); // sigmoid(0) = 0.5
/// assert_eq!(loss[1], 0.0); // confident and right
/// assert_eq!(loss[2], 200.0); // confident and wrong: large but finite
/// # Ok::<(), fracture::Error>(())
/// ```
pub fn bce_with_logits_per_sample(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    if logits.dims() != labels.dims() || logits.rank() != 1 {
        return Err(Error::InvalidInput(format!(
            "binary cross-entropy needs logits and labels of the same shape (N,), found {:?} and {:?}",
            logits.dims(),
            labels.dims()
        )));
    }
    let labels = labels.to_dtype(logits.dtype())?;
    let positive_part = logits.relu()?;
    let softplus_of_minus_abs = (logits.abs()?.neg()?.exp()? + 1.0)?.log()?;
    Ok(((positive_part - (logits * labels)?)? + softplus_of_minus_abs)?)
}

/// Mean binary cross-entropy over the batch (a scalar tensor), each sample's loss multiplied
/// by the weight of its label when `class_weights` is given (Keras `class_weight`: the
/// weighted sum is divided by the batch size, not by the sum of the weights).
///
/// ```
/// use candle_core::{Device, Tensor};
/// use fracture::train::{bce_with_logits, ClassWeights};
/// let logits = Tensor::new(&[0f32, 0.0], &Device::Cpu)?;
/// let labels = Tensor::new(&[0f32, 1.0], &Device::Cpu)?;
/// let weights = ClassWeights { negative: 1.0, positive: 3.0 };
/// let loss = bce_with_logits(&logits, &labels, Some(&weights))?.to_scalar::<f32>()?;
/// assert!((loss - 2.0 * 2f32.ln()).abs() < 1e-6); // (1 + 3) * ln 2 / 2
/// # Ok::<(), fracture::Error>(())
/// ```
pub fn bce_with_logits(
    logits: &Tensor,
    labels: &Tensor,
    class_weights: Option<&ClassWeights>,
) -> Result<Tensor> {
    let per_sample = bce_with_logits_per_sample(logits, labels)?;
    let weighted = match class_weights {
        None => per_sample,
        Some(w) => {
            let labels = labels.to_dtype(logits.dtype())?;
            // weight = negative + (positive - negative) * y
            let sample_weights = ((labels * (w.positive - w.negative))? + w.negative)?;
            (per_sample * sample_weights)?
        }
    };
    Ok(weighted.mean_all()?)
}

/// Binary cross-entropy of a localization map: logits and targets `(N, h, w)` (targets in
/// {0, 1}; a negative target marks a cell to ignore), the positive cells weighted by
/// `positive_weight`, averaged over the cells not ignored.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use fracture::train::cell_bce_with_logits;
/// let map = Tensor::new(&[[[0f32, 0.], [0., 0.]]], &Device::Cpu)?;
/// let targets = Tensor::new(&[[[1f32, 0.], [0., 0.]]], &Device::Cpu)?;
/// let loss = cell_bce_with_logits(&map, &targets, 3.0)?.to_scalar::<f32>()?;
/// // (3 ln 2 + 3 ln 2) / 4
/// assert!((loss - 1.5 * std::f32::consts::LN_2).abs() < 1e-6);
/// # Ok::<(), fracture::Error>(())
/// ```
pub fn cell_bce_with_logits(
    map: &Tensor,
    targets: &Tensor,
    positive_weight: f64,
) -> Result<Tensor> {
    if map.dims() != targets.dims() || map.rank() != 3 {
        return Err(Error::InvalidInput(format!(
            "a localization loss needs a map and targets of the same shape (N, h, w), found {:?} and {:?}",
            map.dims(),
            targets.dims()
        )));
    }
    let logits = map.flatten_all()?;
    let targets = targets.flatten_all()?.to_dtype(logits.dtype())?;
    // A negative target marks a cell whose truth is not known: weight 0.
    let known = targets.ge(0.0)?.to_dtype(logits.dtype())?;
    let targets = targets.clamp(0.0, 1.0)?;
    let per_cell = bce_with_logits_per_sample(&logits, &targets)?;
    let weights = (((&targets * (positive_weight - 1.0))? + 1.0)? * &known)?;
    // The mean over the cells whose truth is known (at least one, so all-unknown gives 0).
    let count = known.sum_all()?.maximum(1.0)?;
    Ok((per_cell * weights)?.sum_all()?.div(&count)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn naive_bce(x: f64, y: f64) -> f64 {
        let p = 1.0 / (1.0 + (-x).exp());
        -(y * p.ln() + (1.0 - y) * (1.0 - p).ln())
    }

    #[test]
    fn stable_form_matches_the_textbook_formula_for_moderate_logits() {
        let xs = [-6.0f32, -1.5, -0.1, 0.0, 0.3, 2.0, 7.0];
        for y in [0f32, 1.0, 0.25] {
            let logits = Tensor::new(&xs, &Device::Cpu).unwrap();
            let labels = Tensor::new(&[y; 7], &Device::Cpu).unwrap();
            let got = bce_with_logits_per_sample(&logits, &labels)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            for (x, g) in xs.iter().zip(got) {
                let want = naive_bce(*x as f64, y as f64);
                assert!((g as f64 - want).abs() < 1e-5, "x {x} y {y}: {g} vs {want}");
            }
        }
    }

    #[test]
    fn huge_logits_give_finite_loss_and_gradient() {
        let logits = candle_core::Var::new(&[1e4f32, -1e4, 1e4, -1e4], &Device::Cpu).unwrap();
        let labels = Tensor::new(&[0f32, 1.0, 1.0, 0.0], &Device::Cpu).unwrap();
        let loss = bce_with_logits(logits.as_tensor(), &labels, None).unwrap();
        assert_eq!(loss.to_scalar::<f32>().unwrap(), 1e4 / 2.0);
        let grads = loss.backward().unwrap();
        let g = grads
            .get(logits.as_tensor())
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        // d/dx = (sigmoid(x) - y) / N
        assert_eq!(g, vec![0.25, -0.25, 0.0, 0.0]);
    }

    #[test]
    fn mismatched_shapes_are_an_error() {
        let logits = Tensor::new(&[0f32, 1.0], &Device::Cpu).unwrap();
        let labels = Tensor::new(&[0f32], &Device::Cpu).unwrap();
        assert!(bce_with_logits(&logits, &labels, None).is_err());
    }
}
