//! Explanations (issue 16): the Grad-CAM family against the Keras/TensorFlow reference maps
//! (`tests/fixtures/keras_head/`, and the folder named by `GRADCAM_FIXTURE_DIR` when set), on
//! the default path and the CPU fast path; and end to end on synthetic radiographs with
//! known lesion boxes, where a small trained model must point inside the lesions.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use fracture::dataset::annotations::{Annotations, BoundingBox};
use fracture::dataset::synthetic::SyntheticConfig;
use fracture::dataset::{FracAtlas, Label, SplitConfig};
use fracture::device::DeviceRequest;
use fracture::explain::{
    explain_batch, explain_features, CamConfig, CamMethod, CamTarget, Explanation,
};
use fracture::image::ImageF32;
use fracture::metrics::localization::score_map;
use fracture::metrics::LocalizationConfig;
use fracture::model::{
    Backbone, BackboneConfig, ClassifierHead, EfficientNetLiteConfig, FrozenBackbone, HeadConfig,
    ResNetV2Config,
};
use fracture::train::{BackboneTraining, TrainConfig};
use fracture::weights::HubOptions;
use fracture::{FractureClassifier, WeightsSource};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::common;
use common::{
    load_safetensors, max_abs_diff_values, nan_max, read_fixture_config_file, seeded_centered,
    to_nchw,
};

/// The shipped Grad-CAM fixture, plus the folder named by `GRADCAM_FIXTURE_DIR` when set
/// (which must then exist).
fn fixture_dirs() -> Vec<PathBuf> {
    let mut dirs = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/keras_head")];
    if let Ok(extra) = std::env::var("GRADCAM_FIXTURE_DIR") {
        eprintln!("also checking GRADCAM_FIXTURE_DIR={extra}");
        let extra = PathBuf::from(extra);
        assert!(
            extra.join("gradcam.safetensors").is_file(),
            "GRADCAM_FIXTURE_DIR={} has no gradcam.safetensors",
            extra.display()
        );
        dirs.push(extra);
    }
    dirs
}

/// One fixture folder: the backbone (Keras weights), the head, the reference tensors.
struct Fixture {
    dir: PathBuf,
    backbone: Backbone,
    head: ClassifierHead,
    reference: HashMap<String, Tensor>,
    /// NCHW input.
    input: Tensor,
}

fn read_fixture(dir: &Path) -> Fixture {
    let config = read_fixture_config_file(&dir.join("backbone_config.json"));
    let keras = load_safetensors(&dir.join("backbone_weights.safetensors"));
    let weights = fracture::weights::keras::to_candle(keras).expect("Keras weight names");
    let vb = VarBuilder::from_tensors(weights, DType::F32, &Device::Cpu);
    let backbone_config = BackboneConfig::from(config.model);
    let backbone = Backbone::new(&backbone_config, vb).expect("fixture backbone");
    let head_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    let hidden = head_json["head_hidden"].as_u64().expect("head_hidden") as usize;
    let head_vb = VarBuilder::from_tensors(
        load_safetensors(&dir.join("head.safetensors")),
        DType::F32,
        &Device::Cpu,
    );
    let head = ClassifierHead::new(
        backbone_config.feature_channels(),
        &HeadConfig {
            hidden,
            dropout: 0.5,
            localization: None,
        },
        head_vb.pp("head"),
    )
    .expect("fixture head");
    let reference = load_safetensors(&dir.join("gradcam.safetensors"));
    let input = to_nchw(&reference["input"]);
    Fixture {
        dir: dir.to_path_buf(),
        backbone,
        head,
        reference,
        input,
    }
}

/// Image `i` of a reference map `(N, h, w)` as a flat vector.
fn reference_map(fixture: &Fixture, key: &str, i: usize) -> Vec<f32> {
    let t = fixture
        .reference
        .get(key)
        .unwrap_or_else(|| panic!("{}: no tensor {key}", fixture.dir.display()));
    t.get(i).unwrap().flatten_all().unwrap().to_vec1().unwrap()
}

/// Panics naming the worst element unless `|got - want| <= atol` everywhere (NaN fails).
fn assert_within(what: &str, got: &ImageF32, want: &[f32], atol: f32) {
    assert_eq!(got.data.len(), want.len(), "{what}: length");
    let mut worst = (0f32, 0usize);
    for (k, (g, w)) in got.data.iter().zip(want).enumerate() {
        let diff = (g - w).abs();
        if diff.is_nan() || diff > worst.0 {
            worst = (diff, k);
        }
    }
    let within = worst.0 <= atol; // false for NaN
    assert!(
        within,
        "{what}: max |diff| {} > {atol} at {} (got {}, want {})",
        worst.0, worst.1, got.data[worst.1], want[worst.1]
    );
}

