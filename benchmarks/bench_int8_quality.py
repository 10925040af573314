#!/usr/bin/env python
"""INT8 quality of our `onnx_int8` against NVIDIA ModelOpt's ONNX INT8 PTQ, on the same models and samples.

One run, one table: for each model, top-1 agreement of every INT8 model with the native (Keras) model on held-out
samples, and the largest relative error of the logits, next to the native model's own accuracy (so that
agreement means something: the models are trained classifiers, not random networks).

  cd /work/main && nice .venv/tf2.17/bin/python benchmarks/bench_int8_quality.py \
      [--modelopt_python=/tmp/modelopt-venv/bin/python --mobilenet_epochs=4 --calibration_samples=500]

Models:
  * digits CNN: the main job's model (examples/train_keras.py), trained 3 epochs on sklearn's 8x8 digits
    (examples/digits.py, 30% held out: 540 samples);
  * MobileNetV2(weights=None, input_shape=(96, 96, 3), classes=10), trained from scratch a few epochs on the
    same digits upscaled to 96x96x3 (nearest neighbour, scaled to [-1, 1]); BatchNorm momentum is lowered from
    Keras' 0.999 to 0.9 so that the moving statistics are meaningful after so few steps.
Both: calibration on the first `--calibration_samples` training images, judged on all held-out images.

Rows (all quantize the same FP32 ONNX file, whose final Softmax is replaced by Identity so the graph output is
the logits; argmax is unchanged, and no quantizer touches Softmax):
  * ours MinMax / ours Percentile: `tftrt_keras.formats.onnx.format.FORMAT.build(job, "INT8", ...)`, the product path;
  * ours MinMax with MatMul/Gemm nodes whose weight has K or N below 16 left unquantized (here: the 10-class
    head), as ModelOpt does: a diagnostic row, our exact ONNX Runtime settings plus `nodes_to_exclude`;
  * ModelOpt max (fp32) / ModelOpt max (fp16): `python -m modelopt.onnx.quantization --quantize_mode=int8
    --calibration_method=max` in its own environment (`--modelopt_python`; it needs torch and onnx 1.21), on the
    same model.onnx and an .npz of the same calibration samples, with `--high_precision_dtype=fp32` (only the
    INT8 effect) and with its default `fp16` (what a ModelOpt user gets by default: non-quantized ops in FP16);
  * ModelOpt entropy (fp32): its default calibration method.
Every model is run by ONNX Runtime (CPU) in this process. The reference is the native Keras model's logits
(penultimate activations times the last Dense layer's kernel, plus its bias).
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tests import onnx_models  # noqa: E402  pylint: disable=g-import-not-at-top
from tftrt_keras.options import ConversionOptions  # noqa: E402  pylint: disable=g-import-not-at-top
from tftrt_keras.formats.onnx import quantize as onnx_quantize  # noqa: E402  pylint: disable=g-import-not-at-top
from tftrt_keras.formats.onnx.format import FORMAT  # noqa: E402  pylint: disable=g-import-not-at-top

FLAGS = flags.FLAGS
MODELOPT_VARIANTS = {  # label: extra CLI arguments
    "ModelOpt max (fp32)": ["--calibration_method=max", "--high_precision_dtype=fp32"],
    "ModelOpt max (fp16, its default)": ["--calibration_method=max", "--high_precision_dtype=fp16"],
    "ModelOpt entropy (fp32)": ["--calibration_method=entropy", "--high_precision_dtype=fp32"],
}


def define_flags():
  flags.DEFINE_integer("calibration_samples", 500, "INT8 calibration samples per model (training images).")
  flags.DEFINE_integer("mobilenet_epochs", 4, "Training epochs of MobileNetV2 on the upscaled digits.")
  flags.DEFINE_integer("digits_epochs", 3, "Training epochs of the digits CNN.")
  flags.DEFINE_float("percentile", 99.999, "Percentile of our Percentile calibration.")
  flags.DEFINE_string("modelopt_python", "/tmp/modelopt-venv/bin/python",
                      "Python of the environment with nvidia-modelopt[onnx]; empty: report ours only.")
  flags.DEFINE_list("modelopt_variants", list(MODELOPT_VARIANTS), "ModelOpt rows to run.")
  flags.DEFINE_list("models", ["digits", "mobilenet"], "Models to measure.")


# --- data and models ---------------------------------------------------------------------------------------

def _digits():
  from examples import digits as digits_data  # pylint: disable=g-import-not-at-top
  return digits_data.load_digits(validation_fraction=0.3, seed=0)


def _upscale(images):
  """8x8x1 digits in [0, 1] -> 96x96x3 in [-1, 1] (nearest neighbour)."""
  big = np.repeat(np.repeat(images, 12, axis=1), 12, axis=2)
  return np.repeat(big * 2.0 - 1.0, 3, axis=3).astype("float32")


def _train_digits_cnn(keras, x, y):
  from examples.train_keras import build_model  # pylint: disable=g-import-not-at-top
  model = build_model(keras)
  model.fit(x, y, epochs=FLAGS.digits_epochs, batch_size=64, verbose=0)
  return model


def _train_mobilenet(keras, x, y):
  model = keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3), classes=10)
  for layer in model.layers:
    if isinstance(layer, keras.layers.BatchNormalization):
      layer.momentum = 0.9  # 0.999 leaves the moving statistics near their initial values after ~150 steps
  model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                metrics=["accuracy"])
  model.fit(x, y, epochs=FLAGS.mobilenet_epochs, batch_size=32, verbose=0)
  return model


def _native_logits(keras, model, x):
  """Logits of a model whose last layer is Dense(activation=softmax): penultimate output @ kernel + bias."""
  last = model.layers[-1]
  features = keras.Model(model.inputs, model.layers[-2].output).predict(x, batch_size=64, verbose=0)
  kernel, bias = (np.asarray(w, np.float64) for w in last.get_weights())
  return features.astype(np.float64) @ kernel + bias


# --- quantizers ----------------------------------------------------------------------------------------------

def _logits_onnx(fp32_dir, out_dir):
  """A copy of the FP32 ONNX model whose final Softmax is an Identity (same output name: the logits)."""
  import onnx  # pylint: disable=g-import-not-at-top
  model = onnx.load(os.path.join(fp32_dir, "model.onnx"))
  outputs = {o.name for o in model.graph.output}
  softmax = [n for n in model.graph.node if n.op_type == "Softmax" and n.output[0] in outputs]
  if len(softmax) != 1:
    raise RuntimeError(f"expected one Softmax producing the graph output, found {len(softmax)}")
  node = softmax[0]
  node.op_type = "Identity"
  del node.attribute[:]
  os.makedirs(out_dir)
  onnx.save(model, os.path.join(out_dir, "model.onnx"))
  shutil.copy(os.path.join(fp32_dir, "model.json"), out_dir)
  return os.path.join(out_dir, "model.onnx")


def _ours(native, root, name, calibration, source_dir, method):
  options = ConversionOptions(formats=("onnx",), format_options={
      "onnx": {"int8_calibration": method, "percentile": FLAGS.percentile}})
  job = onnx_models.build_job(native, os.path.join(root, f"job_{method}"), {name: calibration}, options)
  out = os.path.join(root, f"ours_{method}")
  os.makedirs(out)
  start = time.perf_counter()
  details = FORMAT.build(job, "INT8", source_dir, out)
  return os.path.join(out, "model.onnx"), time.perf_counter() - start, details


def _small_gemms(model_path):
  """MatMul/Gemm nodes with a constant weight whose K or N is below 16 (ModelOpt keeps these unquantized)."""
  import onnx  # pylint: disable=g-import-not-at-top
  model = onnx.load(model_path)
  weights = {init.name: tuple(init.dims) for init in model.graph.initializer}
  small = []
  for node in model.graph.node:
    shape = weights.get(node.input[1]) if node.op_type in ("MatMul", "Gemm") and len(node.input) > 1 else None
    if shape and len(shape) == 2 and min(shape) < 16:
      small.append(node.name)
  return small


def _ours_small_gemms_fp32(model_path, root, name, calibration):
  """Diagnostic, not the product: our exact quantize_static settings (MinMax) with the small MatMul/Gemm nodes
  excluded, as ModelOpt does; what `onnx_quantize.quantize_int8` would give with that one change."""
  from onnxruntime import quantization as ort_quant  # pylint: disable=g-import-not-at-top
  out = os.path.join(root, "ours_minmax_small_gemms_fp32.onnx")
  reader = onnx_quantize._SamplesReader({name: calibration}, {name: "float32"}, 32)  # pylint: disable=protected-access
  start = time.perf_counter()
  with onnx_quantize._quiet_root_logger():  # pylint: disable=protected-access
    ort_quant.quantize_static(
        model_path, out, reader, quant_format=ort_quant.QuantFormat.QDQ,
        op_types_to_quantize=list(onnx_quantize.QUANTIZED_OP_TYPES), per_channel=True, reduce_range=False,
        activation_type=ort_quant.QuantType.QInt8, weight_type=ort_quant.QuantType.QInt8,
        calibrate_method=ort_quant.CalibrationMethod.MinMax, nodes_to_exclude=_small_gemms(model_path),
        extra_options=onnx_quantize._extra_options("minmax", FLAGS.percentile))  # pylint: disable=protected-access
  return out, time.perf_counter() - start


def _modelopt(model_path, root, name, calibration, label, extra):
  """Runs ModelOpt's CLI in its own environment; returns (model path, seconds, None) or (None, seconds, why)."""
  npz = os.path.join(root, "calibration.npz")
  if not os.path.exists(npz):
    np.savez(npz, **{name: calibration})
  out = os.path.join(root, "modelopt_" + "".join(c if c.isalnum() else "_" for c in label) + ".onnx")
  batch = min(32, len(calibration))
  shape = "x".join(str(d) for d in (batch,) + calibration.shape[1:])
  command = ["nice", FLAGS.modelopt_python, "-m", "modelopt.onnx.quantization", f"--onnx_path={model_path}",
             "--quantize_mode=int8", f"--calibration_data_path={npz}", f"--calibration_shapes={name}:{shape}",
             "--calibration_eps", "cpu", f"--output_path={out}", "--log_level=WARNING"] + extra
  start = time.perf_counter()
  result = subprocess.run(command, capture_output=True, text=True, check=False)
  seconds = time.perf_counter() - start
  if result.returncode != 0 or not os.path.exists(out):
    tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
    return None, seconds, f"exit {result.returncode}: " + " | ".join(tail)
  return out, seconds, None


