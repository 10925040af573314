"""`TrtExporter(formats=("onnx", "trt_rtx"))` in a real train_and_evaluate (TF 2.15): the ONNX variants of an
Estimator, and the TensorRT-RTX engines built from them.

Real tf2onnx, onnxconverter-common, ONNX Runtime and TensorRT-RTX's builder in the export worker; nothing is a
test double here.
"""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tests.test_estimator_exporter import (assert_spread_over_the_pass, custom_estimator, digits, eval_rows_of,
                                          input_fns, raw_receiver_fn)

HAS_ESTIMATOR = hasattr(tf, "estimator")
ONNX_VARIANTS = ("onnx_fp32", "onnx_fp16", "onnx_int8")
RTX_VARIANTS = ("trt_rtx_fp32", "trt_rtx_fp16", "trt_rtx_int8")


def _onnx_missing():
  import importlib.util  # pylint: disable=g-import-not-at-top
  missing = [m for m in ("tf2onnx", "onnx", "onnxruntime", "onnxconverter_common")
             if importlib.util.find_spec(m) is None]
  return f"ONNX packages not installed ({', '.join(missing)}): pip install 'tftrt_keras[onnx]'" if missing else None


pytestmark = [
    pytest.mark.skipif(not HAS_ESTIMATOR,
                       reason=f"TensorFlow {tf.__version__} has no tf.estimator (Estimator is TF 2.15 only)"),
    pytest.mark.skipif(HAS_ESTIMATOR and _onnx_missing() is not None, reason=str(_onnx_missing())),
]


def _rtx_installed():
  import importlib.util  # pylint: disable=g-import-not-at-top
  return importlib.util.find_spec("tensorrt_rtx") is not None


@pytest.fixture(scope="module")
def onnx_export(tmp_path_factory):
  """A custom-model_fn Estimator (softmax regression on the digits) trained with an ONNX and TensorRT-RTX exporter
  (TensorRT-RTX only where it is installed: the ONNX tests do not depend on it)."""
  from tftrt_keras import TrtExporter  # pylint: disable=g-import-not-at-top
  model_dir = tmp_path_factory.mktemp("onnx_model")
  estimator = custom_estimator(model_dir, save_every=30)
  formats = ("onnx", "trt_rtx") if _rtx_installed() else ("onnx",)
  exporter = TrtExporter("onnx", raw_receiver_fn(), formats=formats, policy="latest", calibration_batches=8,
                         verification_samples=200)
  train_input_fn, eval_input_fn = input_fns()
  tf.estimator.train_and_evaluate(
      estimator, tf.estimator.TrainSpec(train_input_fn, max_steps=30),
      tf.estimator.EvalSpec(eval_input_fn, steps=None, exporters=[exporter], hooks=[exporter.calibration_hook],
                            start_delay_secs=0, throttle_secs=0))
  root = os.path.join(str(model_dir), "export", "onnx")
  (path,) = exporter.manifest_paths
  with open(path) as f:
    return root, json.load(f)


@pytest.mark.tf
@pytest.mark.slow
def test_estimator_export_has_the_three_onnx_variants_verified(onnx_export):
  """onnx_fp32, onnx_fp16 and onnx_int8 are `ok`: built (model.onnx on disk) and verified against the normal
  export on the held-out evaluation samples; INT8 was calibrated on the evaluation's calibration sample."""
  root, manifest = onnx_export
  artifacts = manifest["artifacts"]
  rtx_variants = RTX_VARIANTS if _rtx_installed() else ()
  assert set(artifacts) == {"native", "frozen", "calibration", *ONNX_VARIANTS, *rtx_variants}, sorted(artifacts)
  assert manifest["signature_key"] == "serving_default"
  for name in ONNX_VARIANTS:
    entry = artifacts[name]
    assert entry["status"] == "ok", (name, entry)
    assert os.path.isfile(os.path.join(root, name, str(manifest["version"]), "model.onnx"))
    verification = entry["verification"]
    assert verification["passed"] and verification["samples"] == 200, (name, verification)
  assert artifacts["onnx_fp16"]["built_from"] == artifacts["onnx_int8"]["built_from"] == "onnx_fp32"
  assert manifest["verification"]["samples"] == 200


@pytest.mark.tf
@pytest.mark.slow
def test_onnx_variants_answer_like_the_normal_export_on_evaluation_rows(onnx_export):
  """The FP32 ONNX model, run here in ONNX Runtime under the signature's own input and output names, gives the
  normal export's probabilities on the stored verification rows (which are evaluation rows)."""
  import onnxruntime  # pylint: disable=g-import-not-at-top
  from tftrt_keras.samples import calibration_data  # pylint: disable=g-import-not-at-top
  root, manifest = onnx_export
  version = str(manifest["version"])
  entry = manifest["artifacts"]["calibration"]
  directory = os.path.normpath(os.path.join(root, "manifests", version, entry["path"]))
  x = calibration_data.load_samples(os.path.join(directory, entry["verification_file"]))["x"]
  rows = eval_rows_of(x)
  assert len(rows) == 200
  assert_spread_over_the_pass(rows, len(digits()[2]), "verification")
  session = onnxruntime.InferenceSession(os.path.join(root, "onnx_fp32", version, "model.onnx"),
                                         providers=["CPUExecutionProvider"])
  assert [i.name for i in session.get_inputs()] == ["x"]
  outputs = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"x": x})))
  native = tf.saved_model.load(os.path.join(root, version)).signatures["serving_default"](x=tf.constant(x))
  np.testing.assert_allclose(outputs["probabilities"], native["probabilities"].numpy(), atol=1e-5)
  np.testing.assert_array_equal(outputs["classes"], native["classes"].numpy())


@pytest.mark.tf
@pytest.mark.slow
@pytest.mark.skipif(not _rtx_installed(), reason="TensorRT-RTX is not installed: pip install 'tftrt_keras[trt_rtx]'")
def test_estimator_export_has_trt_rtx_engines_of_its_numeric_outputs(onnx_export):
  """Each built from the ONNX variant of its precision by TensorRT-RTX's builder, with that variant's inputs and
  outputs."""
  root, manifest = onnx_export
  version = str(manifest["version"])
  for name in RTX_VARIANTS:
    entry = manifest["artifacts"][name]
    assert entry["status"] in ("ok", "unverified") and entry["built_from"] == "onnx_" + name.rsplit("_", 1)[1], entry
    with open(os.path.join(root, name, version, "model.json")) as f:
      metadata = json.load(f)
    assert os.path.getsize(os.path.join(root, name, version, "model.plan")) == metadata["engine_bytes"] > 0
    with open(os.path.join(root, entry["built_from"], version, "model.json")) as f:
      source = json.load(f)
    assert [i["name"] for i in metadata["inputs"]] == ["x"]
    assert sorted(o["name"] for o in metadata["outputs"]) == sorted(o["name"] for o in source["outputs"])
