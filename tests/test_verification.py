"""Verification: each artifact against the normal export on held-out samples, thresholds, rejection, latency."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tftrt_keras import agreement
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


@pytest.mark.unit
def test_wilson_upper_bound_mirrors_the_lower_one():
  z2 = 1.6448536269514722 ** 2
  for n in (16, 64, 500):  # none of n agreeing bounds the agreement from above at z^2 / (n + z^2)
    assert agreement.agreement_upper_bound(0, n) == pytest.approx(z2 / (n + z2))
  for agreeing, n in ((495, 500), (38, 40), (3, 4)):  # the Wilson interval is symmetric in agreeing/disagreeing
    assert agreement.agreement_upper_bound(agreeing, n) == pytest.approx(
        1 - agreement.agreement_lower_bound(n - agreeing, n))
  assert agreement.agreement_upper_bound(40, 40) == 1.0 and agreement.agreement_upper_bound(0, 0) == 1.0
  figures = agreement.compare_output(np.eye(3)[[0, 1, 2, 0]], np.eye(3)[[0, 1, 2, 1]])
  assert figures["top1_agreement_upper_bound"] == pytest.approx(agreement.agreement_upper_bound(3, 4), abs=1e-6)


def _agreeing(lower, upper, observed=1.0, samples=100):
  return {"probabilities": {"max_abs_error": 0.0, "max_relative_error": 0.0, "top1_agreement": observed,
                            "samples": samples, "top1_agreement_lower_bound": lower,
                            "top1_agreement_upper_bound": upper}}


@pytest.mark.unit
def test_agreement_verdict_is_three_way_on_the_bounds_with_the_gate_inclusive():
  thresholds = agreement.thresholds_for("INT8", ConversionOptions(verify_min_agreement=0.97))
  assert agreement.judge("INT8", _agreeing(0.97, 1.0), thresholds) == ("ok", None)  # lower bound clears it
  verdict, reason = agreement.judge("INT8", _agreeing(0.9699, 0.97), thresholds)
  assert verdict == "unverified" and "95% bounds [0.9699, 0.97] around the gate 0.97" in reason
  verdict, reason = agreement.judge("INT8", _agreeing(0.9, 0.9699, observed=0.94), thresholds)
  assert verdict == "rejected"
  assert reason == ("verification failed: output `probabilities`: top-1 agreement 0.94 on 100 samples, 95% upper "
                    "bound 0.9699 < 0.97 (INT8 threshold)")
  assert agreement.Verdict("ok", None).passed and not agreement.Verdict("unverified", "x").passed


@pytest.mark.unit
def test_verdict_words_are_the_manifest_statuses():
  from tftrt_keras.artifacts import manifest  # pylint: disable=g-import-not-at-top
  assert (agreement.OK, agreement.REJECTED, agreement.UNVERIFIED) == (manifest.OK, manifest.REJECTED,
                                                                      manifest.UNVERIFIED)
  assert set(manifest.USABLE_STATUSES) == {agreement.OK, agreement.UNVERIFIED}


# --- FP16 classifiers --------------------------------------------------------------------------------------------

def _fp16_figures(relative_error, agreeing, samples):
  return {"max_abs_error": relative_error * 0.9, "max_relative_error": relative_error, "scale": 0.9,
          "top1_agreement": agreeing / samples, "samples": samples,
          "top1_agreement_lower_bound": agreement.agreement_lower_bound(agreeing, samples),
          "top1_agreement_upper_bound": agreement.agreement_upper_bound(agreeing, samples)}


@pytest.mark.unit
def test_fp16_classifier_needs_its_top1_bound_and_its_error_bound():
  options = ConversionOptions(verify_tolerance_fp16_classifier=0.05)
  thresholds = agreement.thresholds_for("FP16", options)
  assert thresholds["classifier_max_relative_error"] == 0.05 and thresholds["max_relative_error"] == 0.01
  assert thresholds["classifier_judged_by"] == "top1_agreement_and_max_relative_error"
  # What FP16 arithmetic does to a deep depthwise network: probabilities move by a few percent, decisions stay.
  assert agreement.judge("FP16", {"p": _fp16_figures(0.03, 344, 345)}, thresholds) == ("ok", None)
  verdict, reason = agreement.judge("FP16", {"p": _fp16_figures(0.2, 345, 345)}, thresholds)
  assert verdict == "rejected" and "max relative error 0.2 > 0.05 (FP16 classifier tolerance" in reason
  verdict, reason = agreement.judge("FP16", {"p": _fp16_figures(0.03, 300, 345)}, thresholds)
  assert verdict == "rejected" and "top-1 agreement 0.8696 on 345 samples, 95% upper bound" in reason
  verdict, reason = agreement.judge("FP16", {"p": _fp16_figures(0.03, 40, 40)}, thresholds)
  assert verdict == "unverified" and "too few verification samples to tell" in reason
  # Both wrong: both figures in the reason. Too few samples but a broken error: rejected, not unverified.
  verdict, reason = agreement.judge("FP16", {"p": _fp16_figures(0.5, 300, 345)}, thresholds)
  assert verdict == "rejected" and "top-1 agreement" in reason and "max relative error 0.5" in reason
  assert agreement.judge("FP16", {"p": _fp16_figures(0.5, 40, 40)}, thresholds)[0] == "rejected"
  # Not classifier-like (a regression output): FP16's own tolerance, relative to the output's scale.
  verdict, reason = agreement.judge("FP16", {"value": {"max_abs_error": 0.02, "max_relative_error": 0.02}},
                                    thresholds)
  assert verdict == "rejected" and "max relative error 0.02 > 0.01 (FP16 tolerance" in reason
  # FP32 keeps judging classifiers by the error alone, observed.
  assert agreement.thresholds_for("FP32", options)["classifier_judged_by"] == "max_relative_error"


# --- outputs that do not vary ------------------------------------------------------------------------------------

@pytest.mark.unit
def test_outputs_that_do_not_vary_are_found_by_spread_and_one_class_apart():
  rng = np.random.default_rng(0)
  # What an untrained MobileNetV2 gives: ~0.1 for each of 10 classes, the same for every sample.
  # Here: class 3 ahead by 1e-6 everywhere, column 0 alternating +-2e-8 (standard deviation 2e-8).
  flat = np.full((24, 10), 0.1) + 1e-6 * np.eye(10)[3]
  flat[:, 0] += 2e-8 * np.resize([1, -1], 24)
  assert agreement.does_not_vary(agreement.output_variation(flat)) == (
      "spread across samples 2e-07 of its largest value 0.1 (< 0.001)")
  assert agreement.one_class(agreement.output_variation(flat)) == "top-1 class 3 for 24 of 24 samples"
  # Probabilities that vary, but one class for every one of 30 samples: they vary (a tolerance can judge them),
  # and top-1 agreement cannot tell.
  one_class = np.c_[rng.uniform(0.6, 0.99, 30), np.zeros(30)]
  one_class[:, 1] = 1 - one_class[:, 0]
  assert agreement.does_not_vary(agreement.output_variation(one_class)) is None
  assert agreement.one_class(agreement.output_variation(one_class)) == "top-1 class 0 for 30 of 30 samples"
  assert agreement.one_class(agreement.output_variation(one_class[:19])) is None  # too few to say
  mostly = np.eye(3)[[0] * 99 + [1]]
  assert agreement.one_class(agreement.output_variation(mostly)) == "top-1 class 0 for 99 of 100 samples"
  assert agreement.one_class(agreement.output_variation(np.eye(3)[[0] * 98 + [1, 2]])) is None
  assert agreement.one_class_words({"flat": agreement.output_variation(flat), "one": None}) == {
      "flat": "top-1 class 3 for 24 of 24 samples"}
  # A regression output: spread against its scale, not its offset; never one class.
  steady = agreement.output_variation(5.0 + rng.normal(scale=1e-4, size=(50,)))
  assert "spread across samples" in agreement.does_not_vary(steady) and agreement.one_class(steady) is None
  assert agreement.does_not_vary(agreement.output_variation(5.0 + rng.normal(scale=1e-2, size=(50,)))) is None
  assert agreement.does_not_vary(agreement.output_variation(np.zeros((8, 4)))) == "0 for all 8 samples"
  # Nothing to say about: integer outputs (judged by exact agreement), one sample (no spread to see).
  assert agreement.output_variation(np.zeros((50, 1), np.int64)) is None
  assert agreement.does_not_vary(agreement.output_variation(np.array([[0.2, 0.8]]))) is None
  assert agreement.outputs_not_varying({"flat": flat, "varies": rng.normal(size=(24, 10))}).keys() == {"flat"}


@pytest.mark.unit
def test_an_output_that_does_not_vary_can_reject_an_artifact_but_never_pass_it():
  options = ConversionOptions()
  steady = {"probabilities": "spread across samples 2e-07 of its largest value 0.1 (< 0.001)"}
  fine = {"probabilities": {"max_abs_error": 1e-7, "max_relative_error": 1e-6, "top1_agreement": 1.0,
                            "samples": 24, "top1_agreement_lower_bound": 0.9, "top1_agreement_upper_bound": 1.0}}
  for precision in ("frozen", "FP32", "FP16", "INT8"):
    verdict, reason = agreement.judge(precision, fine, agreement.thresholds_for(precision, options), steady)
    assert verdict == "unverified", precision
    assert reason.startswith("the model's outputs do not vary enough over the held-out samples to judge (output "
                             "`probabilities`: spread across samples 2e-07")
  broken = {"probabilities": dict(fine["probabilities"], max_abs_error=0.5, max_relative_error=5.0)}
  verdict, reason = agreement.judge("FP32", broken, agreement.thresholds_for("FP32", options), steady)
  assert verdict == "rejected" and "max relative error 5 > 0.001" in reason
  # Another output that varies and passes does not make up for one that cannot be judged.
  both = dict(fine, logits=dict(fine["probabilities"]))
  assert agreement.judge("FP32", both, agreement.thresholds_for("FP32", options), steady)[0] == "unverified"
  assert agreement.judge("FP32", both, agreement.thresholds_for("FP32", options), {}) == ("ok", None)


@pytest.mark.unit
def test_one_class_disqualifies_top1_verdicts_only_and_tolerance_verdicts_stand():
  """An imbalanced (or barely trained) classifier: one class for every held-out sample, varying scores. The
  frozen graph and FP32 are judged by their error on varying values: `ok`; FP16/INT8 by top-1 agreement, which
  any artifact leaning to that class would reach: `unverified`, saying why. A wrong artifact is still rejected."""
  options = ConversionOptions()
  single = {"probabilities": "top-1 class 0 for 500 of 500 samples"}
  fine = {"probabilities": dict(_top1(1.0, 500), max_abs_error=1e-6, max_relative_error=1e-6)}
  for precision in ("frozen", "FP32"):
    thresholds = agreement.thresholds_for(precision, options)
    assert agreement.judge(precision, fine, thresholds, {}, single) == ("ok", None), precision
  for precision in ("FP16", "INT8"):
    verdict, reason = agreement.judge(precision, fine, agreement.thresholds_for(precision, options), {}, single)
    assert verdict == "unverified", precision
    assert reason == ("top-1 agreement cannot judge: the normal export gives one class nearly everywhere (output "
                      "`probabilities`: top-1 class 0 for 500 of 500 samples)")
  # Without the one-class words the same figures pass: it is the one class that disqualifies them.
  assert agreement.judge("INT8", fine, agreement.thresholds_for("INT8", options)) == ("ok", None)
  wrong = {"probabilities": _top1(0.8, 500)}
  assert agreement.judge("INT8", wrong, agreement.thresholds_for("INT8", options), {}, single)[0] == "rejected"
  broken = {"probabilities": dict(fine["probabilities"], max_relative_error=0.5)}
  assert agreement.judge("FP32", broken, agreement.thresholds_for("FP32", options), {}, single)[0] == "rejected"


def _top1(agreement, samples):
  agreeing = round(agreement * samples)
  return {"max_abs_error": 0.3, "max_relative_error": 0.3, "top1_agreement": agreement, "samples": samples,
          "top1_agreement_lower_bound": verification.agreement_lower_bound(agreeing, samples),
          "top1_agreement_upper_bound": verification.agreement_upper_bound(agreeing, samples)}


@pytest.mark.unit
def test_int8_is_judged_by_top1_while_fp16_classifiers_also_by_their_error_bound():
  options = ConversionOptions()
  outputs = {"probabilities": _top1(0.996, 500)}  # max relative error 0.3
  assert verification.judge("INT8", outputs, verification.thresholds_for("INT8", options)) == ("ok", None)
  verdict, reason = verification.judge("FP16", outputs, verification.thresholds_for("FP16", options))
  assert verdict == "rejected"
  assert (f"output `probabilities`: max relative error 0.3 > {options.verify_tolerance_fp16_classifier:g} "
          "(FP16 classifier tolerance") in reason
  verdict, reason = verification.judge("INT8", {"probabilities": _top1(0.9, 500)},
                                       verification.thresholds_for("INT8", options))
  assert verdict == "rejected" and "top-1 agreement 0.9 on 500 samples, 95% upper bound 0.92" in reason
  assert "too few" not in reason  # clearly worse: not a question of sample size


@pytest.mark.unit
def test_the_frozen_graph_allows_constant_folding_not_a_wrong_graph():
  """Grappler's folding reorders FP32 arithmetic: EfficientNetB0's frozen graph differs from its SavedModel by
  3.0e-5 of the output's scale (benchmarks/bench_zoo.py), which must pass; an error a thousand times FP32's
  rounding must not."""
  thresholds = verification.thresholds_for("frozen", ConversionOptions())
  folded = {"predictions": {"max_abs_error": 3.0e-5, "max_relative_error": 3.0e-5, "scale": 1.0}}
  assert verification.judge("frozen", folded, thresholds) == ("ok", None)
  wrong = {"predictions": {"max_abs_error": 2e-4, "max_relative_error": 2e-4, "scale": 1.0}}
  verdict, reason = verification.judge("frozen", wrong, thresholds)
  assert verdict == "rejected" and "> 0.0001 (frozen graph tolerance" in reason, reason


@pytest.mark.unit
def test_perfect_agreement_on_too_few_samples_is_unverified_not_a_pass():
  """64 agreeing samples bound the agreement only at 0.959: the verdict must say it cannot tell."""
  options = ConversionOptions()
  verdict, reason = verification.judge("INT8", {"probabilities": _top1(1.0, 64)},
                                       verification.thresholds_for("INT8", options))
  assert verdict == "unverified"
  assert reason == ("output `probabilities`: too few verification samples to tell: top-1 agreement 1 on 64 samples, "
                    "95% bounds [0.9594, 1] around the gate 0.97 (raise verification_samples or give more "
                    "validation data)")
  assert verification.judge("INT8", {"probabilities": _top1(1.0, 120)},
                            verification.thresholds_for("INT8", options)) == ("ok", None)
  # A non-classifier INT8 output falls back to INT8's loose tolerance.
  regression = {"value": {"max_abs_error": 0.5, "max_relative_error": 0.2}}
  verdict, reason = verification.judge("INT8", regression, verification.thresholds_for("INT8", options))
  assert verdict == "rejected" and "max relative error 0.2 > 0.1" in reason


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


class _FakeClock:
  """Seconds that move only when a call runs: each call takes `seconds`."""

  def __init__(self, seconds):
    self.now, self.seconds, self.calls = 0.0, seconds, 0

  def __call__(self):
    return self.now

  def call(self):
    self.calls += 1
    self.now += self.seconds


@pytest.mark.unit
@pytest.mark.parametrize("seconds,budget,timed_runs,expected", [
    (0.5, 1.0, 20, 5),      # past the budget after 2 timed calls: the 5 made whatever the budget
    (0.3, 2.0, 20, 7),      # 7 calls of 0.3 s are the first past 2 s (2.1)
    (0.001, 1.0, 20, 20),   # fast calls: the budget never bites
    (0.5, 1.0, 3, 3),       # fewer asked than the floor: all of them
    (0.5, None, 20, 20),    # no budget
])
def test_measure_latency_stops_past_its_budget_and_says_how_many_it_timed(seconds, budget, timed_runs, expected):
  clock = _FakeClock(seconds)
  latency = verification.measure_latency(clock.call, warmup_runs=3, timed_runs=timed_runs, clock=clock,
                                         budget_seconds=budget)
  assert latency["timed_runs"] == expected and clock.calls == 1 + 3 + expected
  assert latency["p50_ms"] == latency["p99_ms"] == pytest.approx(seconds * 1000)


@pytest.mark.unit
def test_the_latency_budget_is_an_option_with_a_default():
  assert ConversionOptions().verify_latency_budget_seconds == 1.0
  assert ConversionOptions(verify_latency_budget_seconds=None).verify_latency_budget_seconds is None
  options = ConversionOptions(verify_latency_budget_seconds=0.25)
  assert ConversionOptions.from_json(options.to_json()).verify_latency_budget_seconds == 0.25


@pytest.mark.unit
@pytest.mark.parametrize("field,value", [("verify", "yes"), ("verify_tolerance_fp16", -0.1),
                                         ("verify_latency_budget_seconds", 0),
                                         ("verify_latency_budget_seconds", "1"),
                                         ("verify_latency_budget_seconds", True),
                                         ("verify_tolerance_fp16_classifier", -0.1),
                                         ("verify_tolerance_fp16_classifier", "0.05"),
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
def test_perturbed_int8_variant_is_rejected_with_its_figures(tmp_path, monkeypatch, fake_tftrt):
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
      options=ConversionOptions(formats=("tftrt",), verify_timed_runs=5))
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

  assert int8["reason"].startswith("verification failed: ") and "95% upper bound" in int8["reason"]

  for name in ("frozen", "tftrt_fp32", "tftrt_fp16"):  # unperturbed: within the tight tolerances
    assert artifacts[name]["verification"]["outputs"]["probabilities"]["max_relative_error"] <= 1e-5
  for name in ("frozen", "tftrt_fp32"):  # judged by their error alone: verified
    assert artifacts[name]["status"] == "ok", artifacts[name]
    assert artifacts[name]["verification"]["passed"] is True and "reason" not in artifacts[name]
  # FP16 classifiers are judged by top-1 agreement too, on its bounds: 16 agreeing samples cannot show 0.97.
  fp16 = artifacts["tftrt_fp16"]
  assert fp16["status"] == "unverified" and fp16["verification"]["verdict"] == "unverified"
  assert ("output `logits`: too few verification samples to tell: top-1 agreement 1 on 16 samples, 95% bounds "
          "[0.8554, 1] around the gate 0.97") in fp16["reason"]
  summary = manifest["verification"]
  assert "tftrt_int8" not in summary["servable"] and "tftrt_fp16" in summary["servable"]  # usable, and says so
  assert summary["rejected"] == ["tftrt_int8"] and summary["unverified"] == ["tftrt_fp16"]
  assert summary["batch_sizes"] == [1, 8]
  for name in ("native", "frozen", "tftrt_fp32", "tftrt_fp16", "tftrt_int8"):
    latency = artifacts[name]["verification"]["latency"]
    assert [row["batch_size"] for row in latency] == [1, 8]
    assert all(row["p99_ms"] >= row["p50_ms"] > 0 and row["first_call_ms"] > 0 for row in latency)
  manifest_dir = out / "manifests" / "1"
  assert json.loads((manifest_dir / "manifest.json").read_text())["artifacts"]["tftrt_int8"]["status"] == "rejected"
  report = (manifest_dir / "report.md").read_text()
  assert "| tftrt_int8 | rejected |" in report and "top-1 agreement" in report
  assert "| tftrt_fp16 | unverified |" in report and f"- tftrt_fp16: unverified: {fp16['reason']}" in report
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
def test_small_perturbation_rejects_fp32_while_fp16_and_int8_keep_their_decisions(tmp_path, monkeypatch, fake_tftrt):
  """Uses the TEST DOUBLE FakeTrtBackendForTests (selected by `backend`) in-process, FAKE_TRT_PERTURB on every
  precision: small enough to keep every decision on these samples, large enough for FP32's and FP16's (non-
  classifier) tolerances, within what FP16 arithmetic is allowed on a classifier's outputs."""
  from tests import saved_models  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv("FAKE_TRT_PERTURB", "0.015")
  # A latency budget no call fits: every batch size of every artifact is timed MIN_TIMED_RUNS times, not 7.
  options = ConversionOptions(formats=("tftrt",), verify_timed_runs=7,
                              verify_latency_budget_seconds=1e-9)
  # 600 samples: 150 held out, enough for the agreement bound to pass when every decision is kept.
  request = _prepare(tmp_path, options, samples=600)
  manifest = export_run.run_export(request)
  variant = _logits(np.load(tmp_path / "out" / "calibration" / "1" / "verification.npz")["x"],
                    _variables(tmp_path / "out" / "tftrt_fp16" / "1"))
  native = _logits(np.load(tmp_path / "out" / "calibration" / "1" / "verification.npz")["x"],
                   _variables(tmp_path / "out" / "1"))
  expected_relative = np.abs(variant - native).max() / np.abs(native).max()
  assert options.verify_tolerance_fp16 < expected_relative <= options.verify_tolerance_fp16_classifier
  assert (variant.argmax(1) == native.argmax(1)).all()
  artifacts = manifest["artifacts"]
  fp32, fp16 = artifacts["tftrt_fp32"], artifacts["tftrt_fp16"]
  assert fp32["status"] == "rejected"
  assert fp32["verification"]["outputs"]["logits"]["max_relative_error"] == pytest.approx(expected_relative, rel=1e-4)
  assert "output `logits`: max relative error" in fp32["reason"] and "(FP32 tolerance" in fp32["reason"]
  assert fp16["status"] == "ok", fp16
  assert fp16["verification"]["outputs"]["logits"]["max_relative_error"] == pytest.approx(expected_relative, rel=1e-4)
  assert fp16["verification"]["outputs"]["logits"]["top1_agreement_lower_bound"] >= 0.97
  assert fp16["verification"]["thresholds"]["classifier_max_relative_error"] == options.verify_tolerance_fp16_classifier
  assert artifacts["tftrt_int8"]["status"] == "ok"
  assert artifacts["tftrt_int8"]["verification"]["outputs"]["logits"]["top1_agreement"] == 1.0
  assert artifacts["frozen"]["status"] == "ok"
  assert manifest["verification"]["servable"] == ["native", "frozen", "tftrt_fp16", "tftrt_int8"]
  assert manifest["verification"]["unverified"] == []
  for name in ("native", "frozen", "tftrt_fp32", "tftrt_fp16", "tftrt_int8"):
    assert [row["timed_runs"] for row in artifacts[name]["verification"]["latency"]] == [5, 5], name
  assert manifest["verification"]["timed_runs"] == 7 and manifest["verification"]["min_timed_runs"] == 5
  report = (tmp_path / "out" / "manifests" / "1" / "report.md").read_text()
  assert "over 7 calls per batch size (fewer where the timed calls passed 1e-09 s: native b1 5," in report


