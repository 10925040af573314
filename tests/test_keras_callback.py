"""TrtExport with real `fit` calls on every Keras flavour of this TF line (tier tf).

Tests that do not look at variants ask for `formats=("tftrt",)`, which costs nothing where TF-TRT cannot run;
TF-TRT outcomes are asserted for both cases (`ok` where the preflight says TF-TRT runs, else `skipped` with its
reason). Tests that need a produced variant use the TEST DOUBLE `tests.fake_trt_backend.FakeTrtBackendForTests`
and say so.
"""

import importlib.util
import json
import logging as python_logging
import os
import warnings

import numpy as np
import pytest
import tensorflow as tf

import tftrt_keras
from tests.keras_models import assert_tftrt_outcome, classifier, indexed_validation, train_data
from tftrt_keras.formats.tftrt.format import tensorflow_has_tftrt

pytestmark = pytest.mark.tf
TFTRT = ("tftrt",)  # the one format that costs nothing where TensorRT is missing


def _statuses(path):
  with open(path) as f:
    return {k: v["status"] for k, v in json.load(f)["artifacts"].items()}


def _manifest(path):
  with open(path) as f:
    return json.load(f)


def _fit(model, callback, epochs=2, validation=True, callbacks_after=(), **kwargs):
  x, y = train_data()
  xv, yv = train_data(64, seed=1)
  return model.fit(x, y, validation_data=(xv, yv) if validation else None, batch_size=32, epochs=epochs,
                   callbacks=[callback, *callbacks_after], verbose=0, **kwargs)


