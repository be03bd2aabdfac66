//! The fast CPU inference path ([`FastResNetV2`]) computes what the default candle path
//! ([`ResNetV2`]) computes: the Keras tiny fixture within 1e-4, and the default path on random
//! models with non-trivial batch-norm statistics.
//!
//! Every random model and input is seeded, so a failure reproduces on every machine.

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use fracture::model::{FastResNetV2, ResNetV2, ResNetV2Config};

use crate::common;
use common::{
    load_safetensors, seeded_centered, seeded_uniform, tiny_config, tiny_fixture, to_nchw,
};

/// Absolute tolerance per unit of the reference's largest magnitude. The two paths add the
/// same products in different orders (and the fast one folds batch norm into the kernels), so
/// their rounding error grows with the size of the activations along the way, not with the
/// size of the one element compared: an element near zero in a map whose values reach 10
/// carries the rounding of those 10s.
const ATOL: f32 = 1e-4;
const RTOL: f32 = 1e-4;

/// The Keras fixture model (default path), its NCHW input and the fixture's reference outputs.
fn fixture_model() -> (ResNetV2, Tensor, std::collections::HashMap<String, Tensor>) {
    let keras = load_safetensors(&tiny_fixture("weights.safetensors"));
    let weights = fracture::weights::keras::to_candle(keras).expect("keras mapping");
    let vb = VarBuilder::from_tensors(weights, DType::F32, &Device::Cpu);
    let model = ResNetV2::new(&tiny_config(), vb).expect("fixture model");
    let io = load_safetensors(&tiny_fixture("io.safetensors"));
    (model, to_nchw(&io["input"]), io)
}

/// Panics with the worst element if `got` and `want` differ beyond
/// `ATOL * max(1, max |want|) + RTOL * |want|`.
fn assert_close(got: &Tensor, want: &Tensor, what: &str) {
    let w = want.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let scale = w.iter().fold(1f32, |m, v| m.max(v.abs()));
    common::assert_close(what, got, want, ATOL * scale, RTOL);
}

/// A random model whose batch norms are far from the identity and whose convs have biases,
/// every variable drawn from a stream keyed by `seed` (in name order, so the same model on
/// every run).
fn random_model(config: &ResNetV2Config, seed: u64) -> (ResNetV2, VarMap) {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let model = ResNetV2::new(config, vb).unwrap();
    let data = varmap.data().lock().unwrap();
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for (k, name) in names.into_iter().enumerate() {
        let var = &data[name];
        let shape = var.dims().to_vec();
        let key = seed.wrapping_mul(1_000_003).wrapping_add(k as u64);
        let value = if name.ends_with("running_var") || name.ends_with("_bn.weight") {
            seeded_uniform(&shape, 0.5, 1.5, key)
        } else if name.ends_with("running_mean") || name.ends_with(".bias") {
            seeded_centered(&shape, 0.3, key)
        } else {
            // Conv kernels: He-scaled, as the default initialisation is.
            let fan_in: usize = shape.iter().skip(1).product();
            seeded_centered(&shape, (2.0 / fan_in.max(1) as f32).sqrt(), key)
        };
        var.set(&value).unwrap();
    }
    drop(data);
    (model, varmap)
}

/// A seeded NCHW input with unit variance.
fn input(shape: (usize, usize, usize, usize), seed: u64) -> Tensor {
    seeded_centered(&[shape.0, shape.1, shape.2, shape.3], 1.0, seed)
}

#[test]
fn fast_path_matches_the_keras_fixture_output() {
    let (model, input, io) = fixture_model();
    let fast = FastResNetV2::from_model(&model).unwrap();
    assert_close(
        &fast.forward_pooled(&input).unwrap(),
        &io["output"],
        "output",
    );
}

#[test]
fn fast_path_matches_the_keras_fixture_feature_map() {
    let (model, input, io) = fixture_model();
    let fast = FastResNetV2::from_model(&model).unwrap();
    let features = fast.forward_features(&input).unwrap();
    let want = io["features"].permute((0, 3, 1, 2)).unwrap();
    assert_close(&features, &want, "features");
}

#[test]
fn default_path_matches_the_keras_fixture_output() {
    let (model, input, io) = fixture_model();
    assert_close(
        &model.forward_pooled(&input).unwrap(),
        &io["output"],
        "output",
    );
}

#[test]
fn fast_path_matches_the_default_path_on_a_random_model_with_odd_sizes() {
    let config = ResNetV2Config::custom(vec![2, 3, 2], vec![8, 16, 32]);
    let (model, _) = random_model(&config, 1);
    let fast = FastResNetV2::from_model(&model).unwrap();
    let x = input((3, 3, 45, 37), 7);
    assert_close(
        &fast.forward_features(&x).unwrap(),
        &model.forward_features(&x).unwrap(),
        "features",
    );
}

