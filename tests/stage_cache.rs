//! The stage cache (issue 24, item 2): reused while nothing changes, rebuilt when an image, the
//! frozen weights or a setting changes, refused when its file is damaged; and a training step
//! on cached maps equals the step on the images.

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use fracture::batch::{BatchSource, TensorBatches};
use fracture::dataset::loader::{ImageLoader, LoaderConfig};
use fracture::dataset::synthetic::SyntheticConfig;
use fracture::dataset::Sample;
use fracture::model::{
    init_variables, Backbone, BackboneConfig, EfficientNetLiteConfig, FrozenBackbone, HeadConfig,
};
use fracture::preprocess::Preprocess;
use fracture::train::{
    AdamConfig, BackboneTraining, CacheDtype, CacheView, CachedSource, StageCache,
    StageCacheConfig, TrainConfig, Trainer,
};
use std::path::Path;

const SIZE: usize = 64;

/// A small EfficientNet-Lite (Lite0's stages, a quarter of the width).
fn small_lite() -> EfficientNetLiteConfig {
    let mut c = EfficientNetLiteConfig::lite0();
    c.width_multiplier = 0.25;
    c.depth_multiplier = 0.5;
    c.stem_channels = 8;
    c.head_channels = 32;
    c
}

fn samples(dir: &Path, n: usize) -> Vec<Sample> {
    SyntheticConfig {
        n_fractured: n / 2,
        n_not_fractured: n - n / 2,
        min_size: 48,
        max_size: 64,
        seed: 5,
        fracture_visibility: 3.0,
        fracture_spread: 0.3,
    }
    .generate_to(dir)
    .unwrap()
}

fn loader(samples: &[Sample]) -> ImageLoader {
    let preprocess = Preprocess {
        height: SIZE,
        width: SIZE,
        ..Preprocess::default()
    };
    let config = LoaderConfig {
        shuffle: false,
        ..LoaderConfig::default()
    };
    ImageLoader::new(samples.to_vec(), preprocess, config, Device::Cpu).unwrap()
}

fn images(loader: &ImageLoader, indices: &[usize]) -> Tensor {
    let mut values = Vec::new();
    for &i in indices {
        values.extend(loader.load_sample(i, 0).unwrap());
    }
    Tensor::from_vec(values, (indices.len(), 3, SIZE, SIZE), &Device::Cpu).unwrap()
}

/// A backbone with seeded random weights.
fn backbone(seed: u64) -> (Backbone, VarMap) {
    let config = BackboneConfig::from(small_lite());
    let varmap = VarMap::new();
    {
        let mut data = varmap.data().lock().unwrap();
        for (name, value) in init_variables(&config.variables(), seed, &Device::Cpu).unwrap() {
            data.insert(name, candle_core::Var::from_tensor(&value).unwrap());
        }
    }
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    (Backbone::new(&config, vb).unwrap(), varmap)
}

#[derive(Debug)]
struct Built {
    cache: StageCache,
}

fn open(
    dir: &Path,
    samples: &[Sample],
    views: &[CacheView],
    dtype: CacheDtype,
    key: &[u8],
    frozen: &FrozenBackbone,
) -> fracture::Result<Built> {
    let loader = loader(samples);
    let mut load = |indices: &[usize], view: CacheView| view.apply(&images(&loader, indices));
    let cache = StageCache::open_or_build(
        dir,
        "train",
        samples,
        views,
        dtype,
        key,
        &mut load,
        &|x| frozen.stage_output(x, 4),
        false,
    )?;
    Ok(Built { cache })
}

/// A tensor's values, flattened.
fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

fn map_of(cache: &StageCache, sample: usize, view: usize) -> Vec<f32> {
    values(&cache.gather(&[sample], &[view], &Device::Cpu).unwrap())
}