@pytest.mark.parametrize("kind", ["sequential", "functional", "subclassed"])
def test_each_epoch_writes_a_loadable_normal_export_and_a_manifest(keras, kind, tmp_path):
  model = classifier(keras, kind)
  callback = tftrt_keras.TrtExport(tmp_path / "exports", formats=TFTRT, calibration_batches=2, verbose=0)
  _fit(model, callback)

  assert [os.path.relpath(p, tmp_path / "exports") for p in callback.manifest_paths] == [
      os.path.join("manifests", "1", "manifest.json"), os.path.join("manifests", "2", "manifest.json")]
  manifest = _manifest(callback.manifest_paths[-1])
  assert manifest["version"] == 2 and manifest["source"]["kind"] == "keras" and manifest["source"]["epoch"] == 2
  artifacts = manifest["artifacts"]
  assert list(artifacts) == ["native", "frozen", "calibration", "tftrt_fp32", "tftrt_fp16", "tftrt_int8"]
  assert {k: artifacts[k]["status"] for k in ("native", "frozen", "calibration")} == {
      "native": "ok", "frozen": "ok", "calibration": "ok"}
  for name in ("tftrt_fp32", "tftrt_fp16", "tftrt_int8"):
    assert_tftrt_outcome(artifacts[name])
  # The normal export serves what the trained model computes, for any batch size.
  loaded = tf.saved_model.load(str(tmp_path / "exports" / "2"))
  serve = loaded.signatures["serving_default"]
  x = train_data(5, seed=3)[0]
  (name,) = serve.structured_input_signature[1]
  (output,) = serve(**{name: tf.constant(x)}).values()
  np.testing.assert_allclose(output.numpy(), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


def test_validation_metrics_are_bit_identical_with_capture(keras, tmp_path):
  results = []
  for capture in (False, True):
    keras.utils.set_random_seed(0)
    model = classifier(keras)
    callbacks = [tftrt_keras.TrtExport(tmp_path / f"e{capture}", precisions=("FP16",), formats=TFTRT, verbose=0,
                                       calibration_batches=3, verification_samples=40)] if capture else []
    x, y = train_data()
    xv, yv = train_data(200, seed=1)  # 13 batches: 6 go through capture's own step, 7 through Keras'
    history = model.fit(x, y, validation_data=(xv, yv), batch_size=16, epochs=2, callbacks=callbacks, verbose=0)
    results.append({k: v for k, v in history.history.items() if k.startswith("val_")})
    if capture:
      assert 0 < callbacks[0]._capture.pulled < 2 * 13  # pylint: disable=protected-access
  assert sorted(results[1]) == sorted(results[0]) == ["val_accuracy", "val_loss"]
  for name, values in results[0].items():
    np.testing.assert_array_equal(results[1][name], values, err_msg=name)


def _captured_rows(path, file_name):
  """The validation rows a samples file holds (rows of `indexed_validation` are 1000 + index), inputs only."""
  rows = np.load(path / file_name)["features"][:, 0] - 1000
  assert rows.min() >= 0, "a captured sample is not from the validation data"
  assert len(set(rows)) == len(rows)
  return rows.astype(int)


def test_calibration_and_verification_samples_are_disjoint_and_span_the_whole_pass(keras, tmp_path):
  model = classifier(keras)
  x, y = train_data()
  xv, yv = indexed_validation(n=640)  # 160 batches of 4, rows numbered 1000 + i, sorted
  callback = tftrt_keras.TrtExport(tmp_path / "e", formats=TFTRT, calibration_batches=24, verification_samples=94,
                                   verbose=0, seed=3)
  model.fit(x, y, validation_data=(xv, yv), batch_size=4, epochs=2, callbacks=[callback], verbose=0)

  for version in (1, 2):  # the first pass samples without knowing its length, the second one knows it
    directory = tmp_path / "e" / "calibration" / str(version)
    calibration = _captured_rows(directory, "calibration.npz")
    verification = _captured_rows(directory, "verification.npz")
    assert len(calibration) == 24 * 4  # calibration_batches of the captured size
    assert len(verification) == 94  # split by sample: exactly what was asked
    assert not set(calibration) & set(verification)
    for sample in (calibration, verification):
      assert min(sample) < 160 and max(sample) >= 480, sample  # the first and the last quarter of the pass
    manifest = _manifest(tmp_path / "e" / "manifests" / str(version) / "manifest.json")
    assert manifest["artifacts"]["calibration"]["samples"] == 96
    assert manifest["artifacts"]["calibration"]["batch_sizes"] == [4] * 24
    assert manifest["artifacts"]["calibration"]["verification_samples"] == 94


def test_capture_memory_is_bounded_and_later_passes_pull_only_what_they_keep(primary_keras, tmp_path):
  model = classifier(primary_keras)
  x, y = train_data()
  xv, yv = indexed_validation(n=400)
  callback = tftrt_keras.TrtExport(tmp_path / "e", precisions=("FP16",), formats=TFTRT, calibration_batches=2,
                                   verification_samples=16, verbose=0)
  pulled = []

  class CountPulled(primary_keras.callbacks.Callback):
    def on_test_end(self, logs=None):
      pulled.append(callback._capture.pulled)  # pylint: disable=protected-access
  model.fit(x, y, validation_data=(xv, yv), batch_size=8, epochs=3, callbacks=[callback, CountPulled()],
            verbose=0)
  per_pass = [b - a for a, b in zip([0] + pulled, pulled)]
  # 2 calibration + 2 verification batches kept of 50: the first pass pulls ~4 (1 + ln(50 / 4)) of them, later
  # passes (same length) exactly the 4 they keep.
  assert per_pass[0] < 25 and per_pass[1:] == [4, 4], per_pass
  calibration = np.load(tmp_path / "e" / "calibration" / "3" / "calibration.npz")["features"]
  verification = np.load(tmp_path / "e" / "calibration" / "3" / "verification.npz")["features"]
  assert len(calibration) == len(verification) == 16


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
    callback = tftrt_keras.TrtExport(tmp_path / structure, formats=TFTRT, calibration_batches=2, verbose=0)
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
  callback = tftrt_keras.TrtExport(tmp_path / "e", formats=TFTRT, precisions=("INT8",), calibration_data=given,
                                   calibration_batches=4, max_batch_size=10, verbose=0)
  _fit(model, callback, epochs=1, validation=False)
  samples = np.load(tmp_path / "e" / "calibration" / "1" / "calibration.npz")["features"]
  assert np.all(samples == 7.0) and len(samples) == 30  # 4 batches of 10; one held out for verification


def test_int8_without_validation_or_calibration_data_fails_before_the_first_step(primary_keras, tmp_path):
  model = classifier(primary_keras)
  callback = tftrt_keras.TrtExport(tmp_path / "e", formats=TFTRT, precisions=("INT8",), verbose=0)
  with pytest.raises(ValueError, match=r"`calibration_data`.*validation_data"):
    _fit(model, callback, validation=False)
  assert int(model.optimizer.iterations.numpy()) == 0
  assert not os.path.exists(tmp_path / "e" / "1")


def test_fp16_only_trains_without_validation_data(primary_keras, tmp_path):
  model = classifier(primary_keras)
  callback = tftrt_keras.TrtExport(tmp_path / "e", formats=TFTRT, precisions=("FP16",), verbose=0)
  _fit(model, callback, epochs=1, validation=False)
  artifacts = _manifest(callback.manifest_paths[0])["artifacts"]
  assert {k: v["status"] for k, v in artifacts.items() if k != "tftrt_fp16"} == {
      "native": "ok", "frozen": "unverified", "calibration": "skipped"}
  assert artifacts["frozen"]["reason"].startswith("no held-out samples")  # built; nothing to compare it on
  assert_tftrt_outcome(artifacts["tftrt_fp16"])


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
    (dict(formats=("tensorflow-lite",)), "formats"),
    (dict(format_options={"tflite": {}}), "format_options"),
    (dict(conversion_policy="oldest"), "conversion_policy"),
    (dict(verification_samples=0), "verification_samples"),
    (dict(conversion_device="tpu:0"), "conversion_device"),
    (dict(triton_model_name=""), "triton_model_name"),
])
def test_bad_arguments_are_refused_with_the_argument_named(kwargs, argument, tmp_path):
  with pytest.raises(ValueError) as raised:
    tftrt_keras.TrtExport(tmp_path / "e", **kwargs)
  message = str(raised.value)
  assert f"`{argument}`" in message and "Received:" in message and "Expected" in message
  assert not os.path.exists(tmp_path / "e")


