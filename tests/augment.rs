//! Specification of `fracture::augment`: Keras `ImageDataGenerator` semantics, one-pass warp,
//! reproducible draws, optional intensity transforms.

use crate::common;

use fracture::augment::{
    clahe, warp, AffineParams, AugmentConfig, ClaheConfig, FillMode, ImageShape, IntensityConfig,
};
use fracture::image::{ImageF32, SampleTransform};
use serde_json::Value;
use std::path::{Path, PathBuf};

const KERAS_TOLERANCE: f32 = 1e-3;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keras_augment")
}

struct Fixture {
    json: Value,
    input: ImageF32,
    tensors: Vec<u8>,
}

impl Fixture {
    fn load(dir: &Path) -> Fixture {
        let json: Value =
            serde_json::from_slice(&std::fs::read(dir.join("augment.json")).unwrap()).unwrap();
        let tensors = std::fs::read(dir.join("augment.safetensors")).unwrap();
        let mut fixture = Fixture {
            json,
            input: ImageF32::new(0, 0, 0, vec![]).unwrap(),
            tensors,
        };
        fixture.input = fixture.image("input", false);
        fixture
    }

    /// A stored image. `channel_major` says the bytes are in (C, H, W) memory order although
    /// the header says [H, W, C]: see [`stored_channel_major`].
    fn image(&self, name: &str, channel_major: bool) -> ImageF32 {
        let st = safetensors::SafeTensors::deserialize(&self.tensors).unwrap();
        let view = st.tensor(name).unwrap();
        assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name}");
        let (h, w, c) = (view.shape()[0], view.shape()[1], view.shape()[2]);
        let raw: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let data = if channel_major {
            (0..h * w * c)
                .map(|i| {
                    let (pixel, k) = (i / c, i % c);
                    raw[k * h * w + pixel]
                })
                .collect()
        } else {
            raw
        };
        ImageF32::new(h, w, c, data).unwrap()
    }

    fn cases(&self) -> &Vec<Value> {
        self.json["cases"].as_array().unwrap()
    }
}

/// Memory order of a stored Keras output. `apply_affine_transform` resamples channel by
/// channel and returns `np.rollaxis(np.stack(channels), 0, 3)`, a view whose memory is
/// (C, H, W); `generate.py` saves it without `np.ascontiguousarray`, and the bytes written are
/// that memory, under an [H, W, C] header. Outputs Keras did not resample (identity, flip
/// alone) are ordinary (H, W, C) arrays. (Adding `np.ascontiguousarray` to `generate.py`
/// would make every output (H, W, C); this rule would then be dropped.)
fn stored_channel_major(params: &AffineParams) -> bool {
    !params.affine_is_identity()
}

fn keras_params(params: &Value) -> AffineParams {
    let num = |key: &str, default: f64| params.get(key).and_then(Value::as_f64).unwrap_or(default);
    AffineParams::from_keras(
        num("theta", 0.0),
        num("tx", 0.0),
        num("ty", 0.0),
        num("shear", 0.0),
        num("zx", 1.0),
        num("zy", 1.0),
        params
            .get("flip_horizontal")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    )
}

fn keras_fill(case: &Value) -> FillMode {
    match case["fill_mode"].as_str().unwrap() {
        "nearest" => FillMode::Nearest,
        "constant" => FillMode::Constant(case["cval"].as_f64().unwrap() as f32),
        "reflect" => FillMode::Reflect,
        "wrap" => FillMode::Wrap,
        other => panic!("unknown fill mode {other}"),
    }
}

fn shape_of(image: &ImageF32) -> ImageShape {
    ImageShape {
        height: image.height,
        width: image.width,
        channels: image.channels,
    }
}

