"""Samples keyed by the serving signature's input names whatever structure the data has, and cast to the
signature's dtypes as Keras casts them in `fit` (`tftrt_keras.samples.by_name` and its callers)."""

import json
import os

import numpy as np
import pytest

from tftrt_keras.samples import by_name

TFTRT = ("tftrt",)  # the one format that costs nothing where TensorRT is missing


# ---------------------------------------------------------------------------------------------- matching
@pytest.mark.unit
@pytest.mark.parametrize("data", [
    {"alpha": np.full(2, 1.0), "zeta": np.full(2, 100.0)},  # sorted keys: alpha first
    {"zeta": np.full(2, 100.0), "alpha": np.full(2, 1.0)},
    [np.full(2, 100.0), np.full(2, 1.0)],
    (np.full(2, 100.0), np.full(2, 1.0)),
])
def test_list_inputs_take_a_dict_by_name_and_a_sequence_by_position(data):
  keyed = by_name.key_by_name(data, ["zeta", "alpha"])
  assert list(keyed) == ["zeta", "alpha"]
  assert keyed["zeta"][0] == 100.0 and keyed["alpha"][0] == 1.0


@pytest.mark.unit
def test_dict_single_and_nested_structures_are_keyed_by_name():
  assert by_name.key_by_name({"b": 2, "a": 1}, {"a": "a", "b": "b"}) == {"a": 1, "b": 2}
  assert by_name.key_by_name((np.ones(3),), "x")["x"].shape == (3,)
  assert by_name.key_by_name({"x": np.ones(3)}, "x")["x"].shape == (3,)
  nested = by_name.key_by_name({"text": [1, 2], "meta": {"age": 3}}, {"meta": {"age": "age"}, "text": ["t0", "t1"]})
  assert nested == {"age": 3, "t0": 1, "t1": 2}
  assert by_name.key_by_name({"zeta": 1, "alpha": 2, "label": 3}, ["zeta", "alpha"], extra="drop") == {
      "zeta": 1, "alpha": 2}


@pytest.mark.unit
@pytest.mark.parametrize("data, expected, fragments", [
    ({"zeta": 1}, ["zeta", "alpha"], ["arrays named ['zeta']", "named ['zeta', 'alpha']", "missing: ['alpha']"]),
    ({"zeta": 1, "alpha": 2, "beta": 3}, ["zeta", "alpha"],
     ["arrays named ['alpha', 'beta', 'zeta']", "named ['zeta', 'alpha']", "not model inputs: ['beta']"]),
    ([1, 2, 3], ["zeta", "alpha"], ["a list of 3 arrays", "named ['zeta', 'alpha']", "3 arrays for 2 inputs"]),
    ([1, 2], {"a": "a", "b": "b"}, ["a list of 2 arrays", "named ['a', 'b']", "takes a dict keyed by ['a', 'b']"]),
    ({"y": 1}, "x", ["arrays named ['y']", "named ['x']", "missing: ['x']"]),
])
def test_a_structure_that_cannot_be_matched_by_name_names_both_sides(data, expected, fragments):
  with pytest.raises(ValueError) as info:
    by_name.key_by_name(data, expected, argument="calibration_data")
  message = str(info.value)
  assert message.startswith("Invalid value for argument `calibration_data`.")
  for fragment in fragments:
    assert fragment in message, message


