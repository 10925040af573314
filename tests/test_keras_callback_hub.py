"""TrtExport on Keras 2 models that hold a `hub.KerasLayer` (tier tf).

tensorflow_hub's KerasLayer is Keras 2 only: `tf.keras` on TF 2.15, `tf_keras` on TF 2.17. The hub modules are
tiny TF2 SavedModels written here. The normal export is checked the way a server uses it: loaded in a fresh
process (no hub, no Keras, and the hub module's directory may be gone), its outputs compared with the model's.
TF-TRT outcomes are asserted for both cases: `ok` where the preflight says TF-TRT runs, else `skipped` with its
reason. Only the TF-TRT format is asked for (the ONNX variants have tests of their own).
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import tftrt_keras
from tests.keras_models import assert_tftrt_outcome, train_data

pytestmark = pytest.mark.tf
hub = pytest.importorskip("tensorflow_hub")

VOCABULARY = ["red", "green", "blue", "cyan"]

_SERVE_SCRIPT = """
import sys
import numpy as np
import tensorflow as tf
export_dir, inputs_path, outputs_path = sys.argv[1:]
loaded = tf.saved_model.load(export_dir)
serve = loaded.signatures["serving_default"]
with np.load(inputs_path) as inputs:
  outputs = serve(**{name: tf.constant(inputs[name]) for name in inputs.files})