/// Check every case of `fill_mode` (or all when `None`) in a fixture folder; returns how
/// many were checked.
fn check_keras_cases(dir: &Path, fill_mode: Option<&str>) -> usize {
    let fixture = Fixture::load(dir);
    let shape = shape_of(&fixture.input);
    let mut failures = Vec::new();
    let mut checked = 0;
    for case in fixture.cases() {
        if fill_mode.is_some_and(|m| case["fill_mode"] != m) {
            continue;
        }
        let key = case["key"].as_str().unwrap();
        let params = keras_params(&case["params"]);
        let expected = fixture.image(key, stored_channel_major(&params));
        let ours = warp(&fixture.input.data, shape, &params, keras_fill(case)).unwrap();
        let diff = common::max_abs_diff_values(&ours, &expected.data);
        if diff.is_nan() || diff > KERAS_TOLERANCE {
            failures.push(format!("{key}: max |diff| {diff}"));
        }
        checked += 1;
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    checked
}

#[test]
fn keras_nearest_cases_match_within_1e_3() {
    assert_eq!(check_keras_cases(&fixture_dir(), Some("nearest")), 9);
}

#[test]
fn keras_constant_cases_match_within_1e_3() {
    assert_eq!(check_keras_cases(&fixture_dir(), Some("constant")), 7);
}

#[test]
fn keras_reflect_cases_match_within_1e_3() {
    assert_eq!(check_keras_cases(&fixture_dir(), Some("reflect")), 7);
}

#[test]
fn keras_wrap_cases_match_within_1e_3() {
    assert_eq!(check_keras_cases(&fixture_dir(), Some("wrap")), 7);
}

/// The shared reference folder, or another made with `generate.py OUT_DIR SEED H W` (other
/// sizes) named by `AUGMENT_FIXTURE_DIR`.
#[test]
#[ignore = "needs ../shared/fixtures/keras_augment (or AUGMENT_FIXTURE_DIR)"]
fn keras_cases_in_the_shared_or_named_fixture_folder_match_within_1e_3() {
    let dir = common::reference_data("AUGMENT_FIXTURE_DIR", "fixtures/keras_augment");
    assert!(check_keras_cases(&dir, None) > 0);
}

#[test]
fn default_config_is_the_notebooks_generator() {
    let fixture = Fixture::load(&fixture_dir());
    let nb = &fixture.json["notebook_generator"];
    let c = AugmentConfig::default();
    assert_eq!(c.rotation_range, nb["rotation_range"].as_f64().unwrap());
    assert_eq!(
        c.width_shift_range,
        nb["width_shift_range"].as_f64().unwrap()
    );
    assert_eq!(
        c.height_shift_range,
        nb["height_shift_range"].as_f64().unwrap()
    );
    assert_eq!(c.shear_range, nb["shear_range"].as_f64().unwrap());
    let z = nb["zoom_range"].as_f64().unwrap();
    assert_eq!(c.zoom_range, [1.0 - z, 1.0 + z]);
    assert_eq!(c.horizontal_flip, nb["horizontal_flip"].as_bool().unwrap());
    assert_eq!(nb["fill_mode"], "nearest");
    assert_eq!(c.fill_mode, FillMode::Nearest);
}

fn test_image(height: usize, width: usize, channels: usize) -> ImageF32 {
    // Deterministic, non-smooth content so that any misplaced sample shows.
    let data = (0..height * width * channels)
        .map(|i| ((i * 7919 + 13) % 251) as f32 + 0.25)
        .collect();
    ImageF32::new(height, width, channels, data).unwrap()
}

const ALL_FILLS: [FillMode; 4] = [
    FillMode::Nearest,
    FillMode::Constant(17.0),
    FillMode::Reflect,
    FillMode::Wrap,
];

#[test]
fn identity_params_return_the_input_unchanged() {
    let image = test_image(13, 21, 3);
    for fill in ALL_FILLS {
        let out = warp(&image.data, shape_of(&image), &AffineParams::IDENTITY, fill).unwrap();
        assert_eq!(out, image.data, "{fill:?}");
    }
}

#[test]
fn flipping_twice_returns_the_input() {
    let image = test_image(9, 14, 3);
    let flip = AffineParams {
        flip_horizontal: true,
        ..AffineParams::IDENTITY
    };
    let once = warp(&image.data, shape_of(&image), &flip, FillMode::Nearest).unwrap();
    assert_ne!(once, image.data);
    let twice = warp(&once, shape_of(&image), &flip, FillMode::Nearest).unwrap();
    assert_eq!(twice, image.data);
}

#[test]
fn flip_mirrors_columns_after_the_warp() {
    let image = test_image(10, 10, 2);
    let shape = shape_of(&image);
    let rotate = AffineParams {
        rotation_deg: 7.0,
        ..AffineParams::IDENTITY
    };
    let rotated = warp(&image.data, shape, &rotate, FillMode::Reflect).unwrap();
    let both = AffineParams {
        flip_horizontal: true,
        ..rotate
    };
    let fused = warp(&image.data, shape, &both, FillMode::Reflect).unwrap();
    for r in 0..10 {
        for c in 0..10 {
            for k in 0..2 {
                let mirrored = rotated[(r * 10 + (9 - c)) * 2 + k];
                assert_eq!(fused[(r * 10 + c) * 2 + k], mirrored);
            }
        }
    }
}

#[test]
fn integer_row_shift_moves_content_up() {
    let image = test_image(8, 6, 1);
    let shift = AffineParams {
        shift_rows: 2.0,
        ..AffineParams::IDENTITY
    };
    let out = warp(&image.data, shape_of(&image), &shift, FillMode::Nearest).unwrap();
    for r in 0..8 {
        let source_row = (r + 2).min(7);
        assert_eq!(
            out[r * 6..r * 6 + 6],
            image.data[source_row * 6..source_row * 6 + 6]
        );
    }
}

#[test]
fn quarter_turn_of_a_square_image_reads_transposed_mirrored_pixels() {
    // Keras's matrix for theta = 90 on an n x n image maps output (r, c) to input (c, n-1-r).
    let n = 11;
    let image = test_image(n, n, 1);
    let quarter = AffineParams {
        rotation_deg: 90.0,
        ..AffineParams::IDENTITY
    };
    let out = warp(&image.data, shape_of(&image), &quarter, FillMode::Nearest).unwrap();
    for r in 0..n {
        for c in 0..n {
            let expected = image.data[c * n + (n - 1 - r)];
            assert!((out[r * n + c] - expected).abs() < 1e-3, "({r}, {c})");
        }
    }
}

#[test]
fn u8_images_warp_like_f32_images_rounded() {
    let image = test_image(23, 17, 3);
    let bytes: Vec<u8> = image.data.iter().map(|&v| v as u8).collect();
    let as_f32: Vec<f32> = bytes.iter().map(|&v| v as f32).collect();
    let params = AffineParams::from_keras(6.0, -2.25, 3.0, 4.0, 1.1, 0.9, true);
    for fill in ALL_FILLS {
        let ours = warp(&bytes, shape_of(&image), &params, fill).unwrap();
        let reference = warp(&as_f32, shape_of(&image), &params, fill).unwrap();
        for (&b, &f) in ours.iter().zip(&reference) {
            assert!((b as f32 - f).abs() <= 0.5 + 1e-3, "{fill:?}: {b} vs {f}");
        }
    }
}

#[test]
fn every_channel_is_warped_like_a_single_channel_image() {
    let channels = 5;
    let image = test_image(12, 19, channels);
    let params = AffineParams::from_keras(-8.0, 1.5, -0.5, 3.0, 0.95, 1.05, false);
    let all = warp(&image.data, shape_of(&image), &params, FillMode::Reflect).unwrap();
    for k in 0..channels {
        let plane: Vec<f32> = image
            .data
            .iter()
            .skip(k)
            .step_by(channels)
            .copied()
            .collect();
        let shape = ImageShape {
            channels: 1,
            ..shape_of(&image)
        };
        let single = warp(&plane, shape, &params, FillMode::Reflect).unwrap();
        let from_all: Vec<f32> = all.iter().skip(k).step_by(channels).copied().collect();
        assert_eq!(from_all, single, "channel {k}");
    }
}

#[test]
fn warp_is_linear_in_the_values_so_any_scale_works() {
    let image = test_image(16, 16, 3);
    let params = AffineParams::from_keras(4.0, 1.0, 2.0, 0.1, 1.1, 0.9, false);
    let fill = FillMode::Constant(0.0);
    let base = warp(&image.data, shape_of(&image), &params, fill).unwrap();
    let scaled: Vec<f32> = image.data.iter().map(|v| v / 127.5 - 1.0).collect();
    let warped = warp(&scaled, shape_of(&image), &params, FillMode::Constant(-1.0)).unwrap();
    for (a, b) in base.iter().zip(&warped) {
        assert!((a / 127.5 - 1.0 - b).abs() < 1e-5);
    }
}

#[test]
fn mismatched_buffer_is_an_error() {
    let shape = ImageShape {
        height: 4,
        width: 4,
        channels: 3,
    };
    let err = warp(
        &[0.0f32; 47],
        shape,
        &AffineParams::IDENTITY,
        FillMode::Nearest,
    );
    assert!(err.unwrap_err().to_string().contains("47"));
}

#[test]
fn non_finite_params_are_an_error() {
    let shape = ImageShape {
        height: 2,
        width: 2,
        channels: 1,
    };
    let params = AffineParams {
        rotation_deg: f64::NAN,
        ..AffineParams::IDENTITY
    };
    assert!(warp(&[0.0f32; 4], shape, &params, FillMode::Nearest).is_err());
}

#[test]
fn same_seed_epoch_index_gives_bit_identical_output_whatever_the_thread_count() {
    use rayon::prelude::*;
    let config = AugmentConfig::default();
    let images: Vec<ImageF32> = (0..12).map(|i| test_image(20 + i, 24, 3)).collect();
    let run = |threads: usize| -> Vec<Vec<u32>> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            images
                .par_iter()
                .enumerate()
                .map(|(i, img)| {
                    let out = config.apply(img.clone(), 42, 3, i as u64).unwrap();
                    out.data.iter().map(|v| v.to_bits()).collect()
                })
                .collect()
        })
    };
    let one = run(1);
    assert_eq!(one, run(4));
    assert_eq!(one, run(3));
}

