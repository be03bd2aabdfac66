//! Helpers shared by the integration tests: reading Keras reference fixtures.
#![allow(dead_code)]

/// Synthetic DICOM files written with dicom-rs (for the DICOM, privacy and scoring tests).
pub mod dicom_writer;

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

/// The shipped fixture, plus the folder named by `KERAS_FIXTURE_DIR` when set (it must exist:
/// a set variable that points nowhere fails the test).
pub fn keras_fixture_dirs() -> Vec<PathBuf> {
    let mut dirs = vec![tiny_fixture_dir()];
    if let Some(extra) = std::env::var_os("KERAS_FIXTURE_DIR") {
        let extra = PathBuf::from(extra);
        assert!(
            extra.is_dir(),
            "KERAS_FIXTURE_DIR={} is not a folder",
            extra.display()
        );
        eprintln!("also checking KERAS_FIXTURE_DIR={}", extra.display());
        dirs.push(extra);
    }
    dirs
}

/// Reference data a test needs that is too large (or too many) to ship: the path in the
/// environment variable `var` when it is set, else `../shared/<shared>` beside the crate (CI
/// always has it). Either way it must exist: a missing folder or file fails the test, it is
/// never skipped. Tests that call this are `#[ignore = "needs ../shared/..."]` and
/// `.ci/run` runs them.
pub fn reference_data(var: &str, shared: &str) -> PathBuf {
    let (path, from) = match std::env::var_os(var) {
        Some(value) => (PathBuf::from(value), format!("{var} (set)")),
        None => (
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../shared")
                .join(shared),
            format!("../shared/{shared} ({var} not set)"),
        ),
    };
    assert!(
        path.exists(),
        "{} from {from} does not exist: set {var} to the data, or run where ../shared is",
        path.display()
    );
    path
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

/// The largest of `values`; NaN when any value is NaN (an `f32::max` fold would drop it and
/// let a NaN pass a comparison). `-inf` for no values.
pub fn nan_max(values: impl IntoIterator<Item = f32>) -> f32 {
    let mut largest = f32::NEG_INFINITY;
    for v in values {
        if v.is_nan() {
            return f32::NAN;
        }
        largest = largest.max(v);
    }
    largest
}

/// The smallest and largest of `values`; panics naming `what` when one is NaN or there are
/// none.
pub fn min_max(values: &[f64], what: &str) -> (f64, f64) {
    assert!(!values.is_empty(), "{what}: no values");
    if let Some(i) = values.iter().position(|v| v.is_nan()) {
        panic!("{what}: NaN at index {i}");
    }
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (min, max)
}

/// Largest `|a - b|` over two slices of the same length; NaN when any difference is NaN.
pub fn max_abs_diff_values(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    nan_max(a.iter().zip(b).map(|(x, y)| (x - y).abs()))
}

/// Largest absolute elementwise difference of two tensors of the same shape; NaN when any
/// difference is NaN.
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims());
    max_abs_diff_values(&values(a), &values(b))
}

/// Every value of a tensor, flattened.
pub fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
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
/// A NaN anywhere (in either) fails.
pub fn assert_close(name: &str, actual: &Tensor, expected: &Tensor, atol: f32, rtol: f32) {
    assert_eq!(
        actual.dims(),
        expected.dims(),
        "{name}: shape {:?} vs expected {:?}",
        actual.dims(),
        expected.dims()
    );
    assert_close_values(name, &values(actual), &values(expected), atol, rtol);
}

