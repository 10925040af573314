"""Graph passes around onnxconverter-common's FP16 conversion, for what its block lists alone get wrong.

Each is needed by tf2onnx's graphs of Keras layers (found on tests/zoo_models.py):
  * `integer_cast_blocks`: int -> float casts feeding comparisons (Embedding checks, loop counters) and
    float -> int casts of token ids stay FP32: FP16 holds integers exactly only up to 2048.
  * `unshare_initializers`: an initializer read by a kept-FP32 node and an FP16 node gets a copy per side.
  * `collapse_round_trips`: Cast(FP16) -> Cast(FP32) pairs between kept nodes are removed everywhere.
  * `out_of_range_nodes`: nodes whose outputs on calibration samples leave FP16's range stay FP32.
"""

# Comparisons tf2onnx writes on int tensors cast to float; their outputs are bool, so keeping them in FP32
# costs nothing downstream.
COMPARISONS = frozenset({"Less", "LessOrEqual", "Greater", "GreaterOrEqual", "Equal"})
INTEGER_CASTS_WHY = ("int/bool tensors cast to float and the comparisons they feed (Embedding index checks, "
                     "while-loop counters), and float tensors cast to int (token ids fed as float), stay FP32: "
                     "FP16 holds integers exactly only up to 2048")
# Ops that move or reshape values without computing on them: a float tensor cast to int is kept FP32 back
# through these (to the graph input or the op that computed it).
# Outputs above this (|x|) on the calibration samples keep their node FP32: an eighth of FP16's largest value
# leaves room for inputs larger than the calibration samples and for the node's own FP16 accumulation.
FP16_SAFE_MAX = 65504.0 / 8
RANGE_WHY = ("outputs beyond FP16's safe range (|x| > 8188, an eighth of its largest value 65504) on the "
             "calibration samples stay FP32")
# Samples per ONNX Runtime run of the range check (every float tensor of the graph is kept alive for a run).
_RANGE_BATCH = 8
_RANGE_SAMPLES = 64
SHAPE_ONLY = frozenset({"Identity", "Reshape", "Squeeze", "Unsqueeze", "Transpose", "Flatten", "Expand", "Slice",
                        "Concat", "Split", "Gather", "Tile"})


def graphs(graph):
  """`graph` and every subgraph (Loop/Scan bodies, If branches) inside it, depth first."""
  yield graph
  for node in graph.node:
    for attribute in node.attribute:
      if attribute.g.node:
        yield from graphs(attribute.g)
      for subgraph in attribute.graphs:
        yield from graphs(subgraph)


def tensor_dtypes(model):
  """{tensor name: ONNX elem type} over every graph, from shape inference (names are unique in tf2onnx's
  graphs, so one map serves outer scopes and bodies alike)."""
  import onnx  # pylint: disable=g-import-not-at-top
  inferred = onnx.shape_inference.infer_shapes(model)
  types = {}
  for graph in graphs(inferred.graph):
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
      types[value.name] = value.type.tensor_type.elem_type
    for tensor in graph.initializer:
      types[tensor.name] = tensor.data_type
    for node in graph.node:
      if node.op_type == "Constant":
        for attribute in node.attribute:
          if attribute.name == "value":
            types[node.output[0]] = attribute.t.data_type
  return types


def integer_cast_blocks(model, types=None):
  """Names of the nodes to keep FP32 because they carry integer values as float: every Cast to float of a
  non-float tensor, and every comparison fed by one. `types`: `tensor_dtypes(model)` when already computed."""
  import onnx  # pylint: disable=g-import-not-at-top
  floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}
  types = types if types is not None else tensor_dtypes(model)
  casts = {}
  for graph in graphs(model.graph):
    for node in graph.node:
      to = next((a.i for a in node.attribute if a.name == "to"), None)
      if node.op_type == "Cast" and to == onnx.TensorProto.FLOAT and types.get(node.input[0]) not in floats:
        casts[node.output[0]] = node.name
  blocked = set(casts.values())
  for graph in graphs(model.graph):
    producers = {out: node for node in graph.node for out in node.output}
    for node in graph.node:
      if node.op_type in COMPARISONS and any(name in casts for name in node.input):
        blocked.add(node.name)
      to = next((a.i for a in node.attribute if a.name == "to"), None)
      if node.op_type == "Cast" and to not in floats and types.get(node.input[0]) == onnx.TensorProto.FLOAT:
        blocked.update(_shape_only_chain(node, producers))
  return blocked


def _shape_only_chain(node, producers):
  """Names of `node` and of the shape-only ops feeding its first input, back to the op that computed it."""
  names, todo = [], [node]
  while todo:
    current = todo.pop()
    if current.name in names:
      continue
    names.append(current.name)
    todo.extend(producers[name] for name in current.input[:1] if name in producers and
                producers[name].op_type in SHAPE_ONLY)
  return names


