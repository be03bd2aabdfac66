//! One 224x224x3 augmentation on one core, next to the loader's own per-image work (JPEG
//! decode + resize to 224 with a Triangle filter) so the augmentation's share can be read off.
//!
//! `FRACATLAS_IMAGE=/path/to/FracAtlas/images/Fractured/IMG0000019.jpg cargo bench --bench
//! augment` times a real radiograph; without it a synthetic 819x1024 grayscale JPEG (the size
//! of many FracAtlas images) is used.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use fracture::augment::{
    clahe, warp_into, AffineParams, AugmentConfig, ClaheConfig, FillMode, ImageShape,
};
use fracture::image::{ImageF32, SampleTransform};
use image::imageops::FilterType;
use std::hint::black_box;

const SIDE: usize = 224;

fn test_image() -> ImageF32 {
    let data = (0..SIDE * SIDE * 3)
        .map(|i| ((i * 7919 + 13) % 251) as f32)
        .collect();
    ImageF32::new(SIDE, SIDE, 3, data).expect("valid test image")
}

fn jpeg_bytes() -> (String, Vec<u8>) {
    if let Some(path) = std::env::var_os("FRACATLAS_IMAGE") {
        let bytes = std::fs::read(&path).expect("FRACATLAS_IMAGE is readable");
        return (path.to_string_lossy().into_owned(), bytes);
    }
    let (w, h) = (819u32, 1024u32);
    let gray = image::GrayImage::from_fn(w, h, |x, y| image::Luma([((x * 3 + y * 5) % 256) as u8]));
    let mut bytes = Vec::new();
    image::DynamicImage::ImageLuma8(gray)
        .write_to(
            &mut std::io::Cursor::new(&mut bytes),
            image::ImageFormat::Jpeg,
        )
        .expect("encode synthetic JPEG");
    ("synthetic 819x1024 gray".into(), bytes)
}

/// The loader's per-image work without augmentation: decode, RGB, resize, to f32.
fn decode_and_resize(bytes: &[u8]) -> Vec<f32> {
    let img = image::load_from_memory(bytes).expect("decodable JPEG");
    let rgb = img
        .resize_exact(SIDE as u32, SIDE as u32, FilterType::Triangle)
        .to_rgb8();
    rgb.into_raw().into_iter().map(f32::from).collect()
}

fn bench(c: &mut Criterion) {
    let image = test_image();
    let shape = ImageShape {
        height: SIDE,
        width: SIDE,
        channels: 3,
    };
    let config = AugmentConfig::default();
    // A typical notebook draw (rotation, shifts, shear, zoom and flip all active).
    let params = AffineParams::from_keras(7.3, -12.5, 9.1, 0.07, 1.11, 0.91, true);
    let mut out = vec![0.0f32; shape.len()];

    let mut group = c.benchmark_group("augment_224x224x3");
    group.bench_function("warp_f32_nearest", |b| {
        b.iter(|| {
            warp_into(
                &image.data,
                &mut out,
                shape,
                black_box(&params),
                FillMode::Nearest,
            )
            .expect("warp")
        })
    });
    group.bench_function("warp_f32_constant", |b| {
        b.iter(|| {
            warp_into(
                &image.data,
                &mut out,
                shape,
                black_box(&params),
                FillMode::Constant(0.0),
            )
            .expect("warp")
        })
    });
    let bytes: Vec<u8> = image.data.iter().map(|&v| v as u8).collect();
    let mut out_u8 = vec![0u8; shape.len()];
    group.bench_function("warp_u8_nearest", |b| {
        b.iter(|| {
            warp_into(
                &bytes,
                &mut out_u8,
                shape,
                black_box(&params),
                FillMode::Nearest,
            )
            .expect("warp")
        })
    });
    // The loader's path: SampleTransform::apply (draw + warp into a per-thread buffer).
    group.bench_function("loader_hook_sample_transform_apply", |b| {
        let mut index = 0u64;
        b.iter_batched(
            || image.clone(),
            |img| {
                index += 1;
                config.apply(img, 42, 0, index).expect("augment")
            },
            BatchSize::LargeInput,
        )
    });
    group.bench_function("clahe_8x8", |b| {
        b.iter(|| {
            let mut data = image.data.clone();
            clahe(&mut data, SIDE, SIDE, 3, &ClaheConfig::default()).expect("clahe");
            data
        })
    });
    group.finish();

    let (name, jpeg) = jpeg_bytes();
    eprintln!("loader baseline image: {name}");
    c.bench_function("loader_baseline/decode_resize_224_triangle", |b| {
        b.iter(|| decode_and_resize(black_box(&jpeg)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
