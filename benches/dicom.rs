//! Decoding a 12-bit 2500 x 2000 radiograph stored as DICOM (native and RLE) against the same
//! image as an 8-bit JPEG, all through the decode entry point every caller uses
//! (`fracture::dataset::decode::decode_bytes`), then the same plus the loader's resize to
//! 224 x 224. Criterion's `thrpt` line is in images per second.
//!
//! `cargo bench --bench dicom`. After criterion's groups, the same decodes run interleaved
//! (native, RLE, JPEG, native, ...) for `DICOM_BENCH_ROUNDS` rounds (default 15), and the
//! medians and the per-round ratios to the JPEG path are printed: the numbers to quote on a
//! shared machine, where speed drifts between criterion's groups.

#[path = "../tests/common/dicom_writer.rs"]
mod dicom_writer;

use criterion::{criterion_group, Criterion, Throughput};
use fracture::dataset::decode::decode_bytes;
use fracture::preprocess::Preprocess;
use std::path::Path;
use std::time::Duration;

const ROWS: u16 = 2500;
const COLUMNS: u16 = 2000;

/// A radiograph-like 12-bit image: smooth anatomy-scale gradients, a fine texture and noise
/// (so that RLE and JPEG see realistic, not trivially compressible, content).
fn radiograph() -> dicom_writer::Gray16 {
    let mut gray = dicom_writer::Gray16::gradient(ROWS, COLUMNS);
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    for (i, value) in gray.frames[0].iter_mut().enumerate() {
        let (r, c) = (
            (i / usize::from(COLUMNS)) as f64,
            (i % usize::from(COLUMNS)) as f64,
        );
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let noise = (state % 9) as f64 - 4.0;
        let bone =
            1200.0 * (-(((r - 1250.0) / 500.0).powi(2) + ((c - 1000.0) / 180.0).powi(2))).exp();
        let soft = 900.0 + 600.0 * (r / 2500.0) + 300.0 * (c / 400.0).sin();
        *value = (soft + bone + noise).clamp(0.0, 4095.0) as u16;
    }
    gray.with_text(
        dicom_dictionary_std::tags::WINDOW_CENTER,
        dicom_core::VR::DS,
        "2048",
    )
    .with_text(
        dicom_dictionary_std::tags::WINDOW_WIDTH,
        dicom_core::VR::DS,
        "4096",
    )
}

fn jpeg_of(gray: &dicom_writer::Gray16) -> Vec<u8> {
    let pixels: Vec<u8> = gray.frames[0].iter().map(|&v| (v >> 4) as u8).collect();
    let image = image::GrayImage::from_raw(u32::from(COLUMNS), u32::from(ROWS), pixels)
        .expect("image buffer");
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode_image(&image)
        .expect("JPEG encoding");
    out
}

fn decode(c: &mut Criterion) {
    let gray = radiograph();
    let inputs = [
        ("dicom_native_12bit", gray.native(dicom_writer::EXPLICIT_LE)),
        ("dicom_rle_12bit", gray.rle()),
        ("jpeg_8bit", jpeg_of(&gray)),
    ];
    for (name, bytes) in &inputs {
        println!("{name}: {} bytes", bytes.len());
    }
    let path = Path::new("bench.dcm");
    let preprocess = Preprocess::default();
    for (group_name, resize) in [("decode_2500x2000", false), ("decode_resize_224", true)] {
        let mut group = c.benchmark_group(group_name);
        group.sample_size(10);
        group.measurement_time(Duration::from_secs(8));
        group.throughput(Throughput::Elements(1));
        for (name, bytes) in &inputs {
            group.bench_function(*name, |b| {
                b.iter(|| {
                    let image = decode_bytes(bytes, path).expect("decode");
                    if resize {
                        std::hint::black_box(preprocess.resize_rgb(&image));
                    } else {
                        std::hint::black_box(image);
                    }
                })
            });
        }
        group.finish();
    }
}

/// Median of some values (sorted in place).
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The three decodes in turn, round after round; medians and per-round ratios to JPEG.
fn interleaved() {
    let rounds: usize = std::env::var("DICOM_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(15);
    let gray = radiograph();
    let inputs = [
        ("dicom_native_12bit", gray.native(dicom_writer::EXPLICIT_LE)),
        ("dicom_rle_12bit", gray.rle()),
        ("jpeg_8bit", jpeg_of(&gray)),
    ];
    let path = Path::new("bench.dcm");
    let preprocess = Preprocess::default();
    for resize in [false, true] {
        let mut times = vec![Vec::new(); inputs.len()];
        for _ in 0..rounds {
            for (slot, (_, bytes)) in times.iter_mut().zip(&inputs) {
                let start = std::time::Instant::now();
                let image = decode_bytes(bytes, path).expect("decode");
                if resize {
                    std::hint::black_box(preprocess.resize_rgb(&image));
                }
                slot.push(start.elapsed().as_secs_f64());
            }
        }
        let jpeg = times[inputs.len() - 1].clone();
        let what = if resize {
            "decode + resize 224"
        } else {
            "decode"
        };
        println!("interleaved, {rounds} rounds, {what} (2500 x 2000):");
        for ((name, _), t) in inputs.iter().zip(&times) {
            let mut ratios: Vec<f64> = t.iter().zip(&jpeg).map(|(a, b)| a / b).collect();
            let mut sorted = t.clone();
            let m = median(&mut sorted);
            println!(
                "  {name:<20} median {:8.1} ms  {:6.2} images/s  time / JPEG's {:5.2}",
                m * 1e3,
                1.0 / m,
                median(&mut ratios)
            );
        }
    }
}

criterion_group!(benches, decode);

fn main() {
    benches();
    interleaved();
    Criterion::default().configure_from_args().final_summary();
}