# ---------------------------------------------------------------------------------------------- casting
@pytest.mark.unit
def test_casts_say_what_they_lost_and_only_that():
  report = by_name.CastReport()
  arrays = {"tokens": np.array([[3, 7], [1, 9]], np.int64),          # exact in float32
            "big": np.array([2 ** 24 + 1, 5], np.int64),               # 2**24 + 1 is not a float32
            "wide": np.array([1e39, 0.5, 1e-50], np.float64),          # overflow, exact, underflow
            "ids": np.array([1.0, 2.5, -3.7, 4.0, 1e12], np.float32),  # two fractions, one out of int32
            "text": np.array([b"a", b"b"])}
  dtypes = {"tokens": "float32", "big": "float32", "wide": "float32", "ids": "int32", "text": "string"}
  cast = by_name.cast_to_dtypes(arrays, dtypes, report)
  assert {k: v.dtype.name for k, v in cast.items() if k != "text"} == {
      "tokens": "float32", "big": "float32", "wide": "float32", "ids": "int32"}
  assert cast["text"] is arrays["text"]
  entries = {e["input"]: e for e in report.entries()}
  assert set(entries) == {"tokens", "big", "wide", "ids"}  # strings are fed as they are
  assert entries["tokens"] == {"input": "tokens", "from": "int64", "to": "float32", "values": 4, "lost": None}
  assert entries["big"]["lost"] == "1 of 2 values are not exact in float32"
  assert "1 of 3 values overflowed float32" in entries["wide"]["lost"]
  assert "1 of 3 values lost more than 0.001 relative precision" in entries["wide"]["lost"]
  assert entries["ids"]["lost"] == ("1 of 5 values were out of int32's range; "
                                    "2 of 5 values had a fractional part (truncated)")
  warnings = by_name.cast_warnings(report.entries())
  assert len(warnings) == 3 and warnings[0].startswith("input 'big' cast from int64 to float32")


@pytest.mark.unit
def test_strings_and_numbers_are_not_cast_into_each_other():
  with pytest.raises(ValueError, match=r"`calibration_data`.*text: dtype int64.*text: dtype string"):
    by_name.cast_to_dtypes({"text": np.array([1, 2])}, {"text": "string"})
  with pytest.raises(ValueError, match=r"x: dtype <U1.*x: dtype float32"):
    by_name.cast_to_dtypes({"x": np.array(["a"])}, {"x": "float32"})


# ---------------------------------------------------------------------------------------------- Keras
def _manifest(path):
  with open(path) as f:
    return json.load(f)


def _samples(root, version=1, file="calibration.npz"):
  with np.load(os.path.join(root, "calibration", str(version), file)) as data:
    return {k: data[k] for k in data.files}


def _zeta_alpha(keras):
  """Inputs [zeta (values ~100), alpha (~0.01)]: swapping them changes everything the model computes."""
  zeta, alpha = keras.Input((4,), name="zeta"), keras.Input((4,), name="alpha")
  hidden = keras.layers.Dense(16, activation="relu")(
      keras.layers.Concatenate()([keras.layers.Rescaling(0.01)(zeta), keras.layers.Rescaling(100.0)(alpha)]))
  model = keras.Model([zeta, alpha], keras.layers.Dense(3, name="logits")(hidden))
  model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  return model


def _zeta_alpha_data(n, seed):
  rng = np.random.default_rng(seed)
  zeta = rng.normal(100.0, 1.0, (n, 4)).astype("float32")
  alpha = rng.normal(0.01, 0.01, (n, 4)).astype("float32")
  y = (np.argmax(zeta[:, :3] - 100.0 + 100.0 * alpha[:, :3], axis=1)).astype("int32")
  return {"alpha": alpha, "zeta": zeta}, y  # dict order unlike the model's input order


