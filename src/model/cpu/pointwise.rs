//! Per-channel and per-image primitives on NHWC buffers that more than one backbone's fast
//! path uses: an inference-mode batch normalization folded into a scale and a shift, and the
//! global average pool.

use super::Nhwc;

/// A per-channel affine map followed by ReLU: `y = max(x * scale + shift, 0)`
/// (an inference-mode batch normalization and its activation).
#[derive(Debug, Clone)]
pub(crate) struct ScaleShift {
    pub(crate) scale: Vec<f32>,
    pub(crate) shift: Vec<f32>,
}

impl ScaleShift {
    /// `gamma / sqrt(var + eps)` and `beta - mean * gamma / sqrt(var + eps)`, computed in f64.
    pub(crate) fn from_batch_norm(
        gamma: &[f32],
        beta: &[f32],
        mean: &[f32],
        var: &[f32],
        eps: f64,
    ) -> Self {
        let (scale, shift) = gamma
            .iter()
            .zip(beta)
            .zip(mean.iter().zip(var))
            .map(|((&g, &b), (&m, &v))| {
                let s = f64::from(g) / (f64::from(v) + eps).sqrt();
                (s as f32, (f64::from(b) - f64::from(m) * s) as f32)
            })
            .unzip();
        Self { scale, shift }
    }

    pub(crate) fn channels(&self) -> usize {
        self.scale.len()
    }

    #[inline]
    pub(crate) fn apply_row(&self, src: &[f32], dst: &mut [f32]) {
        for (((d, &x), &s), &t) in dst.iter_mut().zip(src).zip(&self.scale).zip(&self.shift) {
            *d = (x * s + t).max(0.0);
        }
    }
}

/// Mean over the pixels of each image: `(N, H, W, C) -> (N, C)`.
pub(crate) fn global_average_pool(x: &[f32], xs: Nhwc) -> Vec<f32> {
    let per_image = xs.h * xs.w;
    let mut out = vec![0f32; xs.n * xs.c];
    if per_image == 0 || xs.c == 0 {
        return out;
    }
    for (o, img) in out
        .chunks_exact_mut(xs.c)
        .zip(x.chunks_exact(per_image * xs.c))
    {
        let mut acc = vec![0f64; xs.c];
        for px in img.chunks_exact(xs.c) {
            for (a, &v) in acc.iter_mut().zip(px) {
                *a += f64::from(v);
            }
        }
        for (o, a) in o.iter_mut().zip(acc) {
            *o = (a / per_image as f64) as f32;
        }
    }
    out
}