# --- evaluation ---------------------------------------------------------------------------------------------

def _run_onnx(path, name, x):
  import onnxruntime  # pylint: disable=g-import-not-at-top
  options = onnxruntime.SessionOptions()
  options.log_severity_level = 3
  session = onnxruntime.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
  outputs = [session.run(None, {name: x[i:i + 64]})[0] for i in range(0, len(x), 64)]
  return np.concatenate(outputs).astype(np.float64)


def _compare(reference, candidate):
  """(top-1 agreement, (max, mean) over samples of |logit error|_inf / |reference logits|_inf)."""
  agreement = float(np.mean(reference.argmax(1) == candidate.argmax(1)))
  relative = np.abs(candidate - reference).max(1) / np.abs(reference).max(1)
  return agreement, (float(relative.max()), float(relative.mean()))


def _qdq_summary(path):
  import onnx  # pylint: disable=g-import-not-at-top
  model = onnx.load(path)
  quantized = onnx_quantize.quantized_op_counts(model)
  total = onnx_quantize.total_op_counts(model)
  q = onnx_quantize.qdq_node_counts(model).get("QuantizeLinear", 0)
  ops = ", ".join(f"{op} {quantized.get(op, 0)}/{n}" for op, n in sorted(total.items()))
  return f"{ops}; {q} Q"


