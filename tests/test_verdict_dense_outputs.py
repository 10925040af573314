"""Dense outputs judged per element: per-pixel (per-token) softmax by per-element top-1 agreement on bounds that
count a sample's elements as related, other dense values by an error quantile at FP16/INT8 (the worst element
reported), FP32 and the frozen graph by their max error as before."""

import json

import numpy as np
import pytest

from tftrt_keras import agreement
from tftrt_keras.options import ConversionOptions

OPTIONS = ConversionOptions()


def _softmax(logits):
  exp = np.exp(logits - logits.max(axis=-1, keepdims=True))
  return exp / exp.sum(axis=-1, keepdims=True)


def _segmentation(samples=60, side=16, classes=3, seed=0):
  """Per-pixel probabilities as a U-Net's final softmax gives them, float32 (N, H, W, C)."""
  return _softmax(np.random.default_rng(seed).normal(scale=3.0, size=(samples, side, side, classes))).astype(
      np.float32)


def _flip(probabilities, pixels):
  """A copy with the classes of the given flat pixel indices reversed (their top-1 changes unless tied)."""
  out = probabilities.copy()
  flat = out.reshape(-1, out.shape[-1])
  flat[pixels] = flat[pixels][:, ::-1]
  return out


def _changed(reference, candidate):
  return int(np.sum(np.argmax(reference, -1) != np.argmax(candidate, -1)))


@pytest.mark.unit
def test_which_outputs_are_per_element_classification():
  probabilities = _segmentation()
  assert agreement.is_dense_classification(probabilities) and not agreement.is_dense_values(probabilities)
  assert agreement.is_dense_classification(_softmax(np.ones((4, 7, 5))))  # per-token tagging (N, T, C)
  logits = np.log(probabilities)
  assert not agreement.is_dense_classification(logits) and agreement.is_dense_values(logits)
  assert not agreement.is_dense_classification(probabilities[..., :1])  # one channel: a mask, not classes
  assert not agreement.is_dense_classification(probabilities * 0.9)  # does not sum to 1
  assert not agreement.is_dense_classification(probabilities[:, 0, 0])  # rank 2: today's rule
  assert agreement.is_classifier_like(probabilities[:, 0, 0])
  assert not agreement.is_dense_classification(probabilities.astype(np.int32))
  image = np.random.default_rng(1).uniform(size=(4, 8, 8, 3))
  assert agreement.is_dense_values(image) and not agreement.is_dense_classification(image)


@pytest.mark.unit
def test_clustered_disagreement_gives_a_wider_bound_than_independent_elements():
  samples, elements = 100, 1000
  # 1% of elements disagree either way: ten in every sample, or every element of one sample.
  scattered = agreement.clustered_bounds(np.full(samples, elements - 10), elements)
  clustered = agreement.clustered_bounds(np.r_[np.full(samples - 1, elements), 0], elements)
  assert scattered["effective_elements"] == samples * elements  # no more than the elements
  assert clustered["effective_elements"] == samples  # a sample counts once, never less
  assert clustered["lower_bound"] < scattered["lower_bound"] - 0.02
  assert clustered["upper_bound"] > scattered["upper_bound"]
  assert scattered["lower_bound"] == pytest.approx(agreement.agreement_lower_bound(0.99 * 1e5, 1e5), abs=1e-6)
  assert clustered["lower_bound"] == pytest.approx(agreement.agreement_lower_bound(99, 100), abs=1e-6)
  # In between: disagreements in 10 of the samples, 10% of each.
  some = agreement.clustered_bounds(np.r_[np.full(90, elements), np.full(10, 900)], elements)
  assert samples < some["effective_elements"] < samples * elements
  assert clustered["lower_bound"] < some["lower_bound"] < scattered["lower_bound"]


@pytest.mark.unit
def test_all_agreeing_is_never_less_confident_than_counting_each_sample_once_and_stays_monotone():
  for samples in (5, 30, 200):
    perfect = agreement.clustered_bounds(np.full(samples, 256), 256)
    assert perfect["lower_bound"] >= agreement.agreement_lower_bound(samples, samples)
    one_off = agreement.clustered_bounds(np.r_[255, np.full(samples - 1, 256)], 256)
    assert one_off["lower_bound"] <= perfect["lower_bound"]
  # One sample: nothing is known across samples, it counts once.
  assert agreement.clustered_bounds([256], 256)["effective_elements"] == 1


