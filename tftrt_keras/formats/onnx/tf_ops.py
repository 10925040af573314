"""What Keras 3 puts in a TensorFlow graph that tf2onnx 1.17 cannot take as it is, made convertible.

1. Ops tf2onnx has no handler for, written as ONNX ops it can emit (`CUSTOM_OP_HANDLERS`: Erfc for exact
   GELU, Expm1, Log1p, Bucketize for Discretization, Bincount); passed as tf2onnx's per-conversion
   `custom_op_handlers`, so nothing is registered globally.
2. Functions grappler will not inline (`inline_xla_functions`).

tests/test_onnx_keras_layers.py checks each rewrite against TensorFlow.
"""


def _one_like(ctx, node):
  """A scalar 1 constant of the dtype of `node`'s first input (float16/32/64 graphs all occur)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  from tf2onnx import utils  # pylint: disable=g-import-not-at-top
  dtype = utils.map_onnx_to_numpy_type(ctx.get_dtype(node.input[0]))
  return ctx.make_const(utils.make_name(f"{node.name}/one"), np.array(1, dtype=dtype)).output[0]


def _unary(ctx, node, op_type):
  """A new ONNX `op_type` node on `node`'s input, typed and shaped like `node`'s output (elementwise)."""
  return ctx.make_node(op_type, [node.input[0]], op_name_scope=node.name, shapes=[ctx.get_shape(node.output[0])],
                       dtypes=[ctx.get_dtype(node.output[0])]).output[0]


def _erfc(ctx, node, name, args):
  """Erfc(x) -> Sub(1, Erf(x))."""
  del name, args
  erf = _unary(ctx, node, "Erf")
  ctx.replace_inputs(node, [_one_like(ctx, node), erf])
  node.type = "Sub"


def _expm1(ctx, node, name, args):
  """Expm1(x) -> Sub(Exp(x), 1)."""
  del name, args
  exp = _unary(ctx, node, "Exp")
  ctx.replace_inputs(node, [exp, _one_like(ctx, node)])
  node.type = "Sub"


def _log1p(ctx, node, name, args):
  """Log1p(x) -> Log(Add(1, x))."""
  del name, args
  plus_one = ctx.make_node("Add", [_one_like(ctx, node), node.input[0]], op_name_scope=node.name,
                           shapes=[ctx.get_shape(node.output[0])], dtypes=[ctx.get_dtype(node.output[0])])
  ctx.replace_inputs(node, [plus_one.output[0]])
  node.type = "Log"


def _bucketize(ctx, node, name, args):
  """Bucketize(x; boundaries) -> ReduceSum(Cast<int32>(GreaterOrEqual(Unsqueeze(x, -1), boundaries)), -1)."""
  del name, args
  import numpy as np  # pylint: disable=g-import-not-at-top
  from onnx import TensorProto  # pylint: disable=g-import-not-at-top
  from tf2onnx import utils  # pylint: disable=g-import-not-at-top
  x = node.input[0]
  # TensorFlow compares in float (boundaries are a float list attribute); only float64 keeps its own width.
  float_type = TensorProto.DOUBLE if ctx.get_dtype(x) == TensorProto.DOUBLE else TensorProto.FLOAT
  if ctx.get_dtype(x) != float_type:
    x = ctx.make_node("Cast", [x], attr={"to": float_type}, op_name_scope=node.name).output[0]
  boundaries = np.array(node.get_attr_value("boundaries"), dtype=utils.map_onnx_to_numpy_type(float_type))
  bounds = ctx.make_const(utils.make_name(f"{node.name}/boundaries"), boundaries).output[0]
  last = ctx.make_const(utils.make_name(f"{node.name}/last_axis"), np.array([-1], dtype=np.int64)).output[0]
  expanded = ctx.make_node("Unsqueeze", [x, last], op_name_scope=node.name).output[0]
  at_or_above = ctx.make_node("GreaterOrEqual", [expanded, bounds], op_name_scope=node.name).output[0]
  counted = ctx.make_node("Cast", [at_or_above], attr={"to": TensorProto.INT32}, op_name_scope=node.name).output[0]
  ctx.replace_inputs(node, [counted, last])
  node.type = "ReduceSum"
  node.set_attr("keepdims", 0)


def _bincount(ctx, node, name, args):
  """(Dense)Bincount(x, size, weights) -> ReduceMax/ReduceSum(OneHot(x, size), axis -2) (times the weights).

  tf2onnx's own handler uses Unique and ScatterND, which TensorRT cannot parse. Negative ids map to `size`, which
  OneHot gives all zeros, as TensorFlow ignores ids >= size.
  """
  del name, args
  import numpy as np  # pylint: disable=g-import-not-at-top
  from onnx import TensorProto  # pylint: disable=g-import-not-at-top
  from tf2onnx import utils  # pylint: disable=g-import-not-at-top
  ids, size, weights = node.input
  out_dtype = ctx.get_dtype(node.output[0])
  scope = node.name
  ids = ctx.make_node("Cast", [ids], attr={"to": TensorProto.INT64}, op_name_scope=scope).output[0]
  depth = ctx.make_node("Cast", [size], attr={"to": TensorProto.INT64}, op_name_scope=scope).output[0]
  zero = ctx.make_const(utils.make_name(f"{scope}/zero"), np.array(0, np.int64)).output[0]
  negative = ctx.make_node("Less", [ids, zero], op_name_scope=scope).output[0]
  ids = ctx.make_node("Where", [negative, depth, ids], op_name_scope=scope).output[0]
  off_on = ctx.make_const(utils.make_name(f"{scope}/off_on"),
                          np.array([0, 1], dtype=utils.map_onnx_to_numpy_type(out_dtype))).output[0]
  hot = ctx.make_node("OneHot", [ids, depth, off_on], attr={"axis": -1}, op_name_scope=scope).output[0]
  weights_shape = ctx.get_shape(weights)
  if not (weights_shape is not None and 0 in weights_shape):  # count weights: each id adds its weight
    last = ctx.make_const(utils.make_name(f"{scope}/last_axis"), np.array([-1], np.int64)).output[0]
    weight = ctx.make_node("Unsqueeze", [weights, last], op_name_scope=scope).output[0]
    hot = ctx.make_node("Mul", [hot, weight], op_name_scope=scope).output[0]
  binary = node.get_attr_value("binary_output", False)
  axes = ctx.make_const(utils.make_name(f"{scope}/ids_axis"), np.array([-2], np.int64)).output[0]
  for attribute in ("binary_output", "T", "Tidx"):
    if attribute in node.attr:
      del node.attr[attribute]
  node.set_attr("keepdims", 0)
  if binary and ctx.opset < 18:  # ReduceMax takes its axes as an input from opset 18 on
    node.type = "ReduceMax"
    node.set_attr("axes", [-2])
    ctx.replace_inputs(node, [hot])
  else:
    node.type = "ReduceMax" if binary else "ReduceSum"
    ctx.replace_inputs(node, [hot, axes])


# tf2onnx's custom_op_handlers: {TF op type: (handler, args)}; empty args keep the node's type for the handler.
CUSTOM_OP_HANDLERS = {"Erfc": (_erfc, []), "Expm1": (_expm1, []), "Log1p": (_log1p, []),
                      "Bucketize": (_bucketize, []), "Bincount": (_bincount, []), "DenseBincount": (_bincount, [])}


# --- functions that must be XLA-compiled -------------------------------------------------------------------------

# Keras 3's TensorFlow backend runs a grouped convolution (Conv2D with groups > 1: ConvNeXt's depthwise
# convolutions) as a `tf.function(jit_compile=True)`, because TensorFlow's CPU kernel lacks groups. Its call
# node and FunctionDef carry these attributes, grappler's function optimizer does not inline such functions,
# and tf2onnx then finds a `StatefulPartitionedCall` it has no handler for. Inlined, the Conv2D inside is an
# ordinary grouped ONNX Conv (tf2onnx derives `group` from the channel counts).
_NOT_INLINED = ("_XlaMustCompile", "_noinline")


def inline_xla_functions(graph_def, input_names, output_names):
  """`graph_def` (frozen by tf2onnx's loader) with its must-compile functions inlined; unchanged without any.

  Returns (graph_def, number of functions inlined)."""
  compiled = {f.signature.name for f in graph_def.library.function
              if "_XlaMustCompile" in f.attr and f.attr["_XlaMustCompile"].b}
  if not compiled:
    return graph_def, 0
  for function in graph_def.library.function:
    if function.signature.name in compiled:
      for key in _NOT_INLINED:
        function.attr.pop(key, None)
  for node in graph_def.node:
    if "f" in node.attr and node.attr["f"].func.name in compiled:
      for key in _NOT_INLINED:
        node.attr.pop(key, None)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tf2onnx import tf_loader  # pylint: disable=g-import-not-at-top
  # tf2onnx's own grappler pass (constant folding, function inlining), as its loader ran it; it needs a graph.
  with tf.Graph().as_default():
    return tf_loader.tf_optimize(list(input_names), list(output_names), graph_def), len(compiled)


def out_of_range_one_hot(graph_def):
  """`graph_def` with each OneHot's negative indices moved to `depth`.

  TensorFlow's OneHot gives all `off_value` for -1 (an out-of-vocabulary id); ONNX's counts it from the end.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  one_hots = [node for node in graph_def.node if node.op == "OneHot"]
  if not one_hots:
    return graph_def
  result = tf.compat.v1.GraphDef()
  result.CopyFrom(graph_def)
  for node in [n for n in result.node if n.op == "OneHot"]:
    index_type = node.attr["TI"].type
    scope = f"{node.name}/tftrt_keras_out_of_range"
    zero = result.node.add(name=f"{scope}/zero", op="Const")
    zero.attr["dtype"].type = index_type
    zero.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(0, dtype=tf.dtypes.as_dtype(index_type)))
    negative = result.node.add(name=f"{scope}/negative", op="Less", input=[node.input[0], zero.name])
    negative.attr["T"].type = index_type
    depth = result.node.add(name=f"{scope}/depth", op="Cast", input=[node.input[1]])
    depth.attr["SrcT"].type = tf.int32.as_datatype_enum
    depth.attr["DstT"].type = index_type
    moved = result.node.add(name=f"{scope}/indices", op="SelectV2", input=[negative.name, depth.name, node.input[0]])
    moved.attr["T"].type = index_type
    node.input[0] = moved.name
  return result
