"""Verification: each artifact against the normal export on held-out samples, thresholds, rejection, latency."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tftrt_keras.verify import verification
from tftrt_keras.options import ConversionOptions
from tftrt_keras.pipeline import prepare
from tftrt_keras.pipeline import run as export_run

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- figures and thresholds (numpy only) ----------------------------------------------------------------------

@pytest.mark.unit
def test_compare_output_hand_computed_figures():
  reference = np.array([[1.0, 2.0, 4.0], [3.0, 2.0, 1.0]], np.float32)
  candidate = np.array([[1.0, 2.5, 4.0], [3.0, 3.5, 1.0]], np.float32)  # row 2's top-1 flips to column 1
  figures = verification.compare_output(reference, candidate)
  assert figures["max_abs_error"] == pytest.approx(1.5)
  assert figures["max_relative_error"] == pytest.approx(1.5 / 4.0)
  assert figures["top1_agreement"] == pytest.approx(0.5)


@pytest.mark.unit
def test_compare_output_non_float_nan_and_shape():
  ids = verification.compare_output(np.array([[1, 2], [3, 4], [5, 6], [7, 8]]), np.array([[1, 2], [3, 0], [5, 6],
                                                                                           [7, 8]]))
  assert ids["agreement"] == 0.75 and ids["samples"] == 4
  assert ids["agreement_lower_bound"] == pytest.approx(verification.agreement_lower_bound(3, 4))
  nan = verification.compare_output(np.array([1.0, np.nan, 2.0]), np.array([1.0, np.nan, np.nan]))
  assert nan["max_abs_error"] == float("inf")  # NaN where the normal export has a number fails any tolerance
  assert "top1_agreement" not in nan  # rank 1: not classifier-like
  assert "shape_mismatch" in verification.compare_output(np.zeros((4, 3)), np.zeros((4, 2)))


@pytest.mark.unit
def test_wilson_lower_bound_matches_hand_computed_values():
  # One-sided 95% (z = 1.645): n agreeing of n bounds the agreement at n / (n + z^2).
  for n in (16, 64, 100, 500):
    assert verification.agreement_lower_bound(n, n) == pytest.approx(n / (n + 1.6448536269514722 ** 2))
  # 495 of 500 (0.99): p=0.99, z^2/n=0.005411, centre 0.992706, margin 0.007825 -> 0.979565
  assert verification.agreement_lower_bound(495, 500) == pytest.approx(0.97957, abs=1e-4)
  assert verification.agreement_lower_bound(0, 10) == 0.0 and verification.agreement_lower_bound(0, 0) == 0.0
  assert verification.agreement_lower_bound(90, 100) < 0.9 < verification.agreement_lower_bound(99, 100)


def _top1(agreement, samples):
  agreeing = round(agreement * samples)
  return {"max_abs_error": 0.3, "max_relative_error": 0.3, "top1_agreement": agreement, "samples": samples,
          "top1_agreement_lower_bound": verification.agreement_lower_bound(agreeing, samples)}


@pytest.mark.unit
def test_int8_is_judged_by_top1_lower_bound_while_fp16_is_judged_by_error():
  options = ConversionOptions()
  outputs = {"probabilities": _top1(0.996, 500)}
  assert verification.judge("INT8", outputs, verification.thresholds_for("INT8", options)) == (True, None)
  passed, reason = verification.judge("FP16", outputs, verification.thresholds_for("FP16", options))
  assert not passed
  assert "output `probabilities`: max relative error 0.3 > 0.01" in reason
  passed, reason = verification.judge("INT8", {"probabilities": _top1(0.9, 500)},
                                      verification.thresholds_for("INT8", options))
  assert not passed and "top-1 agreement 0.9 on 500 samples, 95% lower bound 0.8" in reason
  assert "too few" not in reason  # clearly worse: not a question of sample size


@pytest.mark.unit
def test_perfect_agreement_on_too_few_samples_is_not_a_pass():
  """64 agreeing samples bound the agreement only at 0.959: the verdict must say it cannot tell."""
  options = ConversionOptions()
  passed, reason = verification.judge("INT8", {"probabilities": _top1(1.0, 64)},
                                      verification.thresholds_for("INT8", options))
  assert not passed
  assert "top-1 agreement 1 on 64 samples, 95% lower bound 0.9594 < 0.97" in reason
  assert "too few verification samples to tell" in reason
  assert verification.judge("INT8", {"probabilities": _top1(1.0, 120)},
                            verification.thresholds_for("INT8", options)) == (True, None)
  # A non-classifier INT8 output falls back to INT8's loose tolerance.
  regression = {"value": {"max_abs_error": 0.5, "max_relative_error": 0.2}}
  passed, reason = verification.judge("INT8", regression, verification.thresholds_for("INT8", options))
  assert not passed and "max relative error 0.2 > 0.1" in reason


@pytest.mark.unit
def test_precision_comes_from_the_artifact_name_for_any_backend():
  assert [verification.precision_of(n) for n in ("frozen", "tftrt_fp16", "trt_int8", "onnx")] == [
      "frozen", "FP16", "INT8", None]
  custom = ConversionOptions(verify_tolerance_fp16=0.5, verify_min_agreement=0.9)
  assert verification.thresholds_for("FP16", custom)["max_relative_error"] == 0.5
  assert verification.thresholds_for("INT8", custom)["min_agreement"] == 0.9


@pytest.mark.unit
def test_measure_latency_times_first_call_apart_from_the_median():
  ticks = iter([0.0, 2.0] + [x for i in range(5) for x in (10.0 + i, 10.0 + i + 0.001 * (i + 1))])
  calls = []
  latency = verification.measure_latency(lambda: calls.append(1), warmup_runs=2, timed_runs=5,
                                         clock=lambda: next(ticks))
  assert len(calls) == 1 + 2 + 5
  assert latency["first_call_ms"] == pytest.approx(2000.0)
  assert latency["p50_ms"] == pytest.approx(3.0)
  assert latency["p99_ms"] == pytest.approx(4.96)  # numpy's linear interpolation between 4 ms and 5 ms


@pytest.mark.unit
@pytest.mark.parametrize("field,value", [("verify", "yes"), ("verify_tolerance_fp16", -0.1),
                                         ("verify_min_agreement", 1.5), ("verify_timed_runs", 0),
                                         ("verify_warmup_runs", -1)])
def test_bad_verification_options_name_the_argument(field, value):
  with pytest.raises(ValueError, match=f"argument `{field}`. Received: {field}="):
    ConversionOptions(**{field: value})


# --- real exports ---------------------------------------------------------------------------------------------

def _variables(saved_model_dir):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  loaded = tf.saved_model.load(str(saved_model_dir))
  return {v.name.split(":")[0]: v.numpy() for v in loaded.signatures["serving_default"].variables}


def _logits(x, weights):
  return x @ weights["w"] + weights["b"]


@pytest.mark.tf
def test_perturbed_int8_variant_is_rejected_with_its_figures(tmp_path, monkeypatch):
  """Uses the TEST DOUBLE FakeTrtBackendForTests (FAKE_TRT_PERTURB on INT8 only), end to end through
  `export_saved_model` and its worker process."""
  import tftrt_keras  # pylint: disable=g-import-not-at-top
  from tests import saved_models  # pylint: disable=g-import-not-at-top
  # seed=1: with seed 0 the double's noise (also seeded 0) equals the weights, a pure rescale keeping top-1.
  reference = saved_models.classifier(tmp_path / "model", seed=1)
  monkeypatch.setenv("FAKE_TRT_PERTURB", "0.5")
  monkeypatch.setenv("FAKE_TRT_PERTURB_PRECISIONS", "INT8")
  out = tmp_path / "out"
  manifest = tftrt_keras.export_saved_model(
      str(tmp_path / "model"), str(out), calibration_data=saved_models.samples(64), calibration_batch_size=8,
      options=ConversionOptions(backend=saved_models.FAKE_BACKEND, formats=("tftrt",), verify_timed_runs=5))
  artifacts = manifest["artifacts"]
  held_out = np.load(out / "calibration" / "1" / "verification.npz")["x"]
  calibration = np.load(out / "calibration" / "1" / "calibration.npz")["x"]
  assert not any((row == calibration).all(axis=1).any() for row in held_out)  # verified on unseen samples

  # Hand-computed from the variant's own (perturbed) weights and the numpy reference of the original model.
  native_logits = reference(held_out)["logits"]
  int8_logits = _logits(held_out, _variables(out / "tftrt_int8" / "1"))
  expected_top1 = float(np.mean(native_logits.argmax(1) == int8_logits.argmax(1)))
  assert expected_top1 < 0.97  # the perturbation must flip some decisions for this test to mean anything
  int8 = artifacts["tftrt_int8"]
  assert int8["status"] == "rejected"
  figures = int8["verification"]["outputs"]["logits"]
  assert figures["top1_agreement"] == pytest.approx(expected_top1)
  assert figures["max_abs_error"] == pytest.approx(np.abs(native_logits - int8_logits).max(), rel=1e-4)
  assert f"output `logits`: top-1 agreement {expected_top1:.4g} on {len(held_out)} samples" in int8["reason"]
  assert int8["verification"]["samples"] == len(held_out)

  for name in ("frozen", "tftrt_fp32", "tftrt_fp16"):  # unperturbed: within the tight tolerances
    assert artifacts[name]["status"] == "ok", artifacts[name]
    assert artifacts[name]["verification"]["passed"] is True
    assert artifacts[name]["verification"]["outputs"]["probabilities"]["max_relative_error"] <= 1e-5
  summary = manifest["verification"]
  assert "tftrt_int8" not in summary["servable"] and "tftrt_fp16" in summary["servable"]
  assert summary["rejected"] == ["tftrt_int8"]
  assert summary["batch_sizes"] == [1, 8]
  for name in ("native", "frozen", "tftrt_fp32", "tftrt_fp16", "tftrt_int8"):
    latency = artifacts[name]["verification"]["latency"]
    assert [row["batch_size"] for row in latency] == [1, 8]
    assert all(row["p99_ms"] >= row["p50_ms"] > 0 and row["first_call_ms"] > 0 for row in latency)
  manifest_dir = out / "manifests" / "1"
  assert json.loads((manifest_dir / "manifest.json").read_text())["artifacts"]["tftrt_int8"]["status"] == "rejected"
  report = (manifest_dir / "report.md").read_text()
  assert "| tftrt_int8 | rejected |" in report and "top-1 agreement" in report
  assert (manifest_dir / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _prepare(tmp_path, options, seed=1, samples=64):
  from tests import saved_models  # pylint: disable=g-import-not-at-top
  from tftrt_keras.pipeline import prepare
  from tftrt_keras.pipeline import run as export_run
  from tftrt_keras.samples import calibration_data  # pylint: disable=g-import-not-at-top
  saved_models.classifier(tmp_path / "model", seed=seed)

  write_native = saved_models.writer_copying(tmp_path / "model")
  return prepare.prepare_export(str(tmp_path / "out"), 1, {"kind": "test"}, options, write_native=write_native,
                                 batches=calibration_data.batches(saved_models.samples(samples), 8))


@pytest.mark.tf
def test_small_perturbation_rejects_fp16_but_int8_keeps_its_decisions(tmp_path, monkeypatch):
  """Uses the TEST DOUBLE FakeTrtBackendForTests (selected by `backend`) in-process, FAKE_TRT_PERTURB on every
  precision: small enough to keep every decision on these samples, large enough for FP16's tolerance."""
  from tests import saved_models  # pylint: disable=g-import-not-at-top
  from tftrt_keras.pipeline import run as pipeline  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv("FAKE_TRT_PERTURB", "0.015")
  # 600 samples: 150 held out, enough for INT8's agreement bound to pass when every decision is kept.
  request = _prepare(tmp_path, ConversionOptions(backend=saved_models.FAKE_BACKEND, formats=("tftrt",),
                                                 verify_timed_runs=3), samples=600)
  manifest = export_run.run_export(request)
  variant = _logits(np.load(tmp_path / "out" / "calibration" / "1" / "verification.npz")["x"],
                    _variables(tmp_path / "out" / "tftrt_fp16" / "1"))
  native = _logits(np.load(tmp_path / "out" / "calibration" / "1" / "verification.npz")["x"],
                   _variables(tmp_path / "out" / "1"))
  expected_relative = np.abs(variant - native).max() / np.abs(native).max()
  assert expected_relative > 0.01 and (variant.argmax(1) == native.argmax(1)).all()
  artifacts = manifest["artifacts"]
  for name in ("tftrt_fp32", "tftrt_fp16"):
    assert artifacts[name]["status"] == "rejected"
    assert artifacts[name]["verification"]["outputs"]["logits"]["max_relative_error"] == pytest.approx(
        expected_relative, rel=1e-4)
    assert "output `logits`: max relative error" in artifacts[name]["reason"]
  assert artifacts["tftrt_int8"]["status"] == "ok"
  assert artifacts["tftrt_int8"]["verification"]["outputs"]["logits"]["top1_agreement"] == 1.0
  assert artifacts["frozen"]["status"] == "ok"
  assert manifest["verification"]["servable"] == ["native", "frozen", "tftrt_int8"]