@pytest.mark.unit
def test_a_segmentation_agreeing_on_999_of_1000_pixels_passes_at_int8_and_fp16():
  """The U-Net case: INT8 moves one probability by more than the tolerance (its max relative error would have
  rejected it) while its per-pixel decisions agree with the normal export's on 99.9% of pixels."""
  reference = _segmentation()
  total = reference.size // reference.shape[-1]
  pixels = np.random.default_rng(2).choice(total, size=total // 1000, replace=False)
  candidate = _flip(reference, pixels)
  figures = agreement.compare_output(reference, candidate)
  changed = _changed(reference, candidate)
  assert figures["max_relative_error"] > OPTIONS.verify_tolerance_int8
  assert figures["element_top1_agreement"] == pytest.approx(1 - changed / total)
  assert figures["elements"] == total and figures["samples"] == 60
  assert figures["element_top1_agreement_lower_bound"] > 0.99
  assert "top1_agreement" not in figures and "relative_error_quantile" not in figures
  assert agreement.judge("INT8", {"mask": figures}, agreement.thresholds_for("INT8", OPTIONS)) == ("ok", None)
  # FP16 also bounds the worst error (at verify_tolerance_fp16_classifier): a flipped pixel is beyond it.
  fp16 = agreement.judge("FP16", {"mask": figures}, agreement.thresholds_for("FP16", OPTIONS))
  assert fp16.status == "rejected" and "FP16 classifier tolerance" in fp16.reason
  assert "per-element top-1" not in fp16.reason
  near = agreement.compare_output(reference, reference + np.float32(1e-3) * (reference > 0.5))
  assert agreement.judge("FP16", {"mask": near}, agreement.thresholds_for("FP16", OPTIONS)) == ("ok", None)
  # FP32 and the frozen graph keep the max error: the flipped pixels reject them.
  for precision in ("FP32", "frozen"):
    verdict = agreement.judge(precision, {"mask": figures}, agreement.thresholds_for(precision, OPTIONS))
    assert verdict.status == "rejected" and "max relative error" in verdict.reason, precision


@pytest.mark.unit
def test_a_broken_segmentation_is_rejected_and_a_clustered_one_is_not_passed():
  reference = _segmentation()
  total = reference.size // reference.shape[-1]
  broken = _flip(reference, np.random.default_rng(3).choice(total, size=total // 10, replace=False))
  verdict = agreement.judge("INT8", {"mask": agreement.compare_output(reference, broken)},
                            agreement.thresholds_for("INT8", OPTIONS))
  assert verdict.status == "rejected"
  assert "output `mask`: per-element top-1 agreement 0.9" in verdict.reason
  assert f"on {total} elements of 60 samples" in verdict.reason
  # 1% of the pixels wrong, all in one image: as independent pixels 99% would clear the gate (0.97); counted
  # as what they are, one image of 60 wrong, it cannot.
  whole_image = _flip(reference, np.arange(256))
  figures = agreement.compare_output(reference, whole_image)
  assert figures["element_top1_agreement"] == pytest.approx(1 - _changed(reference, whole_image) / total)
  assert agreement.agreement_lower_bound(figures["element_top1_agreement"] * total, total) > 0.97
  assert 60 <= figures["effective_elements"] < 2 * 60  # about one per image, not one per pixel
  verdict = agreement.judge("INT8", {"mask": figures}, agreement.thresholds_for("INT8", OPTIONS))
  assert verdict.status != "ok"
  assert f"({figures['effective_elements']:.4g} effective), 95% bounds" in verdict.reason


@pytest.mark.unit
def test_dense_values_are_judged_by_an_error_quantile_at_fp16_and_int8_with_the_worst_reported():
  rng = np.random.default_rng(4)
  reference = rng.normal(size=(40, 12, 12, 2)).astype(np.float32)  # a regressed field, scale ~4
  candidate = reference + rng.normal(scale=1e-3, size=reference.shape).astype(np.float32)
  candidate[0, 0, 0, 0] += 3.0  # one element in 11520 far off
  figures = agreement.compare_output(reference, candidate)
  scale = float(np.abs(reference).max())
  assert figures["elements"] == reference.size and figures["samples"] == 40
  assert figures["max_relative_error"] == pytest.approx(np.abs(candidate - reference).max() / scale, rel=1e-5)
  assert figures["relative_error_quantile"] == pytest.approx(
      np.quantile(np.abs(candidate.astype(np.float64) - reference), 0.99) / scale, rel=1e-6)
  assert figures["relative_error_quantile"] < 0.01 < figures["max_relative_error"]
  assert "element_top1_agreement" not in figures and "top1_agreement" not in figures
  for precision in ("FP16", "INT8"):
    thresholds = agreement.thresholds_for(precision, OPTIONS)
    assert thresholds["dense_judged_by"] == "relative_error_quantile" and thresholds["dense_error_quantile"] == 0.99
    assert agreement.judge(precision, {"field": figures}, thresholds) == ("ok", None), precision
  for precision in ("FP32", "frozen"):
    verdict = agreement.judge(precision, {"field": figures}, agreement.thresholds_for(precision, OPTIONS))
    assert verdict.status == "rejected" and verdict.reason.startswith(
        "verification failed: output `field`: max relative error"), precision
  # 5% of the elements off by 5% of the scale: the quantile sees it; the worst element is in the reason.
  shifted = reference.copy()
  shifted.reshape(-1)[rng.choice(reference.size, reference.size // 20, replace=False)] += 0.05 * scale
  verdict = agreement.judge("FP16", {"field": agreement.compare_output(reference, shifted)},
                            agreement.thresholds_for("FP16", OPTIONS))
  assert verdict.status == "rejected"
  assert "p99 relative error 0.05 > 0.01 (FP16 tolerance; max relative error 0.05" in verdict.reason
  # A NaN where the normal export has a number is never hidden by the quantile.
  nan = candidate.copy()
  nan[1, 1, 1, 1] = np.nan
  verdict = agreement.judge("INT8", {"field": agreement.compare_output(reference, nan)},
                            agreement.thresholds_for("INT8", OPTIONS))
  assert verdict.status == "rejected" and "max relative error inf" in verdict.reason


@pytest.mark.unit
def test_one_class_per_element_disqualifies_only_the_agreement():
  """A segmentation whose every pixel is background: per-pixel top-1 agreement cannot tell (a model answering
  background everywhere would agree), while its varying probabilities still judge FP32 by tolerance."""
  rng = np.random.default_rng(5)
  background = rng.uniform(0.6, 0.95, size=(24, 8, 8))
  reference = np.stack([background, (1 - background) * 0.5, (1 - background) * 0.5], axis=-1)
  variation = agreement.output_variation(reference)
  assert variation["elements"] == 24 * 64 and variation["top1_share"] == 1.0
  assert agreement.one_class(variation) == "top-1 class 0 for 1536 of 1536 elements"
  assert agreement.does_not_vary(variation) is None
  figures = {"mask": agreement.compare_output(reference, reference)}
  single = agreement.one_class_words({"mask": variation})
  assert agreement.judge("FP32", figures, agreement.thresholds_for("FP32", OPTIONS), {}, single) == ("ok", None)
  verdict = agreement.judge("INT8", figures, agreement.thresholds_for("INT8", OPTIONS), {}, single)
  assert verdict.status == "unverified" and "top-1 class 0 for 1536 of 1536 elements" in verdict.reason


# --- the INT8 fallback on per-token outputs ----------------------------------------------------------------------

def _per_token_model(path, softmax, factor=1000.0):
  """x[8 tokens, 16] -> MatMul 16x32 -> Relu -> MatMul 32x32 -> Relu -> MatMul 32x3 (-> Softmax): y[8 tokens, 3]
  per token; hidden unit 0 of the first layer scaled by `factor` and its weights into the second by 1/factor (the
  same function, one extreme input range: plain INT8 loses the other units)."""
  import onnx  # pylint: disable=g-import-not-at-top
  from onnx import TensorProto, helper, numpy_helper  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  w1, w2, w3 = ((rng.normal(size=s) / np.sqrt(s[0])).astype("float32") for s in ((16, 32), (32, 32), (32, 3)))
  w1[:, 0] *= factor
  w2[0, :] /= factor
  last = "scores" if softmax else "y"
  nodes = [helper.make_node("MatMul", ["x", "w1"], ["h1"], name="dense1"), helper.make_node("Relu", ["h1"], ["r1"]),
           helper.make_node("MatMul", ["r1", "w2"], ["h2"], name="dense2"), helper.make_node("Relu", ["h2"], ["r2"]),
           helper.make_node("MatMul", ["r2", "w3"], [last], name="dense3")]
  if softmax:
    nodes.append(helper.make_node("Softmax", ["scores"], ["y"], axis=-1))
  graph = helper.make_graph(nodes, "per_token", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8, 16])],
                            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8, 3])],
                            [numpy_helper.from_array(w, n) for n, w in (("w1", w1), ("w2", w2), ("w3", w3))])
  model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
  model.ir_version = 8
  onnx.save(model, str(path))