#[test]
fn different_samples_and_epochs_draw_different_parameters() {
    let config = AugmentConfig::default();
    let base = config.sample(42, 0, 0);
    assert_ne!(base, config.sample(42, 0, 1));
    assert_ne!(base, config.sample(42, 1, 0));
    assert_ne!(base, config.sample(43, 0, 0));
}

#[test]
fn disabled_config_leaves_images_unchanged() {
    let image = test_image(15, 15, 3);
    let out = AugmentConfig::disabled()
        .apply(image.clone(), 1, 2, 3)
        .unwrap();
    assert_eq!(out, image);
}

fn mean_and_variance(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    (mean, var)
}

/// `U(lo, hi)`: every draw inside, mean `(lo+hi)/2` and variance `(hi-lo)^2/12` within 4.5
/// standard errors, and both ends of the range reached to within 1%.
fn assert_uniform(name: &str, values: &[f64], lo: f64, hi: f64) {
    let n = values.len() as f64;
    let width = hi - lo;
    assert!(
        values.iter().all(|v| (lo..=hi).contains(v)),
        "{name} out of range"
    );
    let (mean, var) = mean_and_variance(values);
    let expected_var = width * width / 12.0;
    let mean_se = (expected_var / n).sqrt();
    assert!(
        (mean - (lo + hi) / 2.0).abs() < 4.5 * mean_se,
        "{name} mean {mean}"
    );
    // Var of (x - m)^2 for a uniform is width^4/180.
    let var_se = (width.powi(4) / 180.0 / n).sqrt();
    assert!(
        (var - expected_var).abs() < 4.5 * var_se,
        "{name} variance {var}"
    );
    let (min, max) = common::min_max(values, name);
    assert!(
        min < lo + 0.01 * width && max > hi - 0.01 * width,
        "{name} range"
    );
}