/// How close a path's maps must be to the reference: raw maps within `raw` times the
/// reference map's maximum, normalized maps within `normalized`, resized within `resized`.
struct Tolerance {
    raw: f32,
    normalized: f32,
    resized: f32,
}

/// The tolerances, for the map arithmetic on TensorFlow's own feature map.
const EXACT_FEATURES: Tolerance = Tolerance {
    raw: 1e-5,
    normalized: 1e-5,
    resized: 1e-4,
};

/// For maps from our backbone, against the fixture. Its `post_relu` differs from TensorFlow's
/// by up to 6.4e-5 (values up to 21.7: float32 rounding in another order, the 1e-4 the parity
/// tests allow), and a map is a sum over 128 channels that cancels: a map peaking at 0.009
/// then moves by up to 4.9e-5 of its peak (default path; 2.6e-5 on the fast path).
///
/// The 1e-5 cannot hold here for any float32 backbone: TensorFlow's own maps are up to
/// 3.1e-5 of their peak away from the exact maps (see
/// `maps_through_our_backbone_are_as_close_to_exact_maps_as_tensorflows`, which holds ours to
/// that). The arithmetic itself is held to `EXACT_FEATURES` above.
const OUR_FEATURES: Tolerance = Tolerance {
    raw: 1e-4,
    normalized: 1e-4,
    resized: 1e-4,
};

/// Every map of the fixture (three methods, both targets, every image) within `tolerance`.
fn check_maps(
    fixture: &Fixture,
    what: &str,
    tolerance: &Tolerance,
    explain: impl Fn(CamConfig) -> Vec<Explanation>,
) {
    let n = fixture.input.dim(0).unwrap();
    let logits: Vec<f32> = fixture.reference["logit"].to_vec1().unwrap();
    for method in CamMethod::ALL {
        for target in CamTarget::ALL {
            let config = CamConfig::new(method).with_target(target);
            let maps = explain(config);
            assert_eq!(maps.len(), n);
            let key = format!("{}_{}", method.key(), target.key());
            for (i, map) in maps.iter().enumerate() {
                let label = format!("{} {what} {key} image {i}", fixture.dir.display());
                assert!(
                    (map.logit - logits[i]).abs() < 1e-4,
                    "{label}: logit {} vs {}",
                    map.logit,
                    logits[i]
                );
                let raw = reference_map(fixture, &key, i);
                assert!(
                    raw.iter().all(|v| v.is_finite()),
                    "{label}: reference not finite"
                );
                let peak = raw.iter().fold(0f32, |m, &v| if v > m { v } else { m });
                let raw_tolerance = tolerance.raw * peak.max(f32::MIN_POSITIVE);
                assert_within(&format!("{label} raw"), &map.raw, &raw, raw_tolerance);
                let normalized = reference_map(fixture, &format!("{key}_01"), i);
                assert_within(
                    &format!("{label} normalized"),
                    &map.normalized,
                    &normalized,
                    tolerance.normalized,
                );
                let resized = reference_map(fixture, &format!("{key}_01_up"), i);
                assert_within(
                    &format!("{label} resized"),
                    &map.resized,
                    &resized,
                    tolerance.resized,
                );
            }
        }
    }
}

#[test]
fn fixture_maps_match_on_the_default_path() {
    for dir in fixture_dirs() {
        let fixture = read_fixture(&dir);
        let frozen = FrozenBackbone::without_fast_path(fixture.backbone.clone());
        assert!(!frozen.uses_fast_path());
        check_maps(&fixture, "default path", &OUR_FEATURES, |config| {
            explain_batch(&frozen, &fixture.head, &fixture.input, config).unwrap()
        });
    }
}

#[test]
fn fixture_maps_match_on_the_fast_path() {
    for dir in fixture_dirs() {
        let fixture = read_fixture(&dir);
        let frozen = FrozenBackbone::new(fixture.backbone.clone(), &Device::Cpu).unwrap();
        assert!(frozen.uses_fast_path());
        check_maps(&fixture, "fast path", &OUR_FEATURES, |config| {
            explain_batch(&frozen, &fixture.head, &fixture.input, config).unwrap()
        });
    }
}