@pytest.mark.tf
@pytest.mark.slow
def test_dict_fed_to_list_inputs_keeps_names_and_int8_agrees_on_fresh_named_inputs(primary_keras, tmp_path):
  """The issue's minimal case: before, calibration.npz held the alpha values under `zeta` and `onnx_int8` was
  calibrated (and verified) on swapped inputs."""
  import onnxruntime  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tftrt_keras  # pylint: disable=g-import-not-at-top
  model = _zeta_alpha(primary_keras)
  x, y = _zeta_alpha_data(512, 0)
  xv, yv = _zeta_alpha_data(256, 1)
  root = tmp_path / "e"
  callback = tftrt_keras.TrtExport(root, formats=("onnx",), precisions=("FP32", "INT8"), calibration_batches=4,
                                   verification_samples=100, blocking=True, verbose=0)
  model.fit(x, y, validation_data=(xv, yv), batch_size=32, epochs=1, callbacks=[callback], verbose=0)
  for file in ("calibration.npz", "verification.npz"):
    samples = _samples(root, file=file)
    assert 95 < samples["zeta"].mean() < 105 and abs(samples["alpha"].mean()) < 0.1, file
  statuses = {k: v["status"] for k, v in _manifest(callback.manifest_paths[0])["artifacts"].items()}
  assert statuses["calibration"] == "ok" and statuses["onnx_int8"] in ("ok", "unverified"), statuses

  fresh, _ = _zeta_alpha_data(400, 2)
  native = tf.saved_model.load(str(root / "1")).signatures["serving_default"](
      zeta=tf.constant(fresh["zeta"]), alpha=tf.constant(fresh["alpha"]))["logits"].numpy()
  session = onnxruntime.InferenceSession(str(root / "onnx_int8" / "1" / "model.onnx"),
                                         providers=["CPUExecutionProvider"])
  int8 = session.run(["logits"], {"zeta": fresh["zeta"], "alpha": fresh["alpha"]})[0]
  agreement = np.mean(np.argmax(int8, 1) == np.argmax(native, 1))
  assert len(set(np.argmax(native, 1))) > 1 and agreement >= 0.9, agreement


def _guide_model(keras, num_tags=12, num_words=1000, num_departments=4):
  """The keras-io functional API guide's multi-input multi-output model (smaller layers)."""
  title_input = keras.Input(shape=(None,), name="title")
  body_input = keras.Input(shape=(None,), name="body")
  tags_input = keras.Input(shape=(num_tags,), name="tags")
  title_features = keras.layers.LSTM(8)(keras.layers.Embedding(num_words, 8)(title_input))
  body_features = keras.layers.LSTM(4)(keras.layers.Embedding(num_words, 8)(body_input))
  x = keras.layers.concatenate([title_features, body_features, tags_input])
  priority_pred = keras.layers.Dense(1, name="priority")(x)
  department_pred = keras.layers.Dense(num_departments, name="department")(x)
  model = keras.Model(inputs=[title_input, body_input, tags_input],
                      outputs={"priority": priority_pred, "department": department_pred})
  model.compile(optimizer="rmsprop",
                loss={"priority": keras.losses.BinaryCrossentropy(from_logits=True),
                      "department": keras.losses.CategoricalCrossentropy(from_logits=True)})
  return model


def _guide_data(n, seed, num_tags=12, num_words=1000, num_departments=4):
  rng = np.random.default_rng(seed)
  x = {"title": rng.integers(num_words, size=(n, 10)), "body": rng.integers(num_words, size=(n, 30)),
       "tags": rng.integers(2, size=(n, num_tags)).astype("float32")}
  y = {"priority": rng.random((n, 1)), "department": rng.integers(2, size=(n, num_departments))}
  return x, y


def _matches_dict_keys_to_input_names(keras):
  """Keras 3.6 (TF 2.17) pairs a dict with a list of inputs by sorted key, in `fit` too; later Keras by name."""
  zeta, alpha = keras.Input((1,), name="zeta"), keras.Input((1,), name="alpha")
  model = keras.Model([zeta, alpha], keras.layers.Concatenate()([zeta, alpha]))
  return np.asarray(model({"alpha": np.ones((1, 1), "float32"), "zeta": np.zeros((1, 1), "float32")}))[0, 0] == 0


