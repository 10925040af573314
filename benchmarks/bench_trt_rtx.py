#!/usr/bin/env python
"""TensorRT-RTX engines: build time of each trt_rtx variant against the ONNX conversion time of its source, and plan
size against ONNX size. Prints one table; every ratio is measured in this run, on this machine (no GPU needed:
TensorRT-RTX compiles ahead of time).

Models: the main job's digits CNN (examples/train_keras.py, trained 3 epochs on sklearn's digits) and
MobileNetV2(weights=None, input_shape=(96, 96, 3)). For each precision, the source ONNX variant (onnx_fp32 from
the SavedModel, onnx_fp16 and onnx_int8 from onnx_fp32) and the trt_rtx variant built from it are each built
`--repeats` times, alternately; the table shows medians of the wall time of the format's `build` (what the export
worker spends on the variant) and, for trt_rtx, of TensorRT-RTX's `build_serialized_network` alone.
"""

import os
import statistics
import sys
import tempfile
import time

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tests import onnx_models  # noqa: E402  pylint: disable=g-import-not-at-top
from tftrt_keras.formats.onnx.format import FORMAT as ONNX  # noqa: E402  pylint: disable=g-import-not-at-top
from tftrt_keras.formats.tensorrt.rtx import FORMAT as TRT_RTX  # noqa: E402  pylint: disable=g-import-not-at-top
from tftrt_keras.options import ConversionOptions  # noqa: E402  pylint: disable=g-import-not-at-top

FLAGS = flags.FLAGS
PRECISIONS = ("FP32", "FP16", "INT8")


def define_flags():
  flags.DEFINE_integer("repeats", 3, "Builds of each variant (medians reported).")
  flags.DEFINE_integer("calibration_samples", 300, "INT8 calibration samples per model.")
  flags.DEFINE_integer("max_batch_size", 32, "The engines' largest batch (their profile's max).")


def _timed(build):
  start = time.perf_counter()
  result = build()
  return time.perf_counter() - start, result


def _measure(label, model, root, calibration):
  """Builds every variant `--repeats` times; returns one row per precision."""
  native = onnx_models.save_keras_model(model, os.path.join(root, "native"))
  name = onnx_models.build_job(native, root).signature["inputs"][0]["name"]
  options = ConversionOptions(formats=("onnx", "trt_rtx"), max_batch_size=FLAGS.max_batch_size)
  job = onnx_models.build_job(native, root, {name: calibration}, options=options)
  onnx_seconds = {p: [] for p in PRECISIONS}
  rtx_seconds = {p: [] for p in PRECISIONS}
  builder_seconds = {p: [] for p in PRECISIONS}
  sizes = {}
  for repeat in range(FLAGS.repeats):
    fp32_dir = None
    for precision in PRECISIONS:
      run_root = os.path.join(root, f"{repeat}-{precision}")
      seconds, (onnx_dir, _) = _timed(lambda r=run_root, p=precision, s=fp32_dir: onnx_models.build_variant(
          ONNX, job, p, r, source_dir=s))
      onnx_seconds[precision].append(seconds)
      if precision == "FP32":
        fp32_dir = onnx_dir
      seconds, (plan_dir, details) = _timed(lambda r=run_root, p=precision, s=onnx_dir: onnx_models.build_variant(
          TRT_RTX, job, p, r, source_dir=s))
      rtx_seconds[precision].append(seconds)
      builder_seconds[precision].append(details["build_seconds"])
      sizes[precision] = (os.path.getsize(os.path.join(onnx_dir, "model.onnx")),
                          os.path.getsize(os.path.join(plan_dir, "model.plan")))
  return [{"label": label, "precision": p, "onnx": statistics.median(onnx_seconds[p]),
           "rtx": statistics.median(rtx_seconds[p]), "builder": statistics.median(builder_seconds[p]),
           "onnx_bytes": sizes[p][0], "plan_bytes": sizes[p][1]} for p in PRECISIONS]


def main(argv):
  del argv
  import tensorrt_rtx  # pylint: disable=g-import-not-at-top
  from examples import digits as digits_data  # pylint: disable=g-import-not-at-top
  from examples.train_keras import build_model  # pylint: disable=g-import-not-at-top
  keras = onnx_models.primary_keras()
  rows = []
  with tempfile.TemporaryDirectory() as root:
    (x_train, y_train), _ = digits_data.load_digits(validation_fraction=0.3, seed=0)
    model = build_model(keras)
    model.fit(x_train, y_train, epochs=3, batch_size=64, verbose=0)
    os.makedirs(os.path.join(root, "digits"))
    rows += _measure("digits CNN", model, os.path.join(root, "digits"), x_train[:FLAGS.calibration_samples])
    model = keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3))
    os.makedirs(os.path.join(root, "mobilenet"))
    rows += _measure("MobileNetV2 96x96", model, os.path.join(root, "mobilenet"),
                     onnx_models.mobilenet_images(FLAGS.calibration_samples, seed=2))
  print(f"TensorRT-RTX {tensorrt_rtx.__version__}, portable targets (compute capability 8.6, 8.9, 12.0), profile "
        f"batch 1..{FLAGS.max_batch_size}, medians of {FLAGS.repeats} builds")
  print("| model | variant | source ONNX build s | trt_rtx build s (x source) | of it, TensorRT-RTX builder s | "
        "ONNX MB | plan MB (x ONNX) |")
  print("|---|---|---|---|---|---|---|")
  for r in rows:
    print(f"| {r['label']} | trt_rtx_{r['precision'].lower()} | {r['onnx']:.2f} | {r['rtx']:.2f} "
          f"({r['rtx'] / r['onnx']:.2f}) | {r['builder']:.2f} | {r['onnx_bytes'] / 1e6:.3f} | "
          f"{r['plan_bytes'] / 1e6:.3f} ({r['plan_bytes'] / r['onnx_bytes']:.2f}) |")


if __name__ == "__main__":
  define_flags()
  app.run(main)
