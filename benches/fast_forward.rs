//! ResNet152V2 at 224x224 on the CPU: the fast path ([`FastResNetV2`]) at batch 1 and 8, at
//! f32 and (where the CPU has AVX512_BF16) at bf16, the default candle path for reference, and
//! a frozen-backbone training step (fast backbone forward at batch 8, then head forward,
//! backward and Adam step).
//!
//! ```text
//! cargo bench --bench fast_forward                      # fast path + train step
//! FAST_FORWARD_BASELINE=1 cargo bench --bench fast_forward   # also the default candle path
//! FAST_FORWARD_PROFILE=8 cargo bench --bench fast_forward    # per-layer profile at batch 8
//! FAST_FORWARD_PROFILE=8 FAST_FORWARD_IM2COL=1 cargo bench --bench fast_forward  # without Winograd
//! FAST_FORWARD_PROFILE=8 FAST_FORWARD_PRECISION=bf16 cargo bench --bench fast_forward  # bf16 layers
//! FAST_FORWARD_SERVE=1 cargo bench --bench fast_forward      # timing server for compare_cpu.py
//! FAST_FORWARD_CHECK=2 cargo bench --bench fast_forward      # fast vs default path, batch 2
//! ```
//!
//! The timing server reads one command per line on stdin and answers one line on stdout:
//! `forward B` → wall and CPU milliseconds (all threads, 10 ms resolution) of one fast forward
//! pass at batch `B`; `forward_bf16 B` → the same at precision bf16 (where the CPU has
//! AVX512_BF16; elsewhere the server answers that it does not know the command); `train B` →
//! one frozen-backbone training step at batch `B`; `quit` ends it. Its thread count is rayon's
//! (`RAYON_NUM_THREADS`).

use candle_core::{DType, Device, Tensor};
use candle_nn::{Optimizer, VarBuilder, VarMap};
use criterion::{criterion_group, BenchmarkId, Criterion};
use fracture::model::{
    ClassifierHead, FastResNetV2, HeadConfig, Precision, ResNetV2, ResNetV2Config,
};
use rand::SeedableRng;
use std::time::Instant;

mod common;

const SIDE: usize = 224;

fn backbone() -> (ResNetV2, VarMap) {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let model = ResNetV2::new(&ResNetV2Config::resnet152v2(), vb).expect("ResNet152V2");
    (model, varmap)
}

/// The fast path at bf16, when this CPU has AVX512_BF16 (else says so on stderr).
fn bf16_of(fast: &FastResNetV2) -> Option<FastResNetV2> {
    match fast.clone().with_precision(Precision::Bf16) {
        Ok(f) => Some(f),
        Err(e) => {
            eprintln!("bf16 cases skipped: {e}");
            None
        }
    }
}

fn input(batch: usize) -> Tensor {
    Tensor::randn(0f32, 1., (batch, 3, SIDE, SIDE), &Device::Cpu).expect("input")
}

/// A trainable head with its Adam optimizer (PyTorch's default betas and epsilon).
struct HeadTrainer {
    head: ClassifierHead,
    opt: candle_nn::AdamW,
    rng: rand_chacha::ChaCha8Rng,
}

impl HeadTrainer {
    fn new(features: usize) -> Self {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let head = ClassifierHead::new(features, &HeadConfig::default(), vb).expect("head");
        let params = candle_nn::ParamsAdamW {
            lr: 1e-4,
            weight_decay: 0.0,
            ..Default::default()
        };
        let opt = candle_nn::AdamW::new(varmap.all_vars(), params).expect("adam");
        let rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        Self { head, opt, rng }
    }

    /// One step: frozen fast backbone (no autograd), head forward/backward, Adam update.
    fn step(&mut self, fast: &FastResNetV2, x: &Tensor, labels: &Tensor) {
        let pooled = fast.forward_pooled(x).expect("backbone");
        let logits = self
            .head
            .forward_train(&pooled, &mut self.rng)
            .expect("head");
        let loss = candle_nn::loss::binary_cross_entropy_with_logit(&logits, labels).expect("loss");
        self.opt.backward_step(&loss).expect("step");
    }
}

fn labels(batch: usize) -> Tensor {
    let v: Vec<f32> = (0..batch).map(|i| (i % 2) as f32).collect();
    Tensor::from_vec(v, batch, &Device::Cpu).expect("labels")
}

