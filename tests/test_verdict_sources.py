"""A variant is usable only while its source is: one built from an artifact that ended `rejected` ends `rejected`,
one built from an artifact that `failed` ends `skipped`, each with its source's reason, whatever order the build
and the verdicts came in; it is never listed as servable nor published to Triton."""

import importlib.util
import json
import os

import numpy as np
import pytest

from tftrt_keras.options import ConversionOptions
from tftrt_keras.verify import verification

REJECTED_INT8 = "verification failed: output `y`: max relative error 0.02 > 1e-06 (INT8 tolerance; max abs error 0.01)"


def _manifest():
  """A closed-looking manifest: onnx_fp32 ok, onnx_int8 rejected (listed AFTER its dependant, as a re-verification
  could leave it), trt_rtx_int8 built from it and verified itself, trt_rtx_fp16 on a failed onnx_fp16."""
  return {"artifacts": {
      "native": {"status": "ok"},
      "trt_rtx_int8": {"status": "unverified", "reason": "no GPU here can run it", "built_from": "onnx_int8",
                       "path": "../../trt_rtx_int8/1"},
      "onnx_fp32": {"status": "ok", "built_from": "native", "path": "../../onnx_fp32/1"},
      "onnx_int8": {"status": "rejected", "reason": REJECTED_INT8, "built_from": "onnx_fp32",
                    "path": "../../onnx_int8/1"},
      "onnx_fp16": {"status": "failed", "reason": "ValueError: no", "built_from": "onnx_fp32"},
      "trt_rtx_fp16": {"status": "ok", "built_from": "onnx_fp16", "path": "../../trt_rtx_fp16/1"},
      "trt_rtx_fp32": {"status": "unverified", "reason": "no GPU here can run it", "built_from": "onnx_fp32",
                       "path": "../../trt_rtx_fp32/1"},
  }}


@pytest.mark.unit
def test_a_variant_follows_its_rejected_or_failed_source_in_any_order():
  manifest = _manifest()
  changed = verification.follow_sources(manifest)
  artifacts = manifest["artifacts"]
  assert sorted(changed) == ["trt_rtx_fp16", "trt_rtx_int8"]
  assert artifacts["trt_rtx_int8"] == dict(_manifest()["artifacts"]["trt_rtx_int8"], status="rejected",
                                           reason=f"built from onnx_int8, which was rejected: {REJECTED_INT8}")
  assert artifacts["trt_rtx_fp16"]["status"] == "skipped"
  assert artifacts["trt_rtx_fp16"]["reason"] == "built from onnx_fp16, which failed: ValueError: no"
  for name in ("onnx_fp32", "onnx_int8", "onnx_fp16", "trt_rtx_fp32"):
    assert artifacts[name] == _manifest()["artifacts"][name], name
  assert verification.follow_sources(manifest) == []  # settled


@pytest.mark.unit
def test_a_chain_follows_its_first_unusable_link_and_a_dependant_keeps_its_own_rejection():
  manifest = _manifest()
  artifacts = manifest["artifacts"]
  artifacts["onnx_fp32"] = {"status": "rejected", "reason": "verification failed: x", "built_from": "native"}
  artifacts["onnx_int8"] = {"status": "ok", "built_from": "onnx_fp32"}
  artifacts["trt_rtx_fp32"]["status"], artifacts["trt_rtx_fp32"]["reason"] = "rejected", "verification failed: y"
  verification.follow_sources(manifest)
  assert artifacts["onnx_int8"] == {"status": "rejected", "built_from": "onnx_fp32",
                                    "reason": "built from onnx_fp32, which was rejected: verification failed: x"}
  assert artifacts["trt_rtx_int8"]["status"] == "rejected"
  assert artifacts["trt_rtx_int8"]["reason"] == (
      "built from onnx_int8, which was rejected: built from onnx_fp32, which was rejected: verification failed: x")
  assert artifacts["trt_rtx_fp32"]["reason"] == (
      "built from onnx_fp32, which was rejected: verification failed: x; verification failed: y")
  missing = {"artifacts": {"trt_rtx_int8": {"status": "ok", "built_from": "onnx_int8"}}}
  verification.follow_sources(missing)
  assert missing["artifacts"]["trt_rtx_int8"] == {"status": "skipped", "built_from": "onnx_int8",
                                                  "reason": "built from onnx_int8, which is missing"}