@pytest.mark.tf
def test_an_artifact_that_cannot_run_is_recorded_not_raised(tmp_path, fake_tftrt):
  """Uses the TEST DOUBLE FakeTrtBackendForTests (selected by `backend`) in-process; the frozen graph is then
  corrupted on disk."""
  from tests import saved_models  # pylint: disable=g-import-not-at-top
  from tftrt_keras.pipeline import run as pipeline  # pylint: disable=g-import-not-at-top
  request = _prepare(tmp_path, ConversionOptions(precisions=("FP16",), formats=("tftrt",),
                                                 verify_timed_runs=2, verify_warmup_runs=0))
  export_run.run_export(request)
  with open(tmp_path / "out" / "frozen" / "1" / "frozen_graph.pb", "wb") as f:
    f.write(b"not a GraphDef")
  run = export_run.ExportRun(request)
  summary = verification.verify_export(run)
  frozen = run.manifest["artifacts"]["frozen"]
  assert "error" in frozen["verification"] and "DecodeError" in frozen["verification"]["error"]
  # Built and build-checked, but no comparison ran on it: unverified with why, never ok (as it was before).
  assert frozen["status"] == "unverified" and frozen["reason"].startswith("verification could not run: DecodeError")
  fp16 = run.manifest["artifacts"]["tftrt_fp16"]
  assert fp16["verification"]["outputs"]["probabilities"]["max_relative_error"] <= 1e-5  # the next one still ran
  assert summary["unverified"] == ["frozen", "tftrt_fp16"]  # tftrt_fp16: 16 samples, too few to tell
  report = (tmp_path / "out" / "manifests" / "1" / "report.md").read_text()
  assert "- frozen: unverified: verification could not run: DecodeError" in report


