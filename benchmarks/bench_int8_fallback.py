#!/usr/bin/env python
"""INT8 fallback (issue 19 point 2): plain INT8 against the kept-layer fallback, on the verification samples.

  nice .venv/tf2.21/bin/python benchmarks/bench_int8_fallback.py \
      [--models=MobileNetV2,ResNet50 --work_dir=/tmp/int8_bench --modelopt_python=/tmp/modelopt-venv/bin/python]

Each `keras.applications` model (tests/int8_models.py: weights=None, 32x32x3 digits, BatchNorm momentum 0.9,
3 epochs) is converted to ONNX FP32 by the product (`FORMAT.build`). Calibration: the first
`--calibration_samples` training images. Verification: the first `--verification_samples` of the other images,
never seen by any quantizer or search. Rows:
  * plain: `onnx_quantize.quantize_int8` MinMax on all calibration samples (the product before the fallback);
  * fallback: `onnx_int8_fallback.build_int8` with the default options (auto calibration, budget 5): half the
    calibration samples calibrate, half judge; what it chose, kept and spent;
  * ModelOpt max / entropy (fp32 high precision), when `--modelopt_python` names its environment (see
    bench_int8_quality.py): the same FP32 model and calibration samples.
Figures: top-1 agreement with the FP32 ONNX model on the verification samples, and its one-sided 95% Wilson
lower bound (the gate: 0.97). `--work_dir` keeps trained models and their ONNX files for a second run.
"""

import json
import os
import sys
import time

from absl import app
from absl import flags
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

FLAGS = flags.FLAGS
flags.DEFINE_list("models", ["MobileNetV2", "MobileNetV3Small", "EfficientNetB0", "EfficientNetV2B0", "ResNet50"],
                  "tests/int8_models.APPLICATIONS names.")
flags.DEFINE_string("work_dir", "/tmp/int8_bench", "Trained models and ONNX files, reused when present.")
flags.DEFINE_integer("epochs", 3, "Training epochs.")
flags.DEFINE_integer("calibration_samples", 768, "Calibration samples (training images).")
flags.DEFINE_integer("verification_samples", 345, "Verification samples (held-out images).")
# bench_int8_quality's ModelOpt runner reads FLAGS.modelopt_python: absl's flags are one global set.
flags.DEFINE_string("modelopt_python", "", "Python of the nvidia-modelopt[onnx] environment; empty: ours only.")

MODELOPT = {"ModelOpt max": ["--calibration_method=max", "--high_precision_dtype=fp32"],
            "ModelOpt entropy": ["--calibration_method=entropy", "--high_precision_dtype=fp32"]}


def _prepare(name):
  """(FP32 ONNX path, input name, calibration images, verification images, validation accuracy)."""
  from tests import int8_models, onnx_models  # pylint: disable=g-import-not-at-top
  from tftrt_keras.formats.onnx import FORMAT  # pylint: disable=g-import-not-at-top
  root = os.path.join(FLAGS.work_dir, name)
  info_path = os.path.join(root, "info.json")
  if not os.path.exists(info_path):
    os.makedirs(root, exist_ok=True)
    (x, y), (x_rest, y_rest) = int8_models.digits_32()
    model = int8_models.train_application(name, x, y, epochs=FLAGS.epochs)
    accuracy = float(np.mean(model.predict(x_rest, verbose=0).argmax(1) == y_rest))
    native = onnx_models.save_keras_model(model, os.path.join(root, "native"))
    job = onnx_models.build_job(native, root)
    onnx_models.build_variant(FORMAT, job, "FP32", root)
    np.savez(os.path.join(root, "data.npz"), x=x, y=y, xr=x_rest, yr=y_rest)
    with open(info_path, "w", encoding="utf-8") as f:
      json.dump({"acc": accuracy, "input": onnx_models.input_name(job)}, f)
  with open(info_path, encoding="utf-8") as f:
    info = json.load(f)
  data = np.load(os.path.join(root, "data.npz"))
  return (os.path.join(root, "onnx_fp32", "model.onnx"), info["input"], data["x"][:FLAGS.calibration_samples],
          data["xr"][:FLAGS.verification_samples], info["acc"])