#[test]
fn fast_path_matches_the_default_path_on_a_batch_large_enough_for_the_tiled_kernels() {
    // 6 x 65 x 49 stem pixels and 6 x 33 x 25 block pixels: more than one layer-wide product
    // takes, so the convolutions run as tiles (im2col per tile, fused epilogues).
    let config = ResNetV2Config::custom(vec![2, 2], vec![4, 8]);
    let (model, _) = random_model(&config, 1);
    let fast = FastResNetV2::from_model(&model).unwrap();
    let x = input((6, 3, 130, 98), 7);
    assert_close(
        &fast.forward_features(&x).unwrap(),
        &model.forward_features(&x).unwrap(),
        "features",
    );
}

#[test]
fn fast_path_from_the_variables_equals_fast_path_from_the_model() {
    let config = ResNetV2Config::custom(vec![2, 2], vec![4, 8]);
    let (model, varmap) = random_model(&config, 2);
    let from_vars = FastResNetV2::new(
        &config,
        VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu),
    )
    .unwrap();
    let from_model = FastResNetV2::from_model(&model).unwrap();
    let x = input((2, 3, 64, 64), 7);
    let a = from_vars.forward_pooled(&x).unwrap();
    let b = from_model.forward_pooled(&x).unwrap();
    assert_eq!(a.to_vec2::<f32>().unwrap(), b.to_vec2::<f32>().unwrap());
}

#[test]
fn fast_path_gives_the_same_answer_after_a_call_with_another_batch_size() {
    let config = ResNetV2Config::custom(vec![2, 2], vec![4, 8]);
    let (model, _) = random_model(&config, 1);
    let fast = FastResNetV2::from_model(&model).unwrap();
    let x = input((4, 3, 48, 48), 7);
    let first = fast.forward_pooled(&x).unwrap();
    // A smaller batch in between reuses (and must fully overwrite) the kept buffers.
    let one = fast.forward_pooled(&x.narrow(0, 1, 1).unwrap()).unwrap();
    let again = fast.forward_pooled(&x).unwrap();
    assert_eq!(
        first.to_vec2::<f32>().unwrap(),
        again.to_vec2::<f32>().unwrap()
    );
    assert_close(&one, &first.narrow(0, 1, 1).unwrap(), "image 1 alone");
}

#[test]
fn fast_path_rejects_the_inputs_the_default_path_rejects_with_the_same_message() {
    let config = ResNetV2Config::custom(vec![2, 2], vec![4, 8]);
    let (model, _) = random_model(&config, 1);
    let fast = FastResNetV2::from_model(&model).unwrap();
    let bad = [
        Tensor::zeros((3, 64, 64), DType::F32, &Device::Cpu).unwrap(),
        Tensor::zeros((1, 1, 64, 64), DType::F32, &Device::Cpu).unwrap(),
        Tensor::zeros((1, 3, 31, 64), DType::F32, &Device::Cpu).unwrap(),
        Tensor::zeros((0, 3, 64, 64), DType::F32, &Device::Cpu).unwrap(),
    ];
    for x in &bad {
        let ours = fast.forward_features(x).unwrap_err().to_string();
        let theirs = model.forward_features(x).unwrap_err().to_string();
        assert_eq!(ours, theirs, "input {:?}", x.dims());
    }
}

#[test]
fn a_head_trains_on_the_fast_path_features_of_a_frozen_backbone() {
    use candle_nn::Optimizer;
    use fracture::model::{ClassifierHead, HeadConfig};
    let (model, x, _) = fixture_model();
    let fast = FastResNetV2::from_model(&model).unwrap();
    let y = Tensor::new(&[0f32, 1.], &Device::Cpu).unwrap();
    // No autograd through the backbone: the features are plain values.
    let pooled = fast.forward_pooled(&x).unwrap();

    let head_vars = VarMap::new();
    let vb = VarBuilder::from_varmap(&head_vars, DType::F32, &Device::Cpu);
    let head = ClassifierHead::new(128, &HeadConfig::default(), vb).unwrap();
    let mut opt = candle_nn::SGD::new(head_vars.all_vars(), 0.05).unwrap();
    let loss = || {
        let logits = head.forward(&pooled).unwrap();
        candle_nn::loss::binary_cross_entropy_with_logit(&logits, &y).unwrap()
    };
    let before = loss().to_scalar::<f32>().unwrap();
    for _ in 0..20 {
        opt.backward_step(&loss()).unwrap();
    }
    let after = loss().to_scalar::<f32>().unwrap();
    assert!(after < before, "loss went from {before} to {after}");
}