def test_require_tensorrt_fails_before_the_first_step_where_tensorrt_cannot_run(primary_keras, tmp_path):
  model = classifier(primary_keras)
  callback = tftrt_keras.TrtExport(tmp_path / "e", formats=TFTRT, require_tensorrt=True, verbose=0)
  if tensorflow_has_tftrt() and tftrt_keras.check_tftrt().usable:
    _fit(model, callback, epochs=1)  # TensorRT runs here: training goes on
    assert int(model.optimizer.iterations.numpy()) > 0
    return
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
  callback = tftrt_keras.TrtExport(tmp_path / "e", formats=TFTRT, precisions=("FP16",), monitor="scripted", mode="max",
                                   save_best_only=True, verbose=0)
  x, y = train_data()
  model.fit(x, y, epochs=4, batch_size=32, callbacks=[scripted, callback], verbose=0)
  assert [_manifest(p)["source"]["epoch"] for p in callback.manifest_paths] == [1, 2, 4]
  assert [_manifest(p)["version"] for p in callback.manifest_paths] == [1, 2, 3]


def test_initial_value_threshold_holds_back_exports_until_beaten(primary_keras, tmp_path):
  model = classifier(primary_keras)
  scripted = _scripted_metric(primary_keras, [1.0, 3.0, 2.0, 5.0])
  callback = tftrt_keras.TrtExport(tmp_path / "e", formats=TFTRT, precisions=("FP16",), monitor="scripted", mode="max",
                                   save_best_only=True, initial_value_threshold=4.0, verbose=0)
  x, y = train_data()
  model.fit(x, y, epochs=4, batch_size=32, callbacks=[scripted, callback], verbose=0)
  assert [_manifest(p)["source"]["epoch"] for p in callback.manifest_paths] == [4]