#[test]
fn ten_thousand_draws_have_the_ranges_and_means_of_keras_generator() {
    let config = AugmentConfig::default();
    let draws: Vec<AffineParams> = (0..10_000u64)
        .map(|i| config.sample(7, i / 1000, i % 1000).affine(224, 224))
        .collect();
    let pick = |f: fn(&AffineParams) -> f64| draws.iter().map(f).collect::<Vec<f64>>();
    assert_uniform("rotation", &pick(|p| p.rotation_deg), -10.0, 10.0);
    assert_uniform("shift rows", &pick(|p| p.shift_rows), -22.4, 22.4);
    assert_uniform("shift cols", &pick(|p| p.shift_cols), -22.4, 22.4);
    assert_uniform("shear", &pick(|p| p.shear_deg), -0.1, 0.1);
    assert_uniform("zoom x", &pick(|p| p.zoom_x), 0.85, 1.15);
    assert_uniform("zoom y", &pick(|p| p.zoom_y), 0.85, 1.15);
    let flips = draws.iter().filter(|p| p.flip_horizontal).count() as f64 / 1e4;
    assert!((flips - 0.5).abs() < 4.5 * 0.005, "flip rate {flips}");
}

#[test]
fn zoom_factors_are_drawn_independently() {
    let config = AugmentConfig::default();
    let (zx, zy): (Vec<f64>, Vec<f64>) = (0..10_000u64)
        .map(|i| {
            let s = config.sample(11, 0, i);
            (s.zoom_x, s.zoom_y)
        })
        .unzip();
    let (mx, vx) = mean_and_variance(&zx);
    let (my, vy) = mean_and_variance(&zy);
    let cov = zx
        .iter()
        .zip(&zy)
        .map(|(a, b)| (a - mx) * (b - my))
        .sum::<f64>()
        / 1e4;
    let correlation = cov / (vx * vy).sqrt();
    assert!(correlation.abs() < 0.045, "correlation {correlation}");
}

