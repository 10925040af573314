"""FP32 ONNX -> FP16 ONNX with onnxconverter-common, inputs and outputs kept FP32.

Weights and activations become FP16 except in ops whose FP16 result is known to go wrong; those stay FP32
behind Cast nodes. Why each one is kept is written down here and recorded in the variant's `model.json`.
"""

# Ops this library keeps in FP32, beyond onnxconverter-common's own list, and why. FP16 tops out at 65504 and
# has 10 mantissa bits, so what breaks is overflow and long accumulations, not single multiplies.
KEPT_FP32_WHY = {
    "Exp": "overflows FP16 (65504) for inputs above ~11",
    "Pow": "overflows FP16 (65504) quickly for large bases or exponents",
    "ReduceSum": "sums over long axes overflow or lose the small terms in FP16",
    "ReduceSumSquare": "squares then sums: overflows FP16 for activations above ~256 over long axes",
    "ReduceMean": "accumulates over long axes; layer/instance norms lose precision in FP16 (TensorRT warns too)",
    "LayerNormalization": "mean and variance over long axes lose precision in FP16 (TensorRT warns too)",
    # tf2onnx's global_pool_optimizer writes ReduceMean over the trailing axes as GlobalAveragePool: Keras 3's
    # LayerNormalization/RMSNormalization means and squeeze-excite pooling arrive as this op, not ReduceMean.
    "GlobalAveragePool": "the same mean as ReduceMean (tf2onnx rewrites layer-norm and pooling means to it)",
}
# Ops holding subgraphs: onnxconverter-common does not convert a kept node's body, but casts only its explicit
# inputs, so the body's reads of outer FP16 tensors no longer type-check (ONNX Runtime refuses the model).
NOT_KEEPABLE = frozenset({"Loop", "Scan", "If"})
# Why onnxconverter-common's own block list (`float16.DEFAULT_OP_BLOCK_LIST`) keeps its ops in FP32, by group.
_DEFAULT_LIST_WHY = {
    ("NonMaxSuppression", "TopK", "RoiAlign", "Resize", "Upsample", "Range", "CumSum", "Min", "Max"):
        "onnxconverter-common's block list: FP16 coordinates, indices or running sums change results, or "
        "ONNX Runtime has no FP16 kernel",
}
_ML_OPS_WHY = "onnxconverter-common's block list: ONNX-ML operator, FP32 only"
# Weights beyond FP16's largest finite value are clamped there (onnxconverter-common's default, 1e4, would
# clamp legitimate weights and masking constants that FP16 represents exactly).
FP16_MAX = 65504.0


def block_list(extra_ops=()):
  """{op type: why it stays FP32}: onnxconverter-common's list, this library's and the user's `extra_ops`."""
  from onnxconverter_common import float16  # pylint: disable=g-import-not-at-top
  why = {}
  for op in float16.DEFAULT_OP_BLOCK_LIST:
    group = next((reason for ops, reason in _DEFAULT_LIST_WHY.items() if op in ops), _ML_OPS_WHY)
    why[op] = group
  why.update(KEPT_FP32_WHY)
  for op in extra_ops:
    why.setdefault(op, "asked for in format_options['onnx'].fp16_keep_fp32_ops")
  return why


def convert_to_fp16(model, extra_ops=(), keep_nodes=(), check_fp16_ready=True, samples=None):
  """Returns (fp16 model, {op type: {"nodes": count, "why": reason}} of the ops present and kept FP32).

  Args:
    model: the FP32 `onnx.ModelProto` (not modified).
    extra_ops: more op types to keep in FP32.
    keep_nodes: names of nodes to leave as they are (the float32 view's Casts at float16 graph inputs/outputs).
    check_fp16_ready: False for a float32 view whose graph inputs/outputs are float16.
    samples: calibration samples {input name: array}; nodes leaving FP16's range on them stay FP32.
  """
  import copy  # pylint: disable=g-import-not-at-top
  import warnings  # pylint: disable=g-import-not-at-top
  from onnxconverter_common import float16  # pylint: disable=g-import-not-at-top
  from tftrt_keras.formats.onnx import fp16_graph as passes  # pylint: disable=g-import-not-at-top
  why = block_list(extra_ops)
  prepared = _outputs_behind_identity(copy.deepcopy(model))
  types = passes.tensor_dtypes(prepared)  # shape inference once, for both passes
  integer_nodes = passes.integer_cast_blocks(prepared, types)
  out_of_range = (passes.out_of_range_nodes(prepared, samples, types) if samples else None) or {}
  blocked = integer_nodes | set(out_of_range)
  passes.unshare_initializers(prepared, set(why), blocked)
  with warnings.catch_warnings():
    # One warning per weight below FP16's smallest normal value (flushed to 1e-7): hundreds, and harmless.
    warnings.filterwarnings("ignore", message="the float32 number", category=UserWarning)
    converted = float16.convert_float_to_float16(prepared, keep_io_types=True, op_block_list=list(why),
                                                 node_block_list=sorted(blocked | set(keep_nodes)),
                                                 max_finite_val=FP16_MAX, check_fp16_ready=check_fp16_ready)
  passes.collapse_round_trips(converted)
  counts = {}
  for graph in passes.graphs(model.graph):
    for node in graph.node:
      if node.op_type in why:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
  kept = {op: {"nodes": n, "why": why[op]} for op, n in sorted(counts.items())}
  cast_nodes = integer_nodes - set(out_of_range)  # a node kept for both reasons is counted under range
  if cast_nodes:
    kept["integer casts"] = {"nodes": len(cast_nodes), "why": passes.INTEGER_CASTS_WHY}
  if out_of_range:
    worst = max(out_of_range, key=out_of_range.get)
    kept["out of FP16 range"] = {"nodes": len(out_of_range), "why": passes.RANGE_WHY,
                                 "largest": {"node": worst, "abs": out_of_range[worst]}}
  return converted, kept


def _outputs_behind_identity(model):
  """Gives every graph output its own Identity node, so no graph output feeds another node.

  onnxconverter-common 1.16 mistypes the consumer of a graph output that keep_io_types casts back to FP32.
  """
  import onnx  # pylint: disable=g-import-not-at-top
  graph = model.graph
  not_produced = {v.name for v in graph.input} | {t.name for t in graph.initializer}
  for output in graph.output:
    if output.name in not_produced:  # a pass-through output: no node produces it
      continue
    internal = output.name + "__before_identity"
    for node in graph.node:
      node.output[:] = [internal if name == output.name else name for name in node.output]
      node.input[:] = [internal if name == output.name else name for name in node.input]
    graph.node.append(onnx.helper.make_node("Identity", [internal], [output.name],
                                            name=output.name + "__identity"))
  return model


def graph_io_dtypes(model):
  """{graph input/output name: numpy dtype name}: keep_io_types must leave them all as they were."""
  import onnx  # pylint: disable=g-import-not-at-top
  return {v.name: onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name
          for v in list(model.graph.input) + list(model.graph.output)}


def count_fp16_nodes(model):
  """Nodes whose first output is FP16 according to shape inference (a figure for the manifest)."""
  import onnx  # pylint: disable=g-import-not-at-top
  inferred = onnx.shape_inference.infer_shapes(model)
  fp16 = {v.name for v in inferred.graph.value_info if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT16}
  return sum(1 for node in inferred.graph.node if node.output and node.output[0] in fp16 and node.op_type != "Cast")
