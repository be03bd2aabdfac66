//! Keras parity: our ResNetV2 reproduces every tap of Keras's own ResNetV2 on the golden
//! fixtures (tests/fixtures/keras_resnet_v2/tiny, plus `KERAS_FIXTURE_DIR` when set).

use crate::common;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use common::*;
use fracture::model::ResNetV2;
use fracture::weights::keras;

const ATOL: f32 = 1e-4;
const RTOL: f32 = 1e-4;

fn check_fixture(dir: &std::path::Path) {
    eprintln!("fixture {}", dir.display());
    let config = read_fixture_config(dir);
    let keras_weights = load_safetensors(&dir.join("weights.safetensors"));
    let weights = keras::to_candle(keras_weights).unwrap();
    let vb = VarBuilder::from_tensors(weights, DType::F32, &Device::Cpu);
    let model = ResNetV2::new(&config.model, vb).unwrap();

    let io = load_safetensors(&dir.join("io.safetensors"));
    let input = to_nchw(&io["input"]);
    assert_eq!(to_nhwc(&input).dims(), config.input_shape.as_slice());
    let taps = model.forward_taps(&input, false).unwrap();

    assert_close(
        "conv1_conv",
        &to_nhwc(&taps.conv1_conv),
        &io["conv1_conv"],
        ATOL,
        RTOL,
    );
    assert_close(
        "pool1_pool",
        &to_nhwc(&taps.pool1_pool),
        &io["pool1_pool"],
        ATOL,
        RTOL,
    );
    assert_eq!(taps.stacks.len(), config.stack_names.len());
    for ((stack, name), blocks) in taps
        .stacks
        .iter()
        .zip(&config.stack_names)
        .zip(&config.blocks)
    {
        let key = format!("{name}_block{blocks}_out");
        assert_close(&key, &to_nhwc(stack), &io[&key], ATOL, RTOL);
    }
    assert_close(
        "features",
        &to_nhwc(&taps.features),
        &io["features"],
        ATOL,
        RTOL,
    );
    let pooled = model.forward_pooled(&input).unwrap();
    assert_close("output", &pooled, &io["output"], ATOL, RTOL);
}

#[test]
fn every_tap_matches_keras_on_each_fixture() {
    for dir in keras_fixture_dirs() {
        check_fixture(&dir);
    }
}

#[test]
fn fixture_parameter_count_matches_keras() {
    let dir = tiny_fixture_dir();
    let config = read_fixture_config(&dir);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    assert_eq!(
        config.model.parameter_count() as u64,
        json["param_count"].as_u64().unwrap()
    );
    assert_eq!(
        config.model.variables().len() as u64,
        json["n_weight_tensors"].as_u64().unwrap()
    );
}

/// With `--features cuda` and a GPU present, the same parity holds on the GPU.
#[cfg(feature = "cuda")]
#[test]
fn output_matches_keras_on_cuda() {
    let device = Device::new_cuda(0).expect("cuda:0");
    for dir in keras_fixture_dirs() {
        let config = read_fixture_config(&dir);
        let weights = keras::to_candle(load_safetensors(&dir.join("weights.safetensors"))).unwrap();
        let weights = weights
            .into_iter()
            .map(|(k, v)| (k, v.to_device(&device).unwrap()))
            .collect();
        let vb = VarBuilder::from_tensors(weights, DType::F32, &device);
        let model = ResNetV2::new(&config.model, vb).unwrap();
        let io = load_safetensors(&dir.join("io.safetensors"));
        let input = to_nchw(&io["input"]).to_device(&device).unwrap();
        let pooled = model
            .forward_pooled(&input)
            .unwrap()
            .to_device(&Device::Cpu)
            .unwrap();
        assert_close("output (cuda)", &pooled, &io["output"], ATOL, RTOL);
    }
}
