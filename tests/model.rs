//! The ResNetV2 variable list and parameter counts against Keras's, and input validation.

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use fracture::model::{FractureNet, HeadConfig, ResNetV2, ResNetV2Config};
use std::collections::BTreeMap;

use crate::common;
use common::keras_152v2_variables;

#[test]
fn resnet152v2_variables_match_keras_one_to_one() {
    let keras_vars = keras_152v2_variables();
    assert_eq!(keras_vars.len(), 814);
    let ours: BTreeMap<String, Vec<usize>> = ResNetV2Config::resnet152v2()
        .variables()
        .into_iter()
        .map(|v| (v.name, v.shape))
        .collect();
    let missing: Vec<_> = keras_vars
        .keys()
        .filter(|k| !ours.contains_key(*k))
        .collect();
    let extra: Vec<_> = ours
        .keys()
        .filter(|k| !keras_vars.contains_key(*k))
        .collect();
    assert!(missing.is_empty(), "missing in ours: {missing:?}");
    assert!(extra.is_empty(), "not in Keras: {extra:?}");
    for (name, shape) in &keras_vars {
        assert_eq!(&ours[name], shape, "shape of {name}");
    }
}

#[test]
fn built_resnet152v2_creates_exactly_the_listed_variables() {
    let config = ResNetV2Config::resnet152v2();
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    ResNetV2::new(&config, vb).unwrap();
    let built: BTreeMap<String, Vec<usize>> = varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.dims().to_vec()))
        .collect();
    let listed: BTreeMap<String, Vec<usize>> = config
        .variables()
        .into_iter()
        .map(|v| (v.name, v.shape))
        .collect();
    assert_eq!(built, listed);
}

#[test]
fn parameter_counts_match_keras() {
    assert_eq!(ResNetV2Config::resnet152v2().parameter_count(), 58_331_648);
    assert_eq!(ResNetV2Config::resnet101v2().parameter_count(), 42_626_560);
    assert_eq!(ResNetV2Config::resnet50v2().parameter_count(), 23_564_800);
}

fn tiny_model() -> ResNetV2 {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    ResNetV2::new(&ResNetV2Config::custom(vec![2, 2], vec![4, 8]), vb).unwrap()
}

fn error_for(dims: &[usize]) -> String {
    let x = Tensor::zeros(dims, DType::F32, &Device::Cpu).unwrap();
    tiny_model().forward_features(&x).unwrap_err().to_string()
}

#[test]
fn wrong_channel_count_is_an_error_naming_both_shapes() {
    let msg = error_for(&[1, 1, 64, 64]);
    assert!(
        msg.contains("3 input channels") && msg.contains("[1, 1, 64, 64]"),
        "{msg}"
    );
}

#[test]
fn wrong_rank_is_an_error_naming_both_shapes() {
    let msg = error_for(&[3, 64, 64]);
    assert!(
        msg.contains("rank-4") && msg.contains("[3, 64, 64]"),
        "{msg}"
    );
}

#[test]
fn input_smaller_than_32_is_an_error() {
    let msg = error_for(&[1, 3, 31, 64]);
    assert!(
        msg.contains("32x32") && msg.contains("[1, 3, 31, 64]"),
        "{msg}"
    );
    assert!(tiny_model()
        .forward_features(&Tensor::zeros((1, 3, 32, 32), DType::F32, &Device::Cpu).unwrap())
        .is_ok());
}

#[test]
fn odd_input_sizes_halve_with_ceiling_like_keras() {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let config = ResNetV2Config::custom(vec![2, 2, 2, 2], vec![4, 8, 16, 32]);
    let model = ResNetV2::new(&config, vb).unwrap();
    let x = Tensor::zeros((1, 3, 97, 75), DType::F32, &Device::Cpu).unwrap();
    let taps = model.forward_taps(&x, false).unwrap();
    let sizes: Vec<(usize, usize)> = taps
        .stacks
        .iter()
        .map(|t| (t.dims()[2], t.dims()[3]))
        .collect();
    // ARCHITECTURE.md: 97x75 → 49x38 → 25x19 → 13x10 → 7x5 → 4x3 → 4x3.
    assert_eq!(taps.conv1_conv.dims()[2..], [49, 38]);
    assert_eq!(taps.pool1_pool.dims()[2..], [25, 19]);
    assert_eq!(sizes, vec![(13, 10), (7, 5), (4, 3), (4, 3)]);
    assert_eq!(config.feature_size(97, 75), (4, 3));
}

#[test]
fn network_puts_head_variables_under_head() {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let config = ResNetV2Config::custom(vec![2, 2], vec![4, 8]);
    let net = FractureNet::new(&config, &HeadConfig::default(), vb).unwrap();
    let names: Vec<String> = varmap.data().lock().unwrap().keys().cloned().collect();
    for n in [
        "head.dense.weight",
        "head.dense.bias",
        "head.logit.weight",
        "head.logit.bias",
    ] {
        assert!(names.iter().any(|x| x == n), "{n} missing");
    }
    assert_eq!(names.len(), config.variables().len() + 4);
    let x = Tensor::zeros((2, 3, 64, 64), DType::F32, &Device::Cpu).unwrap();
    let p: Vec<f32> = net.probabilities(&x).unwrap().to_vec1().unwrap();
    assert!(p.iter().all(|v| (0.0..=1.0).contains(v)));
}

#[test]
fn invalid_configs_are_rejected() {
    assert!(ResNetV2Config::custom(vec![], vec![]).validate().is_err());
    assert!(ResNetV2Config::custom(vec![2, 2], vec![4])
        .validate()
        .is_err());
    assert!(ResNetV2Config::custom(vec![2, 1], vec![4, 8])
        .validate()
        .is_err());
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    assert!(ResNetV2::new(&ResNetV2Config::custom(vec![2, 1], vec![4, 8]), vb).is_err());
}
