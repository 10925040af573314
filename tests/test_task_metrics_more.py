"""The model's own metrics, further cases: Keras' confusion-matrix metrics in numpy (the bootstrap's fast path),
figures in each variant's model.json, TensorBoard scalars, segmentation outputs, a registered custom metric."""

import glob
import json
import os

import numpy as np
import pytest

import tftrt_keras
from tftrt_keras.task_metrics import confusion
from tftrt_keras.task_metrics.compute import load_keras
from tests import keras_models

FLAVOR = keras_models.flavors()[0]
KERAS_FLAVOR = "keras3" if FLAVOR == "keras3" else "tf.keras"


@pytest.fixture
def keras():
  return keras_models.keras_for(FLAVOR)


def _manifest(callback):
  with open(callback.manifest_paths[-1]) as f:
    return json.load(f)


@pytest.mark.tf
@pytest.mark.parametrize("class_name, config", [
    ("Precision", {}), ("Recall", {}), ("Precision", {"thresholds": 0.3}), ("AUC", {}), ("AUC", {"curve": "PR"}),
    ("AUC", {"num_thresholds": 50}), ("MeanIoU", {"num_classes": 3}),
    ("MeanIoU", {"num_classes": 3, "sparse_y_pred": False, "ignore_class": 0})])
def test_confusion_metrics_in_numpy_give_keras_own_result_on_weighted_resamples(class_name, config):
  keras = load_keras(KERAS_FLAVOR)
  rng = np.random.default_rng(4)
  labels = (rng.random(300) < 0.4).astype("float32")
  scores = np.clip(labels * 0.3 + rng.random(300) * 0.7, 0, 1).astype("float32")
  weights = rng.random(300).astype("float32") + 0.5
  if class_name == "MeanIoU":  # (N, 4, 4) masks of 3 classes; predictions as ids or per-class scores
    labels = rng.integers(0, 3, size=(300, 4, 4))
    scores = np.where(rng.random((300, 4, 4)) < 0.7, labels, rng.integers(0, 3, size=(300, 4, 4)))
    scores = np.eye(3, dtype="float32")[scores] if config.get("sparse_y_pred") is False else scores
    weights = np.broadcast_to(weights[:, None, None], labels.shape)
  indices = rng.integers(0, 300, size=300)
  built = keras.metrics.get({"class_name": class_name, "config": config})
  fast = confusion.evaluate(built, labels, scores, weights)
  assert fast is not None
  value = fast(indices) if callable(fast) else float(fast[0][indices].sum() / fast[1][indices].sum())
  built.update_state(labels[indices], scores[indices], sample_weight=weights[indices])
  assert value == pytest.approx(float(np.asarray(built.result())), abs=2e-5)


def _register(keras):
  register = keras.saving.register_keras_serializable if FLAVOR == "keras3" else keras.utils.register_keras_serializable
  return register(package="tftrt_tests")


def _hits(y_true, y_pred):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.cast(tf.equal(tf.argmax(y_pred, axis=-1), tf.cast(tf.reshape(y_true, [-1]), tf.int64)), tf.float32)


_KERAS = keras_models.keras_for(FLAVOR)


@_register(_KERAS)
class HitRate(_KERAS.metrics.MeanMetricWrapper):
  """A user's own metric, registered for Keras serialization: the worker imports this module to rebuild it."""

  def __init__(self, name="hit_rate", dtype=None):
    super().__init__(fn=_hits, name=name, dtype=dtype)

  def get_config(self):
    return {"name": self.name, "dtype": self.dtype}


def _digits(keras, metrics, count=400):
  keras.utils.set_random_seed(0)  # the same initial weights every run: the accuracy checks below are not luck
  rng = np.random.default_rng(0)
  y = rng.integers(0, 4, size=count)
  x = rng.normal(scale=0.3, size=(count, 8, 8, 1)).astype("float32")
  for label in range(4):
    x[y == label, 2 * label:2 * label + 2, :, 0] += 1.0
  inputs = keras.Input((8, 8, 1), name="image")
  hidden = keras.layers.Flatten()(keras.layers.Conv2D(4, 3, activation="relu")(inputs))
  model = keras.Model(inputs, keras.layers.Dense(4, activation="softmax", name="probs")(hidden))
  model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=metrics)
  return model, x, y


