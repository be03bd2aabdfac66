//! Weights: every supported file format reproduces Keras's output on the tiny fixture, saving
//! round-trips, and bad input gives errors that name the file and the problem.

use candle_core::{DType, Device, Tensor};
use fracture::model::{FractureNet, HeadConfig, ResNetV2, ResNetV2Config};
use fracture::weights::{
    read_tensors, save_network, sniff_format, varmap_tensors, HubOptions, WeightsFormat,
    WeightsSource, FORMAT_KEY, FORMAT_VALUE,
};
use fracture::Error;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const ATOL: f32 = 1e-4;

use crate::common;
use common::{max_abs_diff, tiny_config as tiny, tiny_fixture as fixture, tiny_fixture_io};

/// Options that never reach a network or the user's cache.
fn offline_options(cache: &Path) -> HubOptions {
    HubOptions {
        endpoint: "http://127.0.0.1:9".into(),
        cache_dir: cache.to_path_buf(),
        offline: true,
        progress: false,
        token: None,
    }
}

/// Load `path` as the tiny backbone and check its pooled output against Keras's.
fn assert_reproduces_keras_output(path: &Path) {
    let weights = read_tensors(path, &Device::Cpu).unwrap();
    let report = weights.validate(&tiny().variables()).unwrap();
    assert!(report.unexpected.is_empty(), "{}", report.describe());
    let model = ResNetV2::new(&tiny(), weights.into_var_builder()).unwrap();
    let (input, expected) = tiny_fixture_io();
    let output = model.forward_pooled(&input).unwrap();
    let diff = max_abs_diff(&output, &expected);
    assert!(diff < ATOL, "{}: max abs diff {diff}", path.display());
}

fn error_text(result: fracture::Result<impl std::fmt::Debug>) -> String {
    result.expect_err("expected an error").to_string()
}

#[test]
fn classic_keras2_h5_reproduces_keras_output() {
    assert_reproduces_keras_output(&fixture("legacy_tf_keras.h5"));
}

#[test]
fn keras3_legacy_h5_reproduces_keras_output() {
    assert_reproduces_keras_output(&fixture("legacy_keras3.h5"));
}

#[test]
fn keras3_native_weights_h5_reproduces_keras_output() {
    assert_reproduces_keras_output(&fixture("model.weights.h5"));
}

#[test]
fn keras_layout_safetensors_reproduces_keras_output() {
    assert_reproduces_keras_output(&fixture("weights.safetensors"));
}

#[test]
fn h5_converted_to_our_safetensors_reproduces_keras_output() {
    let dir = tempfile::tempdir().unwrap();
    let ours = dir.path().join("tiny.safetensors");
    let weights = read_tensors(fixture("legacy_tf_keras.h5"), &Device::Cpu).unwrap();
    let tensors: HashMap<String, Tensor> = weights
        .shapes()
        .keys()
        .map(|name| (name.clone(), weights.get(name).unwrap()))
        .collect();
    save_network(&ours, &tensors, tiny(), None).unwrap();

    assert_eq!(sniff_format(&ours).unwrap(), WeightsFormat::Safetensors);
    assert_reproduces_keras_output(&ours);
}

#[test]
fn formats_are_recognized_by_content_not_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let disguised = dir.path().join("weights.safetensors");
    std::fs::copy(fixture("model.weights.h5"), &disguised).unwrap();
    let disguised_st = dir.path().join("weights.h5");
    std::fs::copy(fixture("weights.safetensors"), &disguised_st).unwrap();

    assert_eq!(sniff_format(&disguised).unwrap(), WeightsFormat::KerasHdf5);
    assert_eq!(
        sniff_format(&disguised_st).unwrap(),
        WeightsFormat::KerasSafetensors
    );
}

