//! Running a network over a [`BatchSource`] in inference mode and collecting what metrics need.

use crate::batch::{check_pass, BatchSource};
use crate::error::Result;
use crate::model::FractureNet;

/// A network's outputs over a whole data source, in the source's order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Predictions {
    /// One logit per sample.
    pub logits: Vec<f32>,
    /// Fracture probability per sample (`sigmoid(logit)`).
    pub probabilities: Vec<f32>,
    /// True label per sample (1.0 = fractured).
    pub labels: Vec<f32>,
    /// Index of each sample in its dataset part ([`crate::batch::Batch::indices`]).
    pub indices: Vec<usize>,
}

impl Predictions {
    /// Share of samples classified correctly at probability 0.5 (by
    /// [`crate::metrics::predicts_fracture`]); an error when there are none.
    pub fn accuracy(&self) -> Result<f64> {
        accuracy(&self.logits, &self.labels)
    }
}

/// Run `net` over every batch of `source` (epoch 0) in inference mode.
///
/// ```
/// use fracture::batch::TensorBatches;
/// use fracture::model::{BackboneConfig, FractureNet, HeadConfig, ResNetV2Config};
/// use candle_core::{Device, DType, Tensor};
/// let varmap = candle_nn::VarMap::new();
/// let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
/// let backbone = BackboneConfig::from(ResNetV2Config::custom(vec![2, 2], vec![4, 8]));
/// let net = FractureNet::new(&backbone, &HeadConfig::default(), vb)?;
/// let images = Tensor::zeros((3, 3, 32, 32), DType::F32, &Device::Cpu)?;
/// let labels = Tensor::new(&[1f32, 0., 1.], &Device::Cpu)?;
/// let predictions = fracture::train::predict(&net, &TensorBatches::new(images, labels, 2)?)?;
/// assert_eq!(predictions.labels, vec![1., 0., 1.]);
/// assert_eq!(predictions.indices, vec![0, 1, 2]);
/// assert!(predictions.probabilities.iter().all(|p| (0.0..=1.0).contains(p)));
/// # Ok::<(), fracture::Error>(())
/// ```
pub fn predict(net: &FractureNet, source: &dyn BatchSource) -> Result<Predictions> {
    let device = net.head.logit().weight().device().clone();
    let mut out = Predictions::default();
    for batch in source.batches(0)? {
        let batch = batch?;
        let images = batch.images.to_device(&device)?;
        let logits = net.forward(&images)?.to_vec1::<f32>()?;
        out.probabilities
            .extend(logits.iter().map(|&x| 1.0 / (1.0 + (-x).exp())));
        out.logits.extend(logits);
        out.labels.extend(batch.labels.to_vec1::<f32>()?);
        out.indices.extend(batch.indices);
    }
    check_pass(source, 0, out.indices.len(), "prediction")?;
    Ok(out)
}

/// Accuracy at probability 0.5 of logits (through [`crate::metrics::accuracy`], so the rule
/// is [`crate::metrics::predicts_fracture`]); an error for no samples.
pub(crate) fn accuracy(logits: &[f32], labels: &[f32]) -> Result<f64> {
    let labels: Vec<bool> = labels.iter().map(|&y| y > 0.5).collect();
    let probabilities: Vec<f64> = logits
        .iter()
        .map(|&x| crate::metrics::sigmoid(f64::from(x)))
        .collect();
    crate::metrics::accuracy(&labels, &probabilities, 0.5)
}

/// Area under the ROC curve of logits or probabilities (`labels` > 0.5 = fractured), through
/// [`crate::metrics::roc_auc`]; `None` with a single class or non-finite scores.
pub(crate) fn roc_auc(scores: &[f32], labels: &[f32]) -> Option<f64> {
    let labels: Vec<bool> = labels.iter().map(|&y| y > 0.5).collect();
    let scores: Vec<f64> = scores.iter().map(|&s| f64::from(s)).collect();
    crate::metrics::roc_auc(&labels, &scores)
        .ok()
        .and_then(|auc| auc.value())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_is_one_for_perfect_ranking_and_half_for_all_ties() {
        assert_eq!(roc_auc(&[0.1, 0.2, 0.8, 0.9], &[0., 0., 1., 1.]), Some(1.0));
        assert_eq!(roc_auc(&[0.5; 4], &[0., 1., 0., 1.]), Some(0.5));
        assert_eq!(roc_auc(&[0.1, 0.2], &[1., 1.]), None);
    }

    #[test]
    fn auc_counts_ordered_pairs() {
        // positives 0.4, 0.9; negatives 0.1, 0.5: pairs won 1 + 2 = 3 of 4.
        assert_eq!(
            roc_auc(&[0.4, 0.1, 0.9, 0.5], &[1., 0., 1., 0.]),
            Some(0.75)
        );
    }

    #[test]
    fn accuracy_calls_probability_one_half_fractured() {
        // logit 0 is probability 0.5: fractured, like every other decision in the crate.
        assert_eq!(
            accuracy(&[1.0, -1.0, 0.0, 2.0], &[1., 0., 1., 0.]).unwrap(),
            0.75
        );
        assert_eq!(accuracy(&[0.0], &[0.]).unwrap(), 0.0);
    }

    #[test]
    fn accuracy_of_no_samples_is_an_error() {
        assert!(accuracy(&[], &[]).is_err());
    }
}
