//! EfficientNet-Lite0 at 224x224 on the CPU: the fast inference path
//! ([`FastEfficientNetLite`]) and the candle path at batch 1 and 8, and a whole-network
//! fine-tuning step (candle path in training mode, pooled features, a one-logit linear head,
//! binary cross-entropy, backward, Adam) at batch 8.
//!
//! ```text
//! cargo bench --bench efficientnet                          # criterion: forward + train step
//! EFFNET_REFERENCE=1 cargo bench --bench efficientnet       # also candle's own layers (slow)
//! EFFNET_PROFILE=8 cargo bench --bench efficientnet         # fast path per layer, batch 8
//! EFFNET_PROFILE=8 EFFNET_PRECISION=bf16 cargo bench --bench efficientnet  # bf16 layers
//! EFFNET_SERVE=1 cargo bench --bench efficientnet           # timing server for compare_cpu.py
//! ```
//!
//! The timing server reads one command per line on stdin and answers one line on stdout:
//! `forward B` → wall and CPU milliseconds (all threads, 10 ms resolution) of one fast-path
//! pass at batch `B`; `candle B` → the same for the candle path; `train B` → one fine-tuning
//! step at batch `B`; `generic B` and `generic-train B` → the candle path on candle's own
//! layers only ([`LiteOps::Reference`]: grouped `conv2d`, candle_nn's batch norm), forward and
//! fine-tuning step; `quit` ends it. Its thread count is rayon's (`RAYON_NUM_THREADS`).

use candle_core::{DType, Device, Tensor};
use candle_nn::{Module, Optimizer, VarBuilder, VarMap};
use criterion::{criterion_group, BenchmarkId, Criterion};
use fracture::model::{
    global_average_pool, EfficientNetLite, EfficientNetLiteConfig, FastEfficientNetLite, LiteOps,
    Precision,
};

mod common;

const SIDE: usize = 224;

fn input(batch: usize) -> Tensor {
    Tensor::randn(0f32, 1., (batch, 3, SIDE, SIDE), &Device::Cpu).expect("input")
}

fn labels(batch: usize) -> Tensor {
    let v: Vec<f32> = (0..batch).map(|i| (i % 2) as f32).collect();
    Tensor::from_vec(v, (batch, 1), &Device::Cpu).expect("labels")
}

/// Lite0 with random weights, a one-logit head, and Adam over every trainable variable
/// (the running statistics excluded), as whole-network fine-tuning runs it.
struct FineTuner {
    model: EfficientNetLite,
    head: candle_nn::Linear,
    opt: candle_nn::AdamW,
}

impl FineTuner {
    fn new(ops: LiteOps) -> Self {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let model = EfficientNetLite::new(&EfficientNetLiteConfig::lite0(), vb.clone())
            .expect("Lite0")
            .with_ops(ops);
        let head = candle_nn::linear(1280, 1, vb.pp("head")).expect("head");
        let trainable = varmap
            .data()
            .lock()
            .expect("varmap")
            .iter()
            .filter(|(name, _)| !name.contains("running_"))
            .map(|(_, var)| var.clone())
            .collect();
        let params = candle_nn::ParamsAdamW {
            lr: 1e-5,
            weight_decay: 0.0,
            ..Default::default()
        };
        let opt = candle_nn::AdamW::new(trainable, params).expect("adam");
        Self { model, head, opt }
    }

    fn step(&mut self, x: &Tensor, y: &Tensor) {
        let features = self.model.forward_features_t(x, true).expect("forward");
        let pooled = global_average_pool(&features).expect("pool");
        let logits = self.head.forward(&pooled).expect("head");
        let loss = candle_nn::loss::binary_cross_entropy_with_logit(&logits, y).expect("loss");
        self.opt.backward_step(&loss).expect("step");
    }
}

fn network() -> EfficientNetLite {
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
    EfficientNetLite::new(&EfficientNetLiteConfig::lite0(), vb).expect("Lite0")
}

