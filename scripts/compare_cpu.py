#!/usr/bin/env python3
"""ResNet152V2 (Keras-V2 architecture) or EfficientNet-Lite0 at 224x224 on the CPU: ours vs ONNX
Runtime vs PyTorch.

--model resnet152v2 (the default):

Builds the Keras ResNetV2 architecture in PyTorch (pre-activation bottlenecks, stride on the
LAST block of each stack, zero-padded stem max-pool, MaxPool(1, 2) shortcut, biases on
conv1/_0_conv/_3_conv, BN epsilon 1.001e-5), exports it to ONNX, and times, interleaved and
back to back in one process:
  * ours:   `FastResNetV2` through the timing server of `benches/fast_forward.rs`;
  * ORT:    ONNX Runtime on the exported graph (all graph optimizations);
  * torch:  PyTorch jit.trace + freeze + channels_last (PyTorch's best in PERF_NOTES.md);
  * train:  frozen-backbone training step at batch 8 (backbone forward without autograd, head
            Dense(256, ReLU) -> Dropout(0.5) -> Dense(1) forward/backward, Adam step),
            ours vs PyTorch eager channels_last.
--model efficientnet-lite0: timm's `tf_efficientnet_lite0` (the architecture and padding of our
EfficientNetLite; `--static-pad` takes timm's `efficientnet_lite0` instead: the same layers with
symmetric padding, which ORT and PyTorch run without explicit Pad ops), exported to ONNX, and:
  * ours:   `FastEfficientNetLite` through the timing server of `benches/efficientnet.rs`
            (and, with --candle, our candle path too; with --generic, our candle path on
            candle's own layers: grouped conv2d, candle_nn's batch norm, forward and training);
  * ORT, torch: as above;
  * train:  whole-network fine-tuning step at --train-batch (BN in training mode, pooled
            features, Linear(1280, 1), BCE with logits, backward, Adam over every parameter),
            ours (candle path with the fused ops) vs PyTorch eager (the faster of NCHW and
            channels_last, picked during the warm-up).
Anchors beside ORT and PyTorch (issue 25): OpenVINO on the same ONNX file (NUM_STREAMS=1,
INFERENCE_NUM_THREADS = --threads, PERFORMANCE_HINT=LATENCY, static batch), once with
INFERENCE_PRECISION_HINT=f32 and once with bf16, reading back from the compiled model which
precision it really ran (a CPU without bf16 runs f32: that row is then reported as f32 and never
called bf16); PyTorch under autocast("cpu", bfloat16) where the CPU has AVX512_BF16; and, there,
our bf16 fast path (`forward_bf16 B` on the timing server). Every system's GFLOP/s (2 x the
multiply-adds of the convolutions and dense layers, counted on the PyTorch model) is printed
beside its milliseconds, and the run ends with one line per comparison:
  RATIO <model> <precision> b<batch> ours/<peer> <value>
(bf16 rows compare ours-bf16 with the peer's bf16 mode where it really ran bf16, and with ONNX
Runtime's f32, which has no x86 bf16).
Each measurement is one call; the medians of --runs rounds are reported with ours/theirs,
for wall time and for CPU time. On a machine shared with other work, wall times swing with the
load (spin-waiting runtimes suffer most); `--threads 1` then compares the work per pass.

Run through scripts/compare_cpu.sh, which makes the virtual environment and builds the server.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
import onnxruntime as ort
import torch
import torch.nn as nn
import torch.nn.functional as F

EPS = 1.001e-5
PAUSE = 0.5  # seconds of idle before every timed call


class Block(nn.Module):
    def __init__(self, cin, filters, stride, first):
        super().__init__()
        out = 4 * filters
        self.preact = nn.BatchNorm2d(cin, eps=EPS)
        self.conv0 = nn.Conv2d(cin, out, 1, bias=True) if first else None
        self.stride = stride
        self.conv1 = nn.Conv2d(cin, filters, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(filters, eps=EPS)
        self.conv2 = nn.Conv2d(filters, filters, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(filters, eps=EPS)
        self.conv3 = nn.Conv2d(filters, out, 1, bias=True)

    def forward(self, x):
        p = F.relu(self.preact(x))
        if self.conv0 is not None:
            shortcut = self.conv0(p)
        elif self.stride > 1:
            shortcut = F.max_pool2d(x, 1, self.stride)
        else:
            shortcut = x
        t = F.relu(self.bn1(self.conv1(p)))
        t = F.relu(self.bn2(self.conv2(t)))
        return shortcut + self.conv3(t)


class ResNetV2(nn.Module):
    """Keras ResNet152V2 without top, pooling='avg'."""

    def __init__(self, blocks=(3, 8, 36, 3), filters=(64, 128, 256, 512)):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=True)
        layers, cin = [], 64
        for s, (count, f) in enumerate(zip(blocks, filters)):
            for b in range(1, count + 1):
                stride = 2 if (b == count and s + 1 < len(blocks)) else 1
                layers.append(Block(cin, f, stride, b == 1))
                cin = 4 * f
        self.blocks = nn.Sequential(*layers)
        self.post_bn = nn.BatchNorm2d(cin, eps=EPS)
        self.features = cin

    def forward(self, x):
        x = self.conv1(x)
        x = F.max_pool2d(F.pad(x, (1, 1, 1, 1)), 3, 2)  # ZeroPadding2D(1) + MaxPool(3, 2)
        x = self.blocks(x)
        x = F.relu(self.post_bn(x))
        return x.mean(dim=(2, 3))


def randomize_bn(model):
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.weight.data = 0.5 + torch.rand(c, generator=g)
            m.bias.data = 0.1 * torch.randn(c, generator=g)
            m.running_mean.data = 0.1 * torch.randn(c, generator=g)
            m.running_var.data = 0.5 + torch.rand(c, generator=g)


def head(features):
    return nn.Sequential(nn.Linear(features, 256), nn.ReLU(), nn.Dropout(0.5), nn.Linear(256, 1))


def lite0(static_pad):
    """timm's EfficientNet-Lite0 without classifier (pooled 1280 features), BN randomized."""
    import timm

    name = "efficientnet_lite0" if static_pad else "tf_efficientnet_lite0"
    model = timm.create_model(name, pretrained=False, num_classes=0).eval()
    randomize_bn(model)
    return model