#[test]
fn fixture_maps_match_from_the_reference_features() {
    // The CAM arithmetic alone, from TensorFlow's own feature map.
    for dir in fixture_dirs() {
        let fixture = read_fixture(&dir);
        let features = to_nchw(&fixture.reference["features"]);
        let (_, _, h, w) = fixture.input.dims4().unwrap();
        check_maps(&fixture, "reference features", &EXACT_FEATURES, |config| {
            explain_features(&features, &fixture.head, config, (h, w)).unwrap()
        });
    }
}

/// How far maps are from the exact maps: the largest `|map - exact|` over the pixels of each
/// raw map divided by the exact map's peak, and over the normalized maps; the worst of all
/// methods, targets and images.
#[derive(Debug, Default, Clone, Copy)]
struct Deviation {
    raw: f32,
    normalized: f32,
}

impl Deviation {
    fn add(&mut self, exact: &Explanation, raw: &[f32], normalized: &[f32]) {
        let peak = nan_max(exact.raw.data.iter().copied());
        assert!(peak > 0.0, "exact map is zero or NaN: {peak}");
        // NaN stays NaN and fails the comparison with the bound.
        self.raw = nan_max([self.raw, max_abs_diff_values(raw, &exact.raw.data) / peak]);
        self.normalized = nan_max([
            self.normalized,
            max_abs_diff_values(normalized, &exact.normalized.data),
        ]);
    }
}

/// Acceptance 1 through our backbone. The exact maps come from the backbone run in float64
/// (the head and the CAM arithmetic as usual); TensorFlow's float32 maps (the fixture) are
/// up to 3.1e-5 of their peak from them on this fixture, where maps peaking at 0.009 cancel
/// over 128 channels, so no float32 backbone can promise the 1e-5 against the
/// fixture there. Ours must be at least as close to the exact maps as TensorFlow's, or within
/// 1e-5 when TensorFlow's are closer than that. Measured: default path 2.7e-5, fast path
/// 1.9e-5, TensorFlow 3.1e-5 (raw, relative to the peak).
#[test]
fn maps_through_our_backbone_are_as_close_to_exact_maps_as_tensorflows() {
    for dir in fixture_dirs() {
        let fixture = read_fixture(&dir);
        let config = read_fixture_config_file(&dir.join("backbone_config.json"));
        let keras = load_safetensors(&dir.join("backbone_weights.safetensors"));
        let weights = fracture::weights::keras::to_candle(keras).unwrap();
        let vb = VarBuilder::from_tensors(weights, DType::F64, &Device::Cpu);
        let exact_backbone = Backbone::new(&BackboneConfig::from(config.model), vb).unwrap();
        let exact_features = exact_backbone
            .forward_features(&fixture.input.to_dtype(DType::F64).unwrap())
            .unwrap();
        let (_, _, h, w) = fixture.input.dims4().unwrap();
        let default_path = FrozenBackbone::without_fast_path(fixture.backbone.clone());
        let fast_path = FrozenBackbone::new(fixture.backbone.clone(), &Device::Cpu).unwrap();
        assert!(fast_path.uses_fast_path());
        let (mut tensorflow, mut ours_default, mut ours_fast) = Default::default();
        for method in CamMethod::ALL {
            for target in CamTarget::ALL {
                let config = CamConfig::new(method).with_target(target);
                let key = format!("{}_{}", method.key(), target.key());
                let exact =
                    explain_features(&exact_features, &fixture.head, config, (h, w)).unwrap();
                let default_maps =
                    explain_batch(&default_path, &fixture.head, &fixture.input, config).unwrap();
                let fast_maps =
                    explain_batch(&fast_path, &fixture.head, &fixture.input, config).unwrap();
                for (i, exact) in exact.iter().enumerate() {
                    let reference = reference_map(&fixture, &key, i);
                    let reference_01 = reference_map(&fixture, &format!("{key}_01"), i);
                    Deviation::add(&mut tensorflow, exact, &reference, &reference_01);
                    let (d, f) = (&default_maps[i], &fast_maps[i]);
                    Deviation::add(&mut ours_default, exact, &d.raw.data, &d.normalized.data);
                    Deviation::add(&mut ours_fast, exact, &f.raw.data, &f.normalized.data);
                }
            }
        }
        let tensorflow: Deviation = tensorflow;
        let bound = Deviation {
            raw: tensorflow.raw.max(1e-5),
            normalized: tensorflow.normalized.max(1e-5),
        };
        for (what, ours) in [("default path", ours_default), ("fast path", ours_fast)] {
            let ours: Deviation = ours;
            assert!(
                ours.raw <= bound.raw && ours.normalized <= bound.normalized,
                "{}: {what} maps are {ours:?} from the exact maps, TensorFlow's {tensorflow:?}",
                dir.display()
            );
        }
    }
}

