"""TrtExport on Keras models with lookup tables inside: keras-io's text classification (`TextVectorization`)
and structured data (`StringLookup`, `IntegerLookup`, `Normalization` on dict inputs) patterns (tier tf).

The normal export must work wherever Keras's own `model.export()` does: the tables the serving function
captures are part of it. Each model trains two epochs, so the second export takes the quick re-save (the first
export's graph and assets, a fresh checkpoint); that one is loaded with `tf.saved_model.load` and fed raw strings
and ints, out-of-vocabulary ones included. The variants of the numeric part are another matter (string inputs
cannot enter ONNX or TensorRT): only `fit` finishing and the frozen graph's recorded reason are asserted here.
"""

import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

import tftrt_keras
from tftrt_keras.keras.snapshot import SavedModelSnapshotter, signature_from_model

pytestmark = pytest.mark.tf

WORDS = ["good", "bad", "movie", "great", "awful", "plot", "actor", "boring", "fun", "the", "a", "was"]


def _manifest(path):
  with open(path) as f:
    return json.load(f)


def _reviews(n, seed):
  rng = np.random.default_rng(seed)
  texts = np.array([" ".join(rng.choice(WORDS, size=rng.integers(3, 9))) for _ in range(n)])
  return texts[:, None], np.array([("good" in t or "great" in t) for t in texts], "float32")


def _serve(export_dir, inputs):
  serve = tf.saved_model.load(str(export_dir)).signatures["serving_default"]
  (output,) = serve(**{name: tf.constant(value) for name, value in inputs.items()}).values()
  return output.numpy()


def _fit_two_epochs(model, train, validation, export_dir):
  callback = tftrt_keras.TrtExport(export_dir, precisions=("FP32",), calibration_batches=2, verbose=0)
  model.fit(train, validation_data=validation, epochs=2, callbacks=[callback], verbose=0)
  assert len(callback.manifest_paths) == 2
  return [_manifest(p) for p in callback.manifest_paths]


def _assert_normal_exports_and_frozen_graph(manifests, export_dir):
  for manifest in manifests:
    artifacts = manifest["artifacts"]
    assert artifacts["native"]["status"] == "ok", artifacts["native"]
    assert artifacts["native"]["verification"]["samples"] > 0  # it ran on the captured (string) samples
    assert artifacts["calibration"]["status"] == "ok", artifacts["calibration"]
    # The frozen graph carries the tables (filled by its init op), and the ONNX variant is the numeric back
    # behind a TF front that does the lookups (see `formats.split_graph`).
    assert artifacts["frozen"]["status"] == "ok", artifacts["frozen"]
    assert manifest["split"]["cut"], manifest.get("split")
    assert artifacts["onnx_fp32"]["status"] == "ok", artifacts["onnx_fp32"]
  with open(export_dir / "1" / "saved_model.pb", "rb") as first, open(export_dir / "2" / "saved_model.pb", "rb") as second:
    assert first.read() == second.read()  # the second export took the quick re-save


def test_a_text_vectorization_model_serves_raw_strings_from_every_export(keras, tmp_path):
  x, y = _reviews(256, seed=0)
  vectorize = keras.layers.TextVectorization(max_tokens=12, output_sequence_length=10)
  vectorize.adapt(x[:, 0])
  text = keras.Input(shape=(1,), dtype="string", name="text")
  hidden = keras.layers.Embedding(12, 8)(vectorize(text))
  hidden = keras.layers.GlobalAveragePooling1D()(hidden)
  model = keras.Model(text, keras.layers.Dense(1, activation="sigmoid", name="prob")(hidden))
  model.compile("adam", "binary_crossentropy")
  xv, yv = _reviews(96, seed=1)
  train = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
  manifests = _fit_two_epochs(model, train, tf.data.Dataset.from_tensor_slices((xv, yv)).batch(32),
                              tmp_path / "e")

  _assert_normal_exports_and_frozen_graph(manifests, tmp_path / "e")
  with np.load(tmp_path / "e" / "calibration" / "2" / "calibration.npz", allow_pickle=False) as samples:
    assert samples["text"].dtype.kind in ("S", "U") and set(samples["text"][:, 0].astype(str)) <= set(xv[:, 0])
  fresh = np.array([["good movie"], ["zebra unicorn"], ["the plot was boring and awful"], ["great great fun"]])
  expected = model.predict(tf.constant(fresh), verbose=0)
  served = _serve(tmp_path / "e" / "2", {"text": fresh})
  np.testing.assert_allclose(served, expected, rtol=1e-5, atol=1e-6)
  assert len(np.unique(np.round(expected, 5))) == len(fresh)  # the words were looked up, not all out of vocabulary