#[test]
fn saved_network_records_format_config_and_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("net.safetensors");
    let config = ResNetV2Config::custom(vec![2, 2], vec![4, 8]);
    let head = HeadConfig {
        hidden: 8,
        dropout: 0.5,
        localization: None,
    };
    let varmap = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    FractureNet::new(&config, &head, vb).unwrap();
    save_network(
        &path,
        &varmap_tensors(&varmap).unwrap(),
        &config,
        Some(&head),
    )
    .unwrap();

    let loaded = read_tensors(&path, &Device::Cpu).unwrap();
    let metadata = loaded.metadata();
    assert_eq!(metadata[FORMAT_KEY], FORMAT_VALUE);
    assert_eq!(metadata["fracture_version"], env!("CARGO_PKG_VERSION"));
    let saved: ResNetV2Config = serde_json::from_str(&metadata["backbone_config"]).unwrap();
    assert_eq!(saved, config);
    let saved_head: HeadConfig = serde_json::from_str(&metadata["head_config"]).unwrap();
    assert_eq!(saved_head, head);
}

#[test]
fn saved_head_is_loaded_back_with_the_backbone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("net.safetensors");
    let config = ResNetV2Config::custom(vec![2, 2], vec![4, 8]);
    let head = HeadConfig {
        hidden: 8,
        dropout: 0.5,
        localization: None,
    };
    let varmap = candle_nn::VarMap::new();
    let vb = candle_nn::VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let original = FractureNet::new(&config, &head, vb).unwrap();
    save_network(
        &path,
        &varmap_tensors(&varmap).unwrap(),
        &config,
        Some(&head),
    )
    .unwrap();

    let options = offline_options(dir.path());
    let loaded = WeightsSource::file(&path)
        .load(&config, &head, &Device::Cpu, &options)
        .unwrap();
    assert!(loaded.head_loaded);
    let (restored, head_vars) = loaded.into_network().unwrap();
    assert_eq!(head_vars.all_vars().len(), 4);

    let x = Tensor::randn(0f32, 1.0, (2, 3, 64, 64), &Device::Cpu).unwrap();
    let before = original.forward(&x).unwrap();
    let after = restored.forward(&x).unwrap();
    assert_eq!(max_abs_diff(&before, &after), 0.0);
}

#[test]
fn save_refuses_tensors_that_do_not_match_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("net.safetensors");
    let weights = read_tensors(fixture("weights.safetensors"), &Device::Cpu).unwrap();
    let tensors: HashMap<String, Tensor> = weights
        .shapes()
        .keys()
        .map(|name| (name.clone(), weights.get(name).unwrap()))
        .collect();
    let other = ResNetV2Config::custom(vec![2, 2, 2, 2], vec![4, 8, 16, 64]);

    let message = error_text(save_network(&path, &tensors, &other, None));
    assert!(message.contains("wrong shape"), "{message}");
    assert!(!path.exists());
}

#[test]
fn notop_weights_get_a_fresh_head_that_depends_only_on_the_seed() {
    let dir = tempfile::tempdir().unwrap();
    let options = offline_options(dir.path());
    let head = HeadConfig::default();
    let source = WeightsSource::file(fixture("model.weights.h5"));
    let build = || {
        let loaded = source.load(tiny(), &head, &Device::Cpu, &options).unwrap();
        assert!(!loaded.head_loaded);
        loaded.into_network().unwrap().1
    };
    let first = varmap_tensors(&build()).unwrap();
    let second = varmap_tensors(&build()).unwrap();
    for (name, tensor) in &first {
        assert_eq!(max_abs_diff(tensor, &second[name]), 0.0, "{name}");
    }
}

#[test]
fn random_weights_are_reproducible_from_the_seed() {
    let dir = tempfile::tempdir().unwrap();
    let options = offline_options(dir.path());
    let config = ResNetV2Config::custom(vec![2, 2], vec![4, 8]);
    let features = |seed: u64| {
        let (net, _) = WeightsSource::Random { seed }
            .load(&config, &HeadConfig::default(), &Device::Cpu, &options)
            .unwrap()
            .into_network()
            .unwrap();
        let x = Tensor::ones((1, 3, 64, 64), DType::F32, &Device::Cpu).unwrap();
        net.backbone.forward_pooled(&x).unwrap()
    };
    assert_eq!(max_abs_diff(&features(7), &features(7)), 0.0);
    assert!(max_abs_diff(&features(7), &features(8)) > 0.0);
}