class _Unregistered(_KERAS.metrics.MeanMetricWrapper):
  """Not registered, and defined where Keras cannot find it by name: cannot be rebuilt in the worker."""

  def __init__(self, name="unregistered_rate", dtype=None):
    super().__init__(fn=_hits, name=name, dtype=dtype)


@pytest.mark.tf
def test_variant_model_json_and_tensorboard_carry_the_figures_and_a_registered_custom_metric_is_rebuilt(
    keras, tmp_path):
  model, x, y = _digits(keras, ["accuracy", HitRate()])
  log_dir = tmp_path / "tb"
  callback = tftrt_keras.TrtExport(tmp_path / "e", formats=("onnx",), precisions=("FP32",), blocking=True, verbose=0,
                                   calibration_batches=2, verification_samples=100, log_dir=str(log_dir))
  model.fit(x, y, validation_data=(x[:200], y[:200]), epochs=3, batch_size=32, callbacks=[callback], verbose=0)
  manifest = _manifest(callback)
  figures = manifest["task_metrics"]["variants"]["onnx_fp32"]
  # The registered metric, rebuilt in the worker, counts the same hits as the built-in accuracy.
  assert figures["hit_rate"]["value"] == pytest.approx(figures["accuracy"]["value"])
  assert figures["hit_rate"]["normal"] == pytest.approx(figures["accuracy"]["normal"])
  assert figures["accuracy"]["normal"] > 0.3

  root = str(tmp_path / "e")
  with open(os.path.join(root, "onnx_fp32", str(manifest["version"]), "model.json")) as f:
    metadata = json.load(f)
  assert metadata["task_metrics"]["metrics"] == figures and metadata["task_metrics"]["samples"] == 100
  assert "paired bootstrap" in metadata["task_metrics"]["method"]

  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  scalars = {}
  for path in glob.glob(str(log_dir / "**" / "events.out.tfevents.*"), recursive=True):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        scalars[(value.tag, event.step)] = float(tf.make_ndarray(value.tensor)) if value.HasField("tensor") \
            else value.simple_value
  step = manifest["source"]["step"]
  assert scalars[("task_metrics/onnx_fp32/accuracy", step)] == pytest.approx(figures["accuracy"]["value"])
  assert scalars[("task_metrics/onnx_fp32/hit_rate", step)] == pytest.approx(figures["hit_rate"]["value"])
  assert scalars[("task_metrics/native/loss", step)] == pytest.approx(manifest["task_metrics"]["normal"]["loss"])


@pytest.mark.tf
def test_a_metric_that_cannot_be_rebuilt_is_named_as_left_out(keras, tmp_path):
  model, x, y = _digits(keras, ["accuracy", _Unregistered()], count=200)
  callback = tftrt_keras.TrtExport(tmp_path / "e", formats=("onnx",), precisions=("FP32",), blocking=True, verbose=0,
                                   calibration_batches=2, verification_samples=50)
  model.fit(x, y, validation_data=(x, y), epochs=1, batch_size=32, callbacks=[callback], verbose=0)
  metrics = _manifest(callback)["task_metrics"]
  assert "accuracy" in metrics["variants"]["onnx_fp32"] and "unregistered_rate" not in metrics["variants"]["onnx_fp32"]
  assert "rebuilt" in metrics["left_out"]["unregistered_rate"]