fn bench_forward(c: &mut Criterion) {
    let (model, _vars) = backbone();
    let fast = FastResNetV2::from_model(&model).expect("fast path");
    // The fast path with every 3x3 convolution as im2col: the baseline of the Winograd kernels.
    let im2col = fast.clone().without_winograd();
    let bf16 = bf16_of(&fast);
    let baseline = std::env::var_os("FAST_FORWARD_BASELINE").is_some();
    let mut group = c.benchmark_group("resnet152v2_224_forward");
    group.sample_size(10);
    for batch in [1usize, 8] {
        let x = input(batch);
        group.bench_with_input(BenchmarkId::new("fast", batch), &x, |b, x| {
            b.iter(|| fast.forward_pooled(x).expect("fast forward"))
        });
        group.bench_with_input(BenchmarkId::new("fast_im2col", batch), &x, |b, x| {
            b.iter(|| im2col.forward_pooled(x).expect("fast forward"))
        });
        if let Some(bf16) = &bf16 {
            group.bench_with_input(BenchmarkId::new("fast_bf16", batch), &x, |b, x| {
                b.iter(|| bf16.forward_pooled(x).expect("bf16 forward"))
            });
        }
        if baseline {
            group.bench_with_input(BenchmarkId::new("candle_default", batch), &x, |b, x| {
                b.iter(|| model.forward_pooled(x).expect("default forward"))
            });
        }
    }
    group.finish();

    let mut group = c.benchmark_group("resnet152v2_224_frozen_train_step");
    group.sample_size(10);
    let mut trainer = HeadTrainer::new(fast.config().feature_channels());
    let (x, y) = (input(8), labels(8));
    group.bench_function("fast_backbone_head_adam_b8", |b| {
        b.iter(|| trainer.step(&fast, &x, &y))
    });
    group.finish();
}

criterion_group!(benches, bench_forward);

/// Per-layer times of one fast forward pass (after one warm-up pass).
fn profile(batch: usize) {
    let (model, _vars) = backbone();
    let mut fast = FastResNetV2::from_model(&model).expect("fast path");
    drop(model);
    if std::env::var_os("FAST_FORWARD_IM2COL").is_some() {
        fast = fast.without_winograd();
    }
    if let Ok(p) = std::env::var("FAST_FORWARD_PRECISION") {
        let precision: Precision = p.parse().expect("FAST_FORWARD_PRECISION");
        fast = fast.with_precision(precision).expect("precision");
        println!("precision {precision}");
    }
    let x = input(batch);
    fast.forward_pooled(&x).expect("warm-up");
    common::print_pass_times(batch, || {
        fast.forward_pooled(&x).expect("forward");
    });
    let start = Instant::now();
    let layers = fast.forward_profiled(&x).expect("profile");
    common::print_layer_profile(batch, &layers, common::millis(start));
}

/// The timing server used by `scripts/compare_cpu.py`.
fn serve() {
    let (model, _vars) = backbone();
    let fast = FastResNetV2::from_model(&model).expect("fast path");
    drop(model);
    let bf16 = bf16_of(&fast);
    let mut trainer = HeadTrainer::new(fast.config().feature_channels());
    common::serve(
        "`forward B`, `forward_bf16 B`, `train B`",
        |command, b, stopwatch| {
            match (command, &bf16) {
                ("forward", _) => {
                    let x = input(b);
                    stopwatch.start();
                    fast.forward_pooled(&x).expect("forward");
                }
                ("forward_bf16", Some(bf16)) => {
                    let x = input(b);
                    stopwatch.start();
                    bf16.forward_pooled(&x).expect("bf16 forward");
                }
                ("train", _) => {
                    let (x, y) = (input(b), labels(b));
                    stopwatch.start();
                    trainer.step(&fast, &x, &y);
                }
                _ => return false,
            }
            true
        },
    );
}

/// Largest difference between the fast and the default path on the full-size network.
fn check(batch: usize) {
    let (model, _vars) = backbone();
    let fast = FastResNetV2::from_model(&model).expect("fast path");
    let x = input(batch);
    let a = fast.forward_pooled(&x).expect("fast forward");
    let b = model.forward_pooled(&x).expect("default forward");
    let diff = (&a - &b).and_then(|d| d.abs()?.max_all()?.to_scalar::<f32>());
    let scale = b.abs().and_then(|t| t.max_all()?.to_scalar::<f32>());
    println!("batch {batch}: max |fast - default| = {diff:?}, max |default| = {scale:?}");
    if let Some(bf16) = bf16_of(&fast) {
        let c = bf16.forward_pooled(&x).expect("bf16 forward");
        let diff = (&c - &a).and_then(|d| d.abs()?.max_all()?.to_scalar::<f32>());
        println!("batch {batch}: max |bf16 - f32 fast| = {diff:?}");
    }
}

fn main() {
    if let Some(batch) = std::env::var("FAST_FORWARD_CHECK")
        .ok()
        .and_then(|b| b.parse().ok())
    {
        return check(batch);
    }
    if std::env::var_os("FAST_FORWARD_SERVE").is_some() {
        return serve();
    }
    if let Some(batch) = std::env::var("FAST_FORWARD_PROFILE")
        .ok()
        .and_then(|b| b.parse().ok())
    {
        return profile(batch);
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