/// EfficientNet-Lite0 with its ImageNet weights (random ones give activations near 1e-12)
/// and a seeded head: the map is at the resolution of its 1280-channel feature map, and the
/// fast path gives the default path's maps, for both targets.
///
/// The inputs are seeded: with `Tensor::randn` (unseedable on the CPU) about two runs in five
/// drew an image whose 3 x 3 map for one target was all zero (every cell's weighted sum
/// negative, cut by the ReLU), and a zero map compares equal to anything. The two targets
/// negate the logit, so for each image at least one of them has a map above zero; that is
/// asserted, and every non-zero map is compared.
#[test]
#[ignore = "needs ../shared/weights"]
fn efficientnet_maps_agree_on_the_default_and_fast_paths() {
    let weights = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/weights/efficientnet_lite0_imagenet.safetensors");
    let loaded = WeightsSource::file(weights)
        .load(
            EfficientNetLiteConfig::lite0(),
            &HeadConfig::default(),
            &Device::Cpu,
            &HubOptions::from_env(),
        )
        .unwrap();
    let (net, _) = loaded.into_network().unwrap();
    const BATCH: usize = 2;
    let images = seeded_centered(&[BATCH, 3, 96, 96], 1.0, 41);
    let default_path = FrozenBackbone::without_fast_path(net.backbone.clone());
    let fast_path = FrozenBackbone::new(net.backbone.clone(), &Device::Cpu).unwrap();
    assert!(fast_path.uses_fast_path());
    let mut compared = 0;
    for method in CamMethod::ALL {
        let mut peaks = [0f32; BATCH];
        for target in CamTarget::ALL {
            let config = CamConfig::new(method).with_target(target);
            let slow = explain_batch(&default_path, &net.head, &images, config).unwrap();
            let fast = explain_batch(&fast_path, &net.head, &images, config).unwrap();
            for (i, (s, f)) in slow.iter().zip(&fast).enumerate() {
                assert_eq!((s.raw.height, s.raw.width), (3, 3), "96 / 32");
                assert_eq!((s.resized.height, s.resized.width), (96, 96));
                assert!(
                    (s.logit - f.logit).abs() < 1e-4,
                    "{method} {target:?} logit"
                );
                let peak = nan_max(s.raw.data.iter().copied());
                assert!(peak >= 0.0, "{method} {target:?}: a NaN map (peak {peak})");
                peaks[i] = nan_max([peaks[i], peak]);
                if peak == 0.0 {
                    // Then the fast map must be zero too (up to rounding of a tiny sum).
                    assert!(
                        nan_max(f.raw.data.iter().copied()) <= 1e-6,
                        "{method} {target:?}"
                    );
                    continue;
                }
                compared += 1;
                assert_within(
                    &format!("{method} {target:?} fast raw"),
                    &f.raw,
                    &s.raw.data,
                    1e-4 * peak,
                );
                assert_within(
                    &format!("{method} {target:?} fast normalized"),
                    &f.normalized,
                    &s.normalized.data,
                    1e-4,
                );
            }
        }
        for (i, peak) in peaks.iter().enumerate() {
            assert!(
                *peak > 0.0,
                "{method}: image {i} has a zero map for both targets"
            );
        }
    }
    assert!(
        compared >= CamMethod::ALL.len() * BATCH,
        "{compared} maps compared"
    );
}

#[test]
fn a_closure_head_is_explained_by_autograd() {
    // logit = sum over positions of channel 1 minus channel 0: gradients -1 and 1 everywhere,
    // so the Grad-CAM weights are (-1, 1) and the map is relu(A1 - A0).
    let features = Tensor::new(
        &[[[[1f32, 2.], [3., 4.]], [[4., 0.], [0., 8.]]]],
        &Device::Cpu,
    )
    .unwrap();
    let head = |f: &Tensor| -> fracture::Result<Tensor> {
        let c0 = f.narrow(1, 0, 1)?.flatten_from(1)?.sum(1)?;
        let c1 = f.narrow(1, 1, 1)?.flatten_from(1)?.sum(1)?;
        Ok((c1 - c0)?)
    };
    let maps =
        explain_features(&features, &head, CamConfig::new(CamMethod::GradCam), (4, 4)).unwrap();
    // A1 - A0 = (3, -2, -3, 4).
    assert_eq!(maps[0].raw.data, vec![3.0, 0.0, 0.0, 4.0]);
    assert_eq!(maps[0].logit, 2.0);
    let negated = explain_features(
        &features,
        &head,
        CamConfig::new(CamMethod::GradCam).with_target(CamTarget::NoFracture),
        (4, 4),
    )
    .unwrap();
    assert_eq!(negated[0].raw.data, vec![0.0, 2.0, 3.0, 0.0]);
}

