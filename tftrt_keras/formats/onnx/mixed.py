"""Models trained with mixed precision: what their ONNX graph computes in, and its float32 view.

`mixed_float16`: `onnx_fp32` keeps the graph as trained (as the normal export computes); `onnx_fp16` and
`onnx_int8` start from its float32 view, so the FP16 converter and the INT8 quantizer (float32 scales only) see
the float32 model they are written for.
`mixed_bfloat16`: tf2onnx 1.17 cannot write it correctly and ONNX Runtime's CPU has no bfloat16 MatMul/Conv, so
the frozen graph is made float32 before tf2onnx (`bfloat16_as_float32`, exact) and recorded in `BFLOAT16_PROP`.
"""

import copy
import json

FLOAT16, BFLOAT16, FLOAT = 10, 16, 1  # onnx.TensorProto's element types, without importing onnx here
LOW = {FLOAT16: "float16", BFLOAT16: "bfloat16"}
# Ops that do a model's arithmetic: counted per op type where they compute in float16/bfloat16.
COMPUTE_OPS = frozenset({"Conv", "ConvTranspose", "MatMul", "Gemm", "Einsum", "LSTM", "GRU", "RNN",
                         "BatchNormalization", "LayerNormalization", "Softmax", "Add", "Mul"})
_DTYPE_ATTRIBUTES = ("to", "dtype")
# What model.json's fp16 "converted_from" and int8 "quantized_from" say of a mixed-precision source.
VIEW_WORDS = ("the float32 view of onnx_fp32 (its float16/bfloat16 weights, casts and tensors made float32; "
              "graph inputs and outputs unchanged): the model was trained with mixed precision")
# Names the float32 view gives the Casts it adds at float16 graph inputs and outputs.
EDGE_CAST = "__edge_cast"
# The ONNX metadata key under which `convert` records the bfloat16 it found in the TensorFlow graph (JSON).
BFLOAT16_PROP = "tftrt_keras.bfloat16_made_float32"
# TensorFlow ops counted as a bfloat16 model's arithmetic.
_TF_COMPUTE_OPS = frozenset({"MatMul", "BatchMatMulV2", "BatchMatMulV3", "Conv2D", "Conv3D", "DepthwiseConv2dNative",
                             "Conv2DBackpropInput", "Einsum", "BiasAdd", "Softmax", "FusedBatchNormV3"})


def _graphs(graph):
  from tftrt_keras.formats.onnx.fp16_graph import graphs  # pylint: disable=g-import-not-at-top
  return graphs(graph)


def low_precision_compute(model):
  """What the graph computes in below float32, read from the graph, or None for a float32 graph.

  Returns:
    {"dtype": "float16" | "bfloat16", "casts": Cast nodes to it, "weights": initializers of it,
     "compute_nodes": {op type: nodes computing in it}}; bfloat16 wins where both appear.
  """
  from tftrt_keras.formats.onnx.fp16_graph import tensor_dtypes  # pylint: disable=g-import-not-at-top
  recorded = next((p.value for p in model.metadata_props if p.key == BFLOAT16_PROP), None)
  if recorded:
    return dict(json.loads(recorded), dtype="bfloat16")
  found = {}

  def entry(dtype):
    return found.setdefault(dtype, {"casts": 0, "weights": 0, "compute_nodes": {}})
  outputs = {v.name for v in model.graph.output}  # a cast there gives the signature's dtype, computes nothing
  for graph in _graphs(model.graph):
    for tensor in graph.initializer:
      if tensor.data_type in LOW:
        entry(tensor.data_type)["weights"] += 1
    for node in graph.node:
      to = next((a.i for a in node.attribute if a.name == "to"), None)
      if node.op_type == "Cast" and to in LOW and node.output[0] not in outputs:
        entry(to)["casts"] += 1
  if not found and not any(v.type.tensor_type.elem_type in LOW for v in model.graph.input):
    return None  # nothing can compute below float32: no shape inference (seconds on large models)
  try:
    types = tensor_dtypes(model)
  except Exception:  # pylint: disable=broad-except
    types = {}  # shape inference refuses an inconsistent graph: its casts and weights still tell
  for graph in _graphs(model.graph):
    for node in graph.node:
      dtype = types.get(node.input[0]) if node.op_type in COMPUTE_OPS and node.input else None
      if dtype in LOW:
        counts = entry(dtype)["compute_nodes"]
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
  if not found:
    return None
  dtype = BFLOAT16 if BFLOAT16 in found else FLOAT16
  return dict(dtype=LOW[dtype], **found[dtype])