@pytest.mark.tf
def test_keras_io_multi_input_guide_model_fed_a_dict_keeps_each_input_under_its_name(keras, tmp_path):
  """Its int64 token arrays also go to float32 `Input`s, as Keras casts them; the frozen graph is then judged."""
  import tftrt_keras  # pylint: disable=g-import-not-at-top
  if not _matches_dict_keys_to_input_names(keras):
    pytest.skip(f"Keras {keras.__version__} pairs a dict with list inputs by sorted key: the guide's own fit fails")
  model = _guide_model(keras)
  x, y = _guide_data(128, 0)
  xv, yv = _guide_data(96, 1)
  callback = tftrt_keras.TrtExport(tmp_path / "e", formats=TFTRT, precisions=("FP32",), calibration_batches=2,
                                   verification_samples=32, blocking=True, verbose=0)
  model.fit(x, y, validation_data=(xv, yv), batch_size=32, epochs=1, callbacks=[callback], verbose=0)
  samples = _samples(tmp_path / "e")
  assert {k: v.shape[1:] for k, v in samples.items()} == {"title": (10,), "body": (30,), "tags": (12,)}
  assert {v.dtype.name for v in samples.values()} == {"float32"}
  assert set(np.unique(samples["tags"])) <= {0.0, 1.0} and samples["body"].max() > 1
  manifest = _manifest(callback.manifest_paths[0])
  casts = {c["input"]: c for c in manifest["artifacts"]["calibration"]["casts"]}
  assert set(casts) == {"title", "body"} and casts["title"]["from"] == "int64" and casts["title"]["lost"] is None
  assert manifest["artifacts"]["frozen"]["status"] == "ok", manifest["artifacts"]["frozen"]