def unshare_initializers(model, blocked_ops, blocked_nodes):
  """Gives kept-FP32 nodes their own copy of a float32 initializer that FP16 nodes read too (in place)."""
  import onnx  # pylint: disable=g-import-not-at-top

  def is_blocked(node):
    return node.op_type in blocked_ops or node.name in blocked_nodes
  for graph in graphs(model.graph):
    initializers = {t.name: t for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    readers = {}
    for node in graph.node:
      for name in node.input:
        if name in initializers:
          readers.setdefault(name, set()).add(is_blocked(node))
    for name in [n for n, kinds in readers.items() if kinds == {True, False}]:
      copy = graph.initializer.add()
      copy.CopyFrom(initializers[name])
      copy.name = f"{name}__fp32"
      for node in graph.node:
        if is_blocked(node):
          node.input[:] = [copy.name if i == name else i for i in node.input]


def collapse_round_trips(model):
  """Rewires Cast(to FP32) of Cast(to FP16) of a float32 tensor to that tensor, in every graph (in place);
  the Casts left without consumers are removed."""
  import onnx  # pylint: disable=g-import-not-at-top
  types = tensor_dtypes(model)

  def cast_to(node):
    return next((a.i for a in node.attribute if a.name == "to"), None) if node.op_type == "Cast" else None
  renames = {}
  for graph in graphs(model.graph):
    to_fp16 = {n.output[0]: n.input[0] for n in graph.node if cast_to(n) == onnx.TensorProto.FLOAT16}
    for node in graph.node:
      if cast_to(node) == onnx.TensorProto.FLOAT and node.input[0] in to_fp16:
        source = to_fp16[node.input[0]]
        if types.get(source) == onnx.TensorProto.FLOAT:
          renames[node.output[0]] = source
  if not renames:
    return 0
  for graph in graphs(model.graph):
    outputs = {v.name for v in graph.output}
    for node in graph.node:
      node.input[:] = [renames.get(name, name) for name in node.input]
      if cast_to(node) == onnx.TensorProto.FLOAT and node.output[0] in renames and node.output[0] in outputs:
        node.input[0] = renames[node.output[0]]  # a graph output keeps its name: the Cast reads FP32 now
  _remove_dead_casts(model)
  return len(renames)


def _remove_dead_casts(model):
  """Drops Cast nodes whose output nothing reads (not a node in any graph, nor a graph output)."""
  while True:
    read = set()
    for graph in graphs(model.graph):
      read.update(v.name for v in graph.output)
      for node in graph.node:
        read.update(node.input)
    removed = 0
    for graph in graphs(model.graph):
      dead = [n for n in graph.node if n.op_type == "Cast" and n.output[0] not in read]
      for node in dead:
        graph.node.remove(node)
      removed += len(dead)
      names = {n.output[0] for n in dead}
      kept = [v for v in graph.value_info if v.name not in names]
      del graph.value_info[:]
      graph.value_info.extend(kept)
    if not removed:
      return


def out_of_range_nodes(model, samples, types=None):
  """{node name: largest |value| seen} of the main graph's nodes that read or write a float32 tensor beyond
  FP16_SAFE_MAX when the FP32 `model` runs on up to 64 of `samples` ({input name: array}): a node reading such a
  value in FP16 would read inf through its input Cast. Nodes inside Loop/Scan bodies are not seen. Returns None
  when the samples do not match the model's inputs. `types`: `tensor_dtypes(model)` when already computed."""
  import onnx  # pylint: disable=g-import-not-at-top
  import onnxruntime  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  if {v.name for v in model.graph.input} - {t.name for t in model.graph.initializer} != set(samples):
    return None
  probe = onnx.ModelProto()
  probe.CopyFrom(model)
  types = types if types is not None else tensor_dtypes(probe)
  known = {v.name for v in probe.graph.output}
  for node in probe.graph.node:
    for name in node.output:
      if name and name not in known and types.get(name) == onnx.TensorProto.FLOAT:
        probe.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
        known.add(name)
  options = onnxruntime.SessionOptions()
  options.intra_op_num_threads = 1  # beside training (the worker's manners)
  session = onnxruntime.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
  names = [o.name for o in session.get_outputs()]
  count = min(_RANGE_SAMPLES, len(next(iter(samples.values()))))
  largest = {}  # tensor name -> largest |value|
  for start in range(0, count, _RANGE_BATCH):
    feed = {k: np.asarray(v[start:min(start + _RANGE_BATCH, count)]) for k, v in samples.items()}
    values = dict(zip(names, session.run(names, feed)))
    values.update({k: v for k, v in feed.items() if v.dtype == np.float32})
    for name, value in values.items():
      if value.size and np.issubdtype(value.dtype, np.floating):
        largest[name] = max(largest.get(name, 0.0), float(np.nanmax(np.abs(value))))
  found = {}
  for node in probe.graph.node:
    top = max([largest.get(name, 0.0) for name in list(node.input) + list(node.output)] or [0.0])
    if top > FP16_SAFE_MAX:
      found[node.name] = top
  return found