#[test]
fn a_nan_map_is_an_error_naming_the_image_not_a_map_of_zeros() {
    // logit = sum(sqrt(A) - sqrt(A)) = 0: finite, but its gradient is inf - inf = NaN wherever
    // A is 0, so image 1's map is NaN before the ReLU (which would turn it into zeros). Image 0
    // has no zero, so its gradient is 0 and its map all zeros (a legitimate "nothing raised
    // it").
    let features = Tensor::new(
        &[[[[1f32, 2.], [3., 4.]]], [[[1f32, 0.], [3., 4.]]]],
        &Device::Cpu,
    )
    .unwrap();
    let head = |f: &Tensor| -> fracture::Result<Tensor> {
        Ok((f.sqrt()? - f.sqrt()?)?.flatten_from(1)?.sum(1)?)
    };
    let config = CamConfig::new(CamMethod::GradCam);
    let first = explain_features(&features.narrow(0, 0, 1).unwrap(), &head, config, (2, 2));
    assert_eq!(first.unwrap()[0].raw.data, vec![0.0; 4]);
    let error = explain_features(&features, &head, config, (2, 2)).unwrap_err();
    assert!(
        matches!(error, fracture::Error::NonFinite { index: 1, .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.starts_with("image 1 of the batch: the class-activation map is NaN"),
        "{message}"
    );
}

#[test]
fn with_tta_an_explained_prediction_is_classifys() {
    let mut clf = FractureClassifier::builder()
        .backbone(ResNetV2Config::custom(vec![2, 2], vec![4, 8]))
        .weights(WeightsSource::Random { seed: 11 })
        .device(DeviceRequest::Cpu)
        .image_size(32, 32)
        .build()
        .unwrap();
    // An asymmetric picture, so that flipped and shifted views score differently.
    let image = image::DynamicImage::ImageLuma8(image::GrayImage::from_fn(40, 36, |x, y| {
        image::Luma([((x * x + 3 * y) % 251) as u8])
    }));
    let images = [image.clone(), image.fliph()];
    let single_view = clf.classify_batch(&images).unwrap();
    clf.set_tta(fracture::augment::TtaConfig::standard())
        .unwrap();
    let classified = clf.classify_batch(&images).unwrap();
    assert_ne!(
        classified[0].fracture_probability, single_view[0].fracture_probability,
        "the views must change the answer for this test to mean anything"
    );
    for method in [CamMethod::GradCam, CamMethod::HiResCam] {
        let explained = clf.explain_images(&images, CamConfig::new(method)).unwrap();
        for (e, c) in explained.iter().zip(&classified) {
            assert_eq!(e.prediction, *c, "{method}");
        }
    }
}

// ---------------------------------------------------------------- end to end, synthetic data

/// A small backbone that trains from scratch in a minute: one stack of two blocks after a
/// 16-filter stem, so the last feature map is 1/4 of the input (16 x 16 cells for 64 x 64):
/// fine enough to point inside a lesion a few pixels wide.
fn small_backbone() -> ResNetV2Config {
    let mut config = ResNetV2Config::custom(vec![2], vec![16]);
    config.stem_filters = 16;
    config.bn_momentum = 0.9;
    config
}

/// The box-relative position of a map's maximum shifted by `(dx, dy)` pixels, or the map
/// flipped in both directions: what a misplaced map looks like.
fn flipped(map: &ImageF32) -> ImageF32 {
    let mut data = map.data.clone();
    data.reverse();
    ImageF32::new(map.height, map.width, 1, data).unwrap()
}

fn shifted(map: &ImageF32, dx: usize, dy: usize) -> ImageF32 {
    let (h, w) = (map.height, map.width);
    let data = (0..h * w)
        .map(|i| map.data[((i / w + dy) % h) * w + (i % w + dx) % w])
        .collect();
    ImageF32::new(h, w, 1, data).unwrap()
}

/// Acceptance 2 of issue 16: a small model trained from scratch on synthetic radiographs
/// whose fractures lie anywhere along the bones (spread 0.4 of the short side, so that a map
/// that always points at the centre scores badly) must point inside the lesion boxes on at
/// least 80 % of the fractured test images, above both baseline maps, and the same maps
/// flipped or shifted must not.
///
/// The pointing tolerance is 2 px of the original image (64 to 96 px), half a cell of the
/// 16 x 16 feature map: a map cannot place its maximum more finely than its cells.
///
/// Measured (seed 11, 32 fractured test images): pointing game 0.94 (centred Gaussian 0.38,
/// uniform 0.10); without tolerance 0.72. Seeds 12 to 14 gave 0.88, 0.88 and 0.94. About 2
/// minutes in the test profile on 2 cores, 1 in release.
#[test]
fn a_small_model_points_at_synthetic_lesions() {
    let started = std::time::Instant::now();
    let dir = tempfile::tempdir().unwrap();
    SyntheticConfig {
        n_fractured: 160,
        n_not_fractured: 160,
        min_size: 64,
        max_size: 96,
        seed: 11,
        fracture_visibility: 5.0,
        fracture_spread: 0.4,
    }
    .generate_to(dir.path())
    .unwrap();
    let data = FracAtlas::open(dir.path()).unwrap();
    let split = data
        .split(&SplitConfig {
            seed: 11,
            ..SplitConfig::default()
        })
        .unwrap();
    let annotations = Annotations::open_fracatlas(dir.path()).unwrap();
    let mut clf = FractureClassifier::builder()
        .backbone(small_backbone())
        .weights(WeightsSource::Random { seed: 11 })
        .device(DeviceRequest::Cpu)
        .image_size(64, 64)
        .build()
        .unwrap();
    let config = TrainConfig {
        epochs: 24,
        batch_size: 16,
        learning_rate: 3e-3,
        backbone: BackboneTraining::All {
            learning_rate: 3e-3,
        },
        augment: false,
        progress: false,
        seed: 11,
        ..TrainConfig::default()
    };
    let history = clf.train(&split, config).unwrap();
    for e in &history.epochs {
        eprintln!(
            "epoch {} train {:.4} val {:.4} auc {:?}",
            e.epoch, e.train_loss, e.val_loss, e.val_auc
        );
    }
    eprintln!("trained in {:.1} s", started.elapsed().as_secs_f64());
    eprintln!("{}", clf.evaluate(&split.test).unwrap());

    let localization = LocalizationConfig {
        tolerance_px: 2.0,
        ..LocalizationConfig::default()
    };
    let report = clf
        .localization(&split.test, &annotations, CamMethod::GradCam, &localization)
        .unwrap();
    eprintln!("{report}");
    let pointing = report.map.pointing_game.estimate;
    assert!(
        report.images.len() >= 10,
        "{} images scored",
        report.images.len()
    );
    assert!(pointing >= 0.8, "pointing game {pointing}");
    assert!(pointing > report.centred_gaussian.pointing_game.estimate);
    assert!(pointing > report.uniform.pointing_game.estimate);

    // The same maps flipped or shifted by a quarter of the image must score badly.
    let (mut flip_hits, mut shift_hits, mut n) = (0.0, 0.0, 0.0);
    for sample in split
        .test
        .samples
        .iter()
        .filter(|s| s.label == Label::Fractured)
    {
        let explained = clf
            .explain_path(&sample.path, CamConfig::default())
            .unwrap();
        let map = explained.map_at_image_size().unwrap();
        let boxes: Vec<BoundingBox> = annotations
            .for_path(&sample.path)
            .unwrap()
            .regions
            .iter()
            .map(|r| r.pixel_box(explained.width, explained.height))
            .collect();
        let score = |m: &ImageF32| {
            score_map(m, &boxes, localization.tolerance_px, &localization)
                .unwrap()
                .pointing
        };
        flip_hits += score(&flipped(&map));
        shift_hits += score(&shifted(&map, map.width / 4, map.height / 4));
        n += 1.0;
    }
    eprintln!("flipped {:.3} shifted {:.3}", flip_hits / n, shift_hits / n);
    assert!(
        flip_hits / n < 0.5,
        "flipped maps point at the lesion too often"
    );
    assert!(
        shift_hits / n < 0.5,
        "shifted maps point at the lesion too often"
    );
    eprintln!("done in {:.1} s", started.elapsed().as_secs_f64());
}