def test_save_freq_in_batches(primary_keras, tmp_path):
  model = classifier(primary_keras)
  callback = tftrt_keras.TrtExport(tmp_path / "e", formats=TFTRT, precisions=("FP16",), save_freq=3, verbose=0)
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
  first = tftrt_keras.TrtExport(root, formats=TFTRT, precisions=("FP16",), exports_to_keep=2, verbose=0)
  _fit(model, first, epochs=3)
  second = tftrt_keras.TrtExport(root, formats=TFTRT, precisions=("FP16",), exports_to_keep=2, verbose=0)
  _fit(model, second, epochs=1)  # a resumed run: a new callback on the same root

  def versions(callback):
    return [int(os.path.basename(os.path.dirname(p))) for p in callback.manifest_paths]
  assert versions(first) == [100, 101, 102] and versions(second) == [103]
  remaining = sorted(int(n) for n in os.listdir(root / "manifests"))
  assert remaining == [102, 103]
  assert sorted(int(n) for n in os.listdir(root) if n.isdigit()) == [99, 102, 103]
  assert (users_own / "keep.txt").read_text() == "mine"


def test_a_second_run_on_the_same_root_is_refused_while_the_first_fit_runs(primary_keras, tmp_path):
  model = classifier(primary_keras)
  holder = tftrt_keras.TrtExport(tmp_path / "e", formats=TFTRT, precisions=("FP16",), verbose=0)
  refused = []

  class SecondRunInside(primary_keras.callbacks.Callback):
    """While the holder's fit() runs (we are inside it), another run on the same root must be refused."""

    def on_epoch_end(self, epoch, logs=None):
      other = tftrt_keras.TrtExport(tmp_path / "e", formats=TFTRT, precisions=("FP16",), verbose=0)
      with pytest.raises(tftrt_keras.ExportRootBusy, match="is in use by another exporter in this process") as err:
        _fit(classifier(primary_keras), other, epochs=1)
      refused.append(str(err.value))
  model.fit(*train_data(), epochs=1, verbose=0, callbacks=[holder, SecondRunInside()])
  assert len(refused) == 1
  assert _statuses(holder.manifest_paths[0])["native"] == "ok"  # the holder's run went on


def test_a_conversion_failure_is_recorded_and_training_goes_on(keras, tmp_path, monkeypatch, fake_tftrt):
  """Uses the TEST DOUBLE backend, told to fail FP16."""
  monkeypatch.setenv("FAKE_TRT_FAIL", "FP16")
  model = classifier(keras)
  callback = tftrt_keras.TrtExport(tmp_path / "e", formats=TFTRT, precisions=("FP32", "FP16"),
                                   verbose=0)
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
  callback = tftrt_keras.TrtExport(tmp_path / "e", formats=TFTRT, precisions=("FP16",), input_signature=wrong,
                                   verbose=0)
  history = _fit(model, callback, epochs=2)
  assert len(history.history["loss"]) == 2
  manifest = _manifest(callback.manifest_paths[0])
  assert manifest["artifacts"]["native"]["status"] == "failed"
  assert "export failed before conversion" in manifest["artifacts"]["native"]["reason"]
  assert not os.path.exists(tmp_path / "e" / "1")