@pytest.mark.tf
def test_float64_tf_data_and_int_tokens_reach_verification_cast_to_the_inputs_dtypes(primary_keras, tmp_path):
  """Before, verification could not run: `InvalidArgumentError ... expected to be a float tensor`."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tftrt_keras  # pylint: disable=g-import-not-at-top
  keras = primary_keras
  tokens = keras.Input((6,), name="tokens")  # float32, fed int32 tokens as the keras-io transformer does
  model = keras.Model(tokens, keras.layers.Dense(3, name="logits")(
      keras.layers.Flatten()(keras.layers.Embedding(50, 4)(tokens))))
  model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  rng = np.random.default_rng(0)
  x, y = rng.integers(50, size=(128, 6)).astype("int32"), rng.integers(3, size=128)
  validation = tf.data.Dataset.from_tensor_slices((x.astype("float64"), y)).batch(32)
  callback = tftrt_keras.TrtExport(tmp_path / "e", formats=TFTRT, precisions=("FP32",), calibration_batches=2,
                                   verification_samples=32, blocking=True, verbose=0)
  model.fit(x, y, validation_data=validation, batch_size=32, epochs=1, callbacks=[callback], verbose=0)
  artifacts = _manifest(callback.manifest_paths[0])["artifacts"]
  assert artifacts["frozen"]["status"] == "ok", artifacts["frozen"]
  assert artifacts["calibration"]["casts"] == [
      {"input": "tokens", "from": "float64", "to": "float32", "values": 6 * artifacts["calibration"]["samples"] +
       6 * artifacts["calibration"]["verification_samples"], "lost": None}]
  assert _samples(tmp_path / "e")["tokens"].dtype == np.float32


@pytest.mark.tf
def test_a_lossy_cast_is_named_in_the_calibration_entry(primary_keras, tmp_path):
  import tftrt_keras  # pylint: disable=g-import-not-at-top
  keras = primary_keras
  ids = keras.Input((3,), name="ids", dtype="int32")
  model = keras.Model(ids, keras.layers.Dense(2, name="out")(keras.layers.Flatten()(
      keras.layers.Embedding(10, 2)(ids))))
  model.compile(optimizer="adam", loss="mse")
  x = np.tile(np.array([[1.5, 2.0, 3.0]], "float32"), (64, 1))  # Keras truncates 1.5 to 1 in fit
  callback = tftrt_keras.TrtExport(tmp_path / "e", formats=TFTRT, precisions=("FP32",), calibration_batches=1,
                                   verification_samples=16, blocking=True, verbose=0)
  model.fit(x, np.zeros((64, 2)), validation_data=(x, np.zeros((64, 2))), batch_size=32, epochs=1,
            callbacks=[callback], verbose=0)
  entry = _manifest(callback.manifest_paths[0])["artifacts"]["calibration"]
  [cast] = entry["casts"]
  assert (cast["input"], cast["from"], cast["to"]) == ("ids", "float32", "int32")
  assert "had a fractional part (truncated)" in cast["lost"]
  assert any(w.startswith("input 'ids' cast from float32 to int32") for w in entry["warnings"])


@pytest.mark.tf
@pytest.mark.parametrize("order", [("alpha", "zeta"), ("zeta", "alpha")])
def test_calibration_data_dict_in_any_order_is_stored_under_its_names(primary_keras, tmp_path, order):
  import tftrt_keras  # pylint: disable=g-import-not-at-top
  model = _zeta_alpha(primary_keras)
  given, _ = _zeta_alpha_data(40, 3)
  callback = tftrt_keras.TrtExport(tmp_path / "e", formats=TFTRT, precisions=("INT8",), max_batch_size=10,
                                   calibration_data={k: given[k] for k in order}, calibration_batches=4, verbose=0)
  x, y = _zeta_alpha_data(64, 0)
  model.fit(x, y, batch_size=32, epochs=1, callbacks=[callback], verbose=0)
  samples = _samples(tmp_path / "e")
  assert samples["zeta"].mean() > 95 and abs(samples["alpha"].mean()) < 0.1


@pytest.mark.tf
def test_calibration_data_that_cannot_be_matched_fails_before_the_first_step(primary_keras, tmp_path):
  import tftrt_keras  # pylint: disable=g-import-not-at-top
  model = _zeta_alpha(primary_keras)
  given, _ = _zeta_alpha_data(40, 3)
  callback = tftrt_keras.TrtExport(tmp_path / "e", formats=TFTRT, precisions=("INT8",),
                                   calibration_data={"zeta": given["zeta"], "beta": given["alpha"]}, verbose=0)
  x, y = _zeta_alpha_data(64, 0)
  with pytest.raises(ValueError) as info:
    model.fit(x, y, batch_size=32, epochs=1, callbacks=[callback], verbose=0)
  message = str(info.value)
  assert "`calibration_data`" in message and "arrays named ['beta', 'zeta']" in message
  assert "named ['zeta', 'alpha']" in message and "missing: ['alpha']" in message
  assert int(model.optimizer.iterations.numpy()) == 0


@pytest.mark.tf
def test_calibration_data_is_checked_in_the_constructor_when_the_signature_is_given(tmp_path):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tftrt_keras  # pylint: disable=g-import-not-at-top
  signature = [tf.TensorSpec((None, 4), tf.float32, name="zeta"), tf.TensorSpec((None, 4), tf.float32, name="alpha")]
  with pytest.raises(ValueError, match=r"`calibration_data`.*a list of 3 arrays.*named \['zeta', 'alpha'\]"):
    tftrt_keras.TrtExport(tmp_path / "e", input_signature=signature, calibration_data=[np.ones((4, 4))] * 3)
  dataset = tf.data.Dataset.from_tensor_slices(({"zeta": np.ones((8, 4)), "gamma": np.ones((8, 4))}, np.ones(8)))
  with pytest.raises(ValueError, match=r"`calibration_data`.*arrays named \['gamma', 'zeta'\].*missing"):
    tftrt_keras.TrtExport(tmp_path / "e", input_signature=signature, calibration_data=dataset.batch(4))
  with pytest.raises(ValueError, match=r"`calibration_data`.*\[2, 4\] samples"):
    tftrt_keras.TrtExport(tmp_path / "e", calibration_data={"zeta": np.ones((4, 4)), "alpha": np.ones((2, 4))})


@pytest.mark.tf
def test_captured_batches_that_cannot_be_matched_are_recorded_and_training_goes_on(primary_keras, tmp_path):
  """A user's `input_signature` naming other inputs than the dict `fit` gets: the normal export is made, the
  calibration entry says why there are no samples, naming both sides."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tftrt_keras  # pylint: disable=g-import-not-at-top
  model = _zeta_alpha(primary_keras)
  signature = [tf.TensorSpec((None, 4), tf.float32, name="a"), tf.TensorSpec((None, 4), tf.float32, name="b")]
  callback = tftrt_keras.TrtExport(tmp_path / "e", formats=TFTRT, precisions=("FP32",), input_signature=signature,
                                   calibration_batches=1, blocking=True, verbose=0)
  x, y = _zeta_alpha_data(64, 0)
  history = model.fit(x, y, validation_data=(x, y), batch_size=32, epochs=2, callbacks=[callback], verbose=0)
  assert len(history.history["loss"]) == 2 and len(callback.manifest_paths) == 2
  artifacts = _manifest(callback.manifest_paths[0])["artifacts"]
  assert artifacts["native"]["status"] == "ok" and artifacts["calibration"]["status"] == "skipped"
  reason = artifacts["calibration"]["reason"]
  assert "arrays named ['alpha', 'zeta']" in reason and "named ['a', 'b']" in reason, reason


