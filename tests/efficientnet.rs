//! EfficientNet-Lite: timm's presets, parity with timm on real ImageNet weights (every tap,
//! the logits, the top-5 classes, the cat photo's class through the preprocessing, the same
//! top class at precision bf16 where the CPU has AVX512_BF16), and the
//! fused CPU ops (depthwise convolution, batch norm + ReLU6) against candle's own layers,
//! forward and backward.
//!
//! The real-weights tests need `../shared` (`#[ignore]`d here when it is absent; CI runs them).
//! `LITE0_FIXTURE_DIR` names one more fixture folder of the same format (other images and
//! sizes), checked the same way; the tests fail when it is set but missing or not matching.

use candle_core::{DType, Device, IndexOp, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use fracture::image::ImageF32;
use fracture::model::{
    depthwise_conv2d_same, EfficientNetLite, EfficientNetLiteConfig, FastEfficientNetLite, LiteOps,
    LiteTaps, Precision,
};
use fracture::preprocess::Preprocess;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::common;
use common::{assert_close, load_safetensors, seeded_centered, seeded_uniform};

const WEIGHTS: &str = "../shared/weights/efficientnet_lite0_imagenet.safetensors";
const FIXTURE: &str = "../shared/fixtures/efficientnet_lite0";

fn shared(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The shared fixture, plus the folder named by `LITE0_FIXTURE_DIR` when it is set.
fn fixture_dirs() -> Vec<PathBuf> {
    let mut dirs = vec![shared(FIXTURE)];
    if let Ok(extra) = std::env::var("LITE0_FIXTURE_DIR") {
        eprintln!("also checking LITE0_FIXTURE_DIR={extra}");
        let extra = PathBuf::from(extra);
        assert!(
            extra.join("io.safetensors").is_file() && extra.join("config.json").is_file(),
            "LITE0_FIXTURE_DIR={} has no io.safetensors and config.json",
            extra.display()
        );
        dirs.push(extra);
    }
    dirs
}

/// Lite0 with the ImageNet classifier and the shared real weights.
fn imagenet_lite0() -> EfficientNetLite {
    let vb = unsafe {
        VarBuilder::from_mmaped_safetensors(&[shared(WEIGHTS)], DType::F32, &Device::Cpu)
    }
    .expect("weights file");
    let config = EfficientNetLiteConfig::lite0().with_imagenet_classifier();
    EfficientNetLite::new(&config, vb).expect("Lite0 from the shared weights")
}

/// `|got - want| <= 1e-4 * max |want|` elementwise (NaN fails).
fn assert_tap(name: &str, got: &Tensor, want: &Tensor) {
    let scale = want
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(
        scale.is_finite() && scale > 0.0,
        "{name}: reference scale {scale}"
    );
    assert_close(name, got, want, 1e-4 * scale, 0.0);
}

/// The indices of the five largest values of a row, largest first.
fn top5(row: &[f32]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..row.len()).collect();
    idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
    idx.truncate(5);
    idx
}

/// The top-5 classes per image recorded in a fixture's `config.json`.
fn fixture_top5(dir: &Path) -> Vec<Vec<usize>> {
    let text = std::fs::read_to_string(dir.join("config.json")).expect("config.json");
    let json: serde_json::Value = serde_json::from_str(&text).expect("config.json is JSON");
    json["top5"]
        .as_array()
        .expect("top5")
        .iter()
        .map(|image| {
            image
                .as_array()
                .expect("top5 per image")
                .iter()
                .map(|c| c["class"].as_u64().expect("class") as usize)
                .collect()
        })
        .collect()
}

fn check_taps(path: &str, taps: &LiteTaps, io: &HashMap<String, Tensor>) {
    assert_tap(&format!("{path} stem"), &taps.stem, &io["stem"]);
    assert_eq!(taps.stages.len(), 7);
    for (s, stage) in taps.stages.iter().enumerate() {
        assert_tap(
            &format!("{path} stage{s}"),
            stage,
            &io[&format!("stage{s}")],
        );
    }
    assert_tap(&format!("{path} head"), &taps.head, &io["head"]);
}

fn check_logits(path: &str, logits: &Tensor, io: &HashMap<String, Tensor>, dir: &Path) {
    assert_close(&format!("{path} logits"), logits, &io["logits"], 1e-3, 0.0);
    let ours = logits.to_vec2::<f32>().unwrap();
    let theirs = io["logits"].to_vec2::<f32>().unwrap();
    let recorded = fixture_top5(dir);
    for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
        assert_eq!(top5(a), top5(b), "{path}: image {i} top-5 vs timm's logits");
        assert_eq!(
            top5(a),
            recorded[i],
            "{path}: image {i} top-5 vs config.json"
        );
    }
}

