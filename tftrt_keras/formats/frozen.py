"""Freezing a SavedModel signature into a GraphDef with variables folded into constants."""

import json
import os

from tftrt_keras.formats.base import Runner
from tftrt_keras.formats.signature import load_signature

FROZEN_GRAPH_FILE = "frozen_graph.pb"
FROZEN_IO_FILE = "frozen_graph.json"

# Ops whose state a frozen graph cannot carry (lookup tables are rewritten with their contents, see
# `frozen_tables`; what is left of these after that would fail at the first request).
_STATEFUL_RESOURCE_OPS = frozenset({
    "MutableHashTable", "MutableHashTableV2", "MutableHashTableOfTensors",
    "MutableHashTableOfTensorsV2", "MutableDenseHashTable", "MutableDenseHashTableV2", "VarHandleOp",
    "AnonymousHashTable", "AnonymousMutableHashTable", "AnonymousMutableDenseHashTable",
})
# Collections of a TF1 SavedModel's graph that name ops outside the signature: grappler, asked to inline the
# signature, looks for them and fails with only "Failed to import metagraph, check error log".
_INIT_COLLECTIONS = ("table_initializer", "saved_model_main_op", "legacy_init_op", "init_op")


class FreezeRefused(Exception):
  """The signature cannot be expressed as a self-contained frozen graph; the message says why."""


class FreezeFailed(Exception):
  """Freezing broke; the message names the cause where TensorFlow's own error does not."""


def _all_ops(graph_def):
  for node in graph_def.node:
    yield node.op
  for function in graph_def.library.function:
    for node in function.node_def:
      yield node.op


