"""Our shortcuts through tf2onnx (`tf2onnx_private`): the optimizers we skip, the proto writes between optimizer
passes, the frozen graph not rewrapped into a function; each against tf2onnx's own route."""

import os

import pytest

from tftrt_keras.formats.onnx import format as onnx_format
from tftrt_keras.formats.onnx import convert as onnx_convert
from tftrt_keras.formats.onnx import tf2onnx_private

pytestmark = pytest.mark.tf

_MISSING = onnx_format.import_failure_reason(onnx_format._import_failures())  # pylint: disable=protected-access


@pytest.mark.skipif(_MISSING is not None, reason=f"ONNX packages unusable here: {_MISSING}")
def test_every_optimizer_skipped_by_op_type_is_one_tf2onnx_runs():
  """A tf2onnx that renamed an optimizer would silently turn our skip off (slower, never wrong); one that
  dropped `_get_optimizers` would make us pass None (its default list). Either is worth knowing."""
  from tf2onnx import optimizer  # pylint: disable=g-import-not-at-top
  names = set(optimizer._get_optimizers())  # pylint: disable=protected-access
  skipped = set(tf2onnx_private._OPTIMIZER_NEEDS)  # pylint: disable=protected-access
  assert skipped <= names, skipped - names
  # The ones that rewrite the common ops always run.
  assert {"optimize_transpose", "fold_constants", "remove_identity"} <= names - skipped