#[test]
#[ignore = "needs ../shared/weights and ../shared/fixtures/efficientnet_lite0"]
fn candle_path_matches_timm_on_every_tap_and_the_logits() {
    let model = imagenet_lite0();
    for dir in fixture_dirs() {
        let io = load_safetensors(&dir.join("io.safetensors"));
        let x = &io["input"];
        let path = format!("candle {}", dir.display());
        check_taps(&path, &model.forward_taps(x, false).unwrap(), &io);
        assert_close(
            &format!("{path} pooled"),
            &model.forward_pooled(x).unwrap(),
            &io["pooled"],
            1e-4,
            0.0,
        );
        check_logits(&path, &model.forward_logits(x).unwrap(), &io, &dir);
    }
}

#[test]
#[ignore = "needs ../shared/weights and ../shared/fixtures/efficientnet_lite0"]
fn fast_path_matches_timm_on_every_tap_and_the_logits() {
    let fast = FastEfficientNetLite::from_model(&imagenet_lite0()).unwrap();
    for dir in fixture_dirs() {
        let io = load_safetensors(&dir.join("io.safetensors"));
        let x = &io["input"];
        let path = format!("fast {}", dir.display());
        check_taps(&path, &fast.forward_taps(x).unwrap(), &io);
        assert_tap(
            &format!("{path} features"),
            &fast.forward_features(x).unwrap(),
            &io["head"],
        );
        check_logits(&path, &fast.forward_logits(x).unwrap(), &io, &dir);
    }
}

/// At precision bf16 the fast path gives the cat photo and the coffee photo the classes timm
/// gives them (285 Egyptian cat, 967 espresso), as f32 does; where the CPU lacks AVX512_BF16,
/// choosing bf16 is an error that says so (the bf16 arithmetic itself is checked on every CPU by
/// the library's unit tests, on the plain-Rust kernel).
#[test]
#[ignore = "needs ../shared/weights and ../shared/fixtures/efficientnet_lite0"]
fn bf16_gives_the_cat_and_coffee_photos_their_imagenet_class() {
    let mut fast = FastEfficientNetLite::from_model(&imagenet_lite0()).unwrap();
    let io = load_safetensors(&shared(FIXTURE).join("io.safetensors"));
    let x = io["input"].i(0..2).unwrap();
    let f32_logits = fast.forward_logits(&x).unwrap().to_vec2::<f32>().unwrap();
    if let Err(e) = fast.set_precision(Precision::Bf16) {
        assert!(!Precision::Bf16.is_supported(), "{e}");
        assert!(e.to_string().contains("AVX512_BF16"), "{e}");
        println!("this CPU has no AVX512_BF16, and bf16 is refused: {e}");
        return;
    }
    // The fast path's Debug names the bf16 kernel that runs (AMX, vdpbf16ps).
    println!("bf16 on {fast:?}");
    let bf16_logits = fast.forward_logits(&x).unwrap().to_vec2::<f32>().unwrap();
    for (i, (what, class)) in [("cat", 285), ("coffee", 967)].into_iter().enumerate() {
        assert!(
            bf16_logits[i].iter().all(|v| v.is_finite()),
            "{what}: a bf16 logit is not finite"
        );
        let worst = f32_logits[i]
            .iter()
            .zip(&bf16_logits[i])
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        println!("{what}: largest logit difference bf16 - f32 {worst:.4}");
        assert_eq!(top5(&f32_logits[i])[0], class, "{what} at f32");
        assert_eq!(top5(&bf16_logits[i])[0], class, "{what} at bf16");
    }
}

