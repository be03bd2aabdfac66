//! Helpers shared by the integration tests: reading Keras reference fixtures.
#![allow(dead_code)]

use candle_core::{Device, Tensor};
use fracture::model::ResNetV2Config;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// The Keras tiny fixture shipped with the crate.
pub fn tiny_fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keras_resnet_v2/tiny")
}

/// A file of the Keras tiny fixture.
pub fn tiny_fixture(name: &str) -> PathBuf {
    tiny_fixture_dir().join(name)
}

/// The Keras tiny fixture's backbone shape (stacks 2,2,2,2; widths 4,8,16,32).
pub fn tiny_config() -> ResNetV2Config {
    ResNetV2Config::custom(vec![2, 2, 2, 2], vec![4, 8, 16, 32])
}

/// The shipped fixture, plus the folder named by `KERAS_FIXTURE_DIR` when set.
pub fn keras_fixture_dirs() -> Vec<PathBuf> {
    let mut dirs = vec![tiny_fixture_dir()];
    if let Ok(extra) = std::env::var("KERAS_FIXTURE_DIR") {
        eprintln!("also checking KERAS_FIXTURE_DIR={extra}");
        dirs.push(PathBuf::from(extra));
    }
    dirs
}

/// A fixture's model configuration and input size, read from its `config.json`.
pub struct FixtureConfig {
    pub model: ResNetV2Config,
    /// NHWC input shape.
    pub input_shape: Vec<usize>,
    pub stack_names: Vec<String>,
    pub blocks: Vec<usize>,
}

pub fn read_fixture_config(dir: &Path) -> FixtureConfig {
    read_fixture_config_file(&dir.join("config.json"))
}

/// [`read_fixture_config`] from a file of that format with another name (the Grad-CAM
/// fixture's `backbone_config.json`).
pub fn read_fixture_config_file(path: &Path) -> FixtureConfig {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let usizes = |key: &str| -> Vec<usize> {
        json[key]
            .as_array()
            .unwrap_or_else(|| panic!("config.json has no array {key}"))
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect()
    };
    let blocks = usizes("stacks");
    let mut model = ResNetV2Config::custom(blocks.clone(), usizes("filters"));
    model.strides = usizes("stack_stride1");
    model.stem_filters = json["stem_filters"].as_u64().unwrap() as usize;
    model.expansion = json["expansion"].as_u64().unwrap() as usize;
    model.bn_epsilon = json["bn_epsilon"].as_f64().unwrap();
    let stack_names = json["stack_names"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    FixtureConfig {
        model,
        input_shape: usizes("input_shape_nhwc"),
        stack_names,
        blocks,
    }
}

/// All tensors of a safetensors file.
pub fn load_safetensors(path: &Path) -> HashMap<String, Tensor> {
    candle_core::safetensors::load(path, &Device::Cpu)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The tiny fixture's input as NCHW and Keras's pooled output `(2, 128)`.
pub fn tiny_fixture_io() -> (Tensor, Tensor) {
    let io = load_safetensors(&tiny_fixture("io.safetensors"));
    (to_nchw(&io["input"]), io["output"].clone())
}

/// Largest absolute elementwise difference of two tensors of the same shape.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// NHWC → NCHW.
pub fn to_nchw(t: &Tensor) -> Tensor {
    t.permute((0, 3, 1, 2)).unwrap().contiguous().unwrap()
}

/// NCHW → NHWC.
pub fn to_nhwc(t: &Tensor) -> Tensor {
    t.permute((0, 2, 3, 1)).unwrap().contiguous().unwrap()
}

/// Assert `|actual - expected| <= atol + rtol * |expected|` elementwise; report the worst.
pub fn assert_close(name: &str, actual: &Tensor, expected: &Tensor, atol: f32, rtol: f32) {
    assert_eq!(
        actual.dims(),
        expected.dims(),
        "{name}: shape {:?} vs expected {:?}",
        actual.dims(),
        expected.dims()
    );
    let a: Vec<f32> = actual.flatten_all().unwrap().to_vec1().unwrap();
    let e: Vec<f32> = expected.flatten_all().unwrap().to_vec1().unwrap();
    let mut worst = (0.0f32, 0usize);
    let mut failures = 0usize;
    for (i, (x, y)) in a.iter().zip(&e).enumerate() {
        let diff = (x - y).abs();
        // NaN counts as a failure and as the worst difference.
        let within = diff <= atol + rtol * y.abs();
        if !within {
            failures += 1;
        }
        if diff.is_nan() || diff > worst.0 {
            worst = (diff, i);
        }
    }
    eprintln!(
        "{name}: max abs diff {:.3e} over {} values",
        worst.0,
        a.len()
    );
    assert_eq!(
        failures,
        0,
        "{name}: {failures} of {} values outside atol {atol} rtol {rtol}; worst diff {} at flat index {} (got {}, expected {})",
        a.len(),
        worst.0,
        worst.1,
        a[worst.1],
        e[worst.1]
    );
}

/// A tensor of `shape` filled with values uniform in `[lo, hi)` from a ChaCha stream keyed by
/// `seed`: the same numbers on every machine and every run, unlike `Tensor::rand`, whose CPU
/// generator cannot be seeded.
pub fn seeded_uniform(shape: &[usize], lo: f32, hi: f32, seed: u64) -> Tensor {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n = shape.iter().product::<usize>();
    let values: Vec<f32> = (0..n).map(|_| rng.random_range(lo..hi)).collect();
    Tensor::from_vec(values, shape, &Device::Cpu).expect("seeded tensor")
}

/// A seeded tensor with mean 0 and standard deviation `std` (uniform, so without outliers).
pub fn seeded_centered(shape: &[usize], std: f32, seed: u64) -> Tensor {
    let half_width = std * 3f32.sqrt();
    seeded_uniform(shape, -half_width, half_width, seed)
}