@pytest.mark.tf
def test_an_artifact_that_cannot_run_is_recorded_not_raised(tmp_path):
  """Uses the TEST DOUBLE FakeTrtBackendForTests (selected by `backend`) in-process; the frozen graph is then
  corrupted on disk."""
  from tests import saved_models  # pylint: disable=g-import-not-at-top
  from tftrt_keras.pipeline import run as pipeline  # pylint: disable=g-import-not-at-top
  request = _prepare(tmp_path, ConversionOptions(backend=saved_models.FAKE_BACKEND, precisions=("FP16",), formats=("tftrt",),
                                                 verify_timed_runs=2, verify_warmup_runs=0))
  export_run.run_export(request)
  with open(tmp_path / "out" / "frozen" / "1" / "frozen_graph.pb", "wb") as f:
    f.write(b"not a GraphDef")
  run = export_run.ExportRun(request)
  summary = verification.verify_export(run)
  frozen = run.manifest["artifacts"]["frozen"]
  assert "error" in frozen["verification"] and "DecodeError" in frozen["verification"]["error"]
  assert summary["unverified"] == ["frozen"]
  assert run.manifest["artifacts"]["tftrt_fp16"]["verification"]["passed"] is True  # the next one still ran
  report = (tmp_path / "out" / "manifests" / "1" / "report.md").read_text()
  assert "frozen: could not be verified: DecodeError" in report