def _patients(n, seed):
  rng = np.random.default_rng(seed)
  features = {"age": rng.uniform(29, 77, size=(n, 1)).astype("float32"),
              "sex": rng.integers(0, 2, size=(n, 1)).astype("int64"),
              "thal": rng.choice(["fixed", "normal", "reversible"], size=(n, 1))}
  labels = ((features["age"][:, 0] > 55) ^ (features["thal"][:, 0] == "normal")).astype("float32")
  return features, labels


def test_string_and_integer_lookups_on_dict_inputs_serve_raw_values_from_every_export(keras, tmp_path):
  features, labels = _patients(256, seed=0)
  inputs = {"age": keras.Input(shape=(1,), name="age"),
            "sex": keras.Input(shape=(1,), name="sex", dtype="int64"),
            "thal": keras.Input(shape=(1,), name="thal", dtype="string")}
  normalize = keras.layers.Normalization()
  normalize.adapt(features["age"])
  sex = keras.layers.IntegerLookup(output_mode="one_hot")
  sex.adapt(features["sex"])
  thal = keras.layers.StringLookup(output_mode="one_hot")
  thal.adapt(features["thal"])
  encoded = keras.layers.concatenate([normalize(inputs["age"]), sex(inputs["sex"]), thal(inputs["thal"])])
  hidden = keras.layers.Dropout(0.5)(keras.layers.Dense(32, activation="relu")(encoded))
  model = keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid", name="target")(hidden))
  model.compile("adam", "binary_crossentropy")
  validation = _patients(96, seed=1)
  manifests = _fit_two_epochs(model, tf.data.Dataset.from_tensor_slices((features, labels)).batch(32),
                              tf.data.Dataset.from_tensor_slices(validation).batch(32), tmp_path / "e")

  _assert_normal_exports_and_frozen_graph(manifests, tmp_path / "e")
  with np.load(tmp_path / "e" / "calibration" / "2" / "calibration.npz", allow_pickle=False) as samples:
    assert samples["thal"].dtype.kind in ("S", "U") and samples["sex"].dtype == np.int64
  fresh = {"age": np.array([[40.0], [70.0], [55.0], [61.0]], "float32"),
           "sex": np.array([[0], [1], [7], [1]], "int64"),  # 7: never seen
           "thal": np.array([["normal"], ["fixed"], ["reversible"], ["unheard-of"]])}
  expected = model.predict({k: tf.constant(v) for k, v in fresh.items()}, verbose=0)
  np.testing.assert_allclose(_serve(tmp_path / "e" / "2", fresh), expected, rtol=1e-5, atol=1e-6)


class _Counts(tf.Module):
  """A MutableHashTable a custom layer looks words up in (its contents change between exports)."""

  def __init__(self):
    super().__init__()
    self.table = tf.lookup.experimental.MutableHashTable(tf.string, tf.float32, default_value=-1.0)


def test_the_quick_re_save_writes_a_mutable_tables_contents_and_a_vocabulary_files_asset(keras, tmp_path):
  vocabulary = tmp_path / "vocabulary.txt"
  vocabulary.write_text("red\ngreen\nblue\n")
  counts = _Counts()
  counts.table.insert(tf.constant(["red"]), tf.constant([1.0]))

  class Count(keras.layers.Layer):

    def call(self, words):
      return tf.reshape(counts.table.lookup(tf.reshape(words, [-1])), [-1, 1])

    def compute_output_shape(self, input_shape):
      return (input_shape[0], 1)

  word = keras.Input(shape=(1,), dtype="string", name="word")
  indices = keras.layers.StringLookup(vocabulary=str(vocabulary))(word)
  embedded = keras.layers.Flatten()(keras.layers.Embedding(5, 2)(indices))
  model = keras.Model(word, keras.layers.concatenate([embedded, Count()(word)], name="out"))
  snapshotter = SavedModelSnapshotter(model, signature_from_model(model))
  words = np.array([["red"], ["green"], ["blue"], ["black"]])
  for version in (1, 2):
    os.makedirs(tmp_path / str(version))
    snapshotter.save(str(tmp_path / str(version)))
    if version == 1:
      counts.table.insert(tf.constant(["green"]), tf.constant([2.0]))
      vocabulary.unlink()  # a later export no longer needs the file it was read from
  served = {version: _serve(tmp_path / str(version), {"word": words}) for version in (1, 2)}
  np.testing.assert_allclose(served[2], model.predict(tf.constant(words), verbose=0), rtol=1e-6)
  assert served[1][1, -1] == -1.0 and served[2][1, -1] == 2.0  # the table's contents at each export
  assert os.listdir(tmp_path / "2" / "assets") == ["vocabulary.txt"]
  shutil.rmtree(tmp_path / "1")  # the second export stands on its own
  np.testing.assert_allclose(_serve(tmp_path / "2", {"word": words}), served[2])