#[test]
#[ignore = "needs ../shared/weights and ../shared/fixtures/efficientnet_lite0"]
fn the_cat_photo_is_an_egyptian_cat_through_the_preprocessing() {
    let model = imagenet_lite0();
    let io = load_safetensors(&shared(FIXTURE).join("io.safetensors"));
    // The photo as 0..255 RGB pixels (already 224 x 224), scaled by the crate's preprocessing.
    let pixels = io["image_uint8"].i(0).unwrap();
    let (h, w, _) = pixels.dims3().unwrap();
    let raw: Vec<u8> = pixels.flatten_all().unwrap().to_vec1::<u8>().unwrap();
    let image = ImageF32::new(h, w, 3, raw.iter().map(|&v| f32::from(v)).collect()).unwrap();
    let preprocess = Preprocess::default();
    let chw = preprocess.normalize_chw(&image).unwrap();
    let x = Tensor::from_vec(chw, (1, 3, h, w), &Device::Cpu).unwrap();
    // The same pixels written to a PNG and read back through decode + resize + scaling.
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("chelsea.png");
    image::RgbImage::from_raw(w as u32, h as u32, raw)
        .unwrap()
        .save(&png)
        .unwrap();
    let from_file = preprocess.image_tensor(&png, &Device::Cpu).unwrap();
    let fast = FastEfficientNetLite::from_model(&model).unwrap();
    for (what, logits) in [
        ("candle, pixels", model.forward_logits(&x).unwrap()),
        (
            "candle, PNG file",
            model.forward_logits(&from_file).unwrap(),
        ),
        ("fast, PNG file", fast.forward_logits(&from_file).unwrap()),
    ] {
        let p = candle_nn::ops::softmax(&logits, 1)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        let best = top5(&p[0])[0];
        assert_eq!(
            best, 285,
            "{what}: top class {best} (p {}), expected 285 Egyptian cat",
            p[0][best]
        );
        assert!(
            (p[0][285] - 0.7936).abs() < 2e-3,
            "{what}: p(Egyptian cat) = {}",
            p[0][285]
        );
    }
}

#[test]
#[ignore = "needs ../shared/weights"]
fn variables_match_the_shared_weights_file_exactly() {
    let file = load_safetensors(&shared(WEIGHTS));
    let want: HashMap<String, Vec<usize>> = EfficientNetLiteConfig::lite0()
        .with_imagenet_classifier()
        .variables()
        .into_iter()
        .map(|v| (v.name, v.shape))
        .collect();
    let have: HashMap<String, Vec<usize>> = file
        .iter()
        .map(|(k, t)| (k.clone(), t.dims().to_vec()))
        .collect();
    assert_eq!(have.len(), 247);
    assert_eq!(have, want);
}

#[test]
fn presets_have_timms_sizes() {
    // timm 1.0.31 `tf_efficientnet_lite{0..4}`: state_dict scalars and tensors (without
    // num_batches_tracked), blocks per stage, input size.
    let expected = [
        (
            EfficientNetLiteConfig::lite0(),
            4_694_024,
            247,
            vec![1, 2, 2, 3, 3, 4, 1],
            224,
        ),
        (
            EfficientNetLiteConfig::lite1(),
            5_470_344,
            322,
            vec![1, 3, 3, 4, 4, 5, 1],
            240,
        ),
        (
            EfficientNetLiteConfig::lite2(),
            6_150_168,
            322,
            vec![1, 3, 3, 4, 4, 5, 1],
            260,
        ),
        (
            EfficientNetLiteConfig::lite3(),
            8_273_768,
            367,
            vec![1, 3, 3, 5, 5, 6, 1],
            300,
        ),
        (
            EfficientNetLiteConfig::lite4(),
            13_118_936,
            457,
            vec![1, 4, 4, 6, 6, 8, 1],
            380,
        ),
    ];
    for (config, scalars, tensors, depths, size) in expected {
        let config = config.with_imagenet_classifier();
        config.validate().unwrap();
        assert_eq!(config.parameter_count(), scalars, "{config:?}");
        assert_eq!(config.variables().len(), tensors, "{config:?}");
        let blocks = config.blocks().unwrap();
        assert_eq!(blocks.iter().map(Vec::len).collect::<Vec<_>>(), depths);
        assert_eq!(config.native_size, size);
        assert_eq!(config.feature_channels(), 1280);
    }
}

#[test]
fn a_config_round_trips_through_json() {
    let config = EfficientNetLiteConfig::lite2().with_imagenet_classifier();
    let text = serde_json::to_string(&config).unwrap();
    let back: EfficientNetLiteConfig = serde_json::from_str(&text).unwrap();
    assert_eq!(back, config);
}