@pytest.mark.tf
def test_a_segmentation_model_reports_pixel_accuracy_and_mean_iou_as_keras_evaluates_them(keras, tmp_path):
  rng = np.random.default_rng(5)
  x = rng.random(size=(240, 8, 8, 1)).astype("float32")
  y = np.digitize(x[..., 0], [0.33, 0.66]).astype("int64")  # a pixel's class is its brightness band
  inputs = keras.Input((8, 8, 1), name="image")
  hidden = keras.layers.Conv2D(8, 1, activation="relu")(inputs)
  model = keras.Model(inputs, keras.layers.Conv2D(3, 1, activation="softmax", name="mask")(hidden))
  model.compile(optimizer=keras.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy",
                metrics=["accuracy", keras.metrics.MeanIoU(num_classes=3, sparse_y_pred=False, name="mean_iou")])
  callback = tftrt_keras.TrtExport(tmp_path / "e", formats=("onnx",), precisions=("FP32",), blocking=True, verbose=0,
                                   calibration_batches=2, verification_samples=80)
  model.fit(x, y, validation_data=(x[:160], y[:160]), epochs=1, batch_size=8, callbacks=[callback], verbose=0)
  manifest = _manifest(callback)
  metrics = manifest["task_metrics"]
  for name in ("accuracy", "mean_iou"):
    figures = metrics["variants"]["onnx_fp32"][name]
    assert figures["value"] == pytest.approx(figures["normal"], abs=1e-3)
    low, high = figures["interval"]
    assert low <= figures["difference"] <= high
  # The normal export's figures are what Keras' evaluate() says on the same stored samples and labels.
  from tftrt_keras.samples.calibration_data import load_samples  # pylint: disable=g-import-not-at-top
  directory = os.path.join(tmp_path / "e", "calibration", str(manifest["version"]))
  samples = load_samples(os.path.join(directory, "verification.npz"))
  labels = load_samples(os.path.join(directory, "verification_labels.npz"))["label:mask"]
  assert labels.shape == (80, 8, 8)
  _, accuracy, mean_iou = model.evaluate(samples["image"], labels, batch_size=80, verbose=0)
  assert metrics["normal"]["accuracy"] == pytest.approx(accuracy, abs=1e-6) and accuracy > 0.5
  assert metrics["normal"]["mean_iou"] == pytest.approx(mean_iou, abs=1e-5)


@pytest.mark.tf
@pytest.mark.skipif(FLAVOR != "keras3", reason="keras.utils.PyDataset is Keras 3's")
def test_pydataset_validation_data_is_labelled(keras, tmp_path):
  model, x, y = _digits(keras, ["accuracy"], count=320)

  class Batches(keras.utils.PyDataset):
    def __len__(self):
      return 10

    def __getitem__(self, index):
      rows = slice(index * 32, index * 32 + 32)
      return x[rows], y[rows]

  callback = tftrt_keras.TrtExport(tmp_path / "e", formats=("onnx",), precisions=("FP32",), blocking=True, verbose=0,
                                   calibration_batches=2, verification_samples=64)
  model.fit(x, y, validation_data=Batches(), epochs=1, batch_size=32, callbacks=[callback], verbose=0)
  manifest = _manifest(callback)
  metrics = manifest["task_metrics"]
  from tftrt_keras.samples.calibration_data import load_samples  # pylint: disable=g-import-not-at-top
  directory = os.path.join(tmp_path / "e", "calibration", str(manifest["version"]))
  samples = load_samples(os.path.join(directory, "verification.npz"))["image"]
  labels = load_samples(os.path.join(directory, "verification_labels.npz"))["label:probs"]
  assert metrics["samples"] == len(labels) == len(samples) == 64
  _, accuracy = model.evaluate(samples, labels, batch_size=64, verbose=0)
  assert metrics["normal"]["accuracy"] == pytest.approx(accuracy, abs=1e-6)
  assert "accuracy" in metrics["variants"]["onnx_fp32"]


@pytest.mark.unit
def test_canned_estimator_keys_map_to_the_signature_outputs_and_the_rest_is_named():
  from tftrt_keras.estimator.own_metrics import canned_spec  # pylint: disable=g-import-not-at-top
  keys = {"average_loss": 1.0, "loss": 1.0, "label/mean": 0.1, "prediction/mean": 0.2, "global_step": 5}
  regression = canned_spec(keys, ["predictions"], np.zeros(3, "float32"))
  assert regression["metrics"] == {"predictions": [{"class_name": "MeanSquaredError",
                                                    "config": {"name": "average_loss"}}]}
  assert set(regression["left_out"]) == {"loss", "label/mean", "prediction/mean"}
  multi = canned_spec({"accuracy": 0.9, "average_loss": 0.3, "custom": 1.0}, ["probabilities", "classes"],
                      np.zeros(3, "int64"))
  assert [m["config"]["name"] for m in multi["metrics"]["probabilities"]] == ["accuracy", "average_loss"]
  assert "not a standard metric" in multi["left_out"]["custom"]
  words = canned_spec({"accuracy": 0.9}, ["logits"], np.array([b"cat", b"dog"]))
  assert words["metrics"] == {} and "label_vocabulary" in words["left_out"]["accuracy"]