np.savez(outputs_path, **{name: value.numpy() for name, value in outputs.items()})
"""


def _keras_2():
  version = getattr(tf.keras, "version", None)
  if version is not None and version().startswith("3."):
    import tf_keras  # pylint: disable=g-import-not-at-top
    return tf_keras
  return tf.keras


def _serve_in_fresh_process(export_dir, inputs, work_dir):
  """The normal export's `serving_default` outputs for `inputs` ({name: array}), computed in a new Python."""
  inputs_path, outputs_path = work_dir / "serve_inputs.npz", work_dir / "serve_outputs.npz"
  np.savez(inputs_path, **inputs)
  result = subprocess.run([sys.executable, "-c", _SERVE_SCRIPT, str(export_dir), str(inputs_path),
                           str(outputs_path)], capture_output=True, text=True, timeout=180, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  with np.load(outputs_path) as outputs:
    return {name: outputs[name] for name in outputs.files}


def _checkpoint_arrays(saved_model_dir):
  reader = tf.train.load_checkpoint(str(saved_model_dir / "variables" / "variables"))
  return [reader.get_tensor(key) for key in reader.get_variable_to_shape_map() if key.endswith("VARIABLE_VALUE")]


def _contains(arrays, wanted):
  return any(np.shape(a) == np.shape(wanted) and np.array_equal(a, wanted) for a in arrays)


def _manifest(path):
  with open(path) as f:
    return json.load(f)


class _ReusableModule(tf.Module):
  """Base for hub modules: `variables` / `trainable_variables` become stored lists, as hub.KerasLayer expects.

  tf.Module computes them as properties, which tf.saved_model.save does not write; these class attributes give
  way to instance lists that it does write.
  """
  variables = ()
  trainable_variables = ()


def _write_feature_module(path):
  """Features = ReLU((x - offset) @ kernel): a trainable kernel and a non-trainable offset, on 8 inputs."""

  class Features(_ReusableModule):

    def __init__(self):
      super().__init__()
      self.kernel = tf.Variable(np.linspace(-1.0, 1.0, 8 * 6, dtype="float32").reshape(8, 6), name="kernel")
      self.offset = tf.Variable(np.full(8, 0.25, "float32"), trainable=False, name="offset")
      self.variables = [self.kernel, self.offset]
      self.trainable_variables = [self.kernel]

    @tf.function(input_signature=[tf.TensorSpec([None, 8], tf.float32)])
    def __call__(self, x):
      return tf.nn.relu(tf.matmul(x - self.offset, self.kernel))

  module = Features()
  tf.saved_model.save(module, str(path))
  return module.kernel.numpy(), module.offset.numpy()


def _write_vocabulary_module(path, scratch):
  """Words -> embedding rows through a StaticHashTable read from a vocabulary asset (unknown words: last row)."""
  vocabulary_file = scratch / "vocabulary.txt"
  vocabulary_file.write_text("\n".join(VOCABULARY) + "\n")

  class Embedding(_ReusableModule):

    def __init__(self):
      super().__init__()
      self.vocabulary = tf.saved_model.Asset(str(vocabulary_file))
      initializer = tf.lookup.TextFileInitializer(self.vocabulary, tf.string, tf.lookup.TextFileIndex.WHOLE_LINE,
                                                  tf.int64, tf.lookup.TextFileIndex.LINE_NUMBER)
      self.table = tf.lookup.StaticHashTable(initializer, default_value=len(VOCABULARY))
      rows = np.arange((len(VOCABULARY) + 1) * 3, dtype="float32").reshape(-1, 3) / 10.0
      self.embeddings = tf.Variable(rows, name="embeddings")
      self.variables = [self.embeddings]
      self.trainable_variables = [self.embeddings]

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def __call__(self, words):
      return tf.gather(self.embeddings, self.table.lookup(words))

  tf.saved_model.save(Embedding(), str(path))
  os.remove(vocabulary_file)  # from here on, only the module's own copy in assets/ exists


@pytest.mark.parametrize("trainable", [False, True], ids=["frozen_hub_layer", "fine_tuned_hub_layer"])
def test_a_model_with_a_hub_layer_exports_what_it_computes(trainable, tmp_path):
  keras = _keras_2()
  keras.utils.set_random_seed(0)
  kernel, offset = _write_feature_module(tmp_path / "module")
  layer = hub.KerasLayer(str(tmp_path / "module"), trainable=trainable, name="hub_features")
  inputs = keras.Input((8,), name="features")
  model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax", name="probs")(layer(inputs)))
  model.compile(keras.optimizers.Adam(0.05), "sparse_categorical_crossentropy")
  callback = tftrt_keras.TrtExport(tmp_path / "e", formats=("tftrt",), precisions=("FP16", "INT8"),
                                   calibration_batches=2, verbose=0)
  x, y = train_data()
  model.fit(x, y, validation_data=train_data(64, seed=1), batch_size=32, epochs=1, callbacks=[callback], verbose=0)

  manifest = _manifest(callback.manifest_paths[-1])
  artifacts = manifest["artifacts"]
  assert {name: artifacts[name]["status"] for name in ("native", "calibration")} == {
      "native": "ok", "calibration": "ok"}, artifacts
  # The frozen graph answers like the normal export on the held-out samples, and its error on their varying
  # probabilities vouches for it: `ok`, also when the model, after one epoch on data that is 90% class 1, puts
  # every held-out sample in one class (then only a top-1 agreement could not judge, and verification says so).
  frozen = artifacts["frozen"]
  assert frozen["verification"]["outputs"]["probs"]["max_relative_error"] <= 1e-5, frozen
  assert frozen["status"] == "ok", frozen
  held_out = np.load(tmp_path / "e" / "calibration" / "1" / "verification.npz")["features"]
  one_class = len(held_out) >= 20 and len(set(model.predict(held_out, verbose=0).argmax(1).tolist())) == 1
  assert ("outputs_one_class" in manifest["verification"]) == one_class, manifest["verification"]
  assert_tftrt_outcome(artifacts["tftrt_fp16"])
  assert_tftrt_outcome(artifacts["tftrt_int8"])

  # The hub module's variables are in the export as trained: changed when fine-tuned, untouched otherwise;
  # its non-trainable variable untouched either way.
  (trained_kernel,) = [w.numpy() for w in layer.weights if tuple(w.shape) == kernel.shape]
  assert np.array_equal(trained_kernel, kernel) is not trainable
  exported = _checkpoint_arrays(tmp_path / "e" / "1")
  assert _contains(exported, trained_kernel) and _contains(exported, offset)

  x_new = train_data(5, seed=3)[0]
  served = _serve_in_fresh_process(tmp_path / "e" / "1", {"features": x_new}, tmp_path)
  assert sorted(served) == ["probs"]
  np.testing.assert_allclose(served["probs"], model.predict(x_new, verbose=0), rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def vocabulary_export(tmp_path_factory):
  """A model over a hub module with a vocabulary asset and a lookup table, trained one epoch with TrtExport.

  The hub module's directory is deleted after training: a server has only the export.
  """
  keras = _keras_2()
  keras.utils.set_random_seed(0)
  work = tmp_path_factory.mktemp("vocabulary")
  _write_vocabulary_module(work / "module", work)
  words = keras.Input((), dtype=tf.string, name="word")
  embedded = hub.KerasLayer(str(work / "module"), trainable=False, name="hub_embedding")(words)
  model = keras.Model(words, keras.layers.Dense(2, name="score")(embedded))
  model.compile(keras.optimizers.Adam(0.05), "mse")
  x = np.array((VOCABULARY + ["magenta"]) * 8)
  y = np.stack([np.arange(len(x)) % 5, np.arange(len(x)) % 3], axis=1).astype("float32")
  callback = tftrt_keras.TrtExport(work / "e", formats=("tftrt",), calibration_batches=2, verbose=0)
  model.fit(x, y, validation_data=(x, y), batch_size=10, epochs=1, callbacks=[callback], verbose=0)
  shutil.rmtree(work / "module")
  return model, work, _manifest(callback.manifest_paths[-1])


def test_a_hub_vocabulary_asset_is_copied_into_the_export_which_serves_without_the_module(vocabulary_export):
  model, work, manifest = vocabulary_export
  native = manifest["artifacts"]["native"]
  assert native["status"] == "ok", native.get("reason")
  export = work / "e" / "1"
  assets = os.listdir(export / "assets")
  assert len(assets) == 1 and (export / "assets" / assets[0]).read_text().split() == VOCABULARY

  words = np.array([b"blue", b"unknown", b"red", b"cyan"])
  served = _serve_in_fresh_process(export, {"word": words}, work)
  expected = model.predict(words, verbose=0)
  np.testing.assert_allclose(served["score"], expected, rtol=1e-5, atol=1e-6)
  assert not np.allclose(expected[0], expected[1])  # a known word is not looked up as unknown


def test_a_hub_lookup_table_is_frozen_with_its_vocabulary_and_string_samples_feed_tftrt(vocabulary_export):
  _, work, manifest = vocabulary_export
  artifacts = manifest["artifacts"]
  assert artifacts["native"]["status"] == "ok", artifacts["native"].get("reason")
  # The table read its asset when the SavedModel loaded; the frozen graph carries those contents as constants.
  assert artifacts["frozen"]["status"] in ("ok", "unverified"), artifacts["frozen"]
  assert artifacts["frozen"]["signature"]["init_op"] == "tftrt_keras_init_tables"
  assert artifacts["calibration"]["status"] == "ok"
  for name in ("tftrt_fp32", "tftrt_fp16", "tftrt_int8"):
    # Whatever TF-TRT makes of the table where it runs, reading the string samples is not what stops it.
    assert "calibration_data" not in (artifacts[name].get("reason") or ""), artifacts[name]
    if artifacts[name]["status"] != "failed":
      assert_tftrt_outcome(artifacts[name])
  # The captured string inputs are kept as strings, readable without pickle (as the worker reads them).
  with np.load(work / "e" / "calibration" / "1" / "calibration.npz", allow_pickle=False) as samples:
    assert samples["word"].dtype.kind in ("S", "U")
    assert set(samples["word"].astype(str)) <= set(VOCABULARY + ["magenta"])