#[test]
fn truncated_safetensors_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("truncated.safetensors");
    let bytes = std::fs::read(fixture("weights.safetensors")).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();

    let message = error_text(read_tensors(&path, &Device::Cpu));
    assert!(message.contains("truncated.safetensors"), "{message}");
    assert!(message.contains("invalid safetensors"), "{message}");
}

#[test]
fn truncated_safetensors_header_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("header.safetensors");
    let bytes = std::fs::read(fixture("weights.safetensors")).unwrap();
    std::fs::write(&path, &bytes[..100]).unwrap();

    let message = error_text(read_tensors(&path, &Device::Cpu));
    assert!(message.contains("header.safetensors"), "{message}");
    assert!(
        message.contains("truncated safetensors header"),
        "{message}"
    );
}

#[test]
fn truncated_hdf5_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("truncated.h5");
    let bytes = std::fs::read(fixture("legacy_tf_keras.h5")).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 3]).unwrap();

    let message = error_text(read_tensors(&path, &Device::Cpu));
    assert!(message.contains("truncated.h5"), "{message}");
}

#[test]
fn random_bytes_are_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("noise.bin");
    let noise: Vec<u8> = (0u32..4096)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&path, noise).unwrap();

    let err = read_tensors(&path, &Device::Cpu).unwrap_err();
    assert!(matches!(err, Error::Format { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains("noise.bin"), "{message}");
    assert!(message.contains("neither an HDF5 file"), "{message}");
}

#[test]
fn missing_file_is_an_io_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.h5");
    let err = read_tensors(&path, &Device::Cpu).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert!(err.to_string().contains("absent.h5"));
}

#[test]
fn hdf5_of_another_model_lists_missing_and_misshapen_variables() {
    let weights = read_tensors(fixture("legacy_keras3.h5"), &Device::Cpu).unwrap();
    let resnet50 = ResNetV2Config::resnet50v2();

    let message = error_text(weights.validate(&resnet50.variables()));
    assert!(message.contains("legacy_keras3.h5"), "{message}");
    // The tiny file has blocks 1-2 of each stack, narrower, and nothing for blocks 3+.
    assert!(
        message.contains(
            "wrong shape: conv2_block1_0_conv.weight expected [256, 64, 1, 1], found [16, 64, 1, 1]"
        ),
        "{message}"
    );
    assert!(
        message.contains("missing: conv2_block3_preact_bn.weight (expected [256])"),
        "{message}"
    );
    assert!(message.contains("... and "), "{message}");
}

/// The Keras-layout fixture with one tensor changed by `edit`, written to a temporary file.
fn edited_keras_safetensors(
    dir: &Path,
    edit: impl FnOnce(&mut HashMap<String, Tensor>),
) -> PathBuf {
    let mut tensors =
        candle_core::safetensors::load(fixture("weights.safetensors"), &Device::Cpu).unwrap();
    edit(&mut tensors);
    let path = dir.join("edited.safetensors");
    candle_core::safetensors::save(&tensors, &path).unwrap();
    path
}

#[test]
fn tensor_with_wrong_shape_is_an_error_with_expected_and_found_shapes() {
    let dir = tempfile::tempdir().unwrap();
    let path = edited_keras_safetensors(dir.path(), |t| {
        let wrong = Tensor::zeros((7, 7, 3, 32), DType::F32, &Device::Cpu).unwrap();
        t.insert("conv1_conv.kernel".into(), wrong);
    });
    let weights = read_tensors(&path, &Device::Cpu).unwrap();

    let message = error_text(weights.validate(&tiny().variables()));
    assert!(message.contains("edited.safetensors"), "{message}");
    assert!(
        message.contains("0 missing, 1 with the wrong shape, 0 unexpected, 141 matched"),
        "{message}"
    );
    assert!(
        message.contains("conv1_conv.weight expected [64, 3, 7, 7], found [32, 3, 7, 7]"),
        "{message}"
    );
}

