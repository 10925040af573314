"""SavedModel signature -> ONNX model with tf2onnx, in this process (the export worker).

Graph inputs and outputs carry the signature's own names; the batch dimension is dynamic and called `batch`.
tf2onnx leaves an op it cannot handle in the graph (and only logs it), so the result is checked against ONNX's
op schemas and such an op is named in a `ConversionError`.
"""

from tftrt_keras.formats.onnx import tf2onnx_private
from tftrt_keras.quiet_console import logger_at_error

# dtypes a signature may carry into ONNX: strings and resources do not survive as numeric ONNX tensors that
# FP16, INT8 and TensorRT could take, so they are refused before tf2onnx runs (with the tensor named).
CONVERTIBLE_DTYPES = frozenset({"float16", "float32", "float64", "bfloat16", "int8", "int16", "int32", "int64",
                                "uint8", "uint16", "uint32", "uint64", "bool"})
BATCH_DIM = "batch"
STRING_INPUT_ADVICE = (
    ". ONNX and TensorRT tensors are numeric: raw text, vocabulary keys or serialized tf.Example cannot enter an "
    "ONNX model or a TensorRT engine. To get these variants, export the numeric part and convert that: a "
    "SavedModel whose signature takes the tensors after the string preprocessing (TextVectorization or "
    "StringLookup applied in tf.data rather than in the model; for an Estimator, a raw receiver of numeric "
    "features rather than a tf.Example parsing one); the normal export keeps serving the strings")


class ConversionError(Exception):
  """The SavedModel cannot become an ONNX model; the message names the op or tensor and why."""


def refused_tensors(signature):
  """Sentences naming each signature input/output whose dtype ONNX variants cannot carry (empty if none)."""
  refused = []
  for kind in ("inputs", "outputs"):
    for tensor in signature.get(kind, []):
      if tensor["dtype"] not in CONVERTIBLE_DTYPES:
        refused.append(f"{kind[:-1]} `{tensor['name']}` is {tensor['dtype']}")
  return refused


def convertible_signature(signature):
  """(the signature the ONNX variants carry, {left-out output: why}).

  String outputs (a canned classifier's `classes`) are left out while a numeric output remains; string inputs
  stay in, for `convert_saved_model` to refuse.
  """
  kept = [t for t in signature.get("outputs", []) if t["dtype"] in CONVERTIBLE_DTYPES]
  if not kept:
    return signature, {}
  left_out = {t["name"]: f"{t['dtype']} output: ONNX variants carry numeric tensors only"
              for t in signature["outputs"] if t["dtype"] not in CONVERTIBLE_DTYPES}
  return dict(signature, outputs=kept), left_out


def convert_saved_model(saved_model_dir, signature_key, signature, opset, routes=None):
  """Converts one signature of a SavedModel to an ONNX `ModelProto` named, typed and ranked as `signature`.

  Args:
    saved_model_dir, signature_key: the normal export and the signature to convert.
    signature: `BuildJob.signature` reduced by `convertible_signature`.
    opset: the ONNX opset to target (tf2onnx 1.17 writes 7-18).
    routes: a dict receiving {stage: which route ran} for `SHORTCUTS` (None: not kept).

  Raises:
    ConversionError: a string/resource tensor in the signature, an op tf2onnx cannot convert, or an error
      inside tf2onnx (the message names the op or reason).
  """
  refused = refused_tensors(signature)
  if refused:
    advice = STRING_INPUT_ADVICE if any(t["dtype"] == "string" for t in signature.get("inputs", [])) else ""
    raise ConversionError("the signature cannot be expressed as a numeric ONNX model: " + "; ".join(refused)
                          + advice)
  wanted = {t["name"] for t in signature["outputs"]}
  from tf2onnx import tf_loader  # pylint: disable=g-import-not-at-top

  # tf2onnx logs every node at INFO; its errors (an unsupported op is logged there first) still show.
  with logger_at_error("tf2onnx"):
    try:
      # large_model=False keeps tf2onnx off its >2 GB path, the one that calls np.product (gone in numpy 2).
      with tf2onnx_private.freezing_without_rewrap(tf_loader, routes):
        graph_def, inputs, outputs, tables, renames = tf_loader.from_saved_model(
            str(saved_model_dir), None, None, tag=["serve"], signatures=[signature_key], large_model=False,
            return_initialized_tables=True, return_tensors_to_rename=True)
    except Exception as err:  # pylint: disable=broad-except
      raise ConversionError(f"tf2onnx could not load and freeze signature {signature_key!r}: "
                            f"{type(err).__name__}: {err}") from err
    # Only the outputs the variant carries (see `convertible_signature`); tf2onnx names them after the signature.
    outputs = [o for o in outputs if renames.get(o, o) in wanted]
  return _to_onnx(graph_def, inputs, outputs, renames, tables, signature, opset,
                  f"{signature_key} of {saved_model_dir}", routes)


def convert_graph_def(graph_def, inputs, outputs, renames, signature, opset, label, routes=None):
  """Converts a frozen GraphDef between named tensors (e.g. the back of a split model) to ONNX.

  Args:
    graph_def: a frozen GraphDef whose `inputs` are placeholders.
    inputs, outputs: tensor names (`name:0`).
    renames: {tensor name: name in the ONNX graph}, for every input and output.
    signature, opset, routes: as for `convert_saved_model`, under the renamed names.
    label: what the model is, for its doc string.

  Raises:
    ConversionError: as `convert_saved_model`.
  """
  refused = refused_tensors(signature)
  if refused:
    raise ConversionError("the graph cannot be expressed as a numeric ONNX model: " + "; ".join(refused))
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tf2onnx import tf_loader  # pylint: disable=g-import-not-at-top
  with logger_at_error("tf2onnx"), tf.Graph().as_default():  # grappler exports a meta graph: not in eager mode
    try:
      graph_def = tf_loader.tf_optimize(inputs, outputs, graph_def)
    except Exception as err:  # pylint: disable=broad-except
      raise ConversionError(f"tf2onnx could not optimize the graph: {type(err).__name__}: {err}") from err
  return _to_onnx(graph_def, inputs, outputs, renames, None, signature, opset, label, routes)


