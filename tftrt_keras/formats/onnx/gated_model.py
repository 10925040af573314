"""The Q/DQ model with a gate on every quantized input, so that one ONNX Runtime session runs any set of nodes
quantized or FP32 (`GatedModel`), and the session helpers the INT8 fallback runs models with.

Gates, not rebuilds: the fallback judges tens of node sets, and each rebuild costs a calibration; a gated run
costs an inference.
"""

import numpy as np

from tftrt_keras.formats.onnx import quantize as onnx_quantize
from tftrt_keras.formats.onnx.runner import session_options

BATCH = 64
GATE_PREFIX = "tftrt_int8_gate__"


def open_session(model_or_path):
  import onnxruntime  # pylint: disable=g-import-not-at-top
  source = model_or_path if isinstance(model_or_path, str) else model_or_path.SerializeToString()
  return onnxruntime.InferenceSession(source, sess_options=session_options(), providers=["CPUExecutionProvider"])


def feeds(samples, dtypes, start, stop):
  return {k: np.asarray(v[start:stop]).astype(dtypes.get(k, v.dtype)) for k, v in samples.items()}


def run_session(session, samples, dtypes, extra_feeds=None):
  """{output name: array} of `session` over all `samples`, BATCH at a time, `extra_feeds` (gates) beside."""
  names = [o.name for o in session.get_outputs()]
  parts = [session.run(names, dict(feeds(samples, dtypes, start, start + BATCH), **(extra_feeds or {})))
           for start in range(0, len(next(iter(samples.values()))), BATCH)]
  return {name: np.concatenate([p[i] for p in parts]) for i, name in enumerate(names)}


