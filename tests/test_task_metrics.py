"""The model's own metrics on every variant: labels captured with the verification samples, loss and compiled
metrics rebuilt in the worker, paired intervals, and the `max_metric_drop` gate."""

import json
import os

import numpy as np
import pytest

import tftrt_keras
from tftrt_keras.samples.calibration_data import load_samples
from tftrt_keras.task_metrics.judge import VariantMetrics
from tftrt_keras.task_metrics.labels import LABELS_FILE
from tests import keras_models

pytestmark = pytest.mark.tf

ONNX_INT8 = dict(formats=("onnx",), precisions=("INT8",), blocking=True, verbose=0)


@pytest.fixture(params=keras_models.flavors()[:1])
def keras(request):
  return keras_models.keras_for(request.param)


def _manifest(callback):
  with open(callback.manifest_paths[-1]) as f:
    return json.load(f)


def _digits(keras, count=600, seed=0):
  """A small trained CNN on 8x8 'digits' (a class-dependent blob): deterministic, seconds to train."""
  keras.utils.set_random_seed(seed)  # the initial weights too
  rng = np.random.default_rng(seed)
  y = rng.integers(0, 4, size=count)
  x = rng.normal(scale=0.3, size=(count, 8, 8, 1)).astype("float32")
  for label in range(4):
    x[y == label, 2 * label:2 * label + 2, :, 0] += 1.0
  inputs = keras.Input((8, 8, 1), name="image")
  hidden = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
  hidden = keras.layers.Flatten()(hidden)
  model = keras.Model(inputs, keras.layers.Dense(4, activation="softmax", name="probs")(hidden))
  model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
  return model, x, y


def test_int8_variant_reports_accuracy_beside_the_normal_exports_with_an_interval(keras, tmp_path):
  model, x, y = _digits(keras)
  callback = tftrt_keras.TrtExport(tmp_path / "e", calibration_batches=4, verification_samples=200, **ONNX_INT8)
  model.fit(x, y, validation_data=(x[:400], y[:400]), epochs=2, batch_size=32, callbacks=[callback], verbose=0)
  manifest = _manifest(callback)
  metrics = manifest["task_metrics"]
  figures = metrics["variants"]["onnx_int8"]["accuracy"]
  assert figures["normal"] == metrics["normal"]["accuracy"] > 0.5
  assert figures["difference"] == pytest.approx(figures["value"] - figures["normal"])
  low, high = figures["interval"]
  assert low <= figures["difference"] <= high
  assert "paired bootstrap" in metrics["method"] and metrics["samples"] == 200
  report = open(os.path.join(os.path.dirname(callback.manifest_paths[-1]), "report.md")).read()
  assert "## The model's own metrics" in report and "| onnx_int8 | accuracy |" in report

  # Sanity: the normal export's figures on these samples are what Keras' evaluate() says on the same samples.
  directory = os.path.join(tmp_path / "e", "calibration", str(manifest["version"]))
  samples = load_samples(os.path.join(directory, "verification.npz"))
  labels = load_samples(os.path.join(directory, LABELS_FILE))
  assert sorted(labels) == ["label:probs"]
  loss, accuracy = model.evaluate(samples["image"], labels["label:probs"], batch_size=200, verbose=0)
  assert metrics["normal"]["accuracy"] == pytest.approx(accuracy, abs=1e-6)
  assert metrics["normal"]["loss"] == pytest.approx(loss, rel=1e-4)


def test_a_regression_model_reports_mae_per_variant(keras, tmp_path):
  rng = np.random.default_rng(1)
  x = rng.normal(size=(400, 6)).astype("float32")
  y = (x @ rng.normal(size=(6, 1))).astype("float32")
  inputs = keras.Input((6,), name="features")
  model = keras.Model(inputs, keras.layers.Dense(1, name="value")(keras.layers.Dense(8, activation="relu")(inputs)))
  model.compile(optimizer="adam", loss="mse", metrics=["mae"])
  callback = tftrt_keras.TrtExport(tmp_path / "e", calibration_batches=2, verification_samples=100,
                                   formats=("onnx",), precisions=("FP32", "FP16"), blocking=True, verbose=0)
  model.fit(x, y, validation_data=(x[:300], y[:300]), epochs=1, batch_size=32, callbacks=[callback], verbose=0)
  variants = _manifest(callback)["task_metrics"]["variants"]
  for name in ("onnx_fp32", "onnx_fp16"):
    assert variants[name]["mae"]["value"] > 0 and variants[name]["mae"]["lower_is_better"]
    assert variants[name]["mae"]["value"] == pytest.approx(variants[name]["mae"]["normal"], rel=0.05)


def test_a_two_head_model_reports_each_head(keras, tmp_path):
  rng = np.random.default_rng(2)
  x = rng.normal(size=(300, 5)).astype("float32")
  classes, values = (x[:, 0] > 0).astype("int64"), x[:, 1:2].copy()
  inputs = keras.Input((5,), name="features")
  hidden = keras.layers.Dense(8, activation="relu")(inputs)
  outputs = [keras.layers.Dense(2, activation="softmax", name="kind")(hidden), keras.layers.Dense(1, name="size")(hidden)]
  model = keras.Model(inputs, outputs)
  model.compile(optimizer="adam", loss=["sparse_categorical_crossentropy", "mse"],
                metrics=[["accuracy"], ["mae"]], loss_weights=[1.0, 0.5])
  callback = tftrt_keras.TrtExport(tmp_path / "e", calibration_batches=2, verification_samples=100,
                                   formats=("onnx",), precisions=("FP32",), blocking=True, verbose=0)
  model.fit(x, [classes, values], validation_data=(x[:200], [classes[:200], values[:200]]), epochs=1, batch_size=32,
            callbacks=[callback], verbose=0)
  figures = _manifest(callback)["task_metrics"]["variants"]["onnx_fp32"]
  assert {"kind_accuracy", "size_mae", "kind_loss", "size_loss", "loss"} <= set(figures)
  assert figures["loss"]["normal"] == pytest.approx(figures["kind_loss"]["normal"] + 0.5 * figures["size_loss"]["normal"])


