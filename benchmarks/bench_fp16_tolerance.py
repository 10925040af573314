#!/usr/bin/env python
"""FP16 verdicts a user would sign (issue 19 point 1b): what FP16 arithmetic does to briefly trained CNNs.

  nice python benchmarks/bench_fp16_tolerance.py [--models=MobileNetV2,ResNet50 --work_dir=/tmp/fp16_bench \
      --verification_samples=540]

Each `keras.applications` model (tests/int8_models.py: weights=None, 32x32x3 digits in [-1, 1], BatchNorm
momentum 0.9, `--epochs` epochs) is written as the callback writes its normal export, converted by the product's
`onnx` format (`FORMAT.build`: FP32 from the SavedModel, FP16 from the FP32 ONNX model, with the FP16 ops kept
FP32 by default), and the FP32 and FP16 models are run through their own runner (ONNX Runtime) on the first
`--verification_samples` held-out images (never trained on) beside the normal export (TensorFlow). Figures per
variant, on the probabilities output, as verification computes them (`tftrt_keras.agreement.compare_output`):
max abs error, max relative error (max abs error / max |reference|), top-1 agreement and its one-sided 95% Wilson
lower bound. Last column: the same FP16 model broken on purpose, its middle activation (Relu, Clip, Sigmoid,
HardSigmoid, HardSwish, in graph order) dropped, as a conversion that lost a layer would be. The table is what
`verify_tolerance_fp16_classifier`'s default is chosen from (benchmarks/README.md): above the FP16 column, below
the broken one.

`--work_dir` keeps each trained model's SavedModel and data; the ONNX variants are built again on every run, so
the figures are the current conversion's.
"""

import json
import os
import shutil
import sys
import time

from absl import app
from absl import flags
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

FLAGS = flags.FLAGS
flags.DEFINE_list("models", ["MobileNetV2", "MobileNetV3Small", "EfficientNetB0", "EfficientNetV2B0", "ResNet50"],
                  "tests/int8_models.APPLICATIONS names.")
flags.DEFINE_string("work_dir", "/tmp/fp16_bench", "Trained models (SavedModels) and data, reused when present.")
flags.DEFINE_integer("epochs", 3, "Training epochs.")
flags.DEFINE_integer("verification_samples", 345, "Held-out images the variants are compared on.")


def _trained(name):
  """(SavedModel directory, held-out images, validation accuracy, training seconds or None when cached)."""
  from tests import int8_models, onnx_models  # pylint: disable=g-import-not-at-top
  root = os.path.join(FLAGS.work_dir, name)
  info_path = os.path.join(root, "info.json")
  seconds = None
  if not os.path.exists(info_path):
    shutil.rmtree(root, ignore_errors=True)
    os.makedirs(root)
    (x, y), (x_rest, y_rest) = int8_models.digits_32()
    start = time.perf_counter()
    model = int8_models.train_application(name, x, y, epochs=FLAGS.epochs)
    seconds = time.perf_counter() - start
    accuracy = float(np.mean(model.predict(x_rest, verbose=0).argmax(1) == y_rest))
    onnx_models.save_keras_model(model, os.path.join(root, "native"))
    np.savez(os.path.join(root, "data.npz"), xr=x_rest, yr=y_rest)
    with open(info_path, "w", encoding="utf-8") as f:
      json.dump({"acc": accuracy, "epochs": FLAGS.epochs, "train_seconds": seconds}, f)
  with open(info_path, encoding="utf-8") as f:
    info = json.load(f)
  data = np.load(os.path.join(root, "data.npz"))
  return os.path.join(root, "native"), data["xr"][:FLAGS.verification_samples], info["acc"], info["train_seconds"]


def _outputs(runner, feeds, batch=64):
  total = len(next(iter(feeds.values())))
  parts = [runner.run({k: v[start:start + batch] for k, v in feeds.items()}) for start in range(0, total, batch)]
  return {name: np.concatenate([np.asarray(p[name]) for p in parts]) for name in parts[0]}


ACTIVATIONS = ("Relu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish")