#[test]
fn a_stage_cache_is_reused_and_rebuilt_when_an_image_the_weights_or_a_setting_change() {
    let data = tempfile::tempdir().unwrap();
    let cache_dir = tempfile::tempdir().unwrap();
    let samples = samples(data.path(), 6);
    let (net, _) = backbone(1);
    let frozen = FrozenBackbone::new(net, &Device::Cpu).unwrap();
    let views = [CacheView::Original, CacheView::Mirror];
    let first = open(
        cache_dir.path(),
        &samples,
        &views,
        CacheDtype::F32,
        b"w1",
        &frozen,
    )
    .unwrap();
    assert!(first.cache.was_built());
    assert_eq!(first.cache.len(), 6);
    // Stage 4 of the small Lite: 112 channels at a quarter width, rounded to 32.
    assert_eq!(first.cache.dims(), (32, SIZE / 16, SIZE / 16));
    // What the cache holds is the frozen stages' output of the image and of its mirror.
    let loader = loader(&samples);
    let x = images(&loader, &[2]);
    let want: Vec<f32> = values(&frozen.stage_output(&x, 4).unwrap());
    assert_eq!(map_of(&first.cache, 2, 0), want);
    let mirrored = x.flip(&[3]).unwrap();
    let want_mirror: Vec<f32> = values(&frozen.stage_output(&mirrored, 4).unwrap());
    assert_eq!(map_of(&first.cache, 2, 1), want_mirror);
    assert_ne!(want, want_mirror);
    let key = first.cache.key().to_string();
    let before: Vec<Vec<f32>> = (0..6).map(|i| map_of(&first.cache, i, 0)).collect();
    drop(first);

    // Nothing changed: read back, not built.
    let again = open(
        cache_dir.path(),
        &samples,
        &views,
        CacheDtype::F32,
        b"w1",
        &frozen,
    )
    .unwrap();
    assert!(!again.cache.was_built());
    assert_eq!(again.cache.key(), key);
    drop(again);

    // One image changed on disk: rebuilt, that image's map changed, the others not.
    let changed = &samples[3].path;
    let mut picture = image::open(changed).unwrap().to_luma8();
    for p in picture.pixels_mut() {
        p.0[0] = 255 - p.0[0];
    }
    picture.save(changed).unwrap();
    let rebuilt = open(
        cache_dir.path(),
        &samples,
        &views,
        CacheDtype::F32,
        b"w1",
        &frozen,
    )
    .unwrap();
    assert!(rebuilt.cache.was_built());
    assert_ne!(rebuilt.cache.key(), key);
    for (i, old) in before.iter().enumerate() {
        let now = map_of(&rebuilt.cache, i, 0);
        assert_eq!(&now != old, i == 3, "sample {i}");
    }
    let key = rebuilt.cache.key().to_string();
    drop(rebuilt);

    // Other frozen weights (the key material), other views, another storage type: rebuilt.
    for (views, dtype, material) in [
        (&views[..], CacheDtype::F32, &b"w2"[..]),
        (&views[..1], CacheDtype::F32, &b"w1"[..]),
        (&views[..], CacheDtype::F16, &b"w1"[..]),
    ] {
        let other = open(cache_dir.path(), &samples, views, dtype, material, &frozen).unwrap();
        assert!(other.cache.was_built(), "{views:?} {dtype:?}");
        assert_ne!(other.cache.key(), key);
    }
    // f16 storage holds the f32 values to half precision.
    let half = open(
        cache_dir.path(),
        &samples,
        &views,
        CacheDtype::F16,
        b"w1",
        &frozen,
    )
    .unwrap();
    assert!(!half.cache.was_built());
    let exact: Vec<f32> = values(&frozen.stage_output(&images(&loader, &[0]), 4).unwrap());
    for (h, e) in map_of(&half.cache, 0, 0).iter().zip(&exact) {
        assert!((h - e).abs() <= 1e-3 * e.abs().max(1.0), "{h} vs {e}");
    }
    drop(half);

    // A damaged file under a valid manifest is an error naming it, never wrong values.
    let bin = cache_dir.path().join("train.bin");
    let bytes = std::fs::read(&bin).unwrap();
    std::fs::write(&bin, &bytes[..bytes.len() - 2]).unwrap();
    let error = open(
        cache_dir.path(),
        &samples,
        &views,
        CacheDtype::F16,
        b"w1",
        &frozen,
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("train.bin"), "{error}");
}