def freeze_signature(saved_model_dir, signature_key, output_dir):
  """Writes `frozen_graph.pb` and `frozen_graph.json` (tensor names, dtypes, shapes) into `output_dir`.

  Returns:
    The `frozen_graph.json` dict: {"inputs": [...], "outputs": [...]} of {"key", "tensor", "dtype", "shape"}.

  Raises:
    FreezeRefused: the graph keeps state a frozen graph cannot hold (a table it changes, unfoldable variables).
    FreezeFailed: TensorFlow could not fold it (the message names the cause).
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tftrt_keras.formats import frozen_tables  # pylint: disable=g-import-not-at-top
  loaded, function, info = load_signature(saved_model_dir, signature_key)
  frozen = _convert_to_constants(function)
  graph_def = frozen.graph.as_graph_def()
  try:
    graph_def, init_op = frozen_tables.write_tables(
        graph_def, frozen_tables.read_tables(graph_def, frozen.inputs, function))
  except frozen_tables.TableUnreadable as err:
    raise FreezeRefused(f"{err}; serve the SavedModel (native or TF-TRT) instead") from err
  stateful = sorted(set(_all_ops(graph_def)) & _STATEFUL_RESOURCE_OPS)
  if stateful:
    raise FreezeRefused(f"the signature holds state that a frozen graph cannot carry ({', '.join(stateful)}); "
                        "serve the SavedModel (native or TF-TRT) instead")
  # Placeholders follow the flattened (sorted-key) input signature; outputs the flattened structured outputs.
  _, input_specs = function.structured_input_signature
  input_keys = sorted(input_specs)
  placeholders = [t for t in frozen.inputs if t.dtype != tf.resource]  # captured tables are nodes now
  for key, tensor in zip(input_keys, placeholders):
    # Names, not positions, tie the frozen graph to the signature; a dtype mismatch means the order broke.
    if tensor.dtype != input_specs[key].dtype:
      raise RuntimeError(f"frozen input {tensor.name} ({tensor.dtype.name}) does not match signature input "
                         f"{key!r} ({input_specs[key].dtype.name})")
  output_keys = sorted(function.structured_outputs)
  io = {
      "signature_key": signature_key,
      # Run once in a fresh session before serving: it fills the lookup tables (None: there are none).
      "init_op": init_op,
      "inputs": [dict(info.input(key).to_json(), key=key, tensor=tensor.name)
                 for key, tensor in zip(input_keys, placeholders)],
      "outputs": [dict(next(o for o in info.outputs if o.name == key).to_json(), key=key, tensor=tensor.name)
                  for key, tensor in zip(output_keys, frozen.outputs)],
  }
  with open(os.path.join(output_dir, FROZEN_GRAPH_FILE), "wb") as f:
    f.write(graph_def.SerializeToString())
  with open(os.path.join(output_dir, FROZEN_IO_FILE), "w") as f:
    json.dump(io, f, indent=2)
  del loaded  # kept alive until here on purpose: the function dies with it
  return io


def _convert_to_constants(function):
  """`convert_variables_to_constants_v2(function)`, with TF1 init collections set aside while grappler inlines.

  Raises:
    FreezeFailed: with the cause named (the op a collection names that the signature's graph lacks, or
      TensorFlow's own error).
  """
  from tensorflow.python.framework import convert_to_constants  # pylint: disable=g-import-not-at-top
  graph = function.graph
  saved = {key: list(graph.get_collection(key)) for key in _INIT_COLLECTIONS if graph.get_collection(key)}
  for key in saved:
    graph.clear_collection(key)
  try:
    return convert_to_constants.convert_variables_to_constants_v2(function)
  except Exception as err:  # pylint: disable=broad-except
    raise FreezeFailed(f"TensorFlow could not fold the signature into constants: {type(err).__name__}: "
                       f"{err}{_dangling_collections(graph)}") from err
  finally:
    for key, values in saved.items():
      for value in values:
        graph.add_to_collection(key, value)


def _dangling_collections(graph):
  """"; collection X names ops the signature's graph lacks: ..." for grappler's unlogged refusal, else ""."""
  names = {op.name for op in graph.get_operations()}
  dangling = {}
  for key in graph.get_all_collection_keys():
    for item in graph.get_collection(key):
      name = getattr(item, "name", item if isinstance(item, str) else None)
      if isinstance(name, str) and name.split(":")[0] not in names:
        dangling.setdefault(key, []).append(name)
  return "".join(f"; collection {key!r} names op(s) the signature's graph lacks: {', '.join(sorted(v)[:3])}"
                 for key, v in sorted(dangling.items()))


class FrozenGraphRunner(Runner):
  """The frozen artifact's `Runner`: the graph imported once into a fresh `tf.compat.v1` session, as a TF1 server would.
  """

  def __init__(self, frozen_dir):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    self.frozen_dir = frozen_dir
    with open(os.path.join(frozen_dir, FROZEN_IO_FILE)) as f:
      io = json.load(f)
    graph_def = tf.compat.v1.GraphDef()
    with open(os.path.join(frozen_dir, FROZEN_GRAPH_FILE), "rb") as f:
      graph_def.ParseFromString(f.read())
    graph = tf.Graph()
    with graph.as_default():
      tf.compat.v1.import_graph_def(graph_def, name="")
    self._session = tf.compat.v1.Session(graph=graph)
    if io.get("init_op"):
      self._session.run(graph.get_operation_by_name(io["init_op"]))
    self._fetches = {o["key"]: graph.get_tensor_by_name(o["tensor"]) for o in io["outputs"]}
    self._inputs = {i["key"]: graph.get_tensor_by_name(i["tensor"]) for i in io["inputs"]}

  def prepared_call(self, feeds):
    feed_dict = {self._inputs[name]: value for name, value in feeds.items()}
    return lambda: self._session.run(self._fetches, feed_dict=feed_dict)

  def run_tensors(self, feeds, tensors):
    """{tensor name: numpy array} of any tensors of the graph, for `feeds`."""
    graph = self._session.graph
    values = self._session.run([graph.get_tensor_by_name(t) for t in tensors],
                               feed_dict={self._inputs[name]: value for name, value in feeds.items()})
    return dict(zip(tensors, values))

  def close(self):
    self._session.close()


def run_frozen_graph(frozen_dir, feeds):
  """Runs a frozen graph once in a fresh `tf.compat.v1` session: {signature input key: array} -> {output key: array}.
  """
  with FrozenGraphRunner(frozen_dir) as session:
    return session.run(feeds)