def bfloat16_io(signature):
  """Why the ONNX variants cannot carry this signature's bfloat16 inputs/outputs, or None when it has none."""
  named = [f"{kind[:-1]} `{t['name']}`" for kind in ("inputs", "outputs") for t in signature.get(kind, [])
           if t["dtype"] == "bfloat16"]
  if not named:
    return None
  return (f"the signature's {', '.join(named)} {'is' if len(named) == 1 else 'are'} bfloat16 (mixed_bfloat16 "
          "without a float32 output layer): tf2onnx 1.17 writes bfloat16 tensors as float16 and ONNX Runtime's "
          "CPU has no bfloat16 kernels to verify with. End the model with a float32 layer, as Keras recommends "
          "for mixed precision: layers.Activation('linear', dtype='float32')")


def note(compute):
  """The sentence `model.json` and the manifest carry on an `onnx_fp32` built from a mixed-precision model."""
  counts = ", ".join(f"{op} x{n}" for op, n in sorted(compute["compute_nodes"].items())) or "no Conv/MatMul"
  if compute["dtype"] == "bfloat16":
    return (f"computes in float32: the model was trained in bfloat16 ({compute['casts']} casts to bfloat16, "
            f"{compute['weights']} bfloat16 weights), which tf2onnx cannot write consistently and ONNX Runtime's "
            "CPU cannot run, so the graph was converted in float32; it differs from the normal export by "
            "bfloat16's rounding")
  return (f"computes in float16 where the model was trained with mixed precision ({compute['casts']} casts to "
          f"float16, {compute['weights']} float16 weights; float16 {counts}): the FP32 variant keeps the trained "
          "model's float16 layers, as the normal export does; onnx_fp16 and onnx_int8 are built from its float32 "
          "view")


def float32_view(model):
  """A copy of `model` computing in float32: float16/bfloat16 weights, constants, casts and tensors made
  float32, and the casts that became float32 -> float32 removed. Graph inputs and outputs keep their dtypes
  (a float16 one is cast at the edge), so the signature is unchanged."""
  import onnx  # pylint: disable=g-import-not-at-top
  from onnx import numpy_helper  # pylint: disable=g-import-not-at-top
  view = copy.deepcopy(model)
  main = view.graph
  edge_casts = _cast_at_edges(main)
  for graph in _graphs(main):
    for tensor in graph.initializer:
      if tensor.data_type in LOW:
        tensor.CopyFrom(numpy_helper.from_array(_as_float32(tensor), tensor.name))
    for node in graph.node:
      if node.name in edge_casts:
        continue
      for attribute in node.attribute:
        if attribute.name in _DTYPE_ATTRIBUTES and attribute.type == onnx.AttributeProto.INT and attribute.i in LOW:
          attribute.i = FLOAT
        if attribute.type == onnx.AttributeProto.TENSOR and attribute.t.data_type in LOW:
          attribute.t.CopyFrom(numpy_helper.from_array(_as_float32(attribute.t), attribute.t.name))
    values = list(graph.value_info) + ([] if graph is main else list(graph.input) + list(graph.output))
    for value in values:
      if value.type.tensor_type.elem_type in LOW:
        value.type.tensor_type.elem_type = FLOAT
  _remove_float32_casts(view, edge_casts)
  return view


def _as_float32(tensor):
  import numpy as np  # pylint: disable=g-import-not-at-top
  from onnx import numpy_helper  # pylint: disable=g-import-not-at-top
  return np.asarray(numpy_helper.to_array(tensor)).astype(np.float32)


def _cast_at_edges(graph):
  """Casts float16/bfloat16 graph inputs to float32 where they enter, and float32 back to them where outputs
  leave (in place); returns the names of the Cast nodes added (they keep their dtypes)."""
  import onnx  # pylint: disable=g-import-not-at-top
  added, nodes = set(), []
  for value in graph.input:
    if value.type.tensor_type.elem_type in LOW:
      inner = value.name + "__float32"
      for node in graph.node:
        node.input[:] = [inner if name == value.name else name for name in node.input]
      nodes.insert(0, onnx.helper.make_node("Cast", [value.name], [inner], name=value.name + EDGE_CAST, to=FLOAT))
      added.add(value.name + EDGE_CAST)
  for value in graph.output:
    dtype = value.type.tensor_type.elem_type
    if dtype in LOW:
      inner = value.name + "__float32"
      for node in graph.node:
        node.output[:] = [inner if name == value.name else name for name in node.output]
        node.input[:] = [inner if name == value.name else name for name in node.input]
      nodes.append(onnx.helper.make_node("Cast", [inner], [value.name], name=value.name + EDGE_CAST, to=dtype))
      added.add(value.name + EDGE_CAST)
  inputs = {v.name for v in graph.input}
  ordered = ([n for n in nodes if n.input[0] in inputs] + list(graph.node)
             + [n for n in nodes if n.input[0] not in inputs])
  del graph.node[:]
  graph.node.extend(ordered)
  return added


