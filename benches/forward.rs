//! ResNet152V2 forward pass (random weights, 224x224, f32), batch 1 and 8, on the CPU and,
//! with `--features cuda`, on the GPU (with a device sync inside the timed region).
//!
//! `cargo bench --bench forward` (add `--features cuda` for the GPU group).

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use fracture::model::{ResNetV2, ResNetV2Config};
use std::time::{Duration, Instant};

fn build(device: &Device) -> ResNetV2 {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
    ResNetV2::new(&ResNetV2Config::resnet152v2(), vb).expect("build ResNet152V2")
}

fn bench_device(c: &mut Criterion, device: &Device, label: &str) {
    let model = build(device);
    let mut group = c.benchmark_group(format!("resnet152v2_forward_{label}"));
    group.sample_size(10);
    group.warm_up_time(Duration::from_secs(2));
    group.measurement_time(Duration::from_secs(20));
    for batch in [1usize, 8] {
        let x = Tensor::randn(0f32, 1., (batch, 3, 224, 224), device).expect("input");
        group.bench_with_input(BenchmarkId::new("batch", batch), &x, |b, x| {
            b.iter_custom(|iters| {
                device.synchronize().expect("sync");
                let start = Instant::now();
                for _ in 0..iters {
                    let y = model.forward_pooled(x).expect("forward");
                    std::hint::black_box(y);
                }
                device.synchronize().expect("sync");
                start.elapsed()
            })
        });
    }
    group.finish();
}

fn forward(c: &mut Criterion) {
    bench_device(c, &Device::Cpu, "cpu");
    #[cfg(feature = "cuda")]
    {
        let gpu = Device::new_cuda(0).expect("cuda device 0");
        bench_device(c, &gpu, "cuda");
    }
}

criterion_group!(benches, forward);
criterion_main!(benches);