/// [`assert_close`] for slices.
pub fn assert_close_values(name: &str, a: &[f32], e: &[f32], atol: f32, rtol: f32) {
    assert_eq!(
        a.len(),
        e.len(),
        "{name}: {} values vs {} expected",
        a.len(),
        e.len()
    );
    let mut worst = (0.0f32, 0usize);
    let mut failures = 0usize;
    for (i, (x, y)) in a.iter().zip(e).enumerate() {
        let diff = (x - y).abs();
        // Written so that NaN (in `x`, `y` or `diff`) is outside, and the worst.
        let within = diff <= atol + rtol * y.abs();
        if !within {
            failures += 1;
        }
        if !worst.0.is_nan() && (diff.is_nan() || diff > worst.0) {
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
        a.get(worst.1).copied().unwrap_or(f32::NAN),
        e.get(worst.1).copied().unwrap_or(f32::NAN)
    );
}

/// `per_class` generated radiographs of each class, sides of `min_size..=max_size` pixels, in
/// a FracAtlas-layout folder `dir` (with its `dataset.csv`); the samples, in folder order.
pub fn generated_samples(
    dir: &Path,
    per_class: usize,
    min_size: u32,
    max_size: u32,
) -> Vec<fracture::dataset::Sample> {
    fracture::dataset::synthetic::SyntheticConfig {
        n_fractured: per_class,
        n_not_fractured: per_class,
        min_size,
        max_size,
        ..Default::default()
    }
    .generate_to(dir)
    .unwrap()
}

/// A classifier small enough to build, train and save in a moment: a two-stack ResNetV2 on
/// seeded random weights, 48x48 inputs, on the CPU.
pub fn tiny_classifier() -> fracture::FractureClassifier {
    fracture::FractureClassifier::builder()
        .backbone(ResNetV2Config::custom(vec![2, 2], vec![4, 8]))
        .weights(fracture::WeightsSource::Random { seed: 3 })
        .device(fracture::device::DeviceRequest::Cpu)
        .image_size(48, 48)
        .build()
        .unwrap()
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

/// Keras's variables of ResNet152V2 (no top), from `weights_152v2_notop.tsv`, mapped to our
/// names and layouts through the crate's one Keras → candle mapping.
pub fn keras_152v2_variables() -> std::collections::BTreeMap<String, Vec<usize>> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/keras_resnet_v2/weights_152v2_notop.tsv"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let mut vars = std::collections::BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("layer\t"))
    {
        let cols: Vec<&str> = line.split('\t').collect();
        let (layer, weight, shape) = (cols[0], cols[1], cols[3]);
        let hwio: Vec<usize> = shape.split('x').map(|d| d.parse().unwrap()).collect();
        let name = fracture::weights::keras::candle_name(layer, weight).unwrap();
        // Apply the mapping to a zero-sized stand-in of the Keras shape to learn ours.
        let stand_in =
            Tensor::zeros(hwio.as_slice(), candle_core::DType::U8, &Device::Cpu).unwrap();
        let ours = fracture::weights::keras::candle_layout(&stand_in)
            .unwrap()
            .dims()
            .to_vec();
        assert!(vars.insert(name.clone(), ours).is_none(), "{name} twice");
    }
    vars
}

/// Synthetic radiographs (`per_class` of each class, seed 5) generated into `root`, opened and
/// split 70/10/20.
pub fn synthetic_split(root: &Path, per_class: usize) -> fracture::dataset::Split {
    use fracture::dataset::{synthetic::SyntheticConfig, FracAtlas, SplitConfig};
    SyntheticConfig {
        n_fractured: per_class,
        n_not_fractured: per_class,
        min_size: 64,
        max_size: 96,
        seed: 5,
        fracture_visibility: 2.5,
        fracture_spread: 0.2,
    }
    .generate_to(root)
    .unwrap();
    let data = FracAtlas::open(root).unwrap();
    data.split(&SplitConfig::default()).unwrap()
}

/// A short training run: `epochs` epochs of batches of 8, augmented, no progress bar.
pub fn quick_training(epochs: usize) -> fracture::train::TrainConfig {
    fracture::train::TrainConfig {
        epochs,
        batch_size: 8,
        augment: true,
        progress: false,
        ..fracture::train::TrainConfig::default()
    }
}

/// A tiny classifier trained for `epochs` epochs on `per_class` synthetic radiographs of
/// each class (generated into `root`), and the split.
pub fn trained_tiny(
    root: &Path,
    per_class: usize,
    epochs: usize,
) -> (fracture::FractureClassifier, fracture::dataset::Split) {
    let split = synthetic_split(root, per_class);
    let mut clf = tiny_classifier();
    clf.train(&split, quick_training(epochs)).unwrap();
    (clf, split)
}

/// True positives, false negatives, false positives and true negatives recounted from the
/// cases and threshold in a report's `metrics.json` (`probability >= threshold` is fractured).
pub fn recount_confusion(metrics: &serde_json::Value) -> [u64; 4] {
    let threshold = metrics["evaluation"]["at_threshold"]["threshold"]
        .as_f64()
        .unwrap();
    let mut counts = [0u64; 4];
    for case in metrics["evaluation"]["cases"].as_array().unwrap() {
        let fractured = case["fractured"].as_bool().unwrap();
        let called = case["probability"].as_f64().unwrap() >= threshold;
        let slot = match (fractured, called) {
            (true, true) => 0,
            (true, false) => 1,
            (false, true) => 2,
            (false, false) => 3,
        };
        counts[slot] += 1;
    }
    counts
}

/// The confusion matrix `metrics.json` states, in [`recount_confusion`]'s order.
pub fn stated_confusion(metrics: &serde_json::Value) -> [u64; 4] {
    let confusion = &metrics["evaluation"]["at_threshold"]["confusion"];
    [
        "true_positives",
        "false_negatives",
        "false_positives",
        "true_negatives",
    ]
    .map(|k| confusion[k].as_u64().unwrap())
}

/// The sections a report page must have, by `id`, in page order.
pub const REPORT_SECTIONS: [&str; 14] = [
    "headline",
    "curves",
    "operating-points",
    "confusion",
    "threshold-sweep",
    "calibration",
    "tta",
    "subgroups",
    "localization",
    "training",
    "split",
    "provenance",
    "gallery",
    "model-card",
];

/// A grayscale JPEG (quality 95), with `exif` (a TIFF block) as its EXIF metadata when given.
pub fn jpeg_bytes(image: &image::GrayImage, exif: Option<Vec<u8>>) -> Vec<u8> {
    use image::ImageEncoder;
    let mut bytes = Vec::new();
    let mut encoder = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 95);
    if let Some(exif) = exif {
        encoder.set_exif_metadata(exif).unwrap();
    }
    encoder
        .write_image(
            image.as_raw(),
            image.width(),
            image.height(),
            image::ExtendedColorType::L8,
        )
        .unwrap();
    bytes
}

/// A TIFF block (little endian) holding one IFD entry: Orientation (0x0112) = `value`.
pub fn exif_orientation(value: u16) -> Vec<u8> {
    let mut tiff = b"II".to_vec();
    tiff.extend_from_slice(&42u16.to_le_bytes());
    tiff.extend_from_slice(&8u32.to_le_bytes()); // offset of the first IFD
    tiff.extend_from_slice(&1u16.to_le_bytes()); // one entry
    tiff.extend_from_slice(&0x0112u16.to_le_bytes()); // tag: Orientation
    tiff.extend_from_slice(&3u16.to_le_bytes()); // type: SHORT
    tiff.extend_from_slice(&1u32.to_le_bytes()); // count
    tiff.extend_from_slice(&value.to_le_bytes());
    tiff.extend_from_slice(&[0, 0]); // value padding to 4 bytes
    tiff.extend_from_slice(&0u32.to_le_bytes()); // no next IFD
    tiff
}
