"""A split deployment from a frozen graph: TensorFlow runs the string/lookup front, ONNX and TensorRT the rest.

`plan_split` finds the cut (`formats.cut`); `write_front` writes front/<v>/, a TF1 SavedModel of the front
(`serving_default`: the inputs it reads -> the cut tensors; its main op fills the tables) plus split.json;
`back_graph` is the GraphDef ONNX converts, each cut tensor a placeholder, outputs under their signature names.
"""

import json
import os

from tftrt_keras.formats.cut import NUMERIC_DTYPES, CutRefused, find_cut, node_of, tensor_name
from tftrt_keras.formats.frozen import FROZEN_GRAPH_FILE, FROZEN_IO_FILE
from tftrt_keras.formats.frozen_tables import INIT_OP

SPLIT_FILE = "split.json"
FRONT_SIGNATURE = "serving_default"
_CUT_SCOPE = "tftrt_keras_cut/"
# Batch sizes the front is probed with: a cut tensor must have each of them first.
_PROBE_BATCHES = (2, 3)

def _load(frozen_dir):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  with open(os.path.join(frozen_dir, FROZEN_IO_FILE)) as f:
    io = json.load(f)
  graph_def = tf.compat.v1.GraphDef()
  with open(os.path.join(frozen_dir, FROZEN_GRAPH_FILE), "rb") as f:
    graph_def.ParseFromString(f.read())
  return graph_def, io


def _synthetic_feeds(io, batch):
  """Empty strings and zeros: a sparse feature of empty strings has no values, so its parts have no batch."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  feeds = {}
  for spec in io["inputs"]:
    shape = [batch] + [d or 1 for d in (spec["shape"] or [None])[1:]]
    feeds[spec["key"]] = (np.full(shape, b"", dtype=object) if spec["dtype"] == "string"
                          else np.zeros(shape, dtype=spec["dtype"]))
  return feeds


def synthetic_feeds(frozen_dir, batch):
  """Empty inputs of `batch` samples for the frozen graph in `frozen_dir` ({input key: array})."""
  return _synthetic_feeds(_load(frozen_dir)[1], batch)


class _Prober:
  """Whether a tensor has the batch first: asked of the graph on probe feeds of two batch sizes (cached)."""

  def __init__(self, graph, io, samples):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    self._graph, self._io, self._cache, self.ranks = graph, io, {}, {}
    self._session = tf.compat.v1.Session(graph=graph)
    if io.get("init_op"):
      self._session.run(graph.get_operation_by_name(io["init_op"]))
    self._feeds = [_synthetic_feeds(io, b) for b in _PROBE_BATCHES]
    if samples:
      self._feeds += [{k: v[:b] for k, v in samples.items()} for b in _PROBE_BATCHES
                      if all(len(v) >= b for v in samples.values())]

  def __call__(self, tensor_name_):
    if tensor_name_ not in self._cache:
      tensor = self._graph.get_tensor_by_name(tensor_name_)
      self._cache[tensor_name_] = tensor.shape.rank != 0 and all(
          self._first_dim(tensor, feeds) == len(next(iter(feeds.values()))) for feeds in self._feeds)
    return self._cache[tensor_name_]

  def _first_dim(self, tensor, feeds):
    inputs = {self._graph.get_tensor_by_name(s["tensor"]): feeds[s["key"]] for s in self._io["inputs"]}
    try:
      value = self._session.run(tensor, feed_dict=inputs)
    except Exception:  # pylint: disable=broad-except
      return None  # cannot tell on these feeds: not batch-major
    self.ranks[tensor.name] = getattr(value, "ndim", 0)
    return value.shape[0] if getattr(value, "ndim", 0) else None

  def close(self):
    self._session.close()


def plan_split(frozen_dir, samples=None):
  """The split of the frozen graph in `frozen_dir`, as a JSON-able dict, or None when it needs none.

  Args:
    frozen_dir: a frozen graph written by `freeze_signature`.
    samples: {input key: array} of real samples (optional), probed beside synthetic feeds.

  Returns:
    {"cut": [{"name", "tensor", "dtype", "shape"}], "front_inputs", "back_inputs", "outputs", "runs_in_tf"}.

  Raises:
    CutRefused: there is a string/lookup front but no cut hands the rest to ONNX (the message says why).
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  graph_def, io = _load(frozen_dir)
  with tf.Graph().as_default() as graph:
    tf.compat.v1.import_graph_def(graph_def, name="")
  types = {}
  for op in graph.get_operations():
    for t in op.outputs:
      types[t.name] = (t.dtype.name, None if t.shape.rank is None else tuple(t.shape.as_list()))
  numeric = [o for o in io["outputs"] if o["dtype"] in NUMERIC_DTYPES]
  if not numeric:
    return None
  prober = _Prober(graph, io, samples)
  try:
    cut = find_cut(graph_def.node, types, [i["tensor"] for i in io["inputs"]], [o["tensor"] for o in numeric],
                   is_batch_major=prober, reserved={i["key"] for i in io["inputs"]})
  finally:
    prober.close()
  if cut is None:
    return None
  cut_json = []
  for t in cut.tensors:
    entry = t.to_json()
    if entry["shape"] is None:  # unknown rank to TF's shape inference: the rank the probes saw, sizes dynamic
      entry["shape"] = [None] * prober.ranks[t.tensor]
    entry["shape"][0] = None  # the batch, whatever the graph fixed it to while tracing
    cut_json.append(entry)
  key_of = {i["tensor"]: i["key"] for i in io["inputs"]}
  return {"cut": cut_json, "front_inputs": [key_of[t] for t in cut.front_inputs],
          "back_inputs": [key_of[t] for t in cut.back_inputs], "outputs": [o["key"] for o in numeric],
          "runs_in_tf": cut.runs_in_tf}