def has_low_precision(model):
  """Whether any weight, cast, tensor or graph input/output of `model` is float16 or bfloat16."""
  if low_precision_compute(model):
    return True
  return any(value.type.tensor_type.elem_type in LOW for graph in _graphs(model.graph)
             for value in list(graph.input) + list(graph.output) + list(graph.value_info))


def edge_casts(model):
  """Names of the Casts `float32_view` added at float16/bfloat16 graph inputs and outputs (they stay as they
  are in the FP16 conversion: they carry the signature's dtypes)."""
  return {node.name for node in model.graph.node if node.op_type == "Cast" and node.name.endswith(EDGE_CAST)}


def _remove_float32_casts(model, keep):
  """Rewires every Cast(to float32) of a float32 tensor to that tensor and drops it (in every graph); one whose
  output is a graph output becomes an Identity (the output keeps its name)."""
  import onnx  # pylint: disable=g-import-not-at-top
  from tftrt_keras.formats.onnx.fp16_graph import tensor_dtypes  # pylint: disable=g-import-not-at-top
  types, renames = tensor_dtypes(model), {}
  for graph in _graphs(model.graph):
    outputs, kept = {v.name for v in graph.output}, []
    for node in graph.node:
      to = next((a.i for a in node.attribute if a.name == "to"), None)
      if node.op_type == "Cast" and node.name not in keep and to == FLOAT and types.get(node.input[0]) == FLOAT:
        if node.output[0] in outputs:
          kept.append(onnx.helper.make_node("Identity", [node.input[0]], [node.output[0]], name=node.name))
        else:
          renames[node.output[0]] = node.input[0]
        continue
      kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)
  # Renamed everywhere at once: a Loop body may read an outer tensor that was a removed cast's output.
  for graph in _graphs(model.graph):
    for node in graph.node:
      node.input[:] = [_resolve(renames, name) for name in node.input]
    values = [v for v in graph.value_info if v.name not in renames]
    del graph.value_info[:]
    graph.value_info.extend(values)


def _resolve(renames, name):
  while name in renames:
    name = renames[name]
  return name


# --- bfloat16, before tf2onnx --------------------------------------------------------------------------------

def bfloat16_as_float32(graph_def):
  """(graph_def, found): a frozen TensorFlow GraphDef with every bfloat16 type, constant and function argument
  made float32, and {"casts", "weights", "compute_nodes": {op: count}} of the bfloat16 found; the same graph_def
  and None when it has none."""
  from tensorflow.core.framework import types_pb2  # pylint: disable=g-import-not-at-top
  found = {"casts": 0, "weights": 0, "compute_nodes": {}}
  nodes = list(graph_def.node) + [n for f in graph_def.library.function for n in f.node_def]
  if not any(_node_has_bfloat16(node, types_pb2.DT_BFLOAT16) for node in nodes):
    return graph_def, None
  for node in nodes:
    _count_bfloat16(node, found, types_pb2.DT_BFLOAT16)
    for attr in node.attr.values():
      _attr_to_float32(attr, types_pb2.DT_BFLOAT16, types_pb2.DT_FLOAT)
  for function in graph_def.library.function:
    for arg in list(function.signature.input_arg) + list(function.signature.output_arg):
      if arg.type == types_pb2.DT_BFLOAT16:
        arg.type = types_pb2.DT_FLOAT
  return graph_def, found


def mark_bfloat16(model, found):
  """Records `bfloat16_as_float32`'s findings in the ONNX model (in place)."""
  entry = model.metadata_props.add()
  entry.key, entry.value = BFLOAT16_PROP, json.dumps(found, sort_keys=True)


def _node_has_bfloat16(node, bfloat16):
  return any(attr.type == bfloat16 or bfloat16 in attr.list.type or
             (attr.HasField("tensor") and attr.tensor.dtype == bfloat16) for attr in node.attr.values())


def _count_bfloat16(node, found, bfloat16):
  attr = node.attr
  if node.op == "Cast" and "DstT" in attr and attr["DstT"].type == bfloat16:
    found["casts"] += 1
  elif node.op == "Const" and "dtype" in attr and attr["dtype"].type == bfloat16:
    found["weights"] += 1
  elif node.op in _TF_COMPUTE_OPS and "T" in attr and attr["T"].type == bfloat16:
    found["compute_nodes"][node.op] = found["compute_nodes"].get(node.op, 0) + 1


def _attr_to_float32(attr, bfloat16, float32):
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if attr.type == bfloat16:
    attr.type = float32
  if bfloat16 in attr.list.type:
    attr.list.type[:] = [float32 if t == bfloat16 else t for t in attr.list.type]
  if attr.HasField("tensor") and attr.tensor.dtype == bfloat16:
    attr.tensor.CopyFrom(tf.make_tensor_proto(tf.make_ndarray(attr.tensor).astype(np.float32)))