def _measure(label, keras, model, x_train, x_val, y_val, root):
  calibration = x_train[:FLAGS.calibration_samples]
  probabilities = model.predict(x_val, batch_size=64, verbose=0)
  accuracy = float(np.mean(probabilities.argmax(1) == y_val))
  reference = _native_logits(keras, model, x_val)
  assert np.array_equal(reference.argmax(1), probabilities.argmax(1))
  native = onnx_models.save_keras_model(model, os.path.join(root, "native"))
  name = onnx_models.build_job(native, os.path.join(root, "job")).signature["inputs"][0]["name"]
  fp32_dir, _ = onnx_models.build_variant(FORMAT, onnx_models.build_job(native, os.path.join(root, "job")), "FP32",
                                          root)
  logits_path = _logits_onnx(fp32_dir, os.path.join(root, "fp32_logits"))
  rows = [("FP32 ONNX (no quantization)", logits_path, 0.0, None)]
  for method, row_label in (("minmax", "ours MinMax"), ("percentile", f"ours Percentile {FLAGS.percentile}")):
    path, seconds, details = _ours(native, root, name, calibration, os.path.dirname(logits_path), method)
    rows.append((row_label, path, seconds, f"{details['calibration_samples']} samples"))
  path, seconds = _ours_small_gemms_fp32(logits_path, root, name, calibration)
  rows.append(("ours MinMax, K or N < 16 MatMul kept FP32 (diagnostic)", path, seconds,
               f"{len(calibration)} samples; not the product path"))
  if FLAGS.modelopt_python:
    for variant in FLAGS.modelopt_variants:
      path, seconds, why = _modelopt(logits_path, root, name, calibration, variant, MODELOPT_VARIANTS[variant])
      rows.append((variant, path, seconds, why or f"{len(calibration)} samples"))
  table = []
  for row_label, path, seconds, note in rows:
    if path is None:
      table.append((row_label, None, None, seconds, "", note))
      continue
    agreement, relative = _compare(reference, _run_onnx(path, name, x_val))
    table.append((row_label, agreement, relative, seconds, _qdq_summary(path), note))
  return {"label": label, "accuracy": accuracy, "classes": len(set(reference.argmax(1))), "n": len(x_val),
          "rows": table}


