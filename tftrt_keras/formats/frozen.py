"""Freezing a SavedModel signature into a GraphDef with variables folded into constants."""

import json
import os

from tftrt_keras.formats.signature import load_signature

FROZEN_GRAPH_FILE = "frozen_graph.pb"
FROZEN_IO_FILE = "frozen_graph.json"

# Ops whose state a frozen graph cannot carry: their initialisers run in the SavedModel's restore path,
# not in the graph, so a fresh session would fail with "Table not initialized" at the first request.
_STATEFUL_RESOURCE_OPS = frozenset({
    "HashTable", "HashTableV2", "MutableHashTable", "MutableHashTableV2", "MutableHashTableOfTensors",
    "MutableHashTableOfTensorsV2", "MutableDenseHashTable", "MutableDenseHashTableV2", "VarHandleOp",
    "AnonymousHashTable", "AnonymousMutableHashTable", "AnonymousMutableDenseHashTable",
})


class FreezeRefused(Exception):
  """The signature cannot be expressed as a self-contained frozen graph; the message says why."""


def _all_ops(graph_def):
  for node in graph_def.node:
    yield node.op
  for function in graph_def.library.function:
    for node in function.node_def:
      yield node.op


def freeze_signature(saved_model_dir, signature_key, output_dir):
  """Writes `frozen_graph.pb` and `frozen_graph.json` (tensor names, dtypes, shapes) into `output_dir`.

  Returns:
    The dict stored in `frozen_graph.json`: {"inputs": [...], "outputs": [...]}, each entry with the
    signature `key`, graph `tensor` name, `dtype` and `shape`.

  Raises:
    FreezeRefused: the graph keeps state a frozen graph cannot hold (lookup tables, unfoldable variables).
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tensorflow.python.framework import convert_to_constants  # pylint: disable=g-import-not-at-top
  loaded, function, info = load_signature(saved_model_dir, signature_key)
  frozen = convert_to_constants.convert_variables_to_constants_v2(function)
  graph_def = frozen.graph.as_graph_def()
  ops = set(_all_ops(graph_def))
  stateful = sorted(ops & _STATEFUL_RESOURCE_OPS)
  # A captured resource that could not be folded (a lookup table, mostly: its HashTable op lives in the
  # SavedModel's restore path, not in the signature) stays a `resource` placeholder of the frozen graph.
  captured = [t for t in frozen.inputs if t.dtype == tf.resource]
  if stateful or captured:
    users = sorted({op for op in ops if op.startswith(("LookupTable", "MutableHashTable"))} | set(stateful))
    raise FreezeRefused(
        f"the signature holds state that a frozen graph cannot carry ({', '.join(users) or 'captured resources'}; "
        f"{len(captured)} captured resource(s) such as lookup tables that only the SavedModel initialises); "
        "serve the SavedModel (native or TF-TRT) instead")
  # Placeholders follow the flattened (sorted-key) input signature; outputs the flattened structured outputs.
  _, input_specs = function.structured_input_signature
  input_keys = sorted(input_specs)
  placeholders = [t for t in frozen.inputs if t.dtype != tf.resource]
  for key, tensor in zip(input_keys, placeholders):
    # Names, not positions, tie the frozen graph to the signature; a dtype mismatch means the order broke.
    if tensor.dtype != input_specs[key].dtype:
      raise RuntimeError(f"frozen input {tensor.name} ({tensor.dtype.name}) does not match signature input "
                         f"{key!r} ({input_specs[key].dtype.name})")
  output_keys = sorted(function.structured_outputs)
  io = {
      "signature_key": signature_key,
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


class FrozenGraphSession:
  """A frozen graph imported into a fresh `tf.compat.v1` graph and session, as a TF1 server would load it.

  Args:
    frozen_dir: directory with `frozen_graph.pb` and `frozen_graph.json`.
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
    self._fetches = {o["key"]: graph.get_tensor_by_name(o["tensor"]) for o in io["outputs"]}
    self._inputs = {i["key"]: graph.get_tensor_by_name(i["tensor"]) for i in io["inputs"]}

  def prepared_call(self, feeds):
    """A no-argument callable running the graph on `feeds` ({signature input key: array}); for timing."""
    feed_dict = {self._inputs[name]: value for name, value in feeds.items()}
    return lambda: self._session.run(self._fetches, feed_dict=feed_dict)

  def run(self, feeds):
    """{signature output key: numpy array} for `feeds`."""
    return self.prepared_call(feeds)()

  def close(self):
    self._session.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.close()


def run_frozen_graph(frozen_dir, feeds):
  """Runs a frozen graph once in a fresh `tf.compat.v1` graph and session.

  Args:
    frozen_dir: directory with `frozen_graph.pb` and `frozen_graph.json`.
    feeds: {signature input key: array}.

  Returns:
    {signature output key: numpy array}.
  """
  with FrozenGraphSession(frozen_dir) as session:
    return session.run(feeds)
