//! [`FeatureCache`]: the pooled features of a frozen backbone, computed once per sample and
//! reused every epoch when the images do not change (no augmentation).

use crate::batch::{check_pass, BatchSource};
use crate::error::{Error, Result};
use candle_core::{Device, Tensor};
use std::collections::HashMap;

/// Pooled backbone features per sample, computed once (frozen backbone, fixed images).
#[derive(Debug)]
pub(super) struct FeatureCache {
    rows: Tensor,
    position: HashMap<usize, u32>,
}

impl FeatureCache {
    pub(super) fn build(
        pooled_features: &dyn Fn(&Tensor) -> Result<Tensor>,
        source: &dyn BatchSource,
        device: &Device,
        pass: &str,
    ) -> Result<Self> {
        let mut parts = Vec::new();
        let mut position = HashMap::new();
        let mut row = 0u32;
        for batch in source.batches(0)? {
            let batch = batch?;
            let images = batch.images.to_device(device)?;
            let features = pooled_features(&images)?;
            for index in batch.indices {
                position.insert(index, row);
                row = row.checked_add(1).ok_or_else(|| {
                    Error::InvalidConfig(
                        "too many samples to cache features for (over 2^32)".into(),
                    )
                })?;
            }
            parts.push(features.detach());
        }
        check_pass(source, 0, row as usize, pass)?;
        let rows = Tensor::cat(&parts, 0)?;
        Ok(Self { rows, position })
    }

    pub(super) fn gather(&self, indices: &[usize]) -> Result<Tensor> {
        let rows = indices
            .iter()
            .map(|i| {
                self.position.get(i).copied().ok_or_else(|| {
                    Error::Internal(format!(
                        "sample index {i} was not in the first pass over the data: cached features need the same samples in every epoch"
                    ))
                })
            })
            .collect::<Result<Vec<u32>>>()?;
        let rows = Tensor::new(rows, self.rows.device())?;
        Ok(self.rows.index_select(&rows, 0)?)
    }
}
