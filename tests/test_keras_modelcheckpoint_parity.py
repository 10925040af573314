"""`TrtExport` and the real `keras.callbacks.ModelCheckpoint` in the same `fit` choose the same epochs and batches,
on every Keras flavour of this TF line (tier tf).

ModelCheckpoint's choices are the files it writes (`e{epoch}-b{batch}.weights.h5`), TrtExport's the
`source.epoch` / `source.batch` of its manifests. Exports are kept cheap: no variant, no capture, no
verification; each still writes a SavedModel and runs its worker.
"""

import os
import re

import numpy as np
import pytest

import tftrt_keras
from tests.keras_models import classifier, train_data
from tftrt_keras.estimator.export_policy import metric_compare_fn

pytestmark = [pytest.mark.tf, pytest.mark.lines(
    "2.15", "2.21", why="Keras 2 (tf.keras 2.15, tf_keras 2.21) and Keras 3 (3.15 on 2.21) side by side with "
                       "ModelCheckpoint; 2.17 carries the same two generations")]
CHEAP = dict(formats=(), precisions=(), verify=False, calibration_batches=0, exports_to_keep=None, verbose=0)


def _model_checkpoint(keras, directory, per_batch=False, **kwargs):
  name = "e{epoch}-b{batch}" if per_batch else "e{epoch}"
  return keras.callbacks.ModelCheckpoint(os.path.join(directory, name + ".weights.h5"), save_weights_only=True,
                                         **kwargs)


def _checkpoint_choices(directory):
  """Sorted (epoch, batch or None) of the files ModelCheckpoint wrote."""
  if not os.path.isdir(directory):
    return []
  found = [re.fullmatch(r"e(\d+)(?:-b(\d+))?\.weights\.h5", name) for name in os.listdir(directory)]
  return sorted((int(m.group(1)), int(m.group(2)) if m.group(2) else None) for m in found)


def _export_choices(callback):
  import json  # pylint: disable=g-import-not-at-top
  sources = []
  for path in callback.manifest_paths:
    with open(path) as f:
      source = json.load(f)["source"]
    sources.append((source["epoch"], source.get("batch")))
  return sources


def _binary_model(keras):
  """A logistic regression compiled with a metric of each direction: `accuracy` and `auc`/`precision` (larger is
  better in Keras 3.11+'s metric directions; tf.keras 2's name rule minimizes all but accuracy)."""
  inputs = keras.Input((8,), name="features")
  model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid")(inputs))
  model.compile(optimizer="sgd", loss="binary_crossentropy",
                metrics=["accuracy", keras.metrics.Precision(name="precision"), keras.metrics.AUC(name="auc")])
  return model


def _scripted(keras, values):
  """Puts scripted values into the epoch logs ({name: [value per epoch]}), so every direction shows."""

  class Scripted(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
      for name, per_epoch in values.items():
        logs[name] = per_epoch[epoch]
  return Scripted()


# One batch per call is tests/test_keras_callback.py's case too; a call for four batches is the one that differs.
@pytest.mark.parametrize("steps_per_execution", [pytest.param(1, marks=pytest.mark.slow), 4])
def test_integer_save_freq_counts_batches_as_model_checkpoint(keras, steps_per_execution, tmp_path):
  model = classifier(keras)
  model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", steps_per_execution=steps_per_execution)
  # 8 batches an epoch, every 10 batches: the count crosses the epoch's end. Keras passes an execution's last
  # batch index (Keras 3.6-3.10: its first, so the first execution counts as one batch there).
  checkpoint = _model_checkpoint(keras, tmp_path / "mc", per_batch=True, save_freq=10)
  export = tftrt_keras.TrtExport(tmp_path / "e", save_freq=10, **CHEAP)
  x, y = train_data(64)
  model.fit(x, y, batch_size=8, epochs=2, callbacks=[checkpoint, export], verbose=0)
  chosen = _checkpoint_choices(tmp_path / "mc")
  assert chosen and all(batch is not None for _, batch in chosen), chosen
  assert _export_choices(export) == chosen


def test_save_best_only_takes_the_direction_and_threshold_of_model_checkpoint(keras, tmp_path):
  model = _binary_model(keras)
  # With initial_value_threshold=0.45 (equal is not better): "min" chooses epoch 3 only, "max" epoch 2 only.
  values = [0.45, 0.5, 0.4]
  monitors = ("val_loss", "val_accuracy", "val_precision", "val_auc")
  scripted = _scripted(keras, {monitor: values for monitor in monitors})
  pairs = {monitor: (_model_checkpoint(keras, tmp_path / "mc" / monitor, monitor=monitor, save_best_only=True,
                                       initial_value_threshold=0.45),
                     tftrt_keras.TrtExport(tmp_path / "e" / monitor, monitor=monitor, save_best_only=True,
                                           initial_value_threshold=0.45, **CHEAP))
           for monitor in monitors}
  x, y = train_data(32)
  y = (y > 0).astype("float32")
  model.fit(x, y, validation_data=(x, y), batch_size=16, epochs=3, verbose=0,
            callbacks=[scripted, *[c for pair in pairs.values() for c in pair]])
  chosen = {monitor: _checkpoint_choices(tmp_path / "mc" / monitor) for monitor in pairs}
  assert {m: _export_choices(export) for m, (_, export) in pairs.items()} == chosen
  assert chosen["val_loss"] == [(3, None)] and chosen["val_accuracy"] == [(2, None)]
  assert all(chosen[monitor] in ([(2, None)], [(3, None)]) for monitor in monitors), chosen


def test_the_best_value_carries_over_to_the_next_fit_as_in_model_checkpoint(keras, tmp_path):
  model = classifier(keras)
  checkpoint = _model_checkpoint(keras, tmp_path / "mc", monitor="val_loss", save_best_only=True)
  export = tftrt_keras.TrtExport(tmp_path / "e", monitor="val_loss", save_best_only=True, **CHEAP)
  x, y = train_data(32)
  checkpoints, exports = [], []
  for value in (0.5, 0.6):  # the second fit's value is worse than the first's
    exported_before = len(export.manifest_paths)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0,
              callbacks=[_scripted(keras, {"val_loss": [value]}), checkpoint, export])
    checkpoints.append(_checkpoint_choices(tmp_path / "mc"))
    exports.append(_export_choices(export)[exported_before:])
    for name in os.listdir(tmp_path / "mc"):
      os.remove(tmp_path / "mc" / name)
  assert exports == checkpoints == [[(1, None)], []]


