//! Decode + resize + normalize throughput of the dataset loader on real FracAtlas files.
//!
//! `cargo bench --bench pipeline` reads `../shared/data/fracatlas`, or the folder in
//! `FRACATLAS_DIR` when set. Criterion's `thrpt` line is in images per second. Without either
//! it says so and measures nothing.

use candle_core::Device;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fracture::batch::BatchSource;
use fracture::dataset::loader::{ImageLoader, LoaderConfig};
use fracture::dataset::{FracAtlas, Sample};
use fracture::preprocess::Preprocess;
use std::time::Duration;

/// Every 32nd image of the dataset (sorted by path): 128 files covering both classes,
/// all sizes and the truncated ones, as stored on disk.
fn real_samples() -> Option<Vec<Sample>> {
    let shared = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/fracatlas");
    let dir = std::env::var_os("FRACATLAS_DIR")
        .map(std::path::PathBuf::from)
        .or_else(|| shared.is_dir().then_some(shared));
    let Some(dir) = dir else {
        println!("no FracAtlas: set FRACATLAS_DIR or run beside ../shared; nothing measured");
        return None;
    };
    let data = FracAtlas::open(&dir).expect("FRACATLAS_DIR is not a FracAtlas folder");
    Some(data.samples.into_iter().step_by(32).collect())
}

fn pipeline(c: &mut Criterion) {
    let Some(samples) = real_samples() else {
        return;
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut group = c.benchmark_group("fracatlas_decode_resize_normalize_224");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(10));
    group.throughput(Throughput::Elements(samples.len() as u64));
    for threads in [1, cores] {
        let config = LoaderConfig {
            batch_size: 32,
            shuffle: false,
            threads: Some(threads),
            ..Default::default()
        };
        let loader = ImageLoader::new(samples.clone(), Preprocess::default(), config, Device::Cpu)
            .expect("loader");
        println!(
            "{} real FracAtlas files, loader threads: {}",
            samples.len(),
            loader.threads()
        );
        group.bench_function(format!("{threads}_threads"), |b| {
            b.iter(|| {
                let n: usize = loader
                    .batches(0)
                    .expect("batches")
                    .map(|batch| batch.expect("batch").indices.len())
                    .sum();
                assert_eq!(n, samples.len());
            })
        });
    }
    group.finish();
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
