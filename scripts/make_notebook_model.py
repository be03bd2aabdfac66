#!/usr/bin/env python3
"""A full-size notebook model (ResNet152V2 + the notebook's head, random weights), saved the three
ways `tests/keras_import.rs` reads, with Keras's own outputs: a folder for
`KERAS_MODEL_FIXTURE_DIR`.

The model is built and saved exactly as the reference notebook does (its ImageNet weights are
replaced by random ones, since nothing here may download them):

    base_model = ResNet152V2(weights=..., include_top=False, input_shape=(224, 224, 3))
    for layer in base_model.layers: layer.trainable = False
    x = GlobalAveragePooling2D()(base_model.output)
    x = Dense(256, activation="relu")(x)
    x = Dropout(0.5)(x)
    predictions = Dense(1, activation="sigmoid")(x)
    model = Model(inputs=base_model.input, outputs=predictions)
    model.compile(optimizer=Adam(learning_rate=1e-4), loss="binary_crossentropy", metrics=["accuracy"])
    model.fit(...)                       # one step here, so optimizer state is in the files
    model.save("best_model.h5")          # what ModelCheckpoint(save_best_only=True) writes

Two throwaway Dense layers are made first, so Keras names the head `dense_2` / `dense_3` (as in
any Python session that built something before): the import must find the head by structure.
Random weights are made realistic: kernels He-normal, BN moving statistics set from one batch of
radiographs (momentum 0 for one training-mode pass) and then perturbed, so that activations stay
O(1) through all 152 layers and inference-mode BN is not an identity.

Outputs (in --out, about 700 MB; never commit them):
  notebook_model.h5           Keras 3 legacy HDF5 full model (optimizer state included)
  notebook_model.keras        Keras 3 zip
  notebook_model_tf_keras.h5  Keras 2 (tf_keras) HDF5 full model
  notebook_io.safetensors     image_uint8 (N,224,224,3), input, sigmoid_class1, p_fracture
  config.json                 versions, head layer names, tolerance 1e-4, Keras's own checks

Usage (from the repository root; creates a venv under the target folder on first use):
  python3 -m venv /work/targets/keras/venv
  /work/targets/keras/venv/bin/pip install tensorflow-cpu keras tf_keras h5py safetensors pillow
  /work/targets/keras/venv/bin/python scripts/make_notebook_model.py \
      --images ../shared/data/fracatlas/images --out /work/targets/keras/notebook_full
  KERAS_MODEL_FIXTURE_DIR=/work/targets/keras/notebook_full cargo test --test suite keras_import::
"""
import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np
import keras
import tensorflow as tf
from PIL import Image
from safetensors.numpy import save_file

FRACTURED = ["IMG0000019.jpg", "IMG0000025.jpg"]
NOT_FRACTURED = ["IMG0000000.jpg", "IMG0000001.jpg"]


def notebook_model(hidden):
    """The notebook's construction, layer for layer (Keras picks the default layer names)."""
    base_model = keras.applications.ResNet152V2(weights=None, include_top=False,
                                                input_shape=(224, 224, 3))
    for layer in base_model.layers:
        layer.trainable = False
    x = base_model.output
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(hidden, activation="relu")(x)
    x = keras.layers.Dropout(0.5)(x)
    predictions = keras.layers.Dense(1, activation="sigmoid")(x)
    return keras.Model(inputs=base_model.input, outputs=predictions)


def randomize(model, rng, calibration):
    bns = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            kh, kw, cin, cout = layer.kernel.shape
            layer.kernel.assign(rng.normal(0, np.sqrt(2.0 / (kh * kw * cin)),
                                           size=layer.kernel.shape).astype(np.float32))
            if layer.use_bias:
                layer.bias.assign(rng.uniform(-0.1, 0.1, size=layer.bias.shape).astype(np.float32))
    for bn in bns:
        c = bn.gamma.shape[0]
        bn.gamma.assign(rng.uniform(0.6, 1.4, size=c).astype(np.float32))
        bn.beta.assign(rng.uniform(-0.2, 0.2, size=c).astype(np.float32))
    # Moving statistics from one batch: momentum 0 makes one training-mode pass copy the batch
    # statistics (each BN seeing the previous ones' normalised output).
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.momentum = 0.0
        bn.trainable = True
    model(calibration, training=True)
    for bn, momentum in zip(bns, momenta):
        bn.momentum = momentum
        bn.trainable = False
        c = bn.gamma.shape[0]
        mean = bn.moving_mean.numpy()
        var = bn.moving_variance.numpy()
        std = np.sqrt(var + 1e-3)
        bn.moving_mean.assign((mean + 0.1 * std * rng.normal(size=c)).astype(np.float32))
        bn.moving_variance.assign((var * rng.uniform(0.8, 1.25, size=c) + 1e-3).astype(np.float32))