def _drop_middle_activation(source_dir, output_dir):
  """Copies the variant in `source_dir` to `output_dir` with its middle activation node removed (its consumers
  read its input instead); returns the node's "name (op)"."""
  import onnx  # pylint: disable=g-import-not-at-top
  shutil.copytree(source_dir, output_dir)
  path = os.path.join(output_dir, "model.onnx")
  model = onnx.load(path)
  nodes = [node for node in model.graph.node if node.op_type in ACTIVATIONS]
  node = nodes[len(nodes) // 2]
  for consumer in model.graph.node:
    for i, name in enumerate(consumer.input):
      if name == node.output[0]:
        consumer.input[i] = node.input[0]
  model.graph.node.remove(node)
  onnx.save(model, path)
  return f"{node.name} ({node.op_type})"


def _measure(name):
  from tests import onnx_models  # pylint: disable=g-import-not-at-top
  from tftrt_keras import agreement  # pylint: disable=g-import-not-at-top
  from tftrt_keras.formats.onnx import FORMAT  # pylint: disable=g-import-not-at-top
  from tftrt_keras.formats.savedmodel import SavedModelRunner  # pylint: disable=g-import-not-at-top
  native, images, accuracy, train_seconds = _trained(name)
  build_root = os.path.join(FLAGS.work_dir, name, "variants")
  shutil.rmtree(build_root, ignore_errors=True)
  job = onnx_models.build_job(native, build_root)
  feeds = {onnx_models.input_name(job): images}
  runner = SavedModelRunner(native, job.signature_key)
  try:
    reference = _outputs(runner, feeds)
  finally:
    runner.close()
  (output,) = [n for n, value in reference.items() if agreement.is_classifier_like(value)]
  row = {"model": name, "accuracy": accuracy, "samples": len(images), "train_seconds": train_seconds}
  fp32_dir = None
  for precision in ("FP32", "FP16"):
    start = time.perf_counter()
    directory, details = onnx_models.build_variant(FORMAT, job, precision, build_root, source_dir=fp32_dir)
    build_seconds = time.perf_counter() - start
    fp32_dir = fp32_dir or directory
    with FORMAT.open_runner(directory, job) as variant:
      figures = agreement.compare_output(reference[output], _outputs(variant, feeds)[output])
    row[precision] = dict(figures, build_seconds=build_seconds, kept_fp32=len(details.get("kept_fp32", ())),
                          fp16_nodes=details.get("fp16_nodes"))
  broken_dir = os.path.join(build_root, "onnx_fp16_broken")
  dropped = _drop_middle_activation(directory, broken_dir)
  with FORMAT.open_runner(broken_dir, job) as variant:
    row["broken"] = dict(agreement.compare_output(reference[output], _outputs(variant, feeds)[output]),
                         dropped=dropped)
  return row


def main(argv):
  del argv
  os.makedirs(FLAGS.work_dir, exist_ok=True)
  rows = [_measure(name) for name in FLAGS.models]
  print(f"\nFP16 (and FP32) ONNX against the normal export on {FLAGS.verification_samples} held-out images; "
        "probabilities output; max rel err = max abs error / max |reference|; top-1 (95% Wilson lower bound)\n")
  print("| model (val acc) | FP32 max rel err | FP16 max abs err | FP16 max rel err | FP16 top-1 (bound) | "
        "FP16 nodes / kept FP32 | FP16 build s | FP16, middle activation dropped: max rel err, top-1 |")
  print("|---" * 8 + "|")
  for row in rows:
    fp32, fp16, broken = row["FP32"], row["FP16"], row["broken"]
    print(f"| {row['model']} ({row['accuracy']:.2f}) | {fp32['max_relative_error']:.2g} | "
          f"{fp16['max_abs_error']:.3g} | {fp16['max_relative_error']:.3g} | "
          f"{fp16['top1_agreement']:.3f} ({fp16['top1_agreement_lower_bound']:.3f}) | "
          f"{fp16['fp16_nodes']} / {fp16['kept_fp32']} | {fp16['build_seconds']:.1f} | "
          f"{broken['max_relative_error']:.3g}, {broken['top1_agreement']:.3f} ({broken['dropped']}) |")
  worst = max(row["FP16"]["max_relative_error"] for row in rows)
  mildest = min(row["broken"]["max_relative_error"] for row in rows)
  print(f"\nworst FP16 max relative error: {worst:.3g}; mildest broken one: {mildest:.3g}")


if __name__ == "__main__":
  app.run(main)
