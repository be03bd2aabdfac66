//! Helpers for the model's unit tests.

use rand::{Rng, SeedableRng};

/// `n` values uniform in `[-1, 1)` from a ChaCha stream keyed by `seed`: the same on every run
/// and machine, unlike `Tensor::randn`, whose CPU generator cannot be seeded, so a tolerance
/// failure can be reproduced.
pub(crate) fn seeded_values(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-1f32..1.)).collect()
}