#[test]
fn shifts_scale_with_the_image_size_keras_style() {
    let sample = AugmentConfig::default().sample(3, 0, 5);
    let small = sample.affine(100, 50);
    let large = sample.affine(200, 100);
    assert!((large.shift_cols - 2.0 * small.shift_cols).abs() < 1e-12);
    assert!((large.shift_rows - 2.0 * small.shift_rows).abs() < 1e-12);
}

#[test]
fn intensity_transforms_are_off_by_default() {
    let sample = AugmentConfig::default().sample(1, 1, 1);
    assert_eq!(
        (
            sample.brightness,
            sample.contrast,
            sample.gamma,
            sample.clahe
        ),
        (None, None, None, false)
    );
}

#[test]
fn enabled_intensity_draws_stay_in_their_ranges() {
    let config = AugmentConfig {
        intensity: IntensityConfig {
            brightness: Some([0.8, 1.2]),
            contrast: Some([0.9, 1.1]),
            gamma: Some([0.8, 1.25]),
            clahe: Some(ClaheConfig {
                probability: 0.3,
                ..ClaheConfig::default()
            }),
            ..IntensityConfig::default()
        },
        ..AugmentConfig::default()
    };
    config.validate().unwrap();
    let samples: Vec<_> = (0..2000).map(|i| config.sample(5, 0, i)).collect();
    for s in &samples {
        assert!((0.8..=1.2).contains(&s.brightness.unwrap()));
        assert!((0.9..=1.1).contains(&s.contrast.unwrap()));
        assert!((0.8..=1.25).contains(&s.gamma.unwrap()));
    }
    let clahe_rate = samples.iter().filter(|s| s.clahe).count() as f64 / 2000.0;
    assert!((clahe_rate - 0.3).abs() < 0.05, "CLAHE rate {clahe_rate}");
}

#[test]
fn intensity_transforms_keep_values_in_range() {
    let config = AugmentConfig {
        intensity: IntensityConfig {
            brightness: Some([1.5, 2.0]),
            contrast: Some([1.5, 2.0]),
            gamma: Some([0.5, 2.0]),
            clahe: Some(ClaheConfig::default()),
            ..IntensityConfig::default()
        },
        ..AugmentConfig::default()
    };
    let image = test_image(40, 40, 3);
    for i in 0..10 {
        let out = config.augment(&image, 9, 0, i).unwrap();
        assert!(out.data.iter().all(|v| (0.0..=255.0).contains(v)));
        assert_ne!(out, image);
    }
}

fn std_dev(values: &[f32]) -> f64 {
    let v: Vec<f64> = values.iter().map(|&x| x as f64).collect();
    mean_and_variance(&v).1.sqrt()
}

/// A dim radiograph-like image: smooth gradient 90..130 with a faint brighter "bone".
fn low_contrast_image(h: usize, w: usize) -> Vec<f32> {
    (0..h * w)
        .map(|i| {
            let (r, c) = (i / w, i % w);
            let bone = if (20..44).contains(&r) && (30..40).contains(&c) {
                8.0
            } else {
                0.0
            };
            90.0 + 40.0 * c as f32 / w as f32 + bone
        })
        .collect()
}