#[test]
fn bad_inputs_and_configs_are_refused_with_their_shapes() {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let net = EfficientNetLite::new(&tiny_config(), vb).unwrap();
    let err = net
        .forward_features(&Tensor::zeros((1, 1, 64, 64), DType::F32, &Device::Cpu).unwrap())
        .unwrap_err();
    assert!(err.to_string().contains("[1, 1, 64, 64]"), "{err}");
    let mut bad = tiny_config();
    bad.width_multiplier = f64::NAN;
    assert!(bad.validate().is_err());
    let mut bad = tiny_config();
    bad.stages.push("ir_r1_k4_s1_e6_c8".into());
    assert!(bad.validate().unwrap_err().to_string().contains("k4"));
}

/// A small Lite-shaped network: every block kind, kernel and stride, residuals, few channels.
fn tiny_config() -> EfficientNetLiteConfig {
    EfficientNetLiteConfig {
        width_multiplier: 0.5,
        stages: vec![
            "ds_r1_k3_s1_e1_c16".into(),
            "ir_r2_k3_s2_e6_c16".into(),
            "ir_r2_k5_s2_e3_c24".into(),
            "ir_r1_k5_s1_e4_c32".into(),
        ],
        stem_channels: 16,
        head_channels: 40,
        ..EfficientNetLiteConfig::lite0()
    }
}

/// A random network with batch norms far from the identity, seeded by name order.
fn random_model(config: &EfficientNetLiteConfig, seed: u64) -> (EfficientNetLite, VarMap) {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let model = EfficientNetLite::new(config, vb).unwrap();
    randomize(&varmap, seed);
    (model, varmap)
}

fn randomize(varmap: &VarMap, seed: u64) {
    let data = varmap.data().lock().unwrap();
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for (k, name) in names.into_iter().enumerate() {
        let var = &data[name];
        let shape = var.dims().to_vec();
        let key = seed.wrapping_mul(1_000_003).wrapping_add(k as u64);
        let fan_in: usize = shape.iter().skip(1).product::<usize>().max(1);
        let value = if name.ends_with("running_var")
            || (name.contains(".bn") && name.ends_with(".weight"))
        {
            seeded_uniform(&shape, 0.5, 1.5, key)
        } else if name.ends_with("running_mean") || name.ends_with(".bias") {
            seeded_centered(&shape, 0.3, key)
        } else {
            seeded_centered(&shape, (2.0 / fan_in as f32).sqrt(), key)
        };
        var.set(&value).unwrap();
    }
}

/// A second network with the same values as `varmap`'s, in its own variables.
fn twin(config: &EfficientNetLiteConfig, varmap: &VarMap) -> (EfficientNetLite, VarMap) {
    let other = VarMap::new();
    let vb = VarBuilder::from_varmap(&other, DType::F32, &Device::Cpu);
    let model = EfficientNetLite::new(config, vb).unwrap();
    let src = varmap.data().lock().unwrap();
    for (name, var) in other.data().lock().unwrap().iter() {
        var.set(src[name].as_tensor()).unwrap();
    }
    (model, other)
}

