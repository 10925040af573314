#!/usr/bin/env python
"""ONNX variants: worker time per variant vs writing the normal SavedModel, ONNX Runtime vs TensorFlow latency,
and INT8 top-1 agreement with the normal export. Prints one table; every ratio is measured in this run.

Models: the main job's digits CNN (examples/train_keras.py, trained 3 epochs on sklearn's digits; calibration on
training images, verification on the held-out ones) and MobileNetV2(weights=None, input_shape=(96, 96, 3)).
"""

import os
import sys
import tempfile
import time

from absl import app
from absl import flags
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tests import onnx_models  # noqa: E402  pylint: disable=g-import-not-at-top
from tftrt_keras.formats.onnx.format import FORMAT  # noqa: E402  pylint: disable=g-import-not-at-top
from tftrt_keras.formats.savedmodel import SavedModelRunner  # noqa: E402  pylint: disable=g-import-not-at-top

FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_integer("timed_runs", 50, "Timed calls per latency figure (median reported).")
  flags.DEFINE_integer("calibration_samples", 500, "INT8 calibration samples per model.")


def _median_ms(call, runs):
  for _ in range(3):
    call()
  times = []
  for _ in range(runs):
    start = time.perf_counter()
    call()
    times.append(time.perf_counter() - start)
  return 1000.0 * float(np.median(times))


def _agreement(reference, candidate):
  a, b = reference.astype(np.float64), candidate.astype(np.float64)
  cosine = float((a.ravel() @ b.ravel()) / (np.linalg.norm(a) * np.linalg.norm(b)))
  return float(np.mean(a.argmax(1) == b.argmax(1))), cosine, len(set(a.argmax(1)))


def _measure(label, model, root, calibration, verification):
  """model: a Keras model; returns a dict of figures."""
  start = time.perf_counter()
  native = onnx_models.save_keras_model(model, os.path.join(root, "native"))
  save_seconds = time.perf_counter() - start
  name = onnx_models.build_job(native, root).signature["inputs"][0]["name"]
  job = onnx_models.build_job(native, root, {name: calibration})
  seconds, built = {}, {}
  for precision in ("FP32", "FP16", "INT8"):
    start = time.perf_counter()
    built[precision], _ = onnx_models.build_variant(FORMAT, job, precision, root,
                                                    source_dir=None if precision == "FP32" else built["FP32"])
    seconds[precision] = time.perf_counter() - start
  feeds = {name: verification}
  with SavedModelRunner(native, "serving_default") as tf_runner, FORMAT.open_runner(built["FP32"], job) as ort_runner:
    reference = next(iter(tf_runner.run(feeds).values()))
    latency = {}
    for batch in (1, 32):
      part = {name: verification[:batch]}
      latency[batch] = (_median_ms(tf_runner.prepared_call(part), FLAGS.timed_runs),
                        _median_ms(ort_runner.prepared_call(part), FLAGS.timed_runs))
  with FORMAT.open_runner(built["INT8"], job) as runner:
    int8 = next(iter(runner.run(feeds).values()))
  with FORMAT.open_runner(built["FP16"], job) as runner:
    fp16 = next(iter(runner.run(feeds).values()))
  return {"label": label, "save": save_seconds, "seconds": seconds, "latency": latency,
          "int8": _agreement(reference, int8), "fp16": _agreement(reference, fp16), "samples": len(verification)}


def main(argv):
  del argv
  from examples import digits as digits_data  # pylint: disable=g-import-not-at-top
  from examples.train_keras import build_model  # pylint: disable=g-import-not-at-top
  keras = onnx_models.primary_keras()
  rows = []
  with tempfile.TemporaryDirectory() as root:
    (x_train, y_train), (x_val, _) = digits_data.load_digits(validation_fraction=0.3, seed=0)
    model = build_model(keras)
    model.fit(x_train, y_train, epochs=3, batch_size=64, verbose=0)
    os.makedirs(os.path.join(root, "digits"))
    rows.append(_measure("digits CNN", model, os.path.join(root, "digits"), x_train[:FLAGS.calibration_samples],
                         x_val))
    model = keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3))
    os.makedirs(os.path.join(root, "mobilenet"))
    rows.append(_measure("MobileNetV2 96x96 (random)", model, os.path.join(root, "mobilenet"),
                         onnx_models.mobilenet_images(FLAGS.calibration_samples, seed=2),
                         onnx_models.mobilenet_images(500, seed=3)))
  print("| model | SavedModel write s | onnx_fp32 s (x) | onnx_fp16 s (x) | onnx_int8 s (x) | TF b1 ms | ORT fp32 b1 "
        "ms (x) | TF b32 ms | ORT fp32 b32 ms (x) | INT8 top-1 / cosine (classes seen) | FP16 top-1 / cosine | n |")
  print("|---|---|---|---|---|---|---|---|---|---|---|---|")
  for r in rows:
    s = r["seconds"]
    (tf1, ort1), (tf32, ort32) = r["latency"][1], r["latency"][32]
    print(f"| {r['label']} | {r['save']:.2f} | {s['FP32']:.2f} ({s['FP32'] / r['save']:.1f}) | {s['FP16']:.2f} "
          f"({s['FP16'] / r['save']:.1f}) | {s['INT8']:.2f} ({s['INT8'] / r['save']:.1f}) | {tf1:.3f} | {ort1:.3f} "
          f"({ort1 / tf1:.2f}) | {tf32:.3f} | {ort32:.3f} ({ort32 / tf32:.2f}) | {r['int8'][0]:.4f} / "
          f"{r['int8'][1]:.4f} ({r['int8'][2]}) | {r['fp16'][0]:.4f} / {r['fp16'][1]:.5f} | {r['samples']} |")


if __name__ == "__main__":
  define_flags()
  app.run(main)