#[test]
fn missing_tensor_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = edited_keras_safetensors(dir.path(), |t| {
        t.remove("post_bn.moving_variance");
    });
    let options = offline_options(dir.path());

    let message = error_text(WeightsSource::file(&path).load(
        tiny(),
        &HeadConfig::default(),
        &Device::Cpu,
        &options,
    ));
    assert!(message.contains("edited.safetensors"), "{message}");
    assert!(
        message.contains("1 missing, 0 with the wrong shape"),
        "{message}"
    );
    assert!(
        message.contains("missing: post_bn.running_var (expected [128])"),
        "{message}"
    );
}

#[test]
fn unexpected_tensors_are_reported_but_do_not_fail_the_load() {
    let dir = tempfile::tempdir().unwrap();
    let path = edited_keras_safetensors(dir.path(), |t| {
        let extra = Tensor::zeros((128, 10), DType::F32, &Device::Cpu).unwrap();
        t.insert("predictions.kernel".into(), extra);
    });
    let options = offline_options(dir.path());

    let loaded = WeightsSource::file(&path)
        .load(tiny(), &HeadConfig::default(), &Device::Cpu, &options)
        .unwrap();
    let unexpected: Vec<_> = loaded
        .report
        .unexpected
        .iter()
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(unexpected, ["predictions.weight"]);
}

#[test]
fn partial_head_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let head = HeadConfig::default();
    let path = edited_keras_safetensors(dir.path(), |t| {
        let dense = Tensor::zeros((128, 256), DType::F32, &Device::Cpu).unwrap();
        t.insert("head.dense.kernel".into(), dense);
    });
    let options = offline_options(dir.path());

    let message =
        error_text(WeightsSource::file(&path).load(tiny(), &head, &Device::Cpu, &options));
    assert!(message.contains("missing: head.logit.weight"), "{message}");
}

#[test]
fn layers_the_mapping_does_not_know_are_reported_as_unexpected() {
    let dir = tempfile::tempdir().unwrap();
    let path = edited_keras_safetensors(dir.path(), |t| {
        let extra = Tensor::zeros((100, 16), DType::F32, &Device::Cpu).unwrap();
        t.insert("token_embedding.embeddings".into(), extra);
    });
    let weights = read_tensors(&path, &Device::Cpu).unwrap();

    let report = weights.validate(&tiny().variables()).unwrap();
    let unexpected: Vec<_> = report.unexpected.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(unexpected, ["token_embedding.embeddings"]);
}

/// A Keras 3 `.weights.h5` of a small text classifier: no ResNet layer in it.
fn write_other_model_h5(path: &Path) {
    use hdf5_pure::{AttrValue, FileBuilder};
    let mut file = FileBuilder::new();
    let mut layers = file.create_group("layers");
    for (group, name, shapes) in [
        ("dense", "predictions", vec![vec![16u64, 10], vec![10]]),
        (
            "layer_normalization",
            "encoder_norm",
            vec![vec![16], vec![16]],
        ),
    ] {
        let mut layer = layers.create_group(group);
        let mut vars = layer.create_group("vars");
        vars.set_attr("name", AttrValue::String(name.into()));
        for (index, shape) in shapes.iter().enumerate() {
            let values = vec![0.5f32; shape.iter().product::<u64>() as usize];
            vars.create_dataset(&index.to_string())
                .with_f32_data(&values)
                .with_shape(shape);
        }
        layer.add_group(vars.finish());
        layers.add_group(layer.finish());
    }
    file.add_group(layers.finish());
    file.write(path).unwrap();
}

#[test]
fn keras3_file_of_another_model_is_an_error_listing_what_is_missing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("text_classifier.weights.h5");
    write_other_model_h5(&path);
    let options = offline_options(dir.path());

    let message = error_text(WeightsSource::file(&path).load(
        tiny(),
        &HeadConfig::default(),
        &Device::Cpu,
        &options,
    ));
    assert!(message.contains("text_classifier.weights.h5"), "{message}");
    assert!(
        message.contains("142 missing, 0 with the wrong shape, 4 unexpected, 0 matched"),
        "{message}"
    );
    assert!(
        message.contains("unexpected: predictions.weight [10, 16]"),
        "{message}"
    );
    assert!(
        message.contains("unexpected: encoder_norm/vars/0 [16]"),
        "{message}"
    );
}