def main(argv):
  del argv
  started = time.perf_counter()
  keras = onnx_models.primary_keras()
  (x_train, y_train), (x_val, y_val) = _digits()
  results, timings = [], {}
  with tempfile.TemporaryDirectory() as root:
    if "digits" in FLAGS.models:
      start = time.perf_counter()
      model = _train_digits_cnn(keras, x_train, y_train)
      timings["digits train"] = time.perf_counter() - start
      os.makedirs(os.path.join(root, "digits"))
      start = time.perf_counter()
      results.append(_measure("digits CNN", keras, model, x_train, x_val, y_val, os.path.join(root, "digits")))
      timings["digits quantize+eval"] = time.perf_counter() - start
    if "mobilenet" in FLAGS.models:
      big_train, big_val = _upscale(x_train), _upscale(x_val)
      start = time.perf_counter()
      model = _train_mobilenet(keras, big_train, y_train)
      timings["MobileNetV2 train"] = time.perf_counter() - start
      os.makedirs(os.path.join(root, "mobilenet"))
      start = time.perf_counter()
      results.append(_measure("MobileNetV2 96x96 (trained on upscaled digits)", keras, model, big_train, big_val,
                              y_val, os.path.join(root, "mobilenet")))
      timings["MobileNetV2 quantize+eval"] = time.perf_counter() - start
  print("| model (native held-out accuracy, classes predicted, n) | quantizer | INT8 top-1 agreement | rel. logit "
        "error max / mean | quantize s | Q/DQ'd ops (quantized/total) | note |")
  print("|---|---|---|---|---|---|---|")
  for r in results:
    head = f"{r['label']} ({r['accuracy']:.4f}, {r['classes']}, {r['n']})"
    for row_label, agreement, relative, seconds, qdq, note in r["rows"]:
      figures = (f"{agreement:.4f} | {relative[0]:.4f} / {relative[1]:.4f}" if agreement is not None
                 else "failed | -")
      print(f"| {head} | {row_label} | {figures} | {seconds:.1f} | {qdq} | {note or ''} |")
  print("\ntimings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items())
        + f", total {time.perf_counter() - started:.0f}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