def back_signature(plan, signature):
  """{"inputs", "outputs"} of the back, sorted by name: the cut tensors and the back's own model inputs in; the
  model's outputs out (`signature`: the normal export's, as in `BuildJob.signature`; the ONNX format leaves
  string outputs out as it does for any model)."""
  inputs = [{"name": t["name"], "dtype": t["dtype"], "shape": t["shape"]} for t in plan["cut"]]
  inputs += [dict(t) for t in signature["inputs"] if t["name"] in plan["back_inputs"]]
  outputs = [dict(t) for t in signature["outputs"]]
  return {"inputs": sorted(inputs, key=lambda t: t["name"]), "outputs": sorted(outputs, key=lambda t: t["name"])}


def back_graph(frozen_dir, plan):
  """(GraphDef, input tensors, output tensors, {tensor: name outside}) of the back, for tf2onnx.

  Raises:
    CutRefused: the back would still reach a string input or a lookup (the plan does not fit this graph).
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  graph_def, io = _load(frozen_dir)
  placeholder_of = {t["tensor"]: _CUT_SCOPE + t["name"] for t in plan["cut"]}
  by_name = {node.name: node for node in graph_def.node}
  inputs = {i["tensor"]: i for i in io["inputs"]}
  outputs = [o for o in io["outputs"] if o["key"] in plan["outputs"]]
  kept, stack = {}, [node_of(o["tensor"]) for o in outputs]
  while stack:
    name = stack.pop()
    if name in kept:
      continue
    node = tf.compat.v1.NodeDef()
    node.CopyFrom(by_name[name])
    if node.op.startswith(("LookupTable", "HashTable", "InitializeTable")) or (
        node.op == "Placeholder" and inputs.get(name + ":0", {}).get("key") not in plan["back_inputs"]):
      raise CutRefused(f"the back still reaches {name} ({node.op}): the cut does not close the front")
    refs = []
    for ref in node.input:
      tensor = tensor_name(ref)
      if tensor is None:
        continue  # control edges order the front's side effects; the back has none
      refs.append(placeholder_of.get(tensor, ref))
      if tensor not in placeholder_of:
        stack.append(node_of(tensor))
    del node.input[:]
    node.input.extend(refs)
    kept[name] = node
  back = tf.compat.v1.GraphDef()
  back.versions.CopyFrom(graph_def.versions)
  back.library.CopyFrom(graph_def.library)
  for t in plan["cut"]:
    placeholder = back.node.add(name=_CUT_SCOPE + t["name"], op="Placeholder")
    placeholder.attr["dtype"].type = tf.dtypes.as_dtype(t["dtype"]).as_datatype_enum
    if t["shape"] is not None:
      placeholder.attr["shape"].shape.CopyFrom(tf.TensorShape(t["shape"]).as_proto())
  back.node.extend(kept.values())
  back_inputs = [i for i in io["inputs"] if i["key"] in plan["back_inputs"]]
  renames = {_CUT_SCOPE + t["name"] + ":0": t["name"] for t in plan["cut"]}
  renames.update({i["tensor"]: i["key"] for i in back_inputs})
  renames.update({o["tensor"]: o["key"] for o in outputs})
  return (back, [_CUT_SCOPE + t["name"] + ":0" for t in plan["cut"]] + [i["tensor"] for i in back_inputs],
          [o["tensor"] for o in outputs], renames)


def write_front(frozen_dir, plan, output_dir):
  """Writes the front as a TF1 SavedModel into the empty `output_dir`, and `split.json` (the plan) beside it."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  graph_def, io = _load(frozen_dir)
  destinations = sorted({node_of(t["tensor"]) for t in plan["cut"]} | ({INIT_OP} if io.get("init_op") else set()))
  front = tf.compat.v1.graph_util.extract_sub_graph(graph_def, destinations)
  export_dir = os.path.join(output_dir, ".front")
  with tf.Graph().as_default() as graph:
    tf.compat.v1.import_graph_def(front, name="")
    utils = tf.compat.v1.saved_model.utils
    inputs = {i["key"]: utils.build_tensor_info(graph.get_tensor_by_name(i["tensor"]))
              for i in io["inputs"] if i["key"] in plan["front_inputs"]}
    outputs = {t["name"]: utils.build_tensor_info(graph.get_tensor_by_name(t["tensor"])) for t in plan["cut"]}
    signature = tf.compat.v1.saved_model.signature_def_utils.build_signature_def(
        inputs, outputs, tf.compat.v1.saved_model.signature_constants.PREDICT_METHOD_NAME)
    with tf.compat.v1.Session(graph=graph) as session:
      builder = tf.compat.v1.saved_model.Builder(export_dir)
      main_op = graph.get_operation_by_name(INIT_OP) if io.get("init_op") else None
      builder.add_meta_graph_and_variables(session, [tf.saved_model.SERVING], main_op=main_op,
                                           signature_def_map={FRONT_SIGNATURE: signature}, strip_default_attrs=True)
      builder.save()
  for name in os.listdir(export_dir):  # the builder wants a directory of its own; the artifact is `output_dir`
    os.rename(os.path.join(export_dir, name), os.path.join(output_dir, name))
  os.rmdir(export_dir)
  with open(os.path.join(output_dir, SPLIT_FILE), "w") as f:
    json.dump(plan, f, indent=2)


def read_plan(front_dir):
  with open(os.path.join(front_dir, SPLIT_FILE)) as f:
    return json.load(f)


def front_samples(front_runner, plan, samples):
  """{back input: array} for `samples` ({model input: array}): the front's outputs, run on all samples at once
  (a cut tensor's inner sizes may depend on the batch), and the model inputs the back reads itself."""
  outputs = front_runner.run({k: samples[k] for k in plan["front_inputs"]})
  return dict({k: samples[k] for k in plan["back_inputs"]}, **{t["name"]: outputs[t["name"]] for t in plan["cut"]})