def load_images(folder, names, size):
    out = []
    for sub, files in names:
        for f in files:
            img = Image.open(os.path.join(folder, sub, f)).convert("RGB").resize(size, Image.BILINEAR)
            out.append(np.asarray(img, dtype=np.uint8))
    return np.stack(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", required=True, help="FracAtlas images/ (Fractured/, Non_fractured/)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--seed", type=int, default=152)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    keras.utils.set_random_seed(args.seed)
    rng = np.random.RandomState(args.seed)
    u8 = load_images(args.images, [("Fractured", FRACTURED), ("Non_fractured", NOT_FRACTURED)], (224, 224))
    x = (u8.astype(np.float32) / 127.5 - 1.0).astype(np.float32)  # resnet_v2.preprocess_input
    noise = rng.randint(0, 256, size=(4, 224, 224, 3)).astype(np.float32) / 127.5 - 1.0
    calibration = np.concatenate([x, noise]).astype(np.float32)

    for _ in range(2):  # another session's leftovers: the head becomes dense_2 / dense_3
        keras.layers.Dense(1)
    t0 = time.time()
    model = notebook_model(args.hidden)
    randomize(model, rng, calibration)
    dense = [l for l in model.layers if isinstance(l, keras.layers.Dense)]
    d1, d2 = dense
    c = d1.kernel.shape[0]
    d1.kernel.assign(rng.normal(0, np.sqrt(2.0 / c), size=d1.kernel.shape).astype(np.float32))
    d1.bias.assign(rng.uniform(-0.05, 0.1, size=args.hidden).astype(np.float32))
    d2.kernel.assign(rng.normal(0, np.sqrt(1.0 / args.hidden), size=d2.kernel.shape).astype(np.float32))
    d2.bias.assign(np.array([0.1], np.float32))

    model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-4), loss="binary_crossentropy",
                  metrics=["accuracy"])
    labels = np.array([[0], [0], [1], [1]], np.float32)  # flow_from_directory: Fractured = 0
    model.fit(x, labels, epochs=1, batch_size=len(x), verbose=0)
    sigmoid = model.predict(x, verbose=0)[:, 0]
    print("built, randomised and fitted in %.0f s; sigmoid outputs %s" % (time.time() - t0, sigmoid))

    model.save(os.path.join(args.out, "notebook_model.h5"))
    model.save(os.path.join(args.out, "notebook_model.keras"))
    checks = {}
    for name in ("notebook_model.h5", "notebook_model.keras"):
        again = keras.models.load_model(os.path.join(args.out, name))
        checks[f"reload_{name}_maxabs"] = float(np.max(np.abs(again.predict(x, verbose=0)[:, 0] - sigmoid)))

    import tf_keras
    base = tf_keras.applications.ResNet152V2(weights=None, include_top=False, input_shape=(224, 224, 3))
    y = tf_keras.layers.GlobalAveragePooling2D()(base.output)
    y = tf_keras.layers.Dense(args.hidden, activation="relu")(y)
    y = tf_keras.layers.Dropout(0.5)(y)
    y = tf_keras.layers.Dense(1, activation="sigmoid")(y)
    tkm = tf_keras.Model(base.input, y)
    tkm.set_weights(model.get_weights())
    tkm.compile(optimizer=tf_keras.optimizers.Adam(1e-4), loss="binary_crossentropy")
    tkm.save(os.path.join(args.out, "notebook_model_tf_keras.h5"))
    checks["tf_keras_vs_keras3_maxabs"] = float(np.max(np.abs(tkm.predict(x, verbose=0)[:, 0] - sigmoid)))

    save_file({"input": x, "image_uint8": u8,
               "sigmoid_class1": sigmoid.astype(np.float32),
               "p_fracture": (1.0 - sigmoid).astype(np.float32)},
              os.path.join(args.out, "notebook_io.safetensors"),
              metadata={"class_indices": json.dumps({"Fractured": 0, "Not_Fractured": 1}),
                        "sigmoid_class1": "the model's output: P(Not_Fractured)",
                        "p_fracture": "1 - sigmoid_class1"})
    meta = {"model": "ResNet152V2 + GlobalAveragePooling2D, Dense(%d, relu), Dropout(0.5), Dense(1, sigmoid)" % args.hidden,
            "weights": "random (seed %d), BN statistics from one batch, then perturbed" % args.seed,
            "images": FRACTURED + NOT_FRACTURED, "input_hw": [224, 224],
            "resize": "PIL bilinear to 224x224, RGB, then x/127.5 - 1",
            "head_layer_names": [l.name for l in model.layers[-4:]],
            "keras_version": keras.__version__, "tensorflow_version": tf.__version__,
            "tf_keras_version": tf_keras.__version__,
            "tolerance": 1e-4, "checks": checks}
    json.dump(meta, open(os.path.join(args.out, "config.json"), "w"), indent=2)
    print(json.dumps(meta, indent=2))


if __name__ == "__main__":
    main()