@pytest.mark.unit
@pytest.mark.parametrize("softmax", [True, False], ids=["per_token_classes", "per_token_values"])
def test_the_int8_fallback_judges_and_fixes_dense_outputs(softmax, tmp_path):
  """The INT8 fallback judges per-token outputs as verification does (per-element agreement, or the error
  quantile), stops hopeless steps early on them, ranks nodes and keeps the one that costs the gate FP32."""
  pytest.importorskip("onnxruntime")
  from tftrt_keras.formats.onnx import format as onnx_format  # pylint: disable=g-import-not-at-top
  from tftrt_keras.formats.onnx import int8_fallback  # pylint: disable=g-import-not-at-top
  _per_token_model(tmp_path / "fp32.onnx", softmax)
  samples = {"x": np.random.default_rng(1).normal(size=(400, 8, 16)).astype("float32")}
  result = int8_fallback.build_int8(str(tmp_path / "fp32.onnx"), str(tmp_path / "int8.onnx"), samples,
                                    {"x": "float32"}, OPTIONS, onnx_format.OnnxOptions(int8_calibration="minmax"))
  fallback = result["fallback"]
  before, after = fallback["before"]["outputs"]["y"], fallback["after"]["outputs"]["y"]
  key = "element_top1_agreement" if softmax else "relative_error_quantile"
  assert key in before and key in after and "top1_agreement" not in before
  assert fallback["searched"] and not fallback["before"]["passed"] and fallback["reached_gate"], fallback
  assert [entry["node"] for entry in fallback["kept"]] == ["dense2"]
  if softmax:
    assert before["element_top1_agreement_lower_bound"] < OPTIONS.verify_min_agreement
    assert after["element_top1_agreement_lower_bound"] >= OPTIONS.verify_min_agreement
    assert fallback["kept"][0]["agreement_delta"] < 0  # quantizing it again costs per-token agreement
  else:
    assert before["relative_error_quantile"] > OPTIONS.verify_tolerance_int8 >= after["relative_error_quantile"]
    assert fallback["kept"][0]["agreement_delta"] is None
  # The early stop on the hold-out: a candidate wrong everywhere stops after its first batch; the FP32 model
  # itself is judged on all of it and passes.
  from tftrt_keras.formats.onnx import gated_model  # pylint: disable=g-import-not-at-top
  fp32 = gated_model.open_session(str(tmp_path / "fp32.onnx"))
  _, holdout = int8_fallback.split_calibration(samples)
  judge = int8_fallback.HoldoutJudge(str(tmp_path / "fp32.onnx"), holdout, {"x": "float32"}, OPTIONS)
  exact = judge.evaluate(lambda batch: gated_model.run_session(fp32, batch, {"x": "float32"}))
  assert exact["passed"] and "stopped_early_at" not in exact
  wrong = judge.evaluate(lambda batch: {"y": gated_model.run_session(fp32, batch, {"x": "float32"})["y"][..., ::-1]
                                        * (1.0 if softmax else 3.0)})
  assert not wrong["passed"] and wrong["stopped_early_at"] == gated_model.BATCH