def test_blocking_export_is_complete_when_the_epoch_ends(primary_keras, tmp_path, fake_tftrt):
  """Uses the TEST DOUBLE backend so that a variant is really written."""
  model = classifier(primary_keras)
  seen = []

  class Inspect(primary_keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
      seen.append(_statuses(export.manifest_paths[-1]))
  export = tftrt_keras.TrtExport(tmp_path / "e", formats=TFTRT, precisions=("FP32",), blocking=True, verbose=0)
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
  pytest.importorskip("tensorboard", reason="tf.summary writes nothing without TensorBoard (not installed with "
                                            "TensorFlow 2.21)")
  model = classifier(primary_keras)
  log_dir = tmp_path / "logs"
  callback = tftrt_keras.TrtExport(tmp_path / "e", formats=TFTRT, precisions=("FP16",), calibration_batches=4,
                                   log_dir=log_dir, verbose=0)
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


@pytest.mark.parametrize("kind", ["sequential", "functional"])
def test_fit_with_trtexport_says_only_what_it_does(keras, kind, tmp_path, capsys, caplog, fake_tftrt):
  """No Keras warning that fit without TrtExport would not give, no absl INFO line of ours in the trainer:
  one line per export naming the variants being built, and the table once at the end."""
  model = classifier(keras, kind)
  # fake_tftrt: the TEST DOUBLE converter, so the variants are attempted everywhere.
  callback = tftrt_keras.TrtExport(tmp_path / "e", formats=TFTRT, precisions=("FP16", "INT8"), verbose=1)
  caplog.set_level(python_logging.DEBUG)
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    _fit(model, callback, epochs=2)
  structure = [str(w.message) for w in caught if "structure" in str(w.message)]
  assert structure == []
  ours = [r for r in caplog.records if r.levelno < python_logging.WARNING and "tftrt_keras" in r.pathname]
  assert ours == [], [r.getMessage() for r in ours]
  printed = capsys.readouterr().out.splitlines()
  export_lines = [line for line in printed if line.startswith("tftrt_keras: exported version")]
  assert [line.split(";")[1].strip() for line in export_lines] == [
      "converting tftrt fp16/int8 in the background"] * 2
  assert sum(line.startswith("tftrt_keras exports:") for line in printed) == 1
  summary_at = next(i for i, line in enumerate(printed) if line.startswith("tftrt_keras exports:"))
  assert printed.index(export_lines[-1]) < summary_at


def test_an_interrupted_fit_does_not_block_the_next_run_and_its_exports_are_closed(primary_keras, tmp_path,
                                                                                      monkeypatch, fake_tftrt):
  """Ctrl-C in a notebook: a KeyboardInterrupt raised mid-fit, then the same cell again in the same process.
  The first run's conversion is held mid-write by the TEST DOUBLE backend, so it is still running then."""
  root = tmp_path / "e"
  monkeypatch.setenv("FAKE_TRT_RELEASE_FILE", str(tmp_path / "never"))  # the first run's worker never finishes

  class CtrlC(primary_keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
      if epoch == 1:
        raise KeyboardInterrupt

  model = classifier(primary_keras)
  first = tftrt_keras.TrtExport(root, formats=TFTRT, precisions=("FP32",), verbose=0)
  with pytest.raises(KeyboardInterrupt):
    _fit(model, first, epochs=4, callbacks_after=[CtrlC()])
  assert [_manifest(p)["version"] for p in first.manifest_paths] == [1, 2]
  assert "pending" in _statuses(first.manifest_paths[-1]).values()  # its conversion is still running

  monkeypatch.delenv("FAKE_TRT_RELEASE_FILE")
  second = tftrt_keras.TrtExport(root, formats=TFTRT, precisions=("FP32",), verbose=0)
  history = _fit(model, second, epochs=1)  # the same model, as a notebook cell run again
  assert len(history.history["loss"]) == 1
  assert [_manifest(p)["version"] for p in second.manifest_paths] == [3]
  assert _statuses(second.manifest_paths[0])["tftrt_fp32"] == "ok"
  for path in first.manifest_paths:
    artifacts = _manifest(path)["artifacts"]
    assert "pending" not in {entry["status"] for entry in artifacts.values()}, artifacts
  interrupted = _manifest(first.manifest_paths[-1])["artifacts"]["tftrt_fp32"]
  assert interrupted["status"] in ("failed", "skipped") and "interrupted" in interrupted["reason"], interrupted
  # The model validates with Keras' own function again, not the first run's capture.
  assert type(model.test_function).__name__ != "CapturingTestFunction"
  # And the directory is free for a third run.
  third = tftrt_keras.TrtExport(root, formats=TFTRT, precisions=("FP32",), verbose=0)
  _fit(model, third, epochs=1)
  assert [_manifest(p)["version"] for p in third.manifest_paths] == [4]


@pytest.mark.slow
@pytest.mark.lines("2.21", why="the retention default is the export layout's; seven exports cost 40-80 s a line")
def test_exports_to_keep_defaults_to_five(primary_keras, tmp_path):
  model = classifier(primary_keras)
  callback = tftrt_keras.TrtExport(tmp_path / "e", formats=(), precisions=(), verify=False, save_freq=1, verbose=0)
  x, y = train_data(112)
  model.fit(x, y, batch_size=16, epochs=1, callbacks=[callback], verbose=0)  # 7 batches, an export after each
  assert len(callback.manifest_paths) == 7
  assert sorted(int(n) for n in os.listdir(tmp_path / "e" / "manifests")) == [3, 4, 5, 6, 7]
  assert sorted(int(n) for n in os.listdir(tmp_path / "e") if n.isdigit()) == [3, 4, 5, 6, 7]


def test_from_flags_passes_every_export_flag(tmp_path):
  from absl import flags  # pylint: disable=g-import-not-at-top
  from tftrt_keras.flags import define_export_flags  # pylint: disable=g-import-not-at-top
  flag_values = flags.FlagValues()
  define_export_flags(flag_values)
  flag_values([
      "train", f"--export_dir={tmp_path / 'e'}", "--export_precisions=fp16,int8", "--export_formats=onnx",
      '--export_format_options={"onnx": {}}', "--export_conversion_policy=every",
      "--export_verification_samples=64", "--export_conversion_device=cpu", "--export_timeout_seconds=120",
      f"--export_triton_repository={tmp_path / 'models'}", "--export_triton_model_name=digits",
      "--export_calibration_batches=3", "--export_exports_to_keep=2", "--export_save_best_only",
      "--export_monitor=val_accuracy", "--export_blocking", "--export_max_batch_size=16"])
  callback = tftrt_keras.TrtExport.from_flags(flag_values, verbose=0)
  options = callback.options
  assert (options.precisions, options.formats, options.conversion_policy, options.verification_samples,
          options.conversion_device, options.timeout_seconds, options.triton_model_name, options.max_batch_size) == (
              ("FP16", "INT8"), ("onnx",), "every", 64, "cpu", 120.0, "digits", 16)
  assert options.triton_repository == str(tmp_path / "models")
  assert (callback.export_dir, callback.calibration_batches, callback.exports_to_keep, callback.save_best_only,
          callback.monitor, callback.mode, callback.blocking) == (
              str(tmp_path / "e"), 3, 2, True, "val_accuracy", "auto", True)
  # An override wins over its flag.
  assert tftrt_keras.TrtExport.from_flags(flag_values, formats=("tftrt",), verbose=0).options.formats == ("tftrt",)


def test_new_arguments_reach_the_conversion_options(tmp_path):
  callback = tftrt_keras.TrtExport(tmp_path / "e", formats="onnx,trt", conversion_policy="every",
                                   verification_samples=300, conversion_device="GPU:1", triton_model_name="m",
                                   triton_repository=str(tmp_path / "models"), timeout_seconds=None)
  options = callback.options
  assert (options.formats, options.conversion_policy, options.verification_samples, options.conversion_device,
          options.triton_model_name, options.timeout_seconds) == (("onnx", "trt"), "every", 300, "gpu:1", "m", None)
  from tftrt_keras.options import DEFAULT_TIMEOUT_SECONDS  # pylint: disable=g-import-not-at-top
  defaults = tftrt_keras.TrtExport(tmp_path / "e").options
  assert (defaults.formats, defaults.timeout_seconds, defaults.verification_samples) == (
      "auto", DEFAULT_TIMEOUT_SECONDS, 500)


def test_log_dir_without_tensorboard_is_refused_before_training(tmp_path):
  if importlib.util.find_spec("tensorboard") is not None:
    pytest.skip("TensorBoard is installed here (it is not with TensorFlow 2.21)")
  with pytest.raises(ValueError, match=r"`log_dir`.*pip install tensorboard"):
    tftrt_keras.TrtExport(tmp_path / "e", log_dir=tmp_path / "logs")
