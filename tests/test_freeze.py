"""Freezing: `frozen_graph.pb` + tensor names run in a fresh TF1 graph and give the SavedModel's outputs."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tests import saved_models
from tftrt_keras.formats.frozen import FROZEN_GRAPH_FILE, FROZEN_IO_FILE, FreezeRefused, freeze_signature, run_frozen_graph

pytestmark = pytest.mark.tf


@pytest.fixture(scope="module")
def models(tmp_path_factory):
  base = tmp_path_factory.mktemp("models")
  return {
      "classifier": (str(base / "classifier"), saved_models.classifier(base / "classifier", seed=3)),
      "two_inputs": (str(base / "two_inputs"), saved_models.two_inputs(base / "two_inputs")),
  }


def _freeze(saved_model_dir, tmp_path):
  out = tmp_path / "frozen"
  out.mkdir()
  return str(out), freeze_signature(saved_model_dir, "serving_default", str(out))


def test_classifier_frozen_graph_gives_native_outputs_for_any_batch_size(models, tmp_path):
  path, reference = models["classifier"]
  out, io = _freeze(path, tmp_path)
  assert sorted(os.listdir(out)) == sorted([FROZEN_GRAPH_FILE, FROZEN_IO_FILE])
  with open(os.path.join(out, FROZEN_IO_FILE)) as f:
    assert json.load(f) == io
  assert [(i["key"], i["dtype"], i["shape"]) for i in io["inputs"]] == [("x", "float32", [None, 4])]
  assert [(o["key"], o["dtype"], o["shape"]) for o in io["outputs"]] == [
      ("logits", "float32", [None, 3]), ("probabilities", "float32", [None, 3])]
  for batch in (1, 5):  # the batch dimension stays unknown in the frozen graph
    x = saved_models.samples(batch, seed=batch)["x"]
    got = run_frozen_graph(out, {"x": x})
    want = reference(x)
    np.testing.assert_allclose(got["logits"], want["logits"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got["probabilities"], want["probabilities"], rtol=1e-5, atol=1e-6)


def test_frozen_graph_holds_no_variables(models, tmp_path):
  out, _ = _freeze(models["classifier"][0], tmp_path)
  graph_def = tf.compat.v1.GraphDef()
  with open(os.path.join(out, FROZEN_GRAPH_FILE), "rb") as f:
    graph_def.ParseFromString(f.read())
  ops = {node.op for node in graph_def.node}
  assert not ops & {"VarHandleOp", "ReadVariableOp", "VariableV2"}, ops
  assert {"Placeholder", "MatMul"} <= ops


def test_inputs_are_mapped_by_name_not_by_declaration_order(models, tmp_path):
  """`two_inputs` declares (zeta, alpha): a positional mix-up would feed int32 alpha into zeta."""
  path, reference = models["two_inputs"]
  out, io = _freeze(path, tmp_path)
  by_key = {i["key"]: i for i in io["inputs"]}
  assert (by_key["zeta"]["dtype"], by_key["zeta"]["shape"]) == ("float32", [None, 3])
  assert (by_key["alpha"]["dtype"], by_key["alpha"]["shape"]) == ("int32", [None, 2])
  graph_def = tf.compat.v1.GraphDef()
  with open(os.path.join(out, FROZEN_GRAPH_FILE), "rb") as f:
    graph_def.ParseFromString(f.read())
  nodes = {n.name: n for n in graph_def.node}
  for entry in io["inputs"]:
    node = nodes[entry["tensor"].split(":")[0]]
    assert tf.dtypes.as_dtype(node.attr["dtype"].type).name == entry["dtype"]
  zeta = np.array([[1.0, 2.0, 3.0], [-1.0, 0.5, 4.0], [0.0, 0.0, 1.0]], np.float32)
  alpha = np.array([[1, 2], [10, 20], [-3, 7]], np.int32)
  got = run_frozen_graph(out, {"alpha": alpha, "zeta": zeta})
  want = reference(zeta, alpha)
  np.testing.assert_allclose(got["scaled"], want["scaled"])
  np.testing.assert_allclose(got["summed"], want["summed"])


def test_a_lookup_table_is_frozen_with_its_contents_and_filled_by_the_init_op(tmp_path):
  path = tmp_path / "lookup"
  saved_models.lookup_table(path)
  out = tmp_path / "frozen"
  out.mkdir()
  io = freeze_signature(str(path), "serving_default", str(out))
  assert io["init_op"] == "tftrt_keras_init_tables"
  got = run_frozen_graph(str(out), {"token": np.array([b"b", b"a", b"zebra"])})
  np.testing.assert_array_equal(got["id"], [2, 1, 0])  # the default for an unknown token


def test_a_table_the_signature_changes_is_refused_with_the_op(tmp_path):
  class Counter(tf.Module):

    def __init__(self):
      super().__init__()
      self.table = tf.lookup.experimental.MutableHashTable(tf.string, tf.int64, default_value=0)

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="token")])
    def serve(self, token):
      self.table.insert(token, tf.ones_like(token, tf.int64))
      return {"id": self.table.lookup(token)}

  module = Counter()
  tf.saved_model.save(module, str(tmp_path / "counter"), signatures={"serving_default": module.serve})
  out = tmp_path / "frozen"
  out.mkdir()
  with pytest.raises(FreezeRefused, match=r"changes a table while serving \(LookupTableInsertV2\)"):
    freeze_signature(str(tmp_path / "counter"), "serving_default", str(out))
  assert os.listdir(out) == []  # nothing half-written


def test_keras_model_export_freezes(tmp_path):
  """A SavedModel made by Keras itself (`model.export`: Keras 2.15 on TF 2.15, Keras 3 on TF 2.17)."""
  import keras  # pylint: disable=g-import-not-at-top
  keras.utils.set_random_seed(1)
  inputs = keras.Input((5,), name="features")
  hidden = keras.layers.Dense(4, activation="relu")(inputs)
  model = keras.Model(inputs, keras.layers.Dense(2, name="head")(hidden))
  if not hasattr(model, "export"):
    pytest.skip(f"Keras {keras.__version__} has no Model.export")
  model.export(str(tmp_path / "keras_model"))
  out, io = _freeze(str(tmp_path / "keras_model"), tmp_path)
  assert [(i["key"], i["shape"]) for i in io["inputs"]] == [("features", [None, 5])]
  x = np.random.default_rng(0).normal(size=(6, 5)).astype("float32")
  got = run_frozen_graph(out, {"features": x})
  (only_output,) = got.values()
  np.testing.assert_allclose(only_output, np.asarray(model(x)), rtol=1e-5, atol=1e-5)