/// A step on cached maps (f32) equals the step on the images through the frozen stages, to
/// 1e-5 in every weight. Adam with epsilon 1 makes the first step proportional to the
/// gradient (`lr_t * g / (sqrt(1 - beta2) |g| + 1)`), so equal weights mean equal gradients.
#[test]
fn a_step_on_cached_maps_equals_the_step_on_the_images() {
    let data = tempfile::tempdir().unwrap();
    let cache_dir = tempfile::tempdir().unwrap();
    let samples = samples(data.path(), 8);
    let loader = loader(&samples);
    let all: Vec<usize> = (0..samples.len()).collect();
    let x = images(&loader, &all);
    let labels: Vec<f32> = samples.iter().map(|s| s.label.as_f32()).collect();
    let labels = Tensor::new(labels, &Device::Cpu).unwrap();
    let config = TrainConfig {
        epochs: 1,
        batch_size: 8,
        learning_rate: 1.0,
        adam: AdamConfig {
            epsilon: 1.0,
            ..AdamConfig::default()
        },
        head: HeadConfig {
            hidden: 8,
            dropout: 0.0,
            localization: None,
        },
        backbone: BackboneTraining::LastStages {
            stages: 2,
            learning_rate: 1.0,
        },
        augment: false,
        progress: false,
        restore_best_weights: false,
        seed: 3,
        ..TrainConfig::default()
    };

    let (_, varmap) = backbone(7);
    let mut plain = Trainer::new(small_lite(), varmap, config.clone(), &Device::Cpu).unwrap();
    let source = TensorBatches::new(x, labels, 8).unwrap();
    let plain_history = plain.fit(&source, &source, None).unwrap();

    let (net, varmap) = backbone(7);
    let frozen = FrozenBackbone::new(net, &Device::Cpu).unwrap();
    let built = open(
        cache_dir.path(),
        &samples,
        &[CacheView::Original],
        CacheDtype::F32,
        b"seed 7",
        &frozen,
    )
    .unwrap();
    let cached_config = TrainConfig {
        stage_cache: Some(StageCacheConfig::new(cache_dir.path())),
        ..config
    };
    let mut cached = Trainer::new(small_lite(), varmap, cached_config, &Device::Cpu).unwrap();
    let source = CachedSource::new(&built.cache, 8, false, 3, &Device::Cpu).unwrap();
    let cached_history = cached.fit(&source, &source, None).unwrap();

    let (a, b) = (&plain_history.epochs[0], &cached_history.epochs[0]);
    assert!((a.train_loss - b.train_loss).abs() < 1e-5, "{a:?} {b:?}");
    assert!((a.val_loss - b.val_loss).abs() < 1e-5, "{a:?} {b:?}");
    let mut largest = 0f32;
    let mut moved = 0usize;
    let initial: std::collections::HashMap<String, Vec<f32>> = {
        let (_, varmap) = backbone(7);
        varmap
            .data()
            .lock()
            .unwrap()
            .iter()
            .map(|(n, v)| {
                (
                    n.clone(),
                    v.as_tensor().flatten_all().unwrap().to_vec1().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(
        plain.weights().unwrap().len(),
        cached.weights().unwrap().len()
    );
    for ((name, wa), (name_b, wb)) in plain
        .weights()
        .unwrap()
        .iter()
        .zip(cached.weights().unwrap().iter())
    {
        assert_eq!(name, name_b);
        let (wa, wb) = (values(wa), values(wb));
        for (i, (p, q)) in wa.iter().zip(&wb).enumerate() {
            let difference = (p - q).abs();
            // NaN-aware: a NaN on either side fails.
            assert!(difference <= 1e-5, "{name}[{i}]: {p} vs {q}");
            largest = largest.max(difference);
        }
        if let Some(start) = initial.get(name)
            && start.iter().zip(&wa).any(|(s, w)| (s - w).abs() > 1e-3)
        {
            moved += 1;
        }
    }
    // The step did something: the trained stages' weights moved.
    assert!(moved > 10, "only {moved} variables moved");
    eprintln!("largest weight difference {largest:e}, {moved} variables moved");
}

/// The bounding box, in pixels (edges), of the pixels of `image` brighter than half of 255.
fn bright_box(image: &fracture::image::ImageF32) -> (f64, f64, f64, f64) {
    let (mut x0, mut y0, mut x1, mut y1) = (f64::MAX, f64::MAX, f64::MIN, f64::MIN);
    for r in 0..image.height {
        for c in 0..image.width {
            if image.get(r, c, 0) > 127.5 {
                x0 = x0.min(c as f64);
                y0 = y0.min(r as f64);
                x1 = x1.max(c as f64 + 1.0);
                y1 = y1.max(r as f64 + 1.0);
            }
        }
    }
    (x0, y0, x1, y1)
}

/// An augmented view's boxes follow its picture: a white rectangle on a wide black picture,
/// warped by the view of 60 pictures (turned, zoomed, shifted, mirrored as drawn), lands
/// where the view maps the rectangle's corners, to 1.5 pixels on every side; and the views
/// drawn do turn, zoom and mirror (else the test would prove nothing).
#[test]
fn an_augmented_views_boxes_follow_its_picture() {
    use fracture::train::ViewAugmentation;
    let (h, w) = (96usize, 128usize);
    let aspect = w as f64 / h as f64;
    // The rectangle, as fractions of the picture: columns 0.30..0.55, rows 0.35..0.60.
    let (fx0, fy0, fx1, fy1) = (0.30, 0.35, 0.55, 0.60);
    let picture = rectangle_picture(h, w, (fx0, fy0, fx1, fy1));
    let (mut mirrored, mut turned) = (0, 0);
    for index in 0..60 {
        let seed = 11;
        let drawn = ViewAugmentation::draw(seed, index);
        mirrored += usize::from(drawn.mirror);
        turned += usize::from(drawn.rotation_deg.abs() > 5.0);
        let warped = drawn.warp(&picture);
        let got = bright_box(&warped);
        let view = CacheView::Augmented { seed };
        let corners = [(fx0, fy0), (fx1, fy0), (fx0, fy1), (fx1, fy1)]
            .map(|(x, y)| view.map_point(index, x, y, aspect));
        let xs = corners.map(|p| p.0 * w as f64);
        let ys = corners.map(|p| p.1 * h as f64);
        let lo = |v: [f64; 4]| v.into_iter().fold(f64::INFINITY, f64::min);
        let hi = |v: [f64; 4]| v.into_iter().fold(f64::NEG_INFINITY, f64::max);
        let expected = (lo(xs), lo(ys), hi(xs), hi(ys));
        let sides = [
            (got.0, expected.0),
            (got.1, expected.1),
            (got.2, expected.2),
            (got.3, expected.3),
        ];
        assert!(
            sides.iter().all(|(g, e)| (g - e).abs() <= 1.5),
            "picture {index}, {drawn:?}: white pixels span {got:?}, the mapped box {expected:?}"
        );
    }
    assert!(
        (15..=45).contains(&mirrored) && turned >= 15,
        "{mirrored} mirrored, {turned} turned by more than 5 degrees"
    );
}

/// Through the cache and [`CachedSource`]: the cells an augmented view's box targets mark are
/// where that view's cached picture is bright. A white rectangle on a black picture 60 x 96
/// (not square, and not a multiple of the 8-pixel "stages", so the map's aspect differs from
/// the picture's) is cached in an augmented view (the "stages" an 8 x 8 average pool); every
/// cell that is mostly white must be a target, and most targets must hold some white.
#[test]
fn an_augmented_views_targets_mark_where_its_cached_picture_is_bright() {
    use fracture::dataset::annotations::BoundingBox;
    use fracture::train::ViewAugmentation;
    let data = tempfile::tempdir().unwrap();
    let cache_dir = tempfile::tempdir().unwrap();
    let samples = samples(data.path(), 12);
    let (h, w) = (60usize, 96usize);
    let (fx0, fy0, fx1, fy1) = (0.30, 0.35, 0.55, 0.60);
    let picture = rectangle_picture(h, w, (fx0, fy0, fx1, fy1));
    let seed = 5;
    let mut load = |indices: &[usize], view: CacheView| -> fracture::Result<Tensor> {
        let mut chw = Vec::new();
        for &i in indices {
            let p = match view {
                CacheView::Augmented { seed } => ViewAugmentation::draw(seed, i).warp(&picture),
                _ => picture.clone(),
            };
            for ch in 0..3 {
                chw.extend((0..h * w).map(|k| p.data[k * 3 + ch]));
            }
        }
        Ok(Tensor::from_vec(
            chw,
            (indices.len(), 3, h, w),
            &Device::Cpu,
        )?)
    };
    let stages = |x: &Tensor| -> fracture::Result<Tensor> { Ok(x.avg_pool2d(8)?) };
    let cache = StageCache::open_or_build(
        cache_dir.path(),
        "train",
        &samples,
        &[CacheView::Augmented { seed }],
        CacheDtype::F32,
        b"pool",
        &mut load,
        &stages,
        false,
    )
    .unwrap();
    assert_eq!(cache.dims(), (3, 7, 12));
    assert_eq!(cache.input_dims(), (h, w));
    let boxes = vec![Some(vec![BoundingBox::new(fx0, fy0, fx1, fy1)]); samples.len()];
    let source = CachedSource::new(&cache, samples.len(), false, 0, &Device::Cpu)
        .unwrap()
        .with_boxes(boxes, 0.0)
        .unwrap();
    let batch = source.batches(0).unwrap().next().unwrap().unwrap();
    let maps = values(&batch.images);
    let targets = values(&batch.targets.unwrap());
    let cells = 7 * 12;
    let (mut marked, mut marked_dark) = (0, 0);
    for i in 0..samples.len() {
        for cell in 0..cells {
            // Channel 0 of the pooled picture: the share of the cell that is white, x 255.
            let white = maps[i * 3 * cells + cell] / 255.0;
            let target = targets[i * cells + cell];
            assert!(
                white <= 0.5 || target == 1.0,
                "picture {i}, cell {cell}: {white:.2} white but not a target ({:?})",
                ViewAugmentation::draw(seed, i)
            );
            if target == 1.0 {
                marked += 1;
                marked_dark += usize::from(white == 0.0);
            }
        }
    }
    assert!(
        marked > 0 && marked_dark * 4 <= marked,
        "{marked_dark} of {marked} marked cells dark"
    );
}

/// A black `h` x `w` RGB picture (0..255) with a white rectangle over columns `x0..x1` and
/// rows `y0..y1` (fractions of the picture; a pixel is white when its centre is inside).
fn rectangle_picture(
    h: usize,
    w: usize,
    (x0, y0, x1, y1): (f64, f64, f64, f64),
) -> fracture::image::ImageF32 {
    let mut pixels = vec![0f32; h * w * 3];
    for r in 0..h {
        for c in 0..w {
            let (x, y) = ((c as f64 + 0.5) / w as f64, (r as f64 + 0.5) / h as f64);
            if (x0..x1).contains(&x) && (y0..y1).contains(&y) {
                pixels[(r * w + c) * 3..(r * w + c + 1) * 3].fill(255.0);
            }
        }
    }
    fracture::image::ImageF32::new(h, w, 3, pixels).unwrap()
}