# --- a real export: onnx_int8 rejected by a user's tolerance, trt_rtx_int8 built from it --------------------------

RTX_MISSING = importlib.util.find_spec("tensorrt_rtx") is None


@pytest.mark.tf
@pytest.mark.skipif(RTX_MISSING, reason="TensorRT-RTX is not installed: pip install tensorrt-rtx-cu13")
def test_trt_rtx_int8_on_a_rejected_onnx_int8_is_rejected_and_never_served(tmp_path):
  """`verify_tolerance_int8=1e-6` (a user who wants INT8 exact): the regressor's onnx_int8 is honestly rejected
  by verification, after trt_rtx_int8 was built from it by the real TensorRT-RTX builder. trt_rtx_int8 ends
  `rejected` with onnx_int8's reason, is neither servable nor in the Triton repository (onnx_fp32 is)."""
  pytest.importorskip("onnxruntime")
  from tests import onnx_models  # pylint: disable=g-import-not-at-top
  from tftrt_keras.offline.export import export_saved_model  # pylint: disable=g-import-not-at-top
  keras = onnx_models.primary_keras()
  inputs = keras.Input((8,), name="x")
  hidden = keras.layers.Dense(32, activation="relu")(inputs)
  model = keras.Model(inputs, keras.layers.Dense(1, name="y")(keras.layers.Dense(32, activation="relu")(hidden)))
  onnx_models.save_keras_model(model, tmp_path / "regressor")
  samples = np.random.default_rng(0).normal(size=(96, 8)).astype("float32")
  options = ConversionOptions(formats=("onnx", "trt_rtx"), precisions=("FP32", "INT8"), verify_tolerance_int8=1e-6,
                              verify_timed_runs=2, verify_warmup_runs=0,
                              triton_repository=str(tmp_path / "triton"))
  manifest = export_saved_model(str(tmp_path / "regressor"), str(tmp_path / "out"), calibration_data={"x": samples},
                                options=options)
  artifacts = manifest["artifacts"]
  source, dependant = artifacts["onnx_int8"], artifacts["trt_rtx_int8"]
  assert source["status"] == "rejected", source
  assert source["reason"].startswith("verification failed: output `y`: max relative error ")
  assert dependant["built_from"] == "onnx_int8" and dependant.get("engine_bytes", 0) > 0, dependant
  assert dependant["status"] == "rejected"
  assert dependant["reason"] == f"built from onnx_int8, which was rejected: {source['reason']}"
  assert artifacts["trt_rtx_fp32"]["status"] in ("ok", "unverified"), artifacts["trt_rtx_fp32"]
  summary = manifest["verification"]
  assert "trt_rtx_int8" not in summary["servable"] and "onnx_int8" not in summary["servable"]
  assert {"onnx_int8", "trt_rtx_int8"} <= set(summary["rejected"])
  assert {"onnx_fp32", "trt_rtx_fp32"} <= set(summary["servable"])
  triton = manifest["serving"]["triton"]
  assert sorted(model["variant"] for model in triton["models"].values()) == ["onnx_fp32"], triton
  assert triton["left_out"]["trt_rtx_int8"] == f"the variant is rejected: {dependant['reason']}"
  published = sorted(os.listdir(tmp_path / "triton"))
  assert len(published) == 1 and published[0].endswith("onnx_fp32"), published
  report = (tmp_path / "out" / "manifests" / "1" / "report.md").read_text()
  assert f"trt_rtx_int8: rejected ({dependant['reason']})" in report
  with open(tmp_path / "out" / "manifests" / "1" / "manifest.json") as f:
    assert json.load(f)["artifacts"]["trt_rtx_int8"]["status"] == "rejected"