#[test]
fn hdf5_file_without_keras_weights_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scan.h5");
    let mut file = hdf5_pure::FileBuilder::new();
    file.create_dataset("pixels")
        .with_f32_data(&[0.0; 16])
        .with_shape(&[4, 4]);
    file.write(&path).unwrap();

    let err = read_tensors(&path, &Device::Cpu).unwrap_err();
    assert!(matches!(err, Error::Format { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains("scan.h5"), "{message}");
    assert!(message.contains("no Keras weights found"), "{message}");
}

/// `bytes` (a safetensors file) with the first value of tensor `name` (an `f32` tensor) set
/// to NaN, found through the file's own header.
fn nan_into_safetensors(bytes: &mut [u8], name: &str) {
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    assert_eq!(header[name]["dtype"], "F32", "{name}");
    let start = header[name]["data_offsets"][0].as_u64().unwrap() as usize + 8 + header_len;
    bytes[start..start + 4].copy_from_slice(&f32::NAN.to_le_bytes());
}

/// `path`'s bytes (a Keras HDF5 file, stored uncompressed) with the first value of its largest
/// weight set to NaN; returns the bytes and that weight's Keras name.
fn nan_into_h5(path: &Path) -> (Vec<u8>, String) {
    let tensors = fracture::weights::h5::read_keras_h5(path).unwrap();
    let (key, tensor) = tensors.iter().max_by_key(|(_, t)| t.elem_count()).unwrap();
    let values: Vec<f32> = tensor.flatten_all().unwrap().to_vec1().unwrap();
    let needle: Vec<u8> = values[..4].iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut bytes = std::fs::read(path).unwrap();
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle.as_slice())
        .expect("the fixture stores its weights uncompressed");
    bytes[at..at + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    (bytes, key.clone())
}

#[test]
fn a_nan_in_a_keras_h5_file_is_refused_naming_the_file_and_the_tensor() {
    for file in ["legacy_tf_keras.h5", "legacy_keras3.h5"] {
        let dir = tempfile::tempdir().unwrap();
        let (bytes, key) = nan_into_h5(&fixture(file));
        let path = dir.path().join(file);
        std::fs::write(&path, bytes).unwrap();
        let message = error_text(read_tensors(&path, &Device::Cpu));
        assert!(
            message.contains(&path.display().to_string())
                && message.contains(&key)
                && message.contains("NaN"),
            "{file}: {message}"
        );
    }
}

#[test]
fn a_nan_in_a_keras_safetensors_file_is_refused_naming_the_file_and_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(fixture("weights.safetensors")).unwrap();
    nan_into_safetensors(&mut bytes, "post_bn.gamma");
    let path = dir.path().join("weights.safetensors");
    std::fs::write(&path, bytes).unwrap();
    let message = error_text(read_tensors(&path, &Device::Cpu));
    assert!(
        message.contains(&path.display().to_string())
            && message.contains("post_bn.gamma")
            && message.contains("NaN"),
        "{message}"
    );
}

#[test]
fn a_bundle_with_a_nan_head_bias_is_refused_naming_the_file_and_the_tensor() {
    let clf = common::tiny_classifier();
    let dir = tempfile::tempdir().unwrap();
    clf.save(dir.path()).unwrap();
    fracture::FractureClassifier::load(dir.path(), &Device::Cpu).expect("the good bundle loads");
    let path = dir.path().join("model.safetensors");
    let mut bytes = std::fs::read(&path).unwrap();
    nan_into_safetensors(&mut bytes, "head.logit.bias");
    std::fs::write(&path, bytes).unwrap();
    let message = error_text(fracture::FractureClassifier::load(dir.path(), &Device::Cpu));
    assert!(
        message.contains(&path.display().to_string())
            && message.contains("head.logit.bias")
            && message.contains("NaN"),
        "{message}"
    );
}