fn bench(c: &mut Criterion) {
    let model = network();
    let fast = FastEfficientNetLite::from_model(&model).expect("fast path");
    let reference = std::env::var_os("EFFNET_REFERENCE").is_some();
    let mut group = c.benchmark_group("lite0_224_forward");
    group.sample_size(10);
    for batch in [1usize, 8] {
        let x = input(batch);
        group.bench_with_input(BenchmarkId::new("fast", batch), &x, |b, x| {
            b.iter(|| fast.forward_pooled(x).expect("fast forward"))
        });
        group.bench_with_input(BenchmarkId::new("candle", batch), &x, |b, x| {
            b.iter(|| model.forward_pooled(x).expect("candle forward"))
        });
        if reference {
            let plain = model.clone().with_ops(LiteOps::Reference);
            group.bench_with_input(BenchmarkId::new("candle_reference", batch), &x, |b, x| {
                b.iter(|| plain.forward_pooled(x).expect("reference forward"))
            });
        }
    }
    group.finish();

    let mut group = c.benchmark_group("lite0_224_train_step");
    group.sample_size(10);
    let mut tuner = FineTuner::new(LiteOps::Fused);
    let (x, y) = (input(8), labels(8));
    group.bench_function("whole_network_adam_b8", |b| b.iter(|| tuner.step(&x, &y)));
    group.finish();
}

criterion_group!(benches, bench);

/// Per-layer times of one fast forward pass (after a warm-up pass).
fn profile(batch: usize) {
    let mut fast = FastEfficientNetLite::from_model(&network()).expect("fast path");
    if let Ok(p) = std::env::var("EFFNET_PRECISION") {
        let precision: Precision = p.parse().expect("EFFNET_PRECISION");
        fast.set_precision(precision).expect("precision");
        println!("precision {precision}");
    }
    let x = input(batch);
    fast.forward_pooled(&x).expect("warm-up");
    common::print_pass_times(batch, || {
        fast.forward_pooled(&x).expect("forward");
    });
    let layers = fast.forward_profiled(&x).expect("profile");
    let total: f64 = layers.iter().map(|(_, d)| d.as_secs_f64() * 1e3).sum();
    common::print_layer_profile(batch, &layers, total);
}

/// The timing server used by `scripts/compare_cpu.py --model efficientnet-lite0`.
fn serve() {
    let model = network();
    let fast = FastEfficientNetLite::from_model(&model).expect("fast path");
    let generic = model.clone().with_ops(LiteOps::Reference);
    // The bf16 fast path where the CPU has AVX512_BF16 (`forward_bf16 B` answers an error
    // line elsewhere, and compare_cpu.py leaves that row out).
    let bf16 = {
        let mut bf16 = fast.clone();
        match bf16.set_precision(Precision::Bf16) {
            Ok(()) => Some(bf16),
            Err(e) => {
                eprintln!("bf16 forward not served: {e}");
                None
            }
        }
    };
    let mut tuner = FineTuner::new(LiteOps::Fused);
    // Made on first use: its optimizer state is another copy of the weights.
    let mut generic_tuner: Option<FineTuner> = None;
    let usage =
        "`forward B`, `forward_bf16 B`, `candle B`, `train B`, `generic B`, `generic-train B`";
    common::serve(usage, |command, b, stopwatch| {
        match command {
            "forward" => {
                let x = input(b);
                stopwatch.start();
                fast.forward_pooled(&x).expect("forward");
            }
            "forward_bf16" => {
                let Some(bf16) = &bf16 else { return false };
                let x = input(b);
                stopwatch.start();
                bf16.forward_pooled(&x).expect("bf16 forward");
            }
            "candle" => {
                let x = input(b);
                stopwatch.start();
                model.forward_pooled(&x).expect("candle forward");
            }
            "generic" => {
                let x = input(b);
                stopwatch.start();
                generic.forward_pooled(&x).expect("generic forward");
            }
            "train" | "generic-train" => {
                let (x, y) = (input(b), labels(b));
                let tuner = if command == "train" {
                    &mut tuner
                } else {
                    generic_tuner.get_or_insert_with(|| FineTuner::new(LiteOps::Reference))
                };
                stopwatch.start();
                tuner.step(&x, &y);
            }
            _ => return false,
        }
        true
    });
}

fn main() {
    if std::env::var_os("EFFNET_SERVE").is_some() {
        return serve();
    }
    if let Some(batch) = std::env::var("EFFNET_PROFILE")
        .ok()
        .and_then(|b| b.parse().ok())
    {
        return profile(batch);
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