def _run(path, name, x):
  from tftrt_keras.formats.onnx import gated_model  # pylint: disable=g-import-not-at-top
  session = gated_model.open_session(path)
  return gated_model.run_session(session, {name: x}, {name: "float32"})


def _agreement(reference, path, name, x):
  from tftrt_keras import agreement  # pylint: disable=g-import-not-at-top
  (output,) = reference
  agreeing = int(np.sum(_run(path, name, x)[output].argmax(1) == reference[output].argmax(1)))
  return agreeing / len(x), agreement.agreement_lower_bound(agreeing, len(x))


def _measure(name):
  from tftrt_keras.options import ConversionOptions  # pylint: disable=g-import-not-at-top
  from tftrt_keras.formats.onnx import int8_fallback as onnx_int8_fallback, quantize as onnx_quantize  # pylint: disable=g-import-not-at-top
  from tftrt_keras.formats.onnx import OnnxOptions  # pylint: disable=g-import-not-at-top
  fp32, input_name, calibration, verification, accuracy = _prepare(name)
  root = os.path.dirname(os.path.dirname(fp32))
  reference = _run(fp32, input_name, verification)
  samples, dtypes = {input_name: calibration}, {input_name: "float32"}
  start = time.perf_counter()
  plain = os.path.join(root, "plain_int8.onnx")
  onnx_quantize.quantize_int8(fp32, plain, samples, dtypes)
  plain_seconds = time.perf_counter() - start
  start = time.perf_counter()
  fallback_path = os.path.join(root, "fallback_int8.onnx")
  record = onnx_int8_fallback.build_int8(fp32, fallback_path, samples, dtypes, ConversionOptions(),
                                         OnnxOptions())["fallback"]
  row = {"model": name, "accuracy": accuracy, "plain": _agreement(reference, plain, input_name, verification),
         "plain_seconds": plain_seconds, "fallback": _agreement(reference, fallback_path, input_name, verification),
         "fallback_seconds": time.perf_counter() - start, "record": record, "modelopt": {}}
  if FLAGS.modelopt_python:
    import bench_int8_quality  # pylint: disable=g-import-not-at-top
    for label, extra in MODELOPT.items():
      path, seconds, why = bench_int8_quality._modelopt(fp32, root, input_name, calibration, label, extra)  # pylint: disable=protected-access
      row["modelopt"][label] = (_agreement(reference, path, input_name, verification) if path else why, seconds)
  return row


def _figure(pair):
  return f"{pair[0]:.3f} ({pair[1]:.3f})"


def main(argv):
  del argv
  rows = [_measure(name) for name in FLAGS.models]
  print(f"\nverification: {FLAGS.verification_samples} held-out samples; calibration: {FLAGS.calibration_samples} "
        "(the fallback: half calibrate, half judge); figures: top-1 agreement with FP32 (95% lower bound)\n")
  labels = list(MODELOPT) if FLAGS.modelopt_python else []
  print("| model (val acc) | plain INT8 | fallback INT8 | calibration chosen | kept FP32 / quantizable | "
        "hold-out bound before -> after | plain build s | search s (budget s) | " + " | ".join(labels)
        + (" |" if labels else ""))
  print("|---" * (8 + len(labels)) + "|")
  for row in rows:
    record = row["record"]
    kept = f"{len(record.get('kept', []))} / {record.get('nodes_quantizable', '-')}"
    before, after = (next(iter(record[k]["outputs"].values())).get("top1_agreement_lower_bound")
                     for k in ("before", "after"))
    cells = [f"{row['model']} ({row['accuracy']:.2f})", _figure(row["plain"]), _figure(row["fallback"]),
             record["calibration_chosen"], kept, f"{before:.3f} -> {after:.3f}",
             f"{record['plain_build_seconds']:.1f}",
             f"{record['search_seconds']:.1f} ({record['budget_seconds']:.1f})"]
    for label in labels:
      figures, seconds = row["modelopt"][label]
      cells.append(_figure(figures) + f", {seconds:.0f} s" if isinstance(figures, tuple) else f"failed: {figures}")
    print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
  app.run(main)