# --- a real segmentation model through TrtExport -----------------------------------------------------------------

@pytest.mark.tf
@pytest.mark.slow
def test_a_per_pixel_softmax_model_is_judged_per_pixel_through_trtexport(primary_keras, tmp_path):
  """A tiny U-Net-like net ending as keras-io's oxford pets segmentation does (`Conv2D(classes, 3,
  activation="softmax", padding="same")`), trained a few steps in `fit` with `TrtExport(formats=("onnx",))`:
  onnx_fp16 and onnx_int8 are judged by per-pixel top-1 agreement on clustered bounds, onnx_fp32 and the frozen
  graph by their max error; the report shows the per-pixel figures."""
  pytest.importorskip("onnxruntime")
  import tftrt_keras  # pylint: disable=g-import-not-at-top
  keras = primary_keras
  rng = np.random.default_rng(0)
  images = rng.uniform(size=(160, 12, 12, 3)).astype("float32")
  masks = np.argmax(images, axis=-1)  # the brightest channel's class: learnable by 1x1 filters
  inputs = keras.Input((12, 12, 3), name="image")
  hidden = keras.layers.Conv2D(16, 3, activation="relu", padding="same")(inputs)
  down = keras.layers.Conv2D(16, 3, strides=2, activation="relu", padding="same")(hidden)
  up = keras.layers.UpSampling2D(2)(down)
  merged = keras.layers.Concatenate()([hidden, up])
  outputs = keras.layers.Conv2D(3, 3, activation="softmax", padding="same", name="mask")(merged)
  model = keras.Model(inputs, outputs)
  model.compile(keras.optimizers.Adam(0.02), "sparse_categorical_crossentropy")
  callback = tftrt_keras.TrtExport(tmp_path / "e", formats=("onnx",), precisions=("FP32", "FP16", "INT8"),
                                   calibration_batches=4, verification_samples=48, verbose=0)
  model.fit(images[:96], masks[:96], validation_data=(images[96:], masks[96:]), epochs=2, batch_size=16,
            callbacks=[callback], verbose=0)

  with open(callback.manifest_paths[-1]) as f:
    manifest = json.load(f)
  artifacts = manifest["artifacts"]
  samples = manifest["verification"]["samples"]
  assert samples >= 20, manifest["verification"]
  assert "outputs_one_class" not in manifest["verification"]  # a trained mask: three classes
  for name in ("onnx_fp16", "onnx_int8"):
    verification = artifacts[name]["verification"]
    (output,) = verification["outputs"]
    figures = verification["outputs"][output]
    assert {"element_top1_agreement", "element_top1_agreement_lower_bound", "element_top1_agreement_upper_bound",
            "elements", "effective_elements", "samples", "max_abs_error", "max_relative_error"} <= set(figures)
    assert "top1_agreement" not in figures and figures["elements"] == samples * 12 * 12
    assert samples <= figures["effective_elements"] <= figures["elements"]
    assert verification["thresholds"]["classifier_judged_by"].startswith("top1_agreement")
    # Decided by the per-pixel agreement's bounds: `ok` exactly when the lower bound reaches the gate (and, at
    # FP16, the error stays within the classifier tolerance); never by the INT8/FP16 tolerance on the max error.
    lower, gate = figures["element_top1_agreement_lower_bound"], verification["thresholds"]["min_agreement"]
    within = (name == "onnx_int8"
              or figures["max_relative_error"] <= verification["thresholds"]["classifier_max_relative_error"])
    assert (artifacts[name]["status"] == "ok") == (lower >= gate and within), artifacts[name]
    if artifacts[name]["status"] != "ok":
      assert "per-element top-1 agreement" in artifacts[name]["reason"] or "classifier tolerance" in (
          artifacts[name]["reason"])
  # INT8 of a trained net keeps nearly every pixel's decision.
  assert artifacts["onnx_int8"]["verification"]["outputs"]["mask"]["element_top1_agreement"] > 0.97
  for name in ("frozen", "onnx_fp32"):
    figures = artifacts[name]["verification"]["outputs"]["mask"]
    assert artifacts[name]["status"] == "ok" and "element_top1_agreement" in figures, artifacts[name]
    assert artifacts[name]["verification"]["thresholds"]["classifier_judged_by"] == "max_relative_error"
  report = (tmp_path / "e" / "manifests" / "1" / "report.md").read_text()
  assert "| onnx_int8 | mask |" in report and "per-element top-1 >= 0.97 (95% bounds, " in report
