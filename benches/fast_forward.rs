//! ResNet152V2 at 224x224 on the CPU: the fast path ([`FastResNetV2`]) at batch 1 and 8, the
//! default candle path for reference, and a frozen-backbone training step (fast backbone
//! forward at batch 8, then head forward, backward and Adam step).
//!
//! ```text
//! cargo bench --bench fast_forward                      # fast path + train step
//! FAST_FORWARD_BASELINE=1 cargo bench --bench fast_forward   # also the default candle path
//! FAST_FORWARD_PROFILE=8 cargo bench --bench fast_forward    # per-layer profile at batch 8
//! FAST_FORWARD_PROFILE=8 FAST_FORWARD_IM2COL=1 cargo bench --bench fast_forward  # without Winograd
//! FAST_FORWARD_SERVE=1 cargo bench --bench fast_forward      # timing server for compare_cpu.py
//! FAST_FORWARD_CHECK=2 cargo bench --bench fast_forward      # fast vs default path, batch 2
//! ```
//!
//! The timing server reads one command per line on stdin and answers one line on stdout:
//! `forward B` → wall and CPU milliseconds (all threads, 10 ms resolution) of one fast forward
//! pass at batch `B`; `train B` → the same for one frozen-backbone training step at batch `B`;
//! `quit` ends it. Its thread count is rayon's (`RAYON_NUM_THREADS`).

use candle_core::{DType, Device, Tensor};
use candle_nn::{Optimizer, VarBuilder, VarMap};
use criterion::{criterion_group, BenchmarkId, Criterion};
use fracture::model::{ClassifierHead, FastResNetV2, HeadConfig, ResNetV2, ResNetV2Config};
use rand::SeedableRng;
use std::io::{BufRead, Write};
use std::time::Instant;

const SIDE: usize = 224;

fn backbone() -> (ResNetV2, VarMap) {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    let model = ResNetV2::new(&ResNetV2Config::resnet152v2(), vb).expect("ResNet152V2");
    (model, varmap)
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

fn millis(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1e3
}

/// User + system CPU seconds of this process so far (Linux; 0 elsewhere).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<f64> = after
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    (fields.get(11).unwrap_or(&0.0) + fields.get(12).unwrap_or(&0.0)) / 100.0
}

/// Per-layer times of one fast forward pass (after one warm-up pass).
fn profile(batch: usize) {
    let (model, _vars) = backbone();
    let mut fast = FastResNetV2::from_model(&model).expect("fast path");
    drop(model);
    if std::env::var_os("FAST_FORWARD_IM2COL").is_some() {
        fast = fast.without_winograd();
    }
    let x = input(batch);
    fast.forward_pooled(&x).expect("warm-up");
    // Wall and CPU time (all threads) of a few passes: on a shared machine the CPU time per
    // pass is the steadier measure of the work done.
    let mut walls = Vec::new();
    let cpu0 = cpu_seconds();
    for _ in 0..5 {
        let start = Instant::now();
        fast.forward_pooled(&x).expect("forward");
        walls.push(millis(start));
    }
    let cpu = (cpu_seconds() - cpu0) * 1e3 / 5.0;
    walls.sort_by(f64::total_cmp);
    println!(
        "batch {batch}: median wall {:.1} ms, min wall {:.1} ms, CPU {cpu:.1} ms per pass",
        walls[2], walls[0]
    );
    let start = Instant::now();
    let layers = fast.forward_profiled(&x).expect("profile");
    let total = millis(start);
    let mut by_kind: Vec<(String, f64)> = Vec::new();
    for (name, d) in &layers {
        let kind = name.rsplit('/').next().unwrap_or(name).to_string();
        let ms = d.as_secs_f64() * 1e3;
        match by_kind.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, t)) => *t += ms,
            None => by_kind.push((kind, ms)),
        }
        println!("{name:<32} {ms:>9.3} ms");
    }
    println!("--- by kind (batch {batch}, total {total:.1} ms)");
    for (kind, ms) in by_kind {
        println!("{kind:<32} {ms:>9.3} ms {:>5.1}%", 100.0 * ms / total);
    }
}

/// The timing server used by `scripts/compare_cpu.py`.
fn serve() {
    let (model, _vars) = backbone();
    let fast = FastResNetV2::from_model(&model).expect("fast path");
    drop(model);
    let mut trainer = HeadTrainer::new(fast.config().feature_channels());
    let stdout = std::io::stdout();
    println!("ready");
    for line in std::io::stdin().lock().lines() {
        let line = line.expect("stdin");
        let mut words = line.split_whitespace();
        let (cmd, batch) = (words.next(), words.next().and_then(|b| b.parse().ok()));
        let ms = match (cmd, batch) {
            (Some("forward"), Some(b)) => {
                let x = input(b);
                let (start, cpu_start) = (Instant::now(), cpu_seconds());
                fast.forward_pooled(&x).expect("forward");
                (millis(start), cpu_start)
            }
            (Some("train"), Some(b)) => {
                let (x, y) = (input(b), labels(b));
                let (start, cpu_start) = (Instant::now(), cpu_seconds());
                trainer.step(&fast, &x, &y);
                (millis(start), cpu_start)
            }
            (Some("quit"), _) => break,
            _ => {
                println!("error: expected `forward B`, `train B` or `quit`, got {line:?}");
                continue;
            }
        };
        let (ms, cpu_start) = ms;
        let cpu_ms = (cpu_seconds() - cpu_start) * 1e3;
        let mut out = stdout.lock();
        writeln!(out, "{ms:.3} {cpu_ms:.0}").expect("stdout");
        out.flush().expect("stdout");
    }
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