@pytest.mark.unit
def test_an_export_dir_that_is_an_existing_file_is_refused_in_the_constructor(tmp_path):
  import tftrt_keras  # pylint: disable=g-import-not-at-top
  path = tmp_path / "a_file"
  path.write_text("")
  with pytest.raises(ValueError, match=r"Invalid value for argument `export_dir`.*a_file.*existing file"):
    tftrt_keras.TrtExport(path)


def test_a_sample_one_rank_off_gets_the_trailing_axis_keras_gives_it():
  arrays = {"age": np.arange(4.0), "ids": np.zeros((4, 3, 1)), "x": np.zeros((4, 2)), "free": np.zeros(4)}
  shapes = {"age": [None, 1], "ids": [None, 3], "x": [None, 3], "free": None}
  adjusted = by_name.adjust_ranks(arrays, shapes)
  assert {k: v.shape for k, v in adjusted.items()} == {"age": (4, 1), "ids": (4, 3), "x": (4, 2), "free": (4,)}


@pytest.mark.tf
def test_dataframe_columns_fed_to_inputs_of_shape_1_are_stored_and_verified_as_the_signature_takes_them(
    primary_keras, tmp_path):
  """The keras-io structured-data examples feed (N,) columns to `Input(shape=(1,))`; Keras expands them in fit.
  Before, the samples were stored as (N,) and the frozen graph could not run on them."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tftrt_keras  # pylint: disable=g-import-not-at-top
  keras = primary_keras
  age, chol = keras.Input(shape=(1,), name="age"), keras.Input(shape=(1,), name="chol")
  x = keras.layers.concatenate([age, chol])
  model = keras.Model([age, chol], keras.layers.Dense(2, name="logits")(keras.layers.Dense(4)(x)))
  model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  rng = np.random.default_rng(0)
  columns = {"age": rng.normal(size=96).astype("float32"), "chol": rng.normal(size=96).astype("float32")}
  y = (columns["age"] > 0).astype("int64")
  data = tf.data.Dataset.from_tensor_slices((columns, y)).batch(32)
  callback = tftrt_keras.TrtExport(tmp_path / "e", formats=TFTRT, precisions=("FP32",), calibration_batches=3,
                                   verification_samples=32, blocking=True, verbose=0)
  model.fit(data, validation_data=data, epochs=1, callbacks=[callback], verbose=0)
  artifacts = _manifest(callback.manifest_paths[0])["artifacts"]
  assert artifacts["frozen"]["status"] == "ok", artifacts["frozen"]
  assert _samples(tmp_path / "e")["age"].shape[1:] == (1,)