def test_calibration_data_with_labels_is_labelled_and_predict_only_data_says_no_labels(keras, tmp_path):
  model, x, y = _digits(keras, count=200)
  labelled = tftrt_keras.TrtExport(tmp_path / "a", calibration_data=(x, y), **ONNX_INT8)
  model.fit(x, y, epochs=1, batch_size=32, callbacks=[labelled], verbose=0)
  assert "accuracy" in _manifest(labelled)["task_metrics"]["variants"]["onnx_int8"]
  unlabelled = tftrt_keras.TrtExport(tmp_path / "b", calibration_data=x, **ONNX_INT8)
  model.fit(x, y, epochs=1, batch_size=32, callbacks=[unlabelled], verbose=0)
  manifest = _manifest(unlabelled)
  assert manifest["task_metrics"]["skipped"].startswith("no labels")
  assert manifest["artifacts"]["onnx_int8"]["status"] in ("ok", "rejected", "unverified")


def test_max_metric_drop_naming_a_metric_the_model_does_not_compile_fails_before_training(keras, tmp_path):
  model, x, y = _digits(keras, count=64)
  callback = tftrt_keras.TrtExport(tmp_path / "e", max_metric_drop={"auc": 0.01}, **ONNX_INT8)
  with pytest.raises(ValueError, match="max_metric_drop.*auc"):
    model.fit(x, y, validation_data=(x, y), epochs=1, callbacks=[callback], verbose=0)
  assert model.optimizer.iterations.numpy() == 0
  with pytest.raises(ValueError, match="max_metric_drop"):
    tftrt_keras.TrtExport(tmp_path / "f", max_metric_drop={"accuracy": -1})


def _spec(flavor):
  return {"keras": flavor, "outputs": ["probs"], "loss": {"probs": "sparse_categorical_crossentropy"},
          "loss_weights": {}, "metrics": {"probs": ["accuracy"]}, "weighted_metrics": {}, "left_out": {}}


def _gate(flavor, reference, outputs, labels, drop):
  manifest = {"task_metrics": {"spec": _spec(flavor), "labels_file": LABELS_FILE}}
  metrics = VariantMetrics(manifest, lambda name: {"label:probs": labels}, {"probs": reference}, {"accuracy": drop})
  return metrics.judge("onnx_int8", {"probs": outputs}, "ok", None)


@pytest.mark.parametrize("damage, count, expected", [(0.0, 2000, "ok"), (0.3, 2000, "rejected"), (0.02, 40, "unverified")])
def test_max_metric_drop_rejects_a_damaged_variant_passes_a_sound_one_and_cannot_tell_on_few_samples(
    damage, count, expected):
  flavor = "keras3" if keras_models.flavors()[0] == "keras3" else "tf.keras"
  rng = np.random.default_rng(3)
  labels = rng.integers(0, 3, size=count)
  reference = np.eye(3, dtype="float32")[labels] * 0.8 + 0.1  # the normal export is always right
  damaged = reference.copy()
  wrong = rng.random(count) < damage  # a variant whose top-1 moves to another class on `damage` of the samples
  damaged[wrong] = np.roll(damaged[wrong], 1, axis=1)
  verdict, reason = _gate(flavor, reference, damaged, labels, drop=0.01)
  assert verdict == expected, reason
  if expected != "ok":
    assert "metric gate: accuracy drop" in reason


def test_max_metric_drop_judges_a_variant_the_product_built_badly_and_passes_a_sound_one(keras, tmp_path):
  """A real, deliberately damaged INT8 variant: calibrated at the 0.5th percentile of each activation (every
  range clipped to nearly nothing), no FP32 fallback search. Its accuracy drop is gated in the user's terms;
  the FP32 variant of the same export passes the same gate."""
  model, x, y = _digits(keras)
  callback = tftrt_keras.TrtExport(
      tmp_path / "e", formats=("onnx",), precisions=("FP32", "INT8"), blocking=True, verbose=0,
      calibration_batches=4, verification_samples=200, max_metric_drop={"accuracy": 0.02},
      format_options={"onnx": {"int8_calibration": "percentile", "percentile": 0.5, "int8_search_budget": 0}})
  model.fit(x, y, validation_data=(x[:400], y[:400]), epochs=3, batch_size=32, callbacks=[callback], verbose=0)
  manifest = _manifest(callback)
  variants = manifest["task_metrics"]["variants"]
  damaged, sound = variants["onnx_int8"]["accuracy"], variants["onnx_fp32"]["accuracy"]
  assert damaged["interval"][1] < -0.02 and damaged["verdict"] == "rejected", damaged
  assert manifest["artifacts"]["onnx_int8"]["status"] == "rejected"
  assert sound["verdict"] == "ok" and manifest["artifacts"]["onnx_fp32"]["status"] == "ok", sound