class GatedModel:
  """The Q/DQ model with a boolean gate on every dequantized input: on = quantized, off = the FP32 tensor.

  `run(fp32_nodes=...)` gives exactly what `nodes_to_exclude` would. An input ONNX Runtime also dequantizes for
  other consumers (a residual Add) stays quantized while any quantized node consuming that tensor is.
  """

  def __init__(self, fp32_model, qdq_model):
    from onnx import TensorProto, helper, numpy_helper  # pylint: disable=g-import-not-at-top
    fp32_nodes = {node.name: node for node in fp32_model.graph.node if node.name}
    producers = {out: node for node in qdq_model.graph.node for out in node.output}
    fp32_constants = onnx_quantize._constants(fp32_model)  # pylint: disable=protected-access
    present = {init.name for init in qdq_model.graph.initializer}
    present |= {out for node in qdq_model.graph.node for out in node.output}
    present |= {value.name for value in qdq_model.graph.input}
    graph = qdq_model.graph  # changed in place: callers load a copy for this
    self.nodes, self.op_types = [], {}
    inputs = []  # (consumer, input index, FP32 tensor, the quantized node owning it or None)
    owners = {}  # FP32 tensor -> quantized nodes whose inputs quantize it
    for node in graph.node:
      dequantized = [j for j, name in enumerate(node.input)
                     if name in producers and producers[name].op_type == "DequantizeLinear"]
      quantized = node.op_type in onnx_quantize.QUANTIZED_OP_TYPES and node.name in fp32_nodes and dequantized
      if quantized:
        self.nodes.append(node.name)
        self.op_types[node.name] = node.op_type
      for j in dequantized:
        original = _quantized_source(producers, node.input[j])
        if quantized:
          original = original or fp32_nodes[node.name].input[j]
          owners.setdefault(original, set()).add(node.name)
        if original is not None:
          inputs.append((node, j, original, node.name if quantized else None))
    self._gates = {}  # gate input name -> the nodes any of which, quantized, turns it on
    self._quantized_inputs = {}  # quantized node -> {input index: its dequantized tensor}
    where_before = {}
    for node, j, original, owner in inputs:
      nodes = {owner} if owner else owners.get(original, set())
      if not nodes:
        continue  # quantized whatever the search keeps: no quantized node of ours owns this tensor
      if original not in present:
        # A weight: the Q/DQ model holds only its INT8 copy; the gate's FP32 side needs the original.
        graph.initializer.append(numpy_helper.from_array(fp32_constants[original], original))
        present.add(original)
      gate = f"{GATE_PREFIX}{len(self._gates)}"
      self._gates[gate] = frozenset(nodes)
      graph.input.append(helper.make_tensor_value_info(gate, TensorProto.BOOL, []))
      selected = f"{gate}__selected"
      if owner:
        self._quantized_inputs.setdefault(owner, {})[j] = node.input[j]
      where_before.setdefault(id(node), []).append(
          helper.make_node("Where", [gate, node.input[j], original], [selected], name=f"{gate}__where"))
      node.input[j] = selected
    ordered = []
    for node in graph.node:  # each Where right before its consumer: the graph stays topologically sorted
      ordered.extend(where_before.get(id(node), []))
      ordered.append(node)
    del graph.node[:]
    graph.node.extend(ordered)
    self._model = qdq_model
    self.session = open_session(qdq_model)

  def gates(self, fp32_nodes=()):
    """The gate feeds for every node quantized but `fp32_nodes`."""
    keep = set(fp32_nodes)
    return {gate: np.array(bool(nodes - keep)) for gate, nodes in self._gates.items()}

  def run(self, samples, dtypes, fp32_nodes=()):
    """Outputs with every node quantized but `fp32_nodes`."""
    return run_session(self.session, samples, dtypes, self.gates(fp32_nodes))

  def run_batch(self, fp32_nodes, dtypes):
    """A `HoldoutJudge.evaluate` callable: outputs of a slice of samples with `fp32_nodes` FP32."""
    gates = self.gates(fp32_nodes)
    return lambda samples: run_session(self.session, samples, dtypes, gates)

  def local_errors(self, samples, dtypes):
    """{node: ||node(quantized inputs) - node(FP32 inputs)|| / ||node(FP32 inputs)||} over `samples`, every
    node's inputs taken from the FP32 model: one run of a probe model (each quantized node cloned onto its
    dequantized inputs) ranks them all, where quantizing one node at a time would cost a run per node."""
    import onnx  # pylint: disable=g-import-not-at-top
    from onnx import TensorProto, helper  # pylint: disable=g-import-not-at-top
    probe = onnx.ModelProto()
    probe.CopyFrom(self._model)
    graph = probe.graph
    del graph.output[:]
    by_name = {node.name: node for node in graph.node}
    sums = {}
    for i, name in enumerate(self.nodes):
      node = by_name[name]
      clone = onnx.NodeProto()
      clone.CopyFrom(node)
      prefix = clone.name = f"{GATE_PREFIX}probe{i}"
      for j, dequantized in self._quantized_inputs.get(name, {}).items():
        clone.input[j] = dequantized
      del clone.output[:]
      clone.output.append(f"{prefix}__out")
      graph.node.extend([
          clone, helper.make_node("Sub", [clone.output[0], node.output[0]], [f"{prefix}__diff"]),
          helper.make_node("ReduceSumSquare", [f"{prefix}__diff"], [f"{prefix}__err"], keepdims=0),
          helper.make_node("ReduceSumSquare", [node.output[0]], [f"{prefix}__ref"], keepdims=0)])
      for suffix in ("__err", "__ref"):
        graph.output.append(helper.make_tensor_value_info(prefix + suffix, TensorProto.FLOAT, []))
      sums[name] = (prefix + "__err", prefix + "__ref")
    session = open_session(probe)
    names = [out for pair in sums.values() for out in pair]
    totals = dict.fromkeys(names, 0.0)
    off = self.gates(self.nodes)  # all gates off: every node sees FP32 inputs, its clone their quantized copies
    for start in range(0, len(next(iter(samples.values()))), BATCH):
      for out, value in zip(names, session.run(names, dict(feeds(samples, dtypes, start, start + BATCH), **off))):
        totals[out] += float(value)
    return {name: float(np.sqrt(totals[err] / max(totals[ref], 1e-30))) for name, (err, ref) in sums.items()}


def _quantized_source(producers, dequantized):
  """The FP32 tensor a DequantizeLinear output stands for when it comes from a QuantizeLinear (an activation);
  None for a weight (its DequantizeLinear reads an INT8 initializer)."""
  quantize = producers.get(producers[dequantized].input[0])
  return quantize.input[0] if quantize is not None and quantize.op_type == "QuantizeLinear" else None
