"""TrtExport with real `fit` calls on every Keras flavour of this TF line (tier tf).

TF-TRT cannot run here, so the real backend records the TF-TRT variants as skipped; tests that need a
produced variant use the TEST DOUBLE `tests.fake_trt_backend.FakeTrtBackendForTests` and say so.
"""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

import tftrt_keras
from tests.keras_models import classifier, indexed_validation, train_data
from tests.saved_models import FAKE_BACKEND

pytestmark = pytest.mark.tf


def _statuses(path):
  with open(path) as f:
    return {k: v["status"] for k, v in json.load(f)["artifacts"].items()}


def _manifest(path):
  with open(path) as f:
    return json.load(f)


def _fit(model, callback, epochs=2, validation=True, **kwargs):
  x, y = train_data()
  xv, yv = train_data(64, seed=1)
  return model.fit(x, y, validation_data=(xv, yv) if validation else None, batch_size=32, epochs=epochs,
                   callbacks=[callback], verbose=0, **kwargs)


@pytest.mark.parametrize("kind", ["sequential", "functional", "subclassed"])
def test_each_epoch_writes_a_loadable_normal_export_and_a_manifest(keras, kind, tmp_path):
  model = classifier(keras, kind)
  callback = tftrt_keras.TrtExport(tmp_path / "exports", calibration_batches=2, verbose=0)
  _fit(model, callback)

  assert [os.path.relpath(p, tmp_path / "exports") for p in callback.manifest_paths] == [
      os.path.join("manifests", "1", "manifest.json"), os.path.join("manifests", "2", "manifest.json")]
  manifest = _manifest(callback.manifest_paths[-1])
  assert manifest["version"] == 2 and manifest["source"]["kind"] == "keras" and manifest["source"]["epoch"] == 2
  assert {k: v["status"] for k, v in manifest["artifacts"].items()} == {
      "native": "ok", "frozen": "ok", "calibration": "ok",
      "tftrt_fp32": "skipped", "tftrt_fp16": "skipped", "tftrt_int8": "skipped"}
  assert "TensorRT" in manifest["artifacts"]["tftrt_int8"]["reason"]
  # The normal export serves what the trained model computes, for any batch size.
  loaded = tf.saved_model.load(str(tmp_path / "exports" / "2"))
  serve = loaded.signatures["serving_default"]
  x = train_data(5, seed=3)[0]
  (name,) = serve.structured_input_signature[1]
  (output,) = serve(**{name: tf.constant(x)}).values()
  np.testing.assert_allclose(output.numpy(), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


def test_validation_metrics_are_unchanged_by_capture(keras, tmp_path):
  results = []
  for capture in (False, True):
    keras.utils.set_random_seed(0)
    model = classifier(keras)
    callbacks = [tftrt_keras.TrtExport(tmp_path / f"e{capture}", precisions=("FP16",), verbose=0,
                                       calibration_batches=3)] if capture else []
    x, y = train_data()
    xv, yv = train_data(96, seed=1)
    history = model.fit(x, y, validation_data=(xv, yv), batch_size=16, epochs=2, callbacks=callbacks, verbose=0)
    results.append(history.history["val_loss"])
  np.testing.assert_allclose(results[1], results[0], rtol=1e-6)


def test_calibration_samples_come_from_validation_and_span_the_whole_pass(keras, tmp_path):
  model = classifier(keras)
  x, y = train_data()
  xv, yv = indexed_validation(n=160)  # 20 batches of 8, rows numbered 1000 + i
  callback = tftrt_keras.TrtExport(tmp_path / "e", calibration_batches=4, verbose=0, seed=3)
  model.fit(x, y, validation_data=(xv, yv), batch_size=8, epochs=1, callbacks=[callback], verbose=0)

  calibration = np.load(tmp_path / "e" / "calibration" / "1" / "calibration.npz")
  verification = np.load(tmp_path / "e" / "calibration" / "1" / "verification.npz")
  rows = np.concatenate([calibration["features"][:, 0], verification["features"][:, 0]]) - 1000
  assert rows.min() >= 0, "a captured sample is not from the validation data"
  batches = sorted(set((rows // 8).astype(int)))
  assert len(batches) == 4 and len(rows) == 32  # whole batches, inputs only
  # Not the first batches of the pass: the sample reaches into the second half of the (sorted) data.
  assert batches != [0, 1, 2, 3] and max(batches) >= 10
  # Calibration and held-out verification samples never overlap.
  assert not set(calibration["features"][:, 0]) & set(verification["features"][:, 0])


def test_capture_memory_is_bounded_by_calibration_batches(primary_keras, tmp_path):
  model = classifier(primary_keras)
  x, y = train_data()
  xv, yv = indexed_validation(n=400)
  callback = tftrt_keras.TrtExport(tmp_path / "e", precisions=("FP16",), calibration_batches=2, verbose=0)
  model.fit(x, y, validation_data=(xv, yv), batch_size=8, epochs=1, callbacks=[callback], verbose=0)
  capture = callback._capture  # pylint: disable=protected-access
  assert len(capture.last_pass) == 2
  # Values were copied out of far fewer than the 50 validation batches.
  assert capture.pulled < 25


def test_multiple_inputs_as_list_and_dict(keras, tmp_path):
  a = keras.Input((3,), name="alpha")
  b = keras.Input((2,), name="beta")
  merged = keras.layers.Concatenate()([a, b])
  out = keras.layers.Dense(2, activation="softmax")(merged)
  rng = np.random.default_rng(0)
  xa, xb, y = rng.normal(size=(64, 3)).astype("float32"), rng.normal(size=(64, 2)).astype("float32"), \
      rng.integers(0, 2, 64)
  for structure in ("list", "dict"):
    model = keras.Model([a, b] if structure == "list" else {"alpha": a, "beta": b}, out)
    model.compile("adam", "sparse_categorical_crossentropy")
    data = [xa, xb] if structure == "list" else {"alpha": xa, "beta": xb}
    callback = tftrt_keras.TrtExport(tmp_path / structure, calibration_batches=2, verbose=0)
    model.fit(data, y, validation_data=(data, y), batch_size=16, epochs=1, callbacks=[callback], verbose=0)
    samples = np.load(tmp_path / structure / "calibration" / "1" / "calibration.npz")
    assert sorted(samples.files) == ["alpha", "beta"]
    assert samples["alpha"].shape[1:] == (3,) and samples["beta"].shape[1:] == (2,)
    loaded = tf.saved_model.load(str(tmp_path / structure / "1"))
    outputs = loaded.signatures["serving_default"](alpha=tf.constant(xa[:4]), beta=tf.constant(xb[:4]))
    np.testing.assert_allclose(list(outputs.values())[0].numpy(), model.predict(data, verbose=0)[:4], atol=1e-5)
    assert _statuses(callback.manifest_paths[0])["frozen"] == "ok"


def test_calibration_data_overrides_capture(primary_keras, tmp_path):
  model = classifier(primary_keras)
  given = np.full((40, 8), 7.0, dtype="float32")
  callback = tftrt_keras.TrtExport(tmp_path / "e", precisions=("INT8",), calibration_data=given,
                                   calibration_batches=4, max_batch_size=10, verbose=0)
  _fit(model, callback, epochs=1, validation=False)
  samples = np.load(tmp_path / "e" / "calibration" / "1" / "calibration.npz")["features"]
  assert np.all(samples == 7.0) and len(samples) == 30  # 4 batches of 10; one held out for verification


def test_int8_without_validation_or_calibration_data_fails_before_the_first_step(primary_keras, tmp_path):
  model = classifier(primary_keras)
  callback = tftrt_keras.TrtExport(tmp_path / "e", precisions=("INT8",), verbose=0)
  with pytest.raises(ValueError, match=r"`calibration_data`.*validation_data"):
    _fit(model, callback, validation=False)
  assert int(model.optimizer.iterations.numpy()) == 0
  assert not os.path.exists(tmp_path / "e" / "1")


def test_fp16_only_trains_without_validation_data(primary_keras, tmp_path):
  model = classifier(primary_keras)
  callback = tftrt_keras.TrtExport(tmp_path / "e", precisions=("FP16",), verbose=0)
  _fit(model, callback, epochs=1, validation=False)
  assert _statuses(callback.manifest_paths[0]) == {"native": "ok", "frozen": "ok", "calibration": "skipped",
                                                   "tftrt_fp16": "skipped"}


@pytest.mark.parametrize("kwargs,argument", [
    (dict(precisions=("FP8",)), "precisions"),
    (dict(save_freq=0), "save_freq"),
    (dict(mode="up"), "mode"),
    (dict(calibration_batches=-1), "calibration_batches"),
    (dict(calibration_batches=0, precisions=("INT8",)), "calibration_batches"),
    (dict(exports_to_keep=0), "exports_to_keep"),
    (dict(max_batch_size=0), "max_batch_size"),
    (dict(minimum_segment_size=-3), "minimum_segment_size"),
    (dict(calibration_data="calib.npz"), "calibration_data"),
    (dict(input_signature=[None]), "input_signature"),
    (dict(timeout_seconds=0), "timeout_seconds"),
])
def test_bad_arguments_are_refused_with_the_argument_named(kwargs, argument, tmp_path):
  with pytest.raises(ValueError) as raised:
    tftrt_keras.TrtExport(tmp_path / "e", **kwargs)
  message = str(raised.value)
  assert f"`{argument}`" in message and "Received:" in message and "Expected" in message
  assert not os.path.exists(tmp_path / "e")


def test_require_tensorrt_fails_before_the_first_step_here(primary_keras, tmp_path):
  model = classifier(primary_keras)
  callback = tftrt_keras.TrtExport(tmp_path / "e", require_tensorrt=True, verbose=0)
  with pytest.raises(tftrt_keras.TensorRTUnavailableError, match="TensorRT"):
    _fit(model, callback)
  assert int(model.optimizer.iterations.numpy()) == 0


def _scripted_metric(keras_module, values):
  """A callback putting a scripted value into the epoch logs, so 'improvement' is known in advance."""

  class Scripted(keras_module.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
      logs["scripted"] = values[epoch]
  return Scripted()


def test_save_best_only_exports_on_improvement_only(primary_keras, tmp_path):
  model = classifier(primary_keras)
  scripted = _scripted_metric(primary_keras, [1.0, 3.0, 2.0, 5.0])
  callback = tftrt_keras.TrtExport(tmp_path / "e", precisions=("FP16",), monitor="scripted", mode="max",
                                   save_best_only=True, verbose=0)
  x, y = train_data()
  model.fit(x, y, epochs=4, batch_size=32, callbacks=[scripted, callback], verbose=0)
  assert [_manifest(p)["source"]["epoch"] for p in callback.manifest_paths] == [1, 2, 4]
  assert [_manifest(p)["version"] for p in callback.manifest_paths] == [1, 2, 3]


def test_initial_value_threshold_holds_back_exports_until_beaten(primary_keras, tmp_path):
  model = classifier(primary_keras)
  scripted = _scripted_metric(primary_keras, [1.0, 3.0, 2.0, 5.0])
  callback = tftrt_keras.TrtExport(tmp_path / "e", precisions=("FP16",), monitor="scripted", mode="max",
                                   save_best_only=True, initial_value_threshold=4.0, verbose=0)
  x, y = train_data()
  model.fit(x, y, epochs=4, batch_size=32, callbacks=[scripted, callback], verbose=0)
  assert [_manifest(p)["source"]["epoch"] for p in callback.manifest_paths] == [4]


def test_save_freq_in_batches(primary_keras, tmp_path):
  model = classifier(primary_keras)
  callback = tftrt_keras.TrtExport(tmp_path / "e", precisions=("FP16",), save_freq=3, verbose=0)
  x, y = train_data(128)
  model.fit(x, y, epochs=1, batch_size=16, callbacks=[callback], verbose=0)  # 8 steps -> exports at 3 and 6
  steps = [_manifest(p)["source"]["step"] for p in callback.manifest_paths]
  assert steps == [3, 6]


def test_versions_continue_across_runs_and_retention_keeps_the_newest(primary_keras, tmp_path):
  root = tmp_path / "e"
  users_own = root / "99"  # a numbered directory that is not ours: never deleted, never overwritten
  users_own.mkdir(parents=True)
  (users_own / "keep.txt").write_text("mine")
  model = classifier(primary_keras)
  first = tftrt_keras.TrtExport(root, precisions=("FP16",), exports_to_keep=2, verbose=0)
  _fit(model, first, epochs=3)
  second = tftrt_keras.TrtExport(root, precisions=("FP16",), exports_to_keep=2, verbose=0)
  _fit(model, second, epochs=1)  # a resumed run: a new callback on the same root

  def versions(callback):
    return [int(os.path.basename(os.path.dirname(p))) for p in callback.manifest_paths]
  assert versions(first) == [100, 101, 102] and versions(second) == [103]
  remaining = sorted(int(n) for n in os.listdir(root / "manifests"))
  assert remaining == [102, 103]
  assert sorted(int(n) for n in os.listdir(root) if n.isdigit()) == [99, 102, 103]
  assert (users_own / "keep.txt").read_text() == "mine"


def test_a_second_run_on_the_same_root_is_refused_while_the_first_holds_it(primary_keras, tmp_path):
  model = classifier(primary_keras)
  holder = tftrt_keras.TrtExport(tmp_path / "e", precisions=("FP16",), verbose=0)
  holder.set_model(model)
  holder.on_train_begin()
  try:
    other = tftrt_keras.TrtExport(tmp_path / "e", precisions=("FP16",), verbose=0)
    with pytest.raises(tftrt_keras.ExportRootBusy, match="is in use by another exporter in this process"):
      _fit(classifier(primary_keras), other, epochs=1)
  finally:
    holder.on_train_end()


def test_a_conversion_failure_is_recorded_and_training_goes_on(keras, tmp_path, monkeypatch):
  """Uses the TEST DOUBLE backend, told to fail FP16."""
  monkeypatch.setenv("FAKE_TRT_FAIL", "FP16")
  model = classifier(keras)
  callback = tftrt_keras.TrtExport(tmp_path / "e", precisions=("FP32", "FP16"), backend=FAKE_BACKEND, verbose=0)
  history = _fit(model, callback, epochs=2)
  assert len(history.history["loss"]) == 2
  manifest = _manifest(callback.manifest_paths[-1])
  assert manifest["artifacts"]["tftrt_fp32"]["status"] == "ok"
  assert manifest["artifacts"]["tftrt_fp16"]["status"] == "failed"
  assert "injected failure for FP16" in manifest["artifacts"]["tftrt_fp16"]["reason"]
  assert os.path.isdir(tmp_path / "e" / "tftrt_fp32" / "2") and not os.path.exists(tmp_path / "e" / "tftrt_fp16" / "2")


def test_a_snapshot_failure_is_recorded_and_training_goes_on(primary_keras, tmp_path):
  model = classifier(primary_keras)
  wrong = tf.TensorSpec([None, 5], tf.float32, name="features")  # the model takes 8 features
  callback = tftrt_keras.TrtExport(tmp_path / "e", precisions=("FP16",), input_signature=wrong, verbose=0)
  history = _fit(model, callback, epochs=2)
  assert len(history.history["loss"]) == 2
  manifest = _manifest(callback.manifest_paths[0])
  assert manifest["artifacts"]["native"]["status"] == "failed"
  assert "export failed before conversion" in manifest["artifacts"]["native"]["reason"]
  assert not os.path.exists(tmp_path / "e" / "1")


def test_blocking_export_is_complete_when_the_epoch_ends(primary_keras, tmp_path):
  """Uses the TEST DOUBLE backend so that a variant is really written."""
  model = classifier(primary_keras)
  seen = []

  class Inspect(primary_keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
      seen.append(_statuses(export.manifest_paths[-1]))
  export = tftrt_keras.TrtExport(tmp_path / "e", precisions=("FP32",), blocking=True, backend=FAKE_BACKEND,
                                 verbose=0)
  x, y = train_data()
  model.fit(x, y, validation_data=train_data(32, seed=1), epochs=1, batch_size=32, callbacks=[export, Inspect()],
            verbose=0)
  assert seen == [{"native": "ok", "frozen": "ok", "calibration": "ok", "tftrt_fp32": "ok"}]


def _scalars(log_dir):
  """{tag: [(step, value)]} read back from every event file under `log_dir`."""
  found = {}
  for root, _, files in os.walk(log_dir):
    for name in files:
      if "tfevents" not in name:
        continue
      for event in tf.compat.v1.train.summary_iterator(os.path.join(root, name)):
        for value in event.summary.value:
          number = float(tf.make_ndarray(value.tensor)) if value.HasField("tensor") else value.simple_value
          found.setdefault(value.tag, []).append((event.step, number))
  return found


def test_verification_figures_reach_tensorboard_next_to_the_training_curves(primary_keras, tmp_path):
  model = classifier(primary_keras)
  log_dir = tmp_path / "logs"
  callback = tftrt_keras.TrtExport(tmp_path / "e", precisions=("FP16",), calibration_batches=4, log_dir=log_dir,
                                   verbose=0)
  x, y = train_data()
  model.fit(x, y, validation_data=train_data(64, seed=1), batch_size=16, epochs=1, callbacks=[callback], verbose=0)
  manifest = _manifest(callback.manifest_paths[0])
  frozen = manifest["artifacts"]["frozen"]["verification"]
  scalars = _scalars(log_dir)
  steps_and_values = scalars["verification/frozen/max_abs_error"]
  # Written at the export's training step, with the figure the manifest holds.
  assert steps_and_values == [(manifest["source"]["step"], pytest.approx(
      max(o["max_abs_error"] for o in frozen["outputs"].values()), rel=1e-6))]
  assert any(tag.startswith("verification/frozen/latency_p50_ms_batch") for tag in scalars)