@pytest.mark.skipif(_MISSING is not None, reason=f"ONNX packages unusable here: {_MISSING}")
def test_the_private_internals_we_use_are_all_in_this_tf2onnx_and_tensorflow():
  """Runs on every supported TF line (2.15, 2.17, 2.21 with their pinned tf2onnx): a moved internal is named
  here, not left to show as a slower conversion."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tf2onnx  # pylint: disable=g-import-not-at-top
  missing = tf2onnx_private.missing_private_symbols()
  assert not missing, (f"tf2onnx {tf2onnx.__version__} / TensorFlow {tf.__version__} changed private internals "
                       f"that formats/onnx/tf2onnx_private.py uses: {missing}")


@pytest.mark.skipif(_MISSING is not None, reason=f"ONNX packages unusable here: {_MISSING}")
def test_the_private_check_names_what_is_gone():
  """The check can fail: a symbol that is not there is named."""
  symbols = tf2onnx_private.PRIVATE_SYMBOLS + (("tf2onnx.tf_loader", "no_such_internal"),
                                               ("tf2onnx.no_such_module", "x"))
  assert tf2onnx_private.missing_private_symbols(symbols) == ["tf2onnx.tf_loader.no_such_internal",
                                                              "tf2onnx.no_such_module.x"]


# --- the conversion's two shortcuts give the graph tf2onnx's own route gives --------------------------------

def _canonical(graph, outer=None):
  """Signatures of `graph`'s outputs: each tensor described by the op that makes it, its attributes and, recursively,
  its inputs (initializers by value, graph inputs by position, a body's reads of its enclosing graph by what they
  read). Equal for two graphs that compute the same thing the same way, whatever their node names and order
  (tf2onnx's names differ from one process to the next)."""
  import hashlib  # pylint: disable=g-import-not-at-top
  import onnx  # pylint: disable=g-import-not-at-top
  producers = {out: (node, i) for node in graph.node for i, out in enumerate(node.output)}
  initializers = {init.name: init for init in graph.initializer}
  positions = {value.name: i for i, value in enumerate(graph.input)}
  memo = {}

  def attribute(a):
    if a.type == onnx.AttributeProto.TENSOR:
      return ("tensor", a.t.data_type, tuple(a.t.dims), hashlib.sha1(onnx.numpy_helper.to_array(a.t).tobytes()).hexdigest())
    if a.type == onnx.AttributeProto.GRAPH:
      return ("graph", _canonical(a.g, signature))
    if a.type == onnx.AttributeProto.GRAPHS:
      return ("graphs", tuple(_canonical(g, signature) for g in a.graphs))
    return (a.name, onnx.helper.get_attribute_value(a))

  def signature(name):
    if name in memo:
      return memo[name]
    if name == "":
      found = ("absent",)
    elif name in initializers:
      init = initializers[name]
      found = ("init", init.data_type, tuple(init.dims),
               hashlib.sha1(onnx.numpy_helper.to_array(init).tobytes()).hexdigest())
    elif name in positions:
      found = ("input", positions[name])
    elif name in producers and producers[name][0].op_type == "Identity":
      # Transparent: which of two names for one tensor tf2onnx keeps behind an Identity varies from run to run.
      memo[name] = signature(producers[name][0].input[0])
      return memo[name]
    elif name in producers:
      node, index = producers[name]
      found = (node.op_type, node.domain, index, tuple(sorted((a.name, repr(attribute(a))) for a in node.attribute)),
               tuple(signature(i) for i in node.input))
    else:  # a tensor of the enclosing graph, read by a Loop/Scan body
      found = ("outer", outer(name) if outer else name)
    memo[name] = hashlib.sha1(repr(found).encode()).hexdigest()
    return memo[name]
  return tuple(signature(out.name) for out in graph.output), sum(n.op_type != "Identity" for n in graph.node)


def _convert(saved_model_dir, routes=None):
  from tests import onnx_models  # pylint: disable=g-import-not-at-top
  job = onnx_models.build_job(saved_model_dir, os.path.dirname(saved_model_dir))
  signature, _ = onnx_convert.convertible_signature(job.signature)
  return onnx_convert.convert_saved_model(saved_model_dir, job.signature_key, signature, 17, routes=routes)


@pytest.mark.unit
def test_a_shortcut_that_falls_back_is_recorded_with_the_error_and_logged(caplog):
  try:
    {}["optimize_transpose"]  # pylint: disable=pointless-statement
  except KeyError as err:
    error = err
  routes = {}
  with caplog.at_level("WARNING"):
    tf2onnx_private.shortcut_fell_back(routes, "optimize", error)
  assert routes == {"optimize": "tf2onnx's own route: the shortcut (optimizer passes in place, inapplicable ones "
                                "skipped) failed: KeyError: 'optimize_transpose'"}
  assert any("ONNX conversion, optimize: " + routes["optimize"] in r.getMessage() for r in caplog.records), \
      caplog.text
  tf2onnx_private.shortcut_fell_back(None, "freeze", error)  # nothing to record into: logged only


def _small_cnn_saved_model(directory):
  """Conv + BatchNorm + depthwise + Dense, random weights: constants to fold, transposes to remove, no subgraph."""
  from tests import onnx_models  # pylint: disable=g-import-not-at-top
  keras = onnx_models.primary_keras()
  layers = keras.layers
  image = keras.Input((16, 16, 3), name="image")
  x = layers.Conv2D(8, 3, padding="same")(image)
  x = layers.BatchNormalization()(x)
  x = layers.ReLU()(x)
  x = layers.DepthwiseConv2D(3, padding="same")(x)
  x = layers.GlobalAveragePooling2D()(x)
  model = keras.Model(image, layers.Dense(4, activation="softmax", name="probabilities")(x))
  return onnx_models.save_keras_model(model, directory)


def _loop_saved_model(directory):
  """A tf.while_loop over a weight (a recurrence, as Keras 3 writes RNNs): tf2onnx makes it a Loop with a body
  graph on every TF line (Keras 2's GRU/LSTM would become fused ONNX GRU/LSTM ops instead)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  class Recurrence(tf.Module):

    def __init__(self):
      super().__init__()
      self.w = tf.Variable(np.random.default_rng(0).normal(size=(4, 4)).astype("float32"))

    @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
    def serve(self, x):
      def body(i, h):
        return i + 1, tf.tanh(tf.matmul(h, self.w) + x)
      _, h = tf.while_loop(lambda i, h: i < 5, body, [tf.constant(0), x])
      return {"y": h}

  module = Recurrence()
  tf.saved_model.save(module, str(directory), signatures={"serving_default": module.serve})
  return str(directory)


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
  if _MISSING:
    pytest.skip(_MISSING)
  root = tmp_path_factory.mktemp("convert_shortcuts")
  return {"cnn": _small_cnn_saved_model(root / "cnn"), "loop": _loop_saved_model(root / "loop")}


def _tf2onnx_route(monkeypatch):
  """Both shortcuts off: TensorFlow's own freezing, tf2onnx's own proto write after every optimizer pass."""
  import contextlib  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(tf2onnx_private, "freezing_without_rewrap", lambda tf_loader, routes=None: contextlib.nullcontext())
  monkeypatch.setattr(tf2onnx_private, "_has_subgraphs", lambda graph: True)


@pytest.mark.parametrize("name", ["cnn", "loop"])
def test_shortcuts_give_the_graph_tf2onnx_own_route_gives(saved_models, name, monkeypatch):
  """Same ops, attributes, weights and wiring. (On large graphs tf2onnx's own route is not repeatable to the node:
  two runs of it on ConvNeXtTiny differed by one Reshape its transpose optimizer folded or not; small ones are.)"""
  routes = {}
  fast = _convert(saved_models[name], routes)
  assert routes == {stage: f"shortcut: {words}" for stage, words in tf2onnx_private.SHORTCUTS.items()}, routes
  _tf2onnx_route(monkeypatch)
  slow = _convert(saved_models[name])
  assert _canonical(fast.graph) == _canonical(slow.graph)
  assert [i.name for i in fast.graph.input] == [i.name for i in slow.graph.input]
  assert [o.name for o in fast.graph.output] == [o.name for o in slow.graph.output]
  if name == "loop":
    assert "Loop" in {n.op_type for n in fast.graph.node}, "the while loop is expected as a Loop with a body"


def test_freezing_does_not_rewrap_the_frozen_graph_into_a_function(saved_models, monkeypatch):
  """The shortcut is taken: TensorFlow's wrapping of the frozen GraphDef (17 s of ResNet50's conversion) is never
  called. A TensorFlow whose private freezing functions moved would turn the shortcut off, and this fails."""
  from tensorflow.python.framework import convert_to_constants  # pylint: disable=g-import-not-at-top

  def wrapping_called(*args, **kwargs):
    raise AssertionError("convert_variables_to_constants_v2 rewrapped the frozen graph")
  monkeypatch.setattr(convert_to_constants, "_construct_concrete_function", wrapping_called)
  from tf2onnx import tf_loader  # pylint: disable=g-import-not-at-top
  loader_freezing = tf_loader.convert_variables_to_constants_v2
  _convert(saved_models["cnn"])
  assert tf_loader.convert_variables_to_constants_v2 is loader_freezing, "tf2onnx's loader is left as it was"


def test_optimizer_passes_do_not_write_weights_back_to_protobuf(saved_models, monkeypatch):
  """Without subgraphs each node's proto is written once (by make_graph), not after each of ~30 passes."""
  from tf2onnx import graph as tf2onnx_graph  # pylint: disable=g-import-not-at-top
  writes = {"count": 0}
  original = tf2onnx_graph.Graph.update_proto

  def counting(self, *args, **kwargs):
    writes["count"] += 1
    return original(self, *args, **kwargs)
  monkeypatch.setattr(tf2onnx_graph.Graph, "update_proto", counting)
  _convert(saved_models["cnn"])
  fast = writes["count"]
  writes["count"] = 0
  _tf2onnx_route(monkeypatch)
  _convert(saved_models["cnn"])
  assert fast <= 2 < writes["count"], (fast, writes["count"])