def test_a_missing_monitored_value_is_handled_as_model_checkpoint(keras, tmp_path):
  """Keras 3.10+ warns and saves; Keras 2 and older Keras 3 warn and skip."""
  model = classifier(keras)
  checkpoint = _model_checkpoint(keras, tmp_path / "mc", save_best_only=True)  # val_loss; no validation data
  export = tftrt_keras.TrtExport(tmp_path / "e", save_best_only=True, **CHEAP)
  x, y = train_data(32)
  model.fit(x, y, batch_size=16, epochs=1, callbacks=[checkpoint, export], verbose=0)
  assert _export_choices(export) == _checkpoint_choices(tmp_path / "mc")


def _outcome(keras, callback, choices):
  """("refused", message names the monitor) when fit raises ValueError, else ("chose", choices())."""
  x, y = train_data(32)
  try:
    classifier(keras).fit(x, y, batch_size=16, epochs=1, verbose=0,
                          callbacks=[_scripted(keras, {"val_custom": [0.5]}), callback])
  except ValueError as err:
    return "refused", "val_custom" in str(err)
  return "chose", choices()


def test_a_direction_keras_cannot_tell_is_refused_or_chosen_as_model_checkpoint(keras, tmp_path):
  """A logged value no compiled metric names: Keras 3.11+ refuses `mode="auto"`; older Keras minimizes it."""
  checkpoint = _model_checkpoint(keras, tmp_path / "mc", monitor="val_custom", save_best_only=True)
  export = tftrt_keras.TrtExport(tmp_path / "e", monitor="val_custom", save_best_only=True, **CHEAP)
  expected = _outcome(keras, checkpoint, lambda: _checkpoint_choices(tmp_path / "mc"))
  assert _outcome(keras, export, lambda: _export_choices(export)) == expected


@pytest.mark.parametrize("monitor, larger_is_better", [
    ("val_loss", False), ("loss", False), ("average_loss", False), ("val_mae", False),
    ("val_mean_absolute_error", False), ("val_accuracy", True), ("acc", True), ("val_precision", True),
    ("val_recall", True), ("val_auc", True), ("auc_precision_recall", True), ("fmeasure", True)])
def test_the_estimator_prefers_the_direction_its_metric_has(monitor, larger_is_better):
  """The canned Estimators' evaluation keys have no Keras metric object to ask: their direction is the one Keras
  3's metric classes declare (tf.keras 2's name rule would make `auc`, `precision` and `recall` smaller-better)."""
  key = monitor[len("val_"):] if monitor.startswith("val_") else monitor
  compare_fn = metric_compare_fn(monitor)
  assert compare_fn(best_eval_result={key: 0.5}, current_eval_result={key: 0.6}) is larger_is_better
  assert compare_fn(best_eval_result={key: 0.5}, current_eval_result={key: 0.4}) is not larger_is_better


def test_the_metric_directions_are_those_keras_3_metric_classes_declare():
  keras = pytest.importorskip("keras")
  if not keras.__version__.startswith("3"):
    pytest.skip(f"Keras {keras.__version__} metrics declare no direction (Keras 3 does)")
  metrics = {"accuracy": keras.metrics.Accuracy(), "auc": keras.metrics.AUC(), "precision": keras.metrics.Precision(),
             "recall": keras.metrics.Recall(), "mean_absolute_error": keras.metrics.MeanAbsoluteError()}
  declared = {name: getattr(metric, "_direction", None) for name, metric in metrics.items()}
  if None in declared.values():
    pytest.skip(f"Keras {keras.__version__} metrics declare no `_direction`")
  for name, direction in declared.items():
    compare_fn = metric_compare_fn("val_" + name)
    assert compare_fn(best_eval_result={name: 0.5}, current_eval_result={name: 0.6}) is (direction == "up"), name