def cpu_description():
    """The CPU's model name, family/model and the vector extensions our kernels can use, read
    from /proc/cpuinfo (`bf16` is whether AVX512_BF16 is there)."""
    info = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if ":" in line:
                    k, v = line.split(":", 1)
                    info.setdefault(k.strip(), v.strip())
    except OSError:
        return "unknown CPU", False
    flags = set(info.get("flags", "").split())
    if "avx512f" in flags:
        ours = "AVX-512"
    elif {"avx2", "fma"} <= flags:
        ours = "AVX2 + FMA"
    else:
        ours = "baseline"
    bf16 = "avx512_bf16" in flags
    extra = [f for f in ("avx512_bf16", "amx_bf16") if f in flags]
    simd = os.environ.get("FRACTURE_SIMD")
    capped = f" (capped by FRACTURE_SIMD={simd})" if simd else ""
    text = (f"{info.get('model name', '?')} ({info.get('vendor_id', '?')}, family {info.get('cpu family', '?')} "
            f"model {info.get('model', '?')}); our kernels: {ours}{capped}"
            f"{', bf16 kernel: AVX512_BF16' if bf16 else ', no AVX512_BF16 (no bf16 rows)'}"
            f"; other bf16 units: {', '.join(extra[1:]) or 'none'}")
    return text, bf16


