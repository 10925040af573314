"""The model's own metrics on an Estimator's variants (TF 2.15): the canned heads' evaluation keys computed per
variant from the evaluation labels the calibration hook captures. Real train_and_evaluate, real ONNX variants."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

import tftrt_keras
from tftrt_keras.samples.calibration_data import load_samples
from tftrt_keras.task_metrics.labels import LABELS_FILE

pytestmark = [pytest.mark.tf, pytest.mark.skipif(
    not hasattr(tf, "estimator"), reason=f"TensorFlow {tf.__version__} has no tf.estimator (TF 2.15 only)")]

FEATURES = 4


def _columns():
  return [tf.feature_column.numeric_column("x", shape=[FEATURES])]


def _train(tmp_path, n_classes, receiver_fn, **exporter_args):
  """A small DNNClassifier trained for a few steps with an ONNX exporter; returns its manifest and export root."""
  from tftrt_keras import TrtExporter  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  x = rng.normal(size=(640, FEATURES)).astype("float32")
  y = (np.digitize(x[:, 0], [-0.5, 0.5]) if n_classes == 3 else x[:, 0] > 0).astype("int64")

  def input_fn(rows, repeat):
    def make():
      data = tf.data.Dataset.from_tensor_slices(({"x": x[rows]}, y[rows]))
      return data.repeat().batch(32) if repeat else data.batch(16)
    return make
  config = tf.estimator.RunConfig(save_checkpoints_steps=40, tf_random_seed=0, log_step_count_steps=10000)
  estimator = tf.estimator.DNNClassifier([8], _columns(), n_classes=n_classes, model_dir=str(tmp_path / "m"),
                                         config=config)
  exporter = TrtExporter("e", receiver_fn, policy="latest", calibration_batches=4, verification_samples=160,
                         **{"formats": ("onnx",), **exporter_args})
  tf.estimator.train_and_evaluate(
      estimator, tf.estimator.TrainSpec(input_fn(slice(0, 320), True), max_steps=40),
      tf.estimator.EvalSpec(input_fn(slice(320, 640), False), steps=None, exporters=[exporter],
                            hooks=[exporter.calibration_hook], start_delay_secs=0, throttle_secs=0))
  (path,) = exporter.manifest_paths
  with open(path) as f:
    return json.load(f), str(tmp_path / "m" / "export" / "e")


def test_dnn_classifier_reports_accuracy_per_variant_from_the_evaluation_labels(tmp_path):
  receiver = tf.estimator.export.build_raw_serving_input_receiver_fn({"x": tf.zeros([1, FEATURES], tf.float32)})
  manifest, root = _train(tmp_path, 3, receiver, precisions=("FP32", "INT8"), max_metric_drop={"accuracy": 0.5})
  metrics = manifest["task_metrics"]
  assert metrics["samples"] == 160 and metrics["spec"]["outputs"] == ["logits"]
  for name in ("onnx_fp32", "onnx_int8"):
    figures = metrics["variants"][name]
    assert set(figures) == {"accuracy", "average_loss"}, figures
    assert figures["accuracy"]["normal"] == metrics["normal"]["accuracy"] > 0.5
    assert figures["accuracy"]["verdict"] == "ok" and figures["average_loss"]["lower_is_better"]
  assert metrics["variants"]["onnx_fp32"]["accuracy"]["difference"] == pytest.approx(0, abs=0.01)
  assert "canned" in metrics["left_out"]["loss"] or "batching" in metrics["left_out"]["loss"]

  # The labels stored are the evaluation rows' own: the normal export's accuracy on them, recomputed here.
  directory = os.path.join(root, "calibration", str(manifest["version"]))
  x = load_samples(os.path.join(directory, "verification.npz"))["x"]
  labels = load_samples(os.path.join(directory, LABELS_FILE))["label:logits"].reshape(-1)
  assert (labels == np.digitize(x[:, 0], [-0.5, 0.5])).all()
  predict = tf.saved_model.load(os.path.join(root, str(manifest["version"]))).signatures["predict"]
  class_ids = predict(x=tf.constant(x))["class_ids"].numpy().reshape(-1)
  assert metrics["normal"]["accuracy"] == pytest.approx(np.mean(class_ids == labels))


def test_binary_classifier_through_the_classification_signature_reports_auc_precision_recall(tmp_path):
  receiver = tf.estimator.export.build_parsing_serving_input_receiver_fn(
      tf.feature_column.make_parse_example_spec(_columns()))
  # Serialized tf.Examples enter no ONNX model: the frozen graph of the parsing signature is the variant here.
  manifest, _ = _train(tmp_path, 2, receiver, formats=())
  metrics = manifest["task_metrics"]
  assert manifest["signature_key"] == "serving_default" and metrics["spec"]["columns"] == {"scores[1]": ["scores", 1]}
  figures = metrics["variants"]["frozen"]
  assert {"accuracy", "auc", "auc_precision_recall", "precision", "recall", "average_loss"} <= set(figures)
  for name in ("accuracy", "auc", "precision", "recall"):
    assert 0.5 < figures[name]["normal"] <= 1 and figures[name]["difference"] == pytest.approx(0, abs=1e-6)
  assert {"label/mean", "accuracy_baseline", "prediction/mean", "loss"} <= set(metrics["left_out"])


def test_max_metric_drop_naming_a_key_no_estimator_export_computes_fails_before_training(tmp_path):
  receiver = tf.estimator.export.build_raw_serving_input_receiver_fn({"x": tf.zeros([1, FEATURES], tf.float32)})
  for name in ("val_accuracy", "loss"):  # a Keras name; a key that is no figure of the model's answers
    with pytest.raises(ValueError, match=rf"max_metric_drop.*{name}.*evaluation keys among \['accuracy'"):
      tftrt_keras.TrtExporter("e", receiver, formats=("onnx",), max_metric_drop={name: 0.01})
  exporter = tftrt_keras.TrtExporter("e", receiver, formats=("onnx",), max_metric_drop={"auc": 0.01})
  assert exporter.options.max_metric_drop == {"auc": 0.01}