@pytest.mark.tf
def test_verify_false_records_why_and_writes_no_report(tmp_path):
  """Uses the TEST DOUBLE FakeTrtBackendForTests (selected by `backend`) in-process."""
  from tests import saved_models  # pylint: disable=g-import-not-at-top
  from tftrt_keras.pipeline import run as pipeline  # pylint: disable=g-import-not-at-top
  request = _prepare(tmp_path, ConversionOptions(backend=saved_models.FAKE_BACKEND, precisions=("FP32",), formats=("tftrt",),
                                                 verify=False))
  manifest = export_run.run_export(request)
  assert "verify=False" in manifest["verification"]["skipped"]
  assert not any("verification" in entry for entry in manifest["artifacts"].values())
  assert not os.path.exists(tmp_path / "out" / "manifests" / "1" / "report.md")


@pytest.mark.tf
def test_cli_verifies_the_frozen_graph_without_tensorrt_and_prints_the_table(tmp_path):
  """The product's own TF-TRT backend, as a user runs it: on this machine TF-TRT variants are skipped (no
  TensorRT), the frozen graph is still verified against the normal export, and the table is printed."""
  from tests import saved_models  # pylint: disable=g-import-not-at-top
  reference = saved_models.classifier(tmp_path / "model", seed=2)
  np.savez(tmp_path / "samples.npz", **saved_models.samples(32))
  result = subprocess.run(
      [sys.executable, "-m", "export.tftrt_export", f"--saved_model_dir={tmp_path / 'model'}",
       f"--output_dir={tmp_path / 'out'}", f"--calibration_data={tmp_path / 'samples.npz'}",
       "--calibration_batch_size=8", "--export_precisions=FP32,INT8", "--export_formats=tftrt"],
      cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  manifest = json.loads((tmp_path / "out" / "manifests" / "1" / "manifest.json").read_text())
  frozen = manifest["artifacts"]["frozen"]
  assert frozen["status"] == "ok" and frozen["verification"]["passed"] is True
  held_out = np.load(tmp_path / "out" / "calibration" / "1" / "verification.npz")["x"]
  # The frozen graph matches the hand-computed model closely, so its recorded error must be ~0 too.
  assert np.abs(reference(held_out)["logits"]).max() == pytest.approx(
      frozen["verification"]["outputs"]["logits"]["scale"], rel=1e-5)
  assert frozen["verification"]["outputs"]["logits"]["max_relative_error"] <= 1e-5
  lines = result.stdout.splitlines()
  header = next(i for i, line in enumerate(lines) if line.startswith("artifact") and "b1 p50 ms" in line)
  rows = {line.split()[0]: line.split() for line in lines[header + 2:] if line.strip()}
  assert rows["native"][1:3] == ["ok", "reference"]
  assert rows["frozen"][1] == "ok"
  for name in ("tftrt_fp32", "tftrt_int8"):
    entry = manifest["artifacts"][name]
    if entry["status"] == "skipped":
      assert name not in rows  # not produced here: nothing to verify, and the table does not pretend otherwise
    else:
      assert "verification" in entry and name in rows
  assert (tmp_path / "out" / "manifests" / "1" / "latency.png").stat().st_size > 1000


@pytest.mark.unit
def test_exact_outputs_outside_int8_are_judged_on_the_observed_agreement():
  """Integer outputs of the frozen graph or an FP32 variant must agree, not pass a statistical bound: 40 of 40
  agreeing samples pass there, while INT8 on the same 40 cannot show its 0.97."""
  options = ConversionOptions()
  ids = verification.compare_output(np.arange(40)[:, None], np.arange(40)[:, None])
  assert verification.judge("frozen", {"ids": ids}, verification.thresholds_for("frozen", options)) == (True, None)
  assert verification.judge("FP32", {"ids": ids}, verification.thresholds_for("FP32", options)) == (True, None)
  passed, reason = verification.judge("INT8", {"ids": ids}, verification.thresholds_for("INT8", options))
  assert not passed and "values agree on 1 on 40 samples, 95% lower bound" in reason
  flipped = verification.compare_output(np.arange(40)[:, None], np.r_[np.arange(38), 0, 0][:, None])
  passed, reason = verification.judge("FP16", {"ids": flipped}, verification.thresholds_for("FP16", options))
  assert not passed and reason.endswith("values agree on 0.95 on 40 samples < 0.97 (FP16 threshold)")