fn sorted_vars(varmap: &VarMap) -> Vec<(String, Var)> {
    let mut vars: Vec<(String, Var)> = varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

/// `|got - want| <= 1e-4 * max(1, max |want|)` elementwise.
fn assert_scaled(name: &str, got: &Tensor, want: &Tensor) {
    let scale = want
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert_close(name, got, want, 1e-4 * scale.max(1.0), 0.0);
}

/// Runs `forward` on the fused network and on its reference twin with the same input, then
/// compares the outputs, the gradient of every variable of `sum(output * weights)` and the
/// variables after the pass (running statistics).
fn compare_with_reference(
    config: &EfficientNetLiteConfig,
    x: &Tensor,
    forward: impl Fn(&EfficientNetLite, &Tensor) -> Tensor,
) {
    let (fused, fused_vars) = random_model(config, 7);
    let (reference, reference_vars) = twin(config, &fused_vars);
    let reference = reference.with_ops(LiteOps::Reference);
    assert_eq!(fused.ops(), LiteOps::Fused);
    let a = forward(&fused, x);
    let b = forward(&reference, x);
    assert_scaled("output", &a, &b);
    let r = seeded_centered(a.dims(), 1.0, 99);
    let ga = (&a * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let gb = (&b * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let mut with_gradient = 0;
    for ((name, va), (_, vb)) in sorted_vars(&fused_vars)
        .iter()
        .zip(sorted_vars(&reference_vars).iter())
    {
        assert_scaled(
            &format!("{name} after the pass"),
            va.as_tensor(),
            vb.as_tensor(),
        );
        match (ga.get(va.as_tensor()), gb.get(vb.as_tensor())) {
            (Some(da), Some(db)) => {
                assert_scaled(&format!("gradient of {name}"), da, db);
                with_gradient += 1;
            }
            (None, None) => {}
            (da, db) => panic!(
                "{name}: gradient {} in the fused pass, {} in the reference",
                da.is_some(),
                db.is_some()
            ),
        }
    }
    assert!(with_gradient > 0);
}

#[test]
fn fused_ops_match_candles_layers_in_training_mode_forward_and_backward() {
    let x = seeded_centered(&[3, 3, 45, 38], 1.0, 1);
    compare_with_reference(&tiny_config(), &x, |m, x| {
        m.forward_features_t(x, true).unwrap()
    });
}

#[test]
fn fused_ops_match_candles_layers_in_inference_mode_forward_and_backward() {
    let x = seeded_centered(&[2, 3, 40, 33], 1.0, 2);
    compare_with_reference(&tiny_config(), &x, |m, x| {
        m.forward_features_t(x, false).unwrap()
    });
}

#[test]
fn fused_ops_match_candles_layers_when_fine_tuning_the_last_stages() {
    let x = seeded_centered(&[2, 3, 36, 36], 1.0, 3);
    compare_with_reference(&tiny_config(), &x, |m, x| {
        m.forward_features_partial(x, 2).unwrap()
    });
}

#[test]
fn partial_fine_tuning_trains_only_the_last_stages_and_the_head() {
    let config = tiny_config();
    let (model, varmap) = random_model(&config, 11);
    let before: HashMap<String, Vec<f32>> = sorted_vars(&varmap)
        .into_iter()
        .map(|(k, v)| (k, v.as_tensor().flatten_all().unwrap().to_vec1().unwrap()))
        .collect();
    let x = seeded_centered(&[2, 3, 32, 32], 1.0, 4);
    let y = model.forward_features_partial(&x, 3).unwrap();
    let grads = y.sum_all().unwrap().backward().unwrap();
    let prefixes = config.trainable_prefixes(3);
    assert_eq!(prefixes, vec!["blocks.3.", "conv_head.", "bn2."]);
    for (name, var) in sorted_vars(&varmap) {
        let trains = prefixes.iter().any(|p| name.starts_with(p.as_str()));
        let is_stat = name.ends_with("running_mean") || name.ends_with("running_var");
        if !is_stat {
            assert_eq!(grads.get(var.as_tensor()).is_some(), trains, "{name}");
        } else {
            let now: Vec<f32> = var.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
            assert_eq!(
                now != before[&name],
                trains,
                "{name}: running statistic moved"
            );
        }
    }
    assert!(model.forward_features_partial(&x, 5).is_err());
}

#[test]
fn the_fast_path_matches_the_candle_path_on_a_random_network() {
    for (config, dims) in [
        (tiny_config(), [2, 3, 37, 53]),
        (EfficientNetLiteConfig::lite0(), [1, 3, 64, 96]),
    ] {
        let (model, _vars) = random_model(&config, 5);
        let fast = FastEfficientNetLite::from_model(&model).unwrap();
        let x = seeded_centered(&dims, 1.0, 6);
        let want = model.forward_taps(&x, false).unwrap();
        let got = fast.forward_taps(&x).unwrap();
        assert_scaled("stem", &got.stem, &want.stem);
        for (s, (g, w)) in got.stages.iter().zip(&want.stages).enumerate() {
            assert_scaled(&format!("stage {s}"), g, w);
        }
        assert_scaled("head", &got.head, &want.head);
        assert_scaled(
            "pooled",
            &fast.forward_pooled(&x).unwrap(),
            &model.forward_pooled(&x).unwrap(),
        );
    }
}

/// The gradients of `sum(y * r)` with respect to `x` and `w` for `y = f(x, w)`.
fn depthwise_gradients(
    x: &Tensor,
    w: &Tensor,
    f: impl Fn(&Tensor, &Tensor) -> Tensor,
) -> (Tensor, Tensor, Tensor) {
    let (xv, wv) = (Var::from_tensor(x).unwrap(), Var::from_tensor(w).unwrap());
    let y = f(xv.as_tensor(), wv.as_tensor());
    let r = seeded_centered(y.dims(), 1.0, 8)
        .to_dtype(y.dtype())
        .unwrap();
    let grads = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
    let gx = grads.get(xv.as_tensor()).unwrap().clone();
    let gw = grads.get(wv.as_tensor()).unwrap().clone();
    (y, gx, gw)
}

/// candle's grouped convolution on the explicitly "SAME"-padded input.
fn grouped(x: &Tensor, w: &Tensor, stride: usize) -> Tensor {
    let (_, c, h, wd) = x.dims4().unwrap();
    let k = w.dim(2).unwrap();
    let (t, b) = fracture::model::same_padding(h, k, stride);
    let (l, r) = fracture::model::same_padding(wd, k, stride);
    x.pad_with_zeros(2, t, b)
        .unwrap()
        .pad_with_zeros(3, l, r)
        .unwrap()
        .conv2d(w, 0, stride, 1, c)
        .unwrap()
}

#[test]
fn the_depthwise_op_and_its_gradients_match_candles_grouped_convolution() {
    // f32 on the CPU runs the fused op; f64 runs the composition GPUs use.
    for dtype in [DType::F32, DType::F64] {
        for (h, w, k, s) in [
            (7, 9, 3, 1),
            (8, 8, 3, 2),
            (9, 7, 5, 2),
            (6, 11, 5, 1),
            (10, 5, 5, 2),
            (5, 6, 3, 2),
        ] {
            let x = seeded_centered(&[2, 5, h, w], 1.0, 10)
                .to_dtype(dtype)
                .unwrap();
            let wt = seeded_centered(&[5, 1, k, k], 0.5, 11)
                .to_dtype(dtype)
                .unwrap();
            let (y, gx, gw) =
                depthwise_gradients(&x, &wt, |x, w| depthwise_conv2d_same(x, w, s).unwrap());
            let (y0, gx0, gw0) = depthwise_gradients(&x, &wt, |x, w| grouped(x, w, s));
            let what = format!("{dtype:?} {h}x{w} k{k} s{s}");
            let f32s = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
            assert_eq!(y.dims(), &[2, 5, h.div_ceil(s), w.div_ceil(s)]);
            assert_close(&format!("{what} output"), &f32s(&y), &f32s(&y0), 1e-5, 1e-5);
            assert_close(
                &format!("{what} input gradient"),
                &f32s(&gx),
                &f32s(&gx0),
                1e-5,
                1e-5,
            );
            assert_close(
                &format!("{what} weight gradient"),
                &f32s(&gw),
                &f32s(&gw0),
                1e-4,
                1e-5,
            );
        }
    }
}

#[test]
fn the_depthwise_weight_gradient_matches_finite_differences() {
    let x = seeded_centered(&[1, 2, 6, 7], 1.0, 12)
        .to_dtype(DType::F64)
        .unwrap();
    let w = seeded_centered(&[2, 1, 3, 3], 0.5, 13)
        .to_dtype(DType::F64)
        .unwrap();
    let loss = |w: &Tensor| -> f64 {
        let y = depthwise_conv2d_same(
            &x.to_dtype(DType::F32).unwrap(),
            &w.to_dtype(DType::F32).unwrap(),
            2,
        )
        .unwrap();
        y.sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_dtype(DType::F64)
            .unwrap()
            .to_scalar::<f64>()
            .unwrap()
    };
    let wv = Var::from_tensor(&w.to_dtype(DType::F32).unwrap()).unwrap();
    let y = depthwise_conv2d_same(&x.to_dtype(DType::F32).unwrap(), wv.as_tensor(), 2).unwrap();
    let grads = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
    let analytic = grads
        .get(wv.as_tensor())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let base = w.flatten_all().unwrap().to_vec1::<f64>().unwrap();
    let eps = 1e-2;
    for (i, &a) in analytic.iter().enumerate() {
        let shifted = |delta: f64| {
            let mut v = base.clone();
            v[i] += delta;
            loss(&Tensor::from_vec(v, w.dims(), &Device::Cpu).unwrap())
        };
        let numeric = (shifted(eps) - shifted(-eps)) / (2.0 * eps);
        assert!(
            (f64::from(a) - numeric).abs() < 1e-2 * numeric.abs().max(1.0),
            "tap {i}: {a} vs {numeric}"
        );
    }
}