def count_flops(model, size=224):
    """2 x multiply-adds of the convolutions and dense layers of one image at size x size."""
    total = [0]

    def conv(m, inp, out):
        k = m.kernel_size[0] * m.kernel_size[1] * (m.in_channels // m.groups)
        total[0] += 2 * out.numel() * k

    def dense(m, inp, out):
        total[0] += 2 * out.numel() * m.in_features

    hooks = [m.register_forward_hook(conv) for m in model.modules() if isinstance(m, nn.Conv2d)]
    hooks += [m.register_forward_hook(dense) for m in model.modules() if isinstance(m, nn.Linear)]
    with torch.inference_mode():
        model(torch.zeros(1, 3, size, size))
    for h in hooks:
        h.remove()
    return total[0]


def openvino_models(onnx_path, batches, threads):
    """OpenVINO compiled at f32 and at bf16 for each batch: {(hint, b): (compiled, ran)} where
    `ran` is the inference precision the compiled model reports it really uses."""
    try:
        import openvino as ov
    except ImportError:
        print("openvino is not installed: no OpenVINO rows (pip install openvino)", flush=True)
        return {}, None
    core = ov.Core()
    out = {}
    for hint in ("f32", "bf16"):
        for b in batches:
            model = core.read_model(onnx_path)
            model.reshape({model.inputs[0].get_any_name(): [b, 3, 224, 224]})
            compiled = core.compile_model(model, "CPU", {
                "NUM_STREAMS": "1", "INFERENCE_NUM_THREADS": str(threads),
                "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": hint})
            ran = str(compiled.get_property("INFERENCE_PRECISION_HINT"))
            ran = {"<Type: 'float32'>": "f32", "<Type: 'bfloat16'>": "bf16"}.get(ran, ran)
            ran = ran.replace("float32", "f32").replace("bfloat16", "bf16")
            out[(hint, b)] = (compiled, ran)
    return out, ov.__version__


class Ours:
    """The Rust timing server (benches/fast_forward.rs with FAST_FORWARD_SERVE=1, or
    benches/efficientnet.rs with EFFNET_SERVE=1)."""

    def __init__(self, cmd, threads, serve_var):
        env = dict(os.environ, RAYON_NUM_THREADS=str(threads))
        env[serve_var] = "1"
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        while True:
            line = self.p.stdout.readline()
            if not line:
                sys.exit("the Rust timing server exited before it was ready")
            if line.strip() == "ready":
                break

    def ask(self, cmd):
        time.sleep(PAUSE)
        self.p.stdin.write(cmd + "\n")
        self.p.stdin.flush()
        wall, cpu = self.p.stdout.readline().split()
        return float(wall), float(cpu)

    def supports(self, cmd):
        """Whether the server times `cmd` (it answers `error: ...` to a command it lacks)."""
        self.p.stdin.write(cmd + "\n")
        self.p.stdin.flush()
        reply = self.p.stdout.readline()
        if reply.startswith("error"):
            print(f"the timing server does not run `{cmd}`: {reply.strip()}", flush=True)
            return False
        return True

    def close(self):
        self.p.stdin.write("quit\n")
        self.p.stdin.flush()
        self.p.wait()


def frozen_train_step(model, features):
    """Frozen-backbone training step in PyTorch eager: backbone without autograd, head trained."""
    clf = head(features)
    opt = torch.optim.Adam(clf.parameters(), lr=1e-4)
    xt = torch.randn(8, 3, 224, 224).contiguous(memory_format=torch.channels_last)
    yt = (torch.arange(8) % 2).float()

    def step():
        with torch.no_grad():
            pooled = model(xt)
        clf.train()
        loss = F.binary_cross_entropy_with_logits(clf(pooled).squeeze(1), yt)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def lite0_train_step(args, features):
    """Whole-network fine-tuning step in PyTorch eager on a fresh Lite0 (BN in training mode),
    in the faster of NCHW and channels_last (each timed three times here)."""
    b = args.train_batch
    steps = {}
    for fmt in (torch.contiguous_format, torch.channels_last):
        net = lite0(args.static_pad).to(memory_format=fmt).train()
        clf = nn.Linear(features, 1)
        opt = torch.optim.Adam(list(net.parameters()) + list(clf.parameters()), lr=1e-5)
        xt = torch.randn(b, 3, 224, 224).contiguous(memory_format=fmt)
        yt = (torch.arange(b) % 2).float()

        def step(net=net, clf=clf, opt=opt, xt=xt, yt=yt):
            loss = F.binary_cross_entropy_with_logits(clf(net(xt)).squeeze(1), yt)
            opt.zero_grad()
            loss.backward()
            opt.step()

        step()
        steps[fmt] = (min(timed(step)[0] for _ in range(3)), step)
    fmt = min(steps, key=lambda f: steps[f][0])
    print(f"PyTorch fine-tuning step: {'channels_last' if fmt == torch.channels_last else 'NCHW'} "
          f"({steps[torch.contiguous_format][0]:.0f} ms NCHW, {steps[torch.channels_last][0]:.0f} ms channels_last)",
          flush=True)
    return steps[fmt][1]


def timed(fn):
    """Wall and CPU (all threads of this process) milliseconds of one call."""
    # Let the previous system's worker threads stop spinning (ORT and OpenMP spin-wait after a
    # call) so that they do not take CPU from the one being timed.
    time.sleep(PAUSE)
    start, cpu = time.perf_counter(), time.process_time()
    fn()
    return (time.perf_counter() - start) * 1e3, (time.process_time() - cpu) * 1e3


def markdown_table(med, batches, train_name, args):
    """The Lite0 medians as a markdown table, each row with its ratio to ORT (forward) or
    PyTorch (training step)."""
    rows = [("Rust, candle's own layers (`LiteOps::Reference`)", "generic"),
            ("Rust, candle path with the fused ops (`EfficientNetLite`)", "candle"),
            ("Rust, fast path (`FastEfficientNetLite`)", "ours"),
            ("ONNX Runtime", "ort"), ("PyTorch (forward: TorchScript frozen; train: eager)", "torch")]
    cols = [f"forward b{b}" for b in batches]
    train = not args.no_train
    if train:
        cols.append(f"training step b{args.train_batch}")
    print("\n| system | " + " | ".join(f"{c} (ms)" for c in cols) + " |")
    print("|---|" + "---:|" * len(cols))
    for label, key in rows:
        cells = []
        for b in batches:
            v = med.get((key, b))
            cells.append("-" if v is None else f"{v:.1f} ({v / med[('ort', b)]:.2f}x ORT)")
        if train:
            t_key = "ours" if key == "candle" else key
            v = None if key in ("ours", "ort") else med.get((t_key, train_name))
            cells.append("-" if v is None else f"{v:.0f} ({v / med[('torch', train_name)]:.2f}x PyTorch)")
        print(f"| {label} | " + " | ".join(cells) + " |")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=7, help="interleaved rounds (median of these)")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--no-train", action="store_true", help="skip the frozen-backbone train step")
    ap.add_argument("--model", choices=["resnet152v2", "efficientnet-lite0"], default="resnet152v2")
    ap.add_argument("--static-pad", action="store_true",
                    help="Lite0 only: time timm's symmetric-padding efficientnet_lite0 on the Python side")
    ap.add_argument("--train-batch", type=int, default=8, help="Lite0 only: fine-tuning step batch")
    ap.add_argument("--candle", action="store_true", help="Lite0 only: also time our candle path")
    ap.add_argument("--generic", action="store_true",
                    help="Lite0 only: also time the candle path on candle's own layers (slow), "
                    "forward and fine-tuning step")
    ap.add_argument("--generic-train-runs", type=int, default=1,
                    help="with --generic: time its fine-tuning step (about a minute and a half at "
                    "batch 8 on two threads) in only this many rounds, without warm-up")
    ap.add_argument("--ours", help="command that starts the Rust timing server "
                    "(default: cargo bench --bench fast_forward|efficientnet -q)")
    args = ap.parse_args()
    lite = args.model == "efficientnet-lite0"
    if args.ours is None:
        args.ours = f"cargo bench --bench {'efficientnet' if lite else 'fast_forward'} -q"
    batches = [int(b) for b in args.batches.split(",")]
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cpu, has_bf16 = cpu_description()
    print(f"CPU: {cpu}", flush=True)
    print(f"torch {torch.__version__}, onnxruntime {ort.__version__}, threads {args.threads}", flush=True)

    if lite:
        model = lite0(args.static_pad)
        features = model.num_features
    else:
        model = ResNetV2().eval()
        randomize_bn(model)
        features = model.features
    flops = count_flops(model)
    print(f"{args.model}: {flops / 1e9:.2f} GFLOP per image at 224 x 224", flush=True)
    model = model.to(memory_format=torch.channels_last)

    # ONNX Runtime on the exported graph.
    onnx_path = os.path.join(tempfile.mkdtemp(), f"{args.model}.onnx")
    dummy = torch.randn(1, 3, 224, 224)
    export = dict(input_names=["x"], output_names=["y"], dynamic_axes={"x": {0: "n"}, "y": {0: "n"}},
                  opset_version=17)
    try:
        torch.onnx.export(model, dummy, onnx_path, dynamo=False, **export)
    except TypeError:  # older torch without the dynamo argument
        torch.onnx.export(model, dummy, onnx_path, **export)
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])

    # PyTorch's best: trace + freeze, channels_last.
    with torch.inference_mode():
        traced = torch.jit.freeze(torch.jit.trace(model, dummy.to(memory_format=torch.channels_last)))

    inputs = {b: torch.randn(b, 3, 224, 224) for b in batches}
    with torch.inference_mode():
        want = model(inputs[batches[0]]).numpy()
    got = sess.run(None, {"x": inputs[batches[0]].numpy()})[0]
    print(f"ORT vs PyTorch max abs diff: {np.abs(got - want).max():.2e}", flush=True)

    vino, vino_version = openvino_models(onnx_path, batches, args.threads)
    if vino:
        for (hint, b), (compiled, ran) in sorted(vino.items()):
            print(f"OpenVINO {vino_version}, precision hint {hint}, batch {b}: runs {ran}", flush=True)
            if hint == "f32":
                got = compiled(inputs[b].numpy())[0]
                with torch.inference_mode():
                    ref = model(inputs[b]).numpy()
                print(f"  OpenVINO f32 vs PyTorch max abs diff: {np.abs(got - ref).max():.2e}", flush=True)
    vino_bf16 = {b: vino[("bf16", b)][1] == "bf16" for b in batches if ("bf16", b) in vino}

    ours = Ours(args.ours.split(), args.threads, "EFFNET_SERVE" if lite else "FAST_FORWARD_SERVE")

    def run_ort(b):
        x = inputs[b].numpy()
        return timed(lambda: sess.run(None, {"x": x}))

    def run_torch(b):
        x = inputs[b].contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            return timed(lambda: traced(x))

    def run_vino(hint):
        def run(b):
            compiled = vino[(hint, b)][0]
            x = inputs[b].numpy()
            return timed(lambda: compiled(x))
        return run

    def run_torch_bf16(b):
        x = inputs[b].contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            return timed(lambda: model(x))

    if lite:
        train_name = f"train{args.train_batch}"
        train_cmd = f"train {args.train_batch}"
        torch_train_step = lite0_train_step(args, features)
    else:
        train_name, train_cmd = "train8", "train 8"
        torch_train_step = frozen_train_step(model, features)
    forwards = [("ours", lambda b: ours.ask(f"forward {b}")), ("ort", run_ort), ("torch", run_torch)]
    if vino:
        forwards.append(("openvino", run_vino("f32")))
        forwards.append(("openvino-bf16", run_vino("bf16")))
    if has_bf16 and ours.supports("forward_bf16 1"):
        forwards.append(("ours-bf16", lambda b: ours.ask(f"forward_bf16 {b}")))
    if has_bf16:
        forwards.append(("torch-bf16", run_torch_bf16))
    if lite and args.candle:
        forwards.append(("candle", lambda b: ours.ask(f"candle {b}")))
    if lite and args.generic:
        forwards.append(("generic", lambda b: ours.ask(f"generic {b}")))
    generic_train = lite and args.generic and not args.no_train

    # Warm-up: every system, every batch, three times (TorchScript optimizes on its 2nd call).
    for _ in range(3):
        for b in batches:
            for _, fn in forwards:
                fn(b)
        if not args.no_train:
            ours.ask(train_cmd)
            timed(torch_train_step)

    times = {}
    for r in range(args.runs):
        for b in batches:
            for name, fn in forwards:
                times.setdefault((name, b), []).append(fn(b))
        if not args.no_train:
            times.setdefault(("ours", train_name), []).append(ours.ask(train_cmd))
            times.setdefault(("torch", train_name), []).append(timed(torch_train_step))
        if generic_train and r < args.generic_train_runs:
            times.setdefault(("generic", train_name), []).append(ours.ask(f"generic-{train_cmd}"))
        print(f"round {r + 1}/{args.runs} done", flush=True)
    ours.close()

    for i, what in ((0, "wall"), (1, "CPU (all threads; includes spin-waiting)")):
        med = {k: statistics.median(v[i] for v in vs) for k, vs in times.items()}
        print(f"\nmedian {what} ms over {args.runs} interleaved rounds (threads {args.threads})")
        print(f"{'batch':>6} {'ours':>9} {'ORT':>9} {'torch':>9} {'ours/ORT':>9} {'ours/torch':>10}")
        for b in batches:
            o, x, t = med[("ours", b)], med[("ort", b)], med[("torch", b)]
            print(f"{b:>6} {o:>9.1f} {x:>9.1f} {t:>9.1f} {o / x:>9.3f} {o / t:>10.3f}")
        if lite and args.candle:
            for b in batches:
                o, x = med[("candle", b)], med[("ort", b)]
                print(f"our candle path, batch {b}: {o:.1f} ms, candle/ORT {o / x:.3f}")
        if lite and args.generic:
            for b in batches:
                o, x = med[("generic", b)], med[("ort", b)]
                print(f"our candle path on candle's own layers, batch {b}: {o:.1f} ms, generic/ORT {o / x:.3f}")
        if not args.no_train:
            o, t = med[("ours", train_name)], med[("torch", train_name)]
            what = (f"whole-network fine-tuning step, batch {args.train_batch}" if lite
                    else "frozen-backbone train step, batch 8")
            print(f"{what}: ours {o:.1f} ms, PyTorch eager {t:.1f} ms, ours/PyTorch {o / t:.3f}")
            if generic_train:
                g = med[("generic", train_name)]
                print(f"  on candle's own layers ({args.generic_train_runs} run(s)): {g:.1f} ms, "
                      f"generic/PyTorch {g / t:.3f}")
        if lite and i == 0:
            markdown_table(med, batches, train_name, args)
    med = {k: statistics.median(v[0] for v in vs) for k, vs in times.items()}
    labels = {"ours": "ours f32", "ort": "ONNX Runtime f32", "torch": "PyTorch f32 (TorchScript)",
              "openvino": "OpenVINO f32", "ours-bf16": "ours bf16",
              "torch-bf16": "PyTorch autocast bf16 (eager)",
              "candle": "our candle path", "generic": "candle's own layers"}
    for b in batches:
        labels["openvino-bf16"] = f"OpenVINO hint bf16 (ran {vino[('bf16', b)][1]})" if vino else ""
        print(f"\nbatch {b}: median wall ms and GFLOP/s ({flops / 1e9:.2f} GFLOP per image)")
        for key, label in labels.items():
            if (key, b) in med:
                ms = med[(key, b)]
                print(f"  {label:<36} {ms:>9.1f} ms {flops * b / ms / 1e6:>8.1f} GFLOP/s")
    print()
    for b in batches:
        peers = [("onnxruntime", "ort"), ("openvino", "openvino"), ("pytorch", "torch")]
        for peer, key in peers:
            if (key, b) in med:
                print(f"RATIO {args.model} f32 b{b} ours/{peer} {med[('ours', b)] / med[(key, b)]:.3f}")
        if ("ours-bf16", b) in med:
            o = med[("ours-bf16", b)]
            print(f"RATIO {args.model} bf16 b{b} ours/onnxruntime {o / med[('ort', b)]:.3f}")
            if vino_bf16.get(b):
                print(f"RATIO {args.model} bf16 b{b} ours/openvino {o / med[('openvino-bf16', b)]:.3f}")
            print(f"RATIO {args.model} bf16 b{b} ours/pytorch {o / med[('torch-bf16', b)]:.3f}")
    print("\nraw wall:", {f"{k[0]}_{k[1]}": [round(v[0], 1) for v in vs] for k, vs in times.items()})


if __name__ == "__main__":
    main()