def test_the_summary_shows_each_own_metric_with_its_worst_variant_and_what_the_gate_did_not_pass():
  from tftrt_keras.task_metrics import render  # pylint: disable=g-import-not-at-top
  manifest = {"task_metrics": {"samples": 500, "normal": {"accuracy": 0.92, "loss": 0.253}, "variants": {
      "onnx_int8": {"accuracy": {"value": 0.9, "normal": 0.92, "difference": -0.02, "interval": [-0.03, -0.01],
                                 "verdict": "rejected"},
                    "loss": {"value": 0.26, "normal": 0.253, "difference": 0.007, "interval": [0.001, 0.013]}},
      "onnx_fp16": {"accuracy": {"value": 0.93, "normal": 0.92, "difference": 0.01, "interval": [-0.04, 0.05]},
                    "loss": {"value": 0.25, "normal": 0.253, "difference": -0.003, "interval": [-0.02, 0.02]}},
      "onnx_fp32": {"accuracy": {"value": 0.92, "normal": 0.92, "difference": 0.0, "interval": [0.0, 0.0]}}}}}
  lines = render.summary_lines(manifest)
  assert len(lines) == 3 and "500 labelled samples" in lines[0] and len(lines[0]) <= 100
  # accuracy: higher is better, the worst is the lowest lower bound (fp16's -0.04, though int8 lost more on
  # average); loss: lower is better, the worst is the highest upper bound (fp16's +0.02).
  assert lines[1].split() == ["accuracy", "0.92", "worst", "onnx_fp16", "+0.01", "[-0.04,", "+0.05];", "rejected",
                              "by", "max_metric_drop:", "onnx_int8"]
  assert lines[2].split() == ["loss", "0.253", "worst", "onnx_fp16", "-0.003", "[-0.02,", "+0.02]"]
  same = {"task_metrics": {"samples": 9, "normal": {"mae": 1.0}, "variants": {
      name: {"mae": {"value": 1.0, "normal": 1.0, "difference": 0.0, "interval": [0.0, 0.0]}}
      for name in ("onnx_fp32", "onnx_int8")}}}
  assert render.summary_lines(same)[1].split() == ["mae", "1", "every", "variant", "+0", "[+0,", "+0]"]


@pytest.mark.tf
@pytest.mark.parametrize("flavor", keras_models.flavors())
def test_a_loss_and_a_metric_given_as_objects_are_in_the_spec_and_a_subclassed_model_says_why_not(flavor):
  """compile(loss=keras.losses.MeanSquaredError()) serializes to one config dict (the keras-io ViT and Wide & Deep
  examples compile so): it is the loss of every output, not a dict by output name."""
  from tftrt_keras.keras import task_labels  # pylint: disable=g-import-not-at-top
  from tftrt_keras.task_metrics import labels as labels_lib  # pylint: disable=g-import-not-at-top
  keras = keras_models.keras_for(flavor)
  inputs = keras.Input((3,), name="x")
  model = keras.Model(inputs, keras.layers.Dense(1, name="y")(inputs))
  model.compile(optimizer="adam", loss=keras.losses.MeanSquaredError(),
                metrics=[keras.metrics.MeanAbsoluteError()])
  spec = task_labels.compile_spec(model)
  assert list(spec["loss"]) == ["y"] and spec["loss"]["y"]["class_name"] == "MeanSquaredError"
  assert [c["class_name"] for c in spec["metrics"]["y"]] == ["MeanAbsoluteError"]

  class Subclassed(keras.Model):  # pylint: disable=abstract-method
    def __init__(self):
      super().__init__()
      self.dense = keras.layers.Dense(1)

    def call(self, x):
      return self.dense(x)

  subclassed = Subclassed()
  subclassed.compile(optimizer="adam", loss="mse")
  subclassed(np.zeros((2, 3), "float32"))
  entry = labels_lib.manifest_entry(task_labels.compile_spec(subclassed), has_labels=False)
  assert entry["skipped"] == task_labels.NO_OUTPUT_NAMES