def _to_onnx(graph_def, inputs, outputs, renames, tables, signature, opset, label, routes=None):
  """The conversion proper, from a GraphDef tf2onnx's loader prepared; checks the result."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tf2onnx import optimizer, tfonnx  # pylint: disable=g-import-not-at-top
  from tftrt_keras.formats.onnx.tf_ops import (CUSTOM_OP_HANDLERS, inline_xla_functions,  # pylint: disable=g-import-not-at-top
                                                out_of_range_one_hot)
  graph_def = out_of_range_one_hot(graph_def)
  with logger_at_error("tf2onnx"):
    try:
      graph_def, _ = inline_xla_functions(graph_def, inputs, outputs)
    except Exception as err:  # pylint: disable=broad-except
      raise ConversionError(f"grappler could not inline the XLA-compiled functions of {label} "
                            f"(Keras 3's grouped convolutions): {type(err).__name__}: {err}") from err
    from tftrt_keras.formats.onnx import mixed  # pylint: disable=g-import-not-at-top
    # tf2onnx cannot write bfloat16 consistently (see `mixed`): a mixed_bfloat16 graph is converted in float32.
    graph_def, bfloat16 = mixed.bfloat16_as_float32(graph_def)
    with tf.Graph().as_default() as tf_graph:
      tf.import_graph_def(graph_def, name="")
      try:
        graph = tfonnx.process_tf_graph(tf_graph, opset=opset, input_names=inputs, output_names=outputs,
                                        tensors_to_rename=renames, initialized_tables=tables,
                                        custom_op_handlers=CUSTOM_OP_HANDLERS)
      except Exception as err:  # pylint: disable=broad-except
        raise ConversionError(f"tf2onnx failed converting the graph: {type(err).__name__}: {err}") from err
      graph = tf2onnx_private.optimize(graph, optimizer, routes)
      model = graph.make_model(label)
      if bfloat16:
        mixed.mark_bfloat16(model, bfloat16)

  unknown = unsupported_ops(model)
  if unknown:
    listed = ", ".join(f"{op} ({count} node{'s' if count > 1 else ''})" for op, count in sorted(unknown.items()))
    raise ConversionError(f"tf2onnx has no ONNX conversion for TensorFlow op(s): {listed}")
  _check_names_like_signature(model, signature)
  _make_batch_dynamic(model)
  import onnx  # pylint: disable=g-import-not-at-top
  try:
    onnx.checker.check_model(model)
  except Exception as err:  # pylint: disable=broad-except
    raise ConversionError(f"tf2onnx produced an invalid ONNX model: {type(err).__name__}: {err}") from err
  return model


def unsupported_ops(model):
  """{op type: node count} of nodes that are no registered ONNX (or ONNX-ML / ONNX Runtime) operator."""
  import onnx  # pylint: disable=g-import-not-at-top
  unknown = {}
  for node in _all_nodes(model.graph):
    domain = node.domain or ""
    if domain == "com.microsoft":  # ONNX Runtime's contrib ops are not in onnx.defs; they run in ORT
      continue
    if not onnx.defs.has(node.op_type, domain):
      unknown[node.op_type] = unknown.get(node.op_type, 0) + 1
  return unknown


def _all_nodes(graph):
  for node in graph.node:
    yield node
    for attribute in node.attribute:
      if attribute.g.node:
        yield from _all_nodes(attribute.g)
      for subgraph in attribute.graphs:
        yield from _all_nodes(subgraph)


def _check_names_like_signature(model, signature):
  """Checks the graph's inputs and outputs are the signature's (tf2onnx renames them after it).

  tf2onnx pairs placeholders with signature names by position; a dtype or rank that does not match the
  signature would mean the pairing went wrong, and is refused rather than shipped with crossed names.
  """
  import onnx  # pylint: disable=g-import-not-at-top
  for kind, values in (("inputs", model.graph.input), ("outputs", model.graph.output)):
    expected = {t["name"]: t for t in signature[kind]}
    for value in values:
      tensor = expected.get(value.name)
      if tensor is None:
        raise ConversionError(f"tf2onnx named a graph {kind[:-1]} {value.name!r}, which is not one of the "
                              f"signature's {sorted(expected)}")
      dtype = onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type).name
      rank = len(value.type.tensor_type.shape.dim)
      if dtype != tensor["dtype"] or (tensor["shape"] is not None and rank != len(tensor["shape"])):
        raise ConversionError(f"graph {kind[:-1]} {value.name!r} is {dtype} of rank {rank}, but the signature's is "
                              f"{tensor['dtype']} of shape {tensor['shape']}")
    missing = sorted(set(expected) - {v.name for v in values})
    if missing:
      raise ConversionError(f"the ONNX graph lacks signature {kind} {missing}")


def _make_batch_dynamic(model):
  """Names the first dimension `batch` on every graph input and output (tf2onnx writes `unk__29`)."""
  for value in list(model.graph.input) + list(model.graph.output):
    dims = value.type.tensor_type.shape.dim
    # A batch the signature fixed stays fixed: the graph inside may depend on it (reshapes).
    if dims and not dims[0].HasField("dim_value"):
      dims[0].dim_param = BATCH_DIM
