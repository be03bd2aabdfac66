#!/usr/bin/env python3
"""A tiny stand-in for Keras's ImageNet "top" weight files (tests/fixtures/keras_imagenet/).

Keras's real files (`resnet152v2_weights_tf_dim_ordering_tf_kernels.h5`, 240 MB) were written by
Keras 2 `model.save_weights("*.h5")` from `ResNet152V2(include_top=True)`: the backbone, then
`avg_pool` (GlobalAveragePooling2D) and `predictions` (Dense(1000, softmax)). This script builds
the same model with tf_keras's own `ResNet(...)` code, but on the tiny backbone of
`tests/fixtures/keras_resnet_v2/tiny` (same weights) and with 5 classes, gives `predictions`
random weights, and saves it the same way.

Outputs (in --out):
  tiny_top.h5       tf_keras save_weights(): root `layer_names`, `weight_names` with `:0`
  top_io.safetensors `input` (NHWC, x/127.5-1, the tiny fixture's input) and `probabilities`
                    (N, 5), Keras's softmax output, and `logits` (N, 5)

Usage (a venv with tensorflow-cpu, tf_keras, safetensors):
  python scripts/make_imagenet_fixture.py --out tests/fixtures/keras_imagenet
"""
import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tf_keras
from safetensors.numpy import load_file, save_file
from tf_keras.src.applications import resnet as tkresnet

HERE = os.path.dirname(os.path.abspath(__file__))
TINY = os.path.join(HERE, "..", "tests", "fixtures", "keras_resnet_v2", "tiny")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--classes", type=int, default=5)
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    cfg = json.load(open(os.path.join(TINY, "config.json")))
    weights = load_file(os.path.join(TINY, "weights.safetensors"))
    io = load_file(os.path.join(TINY, "io.safetensors"))
    stacks, filters = cfg["stacks"], cfg["filters"]
    names = cfg["stack_names"]
    strides = cfg["stack_stride1"]

    def stack_fn(x):
        for blocks, f, s, nm in zip(stacks, filters, strides, names):
            x = tkresnet.stack2(x, f, blocks, stride1=s, name=nm)
        return x

    _, h, w, _ = cfg["input_shape_nhwc"]
    model = tkresnet.ResNet(stack_fn, True, True, model_name="resnet_v2_tiny_top",
                            include_top=True, weights=None, input_shape=(h, w, 3),
                            classes=args.classes, classifier_activation="softmax")
    rng = np.random.RandomState(args.seed)
    for layer in model.layers:
        for v in layer.weights:
            key = f"{layer.name}.{v.name.split(':')[0].split('/')[-1]}"
            if layer.name == "predictions":
                scale = 0.5 if v.name.split(":")[0].endswith("kernel") else 0.3
                v.assign(rng.normal(0.0, scale, size=v.shape).astype(np.float32))
            else:
                v.assign(weights[key])
    x = io["input"]
    probabilities = model(x, training=False).numpy()
    logits_model = tf_keras.Model(model.input, model.get_layer("avg_pool").output)
    pooled = logits_model(x, training=False).numpy().astype(np.float64)
    dense = model.get_layer("predictions")
    logits = pooled @ dense.kernel.numpy().astype(np.float64) + dense.bias.numpy()
    model.save_weights(os.path.join(args.out, "tiny_top.h5"))
    save_file({"input": np.ascontiguousarray(x),
               "probabilities": np.ascontiguousarray(probabilities.astype(np.float32)),
               "logits": np.ascontiguousarray(logits.astype(np.float32))},
              os.path.join(args.out, "top_io.safetensors"),
              metadata={"layout": "NHWC input (x/127.5-1); probabilities = softmax(logits)",
                        "tf_keras_version": tf_keras.__version__,
                        "classes": str(args.classes)})
    print("wrote", args.out, "max probability", float(probabilities.max()), file=sys.stderr)


if __name__ == "__main__":
    main()