@pytest.mark.tf
def test_verify_false_records_why_and_writes_no_report(tmp_path, fake_tftrt):
  """Uses the TEST DOUBLE FakeTrtBackendForTests (selected by `backend`) in-process."""
  from tests import saved_models  # pylint: disable=g-import-not-at-top
  from tftrt_keras.pipeline import run as pipeline  # pylint: disable=g-import-not-at-top
  request = _prepare(tmp_path, ConversionOptions(precisions=("FP32",), formats=("tftrt",),
                                                 verify=False))
  manifest = export_run.run_export(request)
  assert "verify=False" in manifest["verification"]["skipped"]
  assert not any("verification" in entry for entry in manifest["artifacts"].values())
  for name in ("frozen", "tftrt_fp32"):  # built and build-checked, never compared: unverified, not ok
    entry = manifest["artifacts"][name]
    assert (entry["status"], entry["reason"]) == ("unverified", "verification turned off (verify=False)"), entry
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
def test_exact_outputs_are_judged_on_the_observed_agreement_except_under_int8_and_fp16():
  """Integer outputs of the frozen graph or an FP32 variant must agree, not pass a statistical bound: 40 of 40
  agreeing samples pass there, while INT8 or FP16 (which change some decisions) on the same 40 cannot show
  their 0.97; and 38 of 40 is a rejection there, too few to tell here."""
  options = ConversionOptions()
  ids = verification.compare_output(np.arange(40)[:, None], np.arange(40)[:, None])
  assert verification.judge("frozen", {"ids": ids}, verification.thresholds_for("frozen", options)) == ("ok", None)
  assert verification.judge("FP32", {"ids": ids}, verification.thresholds_for("FP32", options)) == ("ok", None)
  for precision in ("INT8", "FP16"):
    verdict, reason = verification.judge(precision, {"ids": ids}, verification.thresholds_for(precision, options))
    assert verdict == "unverified" and "values agree on 1 on 40 samples, 95% bounds [0.9366, 1]" in reason
  flipped = verification.compare_output(np.arange(40)[:, None], np.r_[np.arange(38), 0, 0][:, None])
  verdict, reason = verification.judge("FP32", {"ids": flipped}, verification.thresholds_for("FP32", options))
  assert verdict == "rejected" and reason.endswith("values agree on 0.95 on 40 samples < 0.97 (FP32 threshold)")
  verdict, reason = verification.judge("FP16", {"ids": flipped}, verification.thresholds_for("FP16", options))
  assert verdict == "unverified" and "too few verification samples to tell: values agree on 0.95" in reason