/// Mean absolute difference between horizontal neighbours: the local contrast CLAHE raises.
fn local_contrast(img: &[f32], w: usize) -> f64 {
    let diffs: Vec<f64> = img
        .chunks_exact(w)
        .flat_map(|row| row.windows(2).map(|p| (p[1] - p[0]).abs() as f64))
        .collect();
    diffs.iter().sum::<f64>() / diffs.len() as f64
}

/// (global standard deviation, local contrast) after CLAHE with `clip_limit`.
fn clahe_contrast(clip_limit: f32) -> (f64, f64) {
    let (h, w) = (64, 80);
    let mut img = low_contrast_image(h, w);
    let config = ClaheConfig {
        clip_limit,
        ..ClaheConfig::default()
    };
    clahe(&mut img, h, w, 1, &config).unwrap();
    assert!(img.iter().all(|v| (0.0..=255.0).contains(v)));
    (std_dev(&img), local_contrast(&img, w))
}

#[test]
fn clahe_increases_contrast_of_a_low_contrast_image_and_stays_in_range() {
    let image = low_contrast_image(64, 80);
    let (std_before, local_before) = (std_dev(&image), local_contrast(&image, 80));
    let (std_after, local_after) = clahe_contrast(2.0);
    assert!(std_after > 1.1 * std_before, "{std_after} vs {std_before}");
    assert!(
        local_after > 1.5 * local_before,
        "{local_after} vs {local_before}"
    );
}

#[test]
fn higher_clahe_clip_limit_enhances_more() {
    let (low, high) = (clahe_contrast(2.0).1, clahe_contrast(8.0).1);
    assert!(high > 1.5 * low, "clip 8: {high}, clip 2: {low}");
}

#[test]
fn clahe_treats_replicated_gray_channels_like_a_gray_image() {
    let (h, w) = (30, 30);
    let gray: Vec<f32> = (0..h * w).map(|i| 100.0 + (i % 37) as f32).collect();
    let mut rgb: Vec<f32> = gray.iter().flat_map(|&v| [v, v, v]).collect();
    let mut single = gray.clone();
    let config = ClaheConfig::default();
    clahe(&mut single, h, w, 1, &config).unwrap();
    clahe(&mut rgb, h, w, 3, &config).unwrap();
    let expected: Vec<f32> = single.iter().flat_map(|&v| [v, v, v]).collect();
    assert_eq!(rgb, expected);
}

#[test]
fn clahe_works_on_images_smaller_than_the_tile_grid() {
    let mut img = vec![10.0f32, 200.0, 30.0, 40.0, 50.0, 60.0];
    clahe(&mut img, 2, 3, 1, &ClaheConfig::default()).unwrap();
    assert!(img.iter().all(|v| (0.0..=255.0).contains(v)));
}

#[test]
fn single_row_single_column_and_single_pixel_images_warp_in_every_fill_mode() {
    let params = AffineParams::from_keras(9.0, 1.3, -0.7, 0.1, 1.1, 0.9, true);
    for (h, w) in [(1, 7), (7, 1), (1, 1)] {
        let image = test_image(h, w, 3);
        for fill in ALL_FILLS {
            let out = warp(&image.data, shape_of(&image), &params, fill).unwrap();
            assert_eq!(out.len(), image.data.len());
            assert!(out.iter().all(|v| v.is_finite()), "{h}x{w} {fill:?}");
        }
    }
    let pixel = test_image(1, 1, 2);
    let out = warp(&pixel.data, shape_of(&pixel), &params, FillMode::Nearest).unwrap();
    assert_eq!(out, pixel.data);
}

#[test]
fn config_round_trips_through_json() {
    let config = AugmentConfig {
        fill_mode: FillMode::Constant(-1.0),
        intensity: IntensityConfig {
            gamma: Some([0.8, 1.25]),
            clahe: Some(ClaheConfig::default()),
            ..IntensityConfig::default()
        },
        ..AugmentConfig::default()
    };
    let json = serde_json::to_string(&config).unwrap();
    assert_eq!(
        serde_json::from_str::<AugmentConfig>(&json).unwrap(),
        config
    );
}
