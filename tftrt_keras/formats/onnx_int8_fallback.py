"""INT8 that earns its gate: choose the calibration method, and keep the layers that cost most in FP32.

Plain post-training INT8 falls off a cliff on depthwise/SE networks (MobileNet, EfficientNet: top-1 agreement
0.6-0.94 where ResNet50 keeps 0.99). `build_int8` runs in the export worker, never in `fit`:

  1. The calibration samples are split: a part calibrates, a calibration-side hold-out judges (the
     verification samples are kept apart by the worker and never reach a format's build).
  2. Each calibration method in play (the user's `int8_calibration`, or for "auto" MinMax, then Percentile only
     when MinMax misses) is built once by ONNX Runtime's `quantize_static`, on the calibration part, and judged on
     the hold-out by the verdict rule verification uses (`tftrt_keras.agreement`: top-1 agreement on its 95%
     Wilson lower bound for classifiers, relative error against `verify_tolerance_int8` otherwise). A method
     that clears the gate ends it there: no search, so models that pass pay only the hold-out check.
  3. Otherwise one "gated" model is made from the best Q/DQ model: every quantized input of every Conv/MatMul/
     Gemm goes through `Where(gate, dequantized, fp32)`, with one boolean graph input per node, so any set of
     nodes can be run quantized or FP32 by one ONNX Runtime session without rebuilding or recalibrating (exact:
     `Where` selects, and the Q/DQ pairs are dedicated per node, so a node's gate is `nodes_to_exclude`).
  4. Sensitivity: each node alone quantized, its output error on (a slice of) the hold-out; then the most
     sensitive nodes are kept FP32, fewest first: doubling, then bisection, until the gate holds (Polygraphy's
     `debug precision` bisects the same way, by hand) or the budget (`int8_search_budget` times the plain build's
     seconds) runs out; then the best set found.
  5. The final model is built by `quantize_static` with those nodes excluded, from the cached calibration
     ranges, and judged on the hold-out once more: the figures written are the real model's.

Everything stays as TensorRT parses it: symmetric, zero point 0, no INT32 bias, FP32 where excluded.
"""

import os
import shutil
import tempfile
import time

import numpy as np

from tftrt_keras import agreement
from tftrt_keras.formats import onnx_quantize

# Half of the calibration samples judge, at most this many; with fewer than MIN_HOLDOUT to judge on, a Wilson
# bound near 0.97 cannot be reached (100 of 100 agreeing gives 0.974), so there is no check and no search.
MAX_HOLDOUT = 500
MIN_HOLDOUT = 100
AUTO = "auto"
# Sensitivity is an output error, continuous: a slice of the hold-out ranks the nodes as well as all of it,
# at a fraction of the cost. The gate itself is always judged on the whole hold-out.
SENSITIVITY_SAMPLES = 64
BATCH = 64
# The budget counts a plain build as at least this long: on a tiny model ONNX Runtime's fixed costs (a session,
# a graph copy) are most of the search, and 5x a 0.05 s build would not pay for ranking three nodes.
MIN_BUILD_SECONDS = 0.5
_GATE_PREFIX = "tftrt_int8_gate__"


def split_calibration(samples, seed=0):
  """(calibration part, hold-out) of {input name: array}: half held out at random, at most MAX_HOLDOUT; the
  hold-out is None when fewer than 2 * MIN_HOLDOUT samples are given (then all of them calibrate)."""
  total = len(next(iter(samples.values())))
  held = min(MAX_HOLDOUT, total // 2)
  if held < MIN_HOLDOUT:
    return samples, None
  order = np.random.default_rng(seed).permutation(total)
  hold, calibrate = np.sort(order[:held]), np.sort(order[held:])
  return ({k: np.asarray(v)[calibrate] for k, v in samples.items()},
          {k: np.asarray(v)[hold] for k, v in samples.items()})


def _session(model_or_path):
  import onnxruntime  # pylint: disable=g-import-not-at-top
  options = onnxruntime.SessionOptions()
  options.log_severity_level = 3
  source = model_or_path if isinstance(model_or_path, str) else model_or_path.SerializeToString()
  return onnxruntime.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])


def _run(session, samples, dtypes, extra_feeds=None, limit=None):
  names = [o.name for o in session.get_outputs()]
  total = len(next(iter(samples.values())))
  total = min(total, limit) if limit else total
  parts = []
  for start in range(0, total, BATCH):
    feeds = {k: np.asarray(v[start:min(start + BATCH, total)]).astype(dtypes.get(k, v.dtype))
             for k, v in samples.items()}
    feeds.update(extra_feeds or {})
    parts.append(session.run(names, feeds))
  return {name: np.concatenate([p[i] for p in parts]) for i, name in enumerate(names)}


class HoldoutJudge:
  """The verdict rule of verification (`agreement.judge` at INT8), applied on the calibration-side hold-out
  against the FP32 ONNX model's outputs."""

  def __init__(self, fp32_path, holdout, dtypes, options):
    self.holdout, self.dtypes = holdout, dtypes
    self.samples = len(next(iter(holdout.values())))
    self.thresholds = agreement.thresholds_for("INT8", options)
    self.reference = _run(_session(fp32_path), holdout, dtypes)

  def figures(self, outputs):
    """{"passed", "margin", "outputs": per-output figures}; margin >= 0 exactly when passed, larger is better:
    the agreement bound above the threshold, or the error below the tolerance as a fraction of it."""
    per_output = {name: agreement.compare_output(ref, outputs[name]) for name, ref in self.reference.items()}
    passed, reason = agreement.judge("INT8", per_output, self.thresholds)
    return {"passed": passed, "reason": reason, "margin": round(self._margin(per_output), 6),
            "outputs": {name: _short(f) for name, f in per_output.items()}}

  def _margin(self, per_output):
    margins = []
    for figures in per_output.values():
      if "shape_mismatch" in figures:
        margins.append(-1.0)
      elif "agreement" in figures:
        margins.append(figures["agreement_lower_bound"] - self.thresholds["min_agreement"])
      elif "top1_agreement" in figures:
        margins.append(figures["top1_agreement_lower_bound"] - self.thresholds["min_agreement"])
      else:
        tolerance = self.thresholds["max_relative_error"]
        margins.append((tolerance - min(figures["max_relative_error"], 1e6)) / tolerance)
    return min(margins)

  def agreement_delta(self, outputs, limit=None):
    """The lowest top-1 agreement over classifier outputs, minus 1 (what the candidate costs in agreement);
    None when no output is a classifier (the relative error is the figure then)."""
    deltas = [float(np.mean(np.argmax(outputs[name][:limit], 1) == np.argmax(ref[:limit], 1))) - 1.0
              for name, ref in self.reference.items() if agreement.is_classifier_like(ref)]
    return round(min(deltas), 6) if deltas else None

  def relative_error(self, outputs, limit=None):
    """Sum over float outputs of ||candidate - reference|| / ||reference|| (on the first `limit` samples)."""
    total = 0.0
    for name, ref in self.reference.items():
      if not np.issubdtype(ref.dtype, np.floating):
        continue
      ref = ref[:limit].astype(np.float64)
      diff = np.nan_to_num(outputs[name][:limit].astype(np.float64) - ref, nan=1e6, posinf=1e6, neginf=-1e6)
      total += float(np.linalg.norm(diff) / max(np.linalg.norm(ref), 1e-30))
    return total


def _short(figures):
  keys = ("top1_agreement", "top1_agreement_lower_bound", "agreement", "agreement_lower_bound",
          "max_relative_error", "shape_mismatch")
  return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in figures.items() if k in keys}


# --- the gated model -------------------------------------------------------------------------------------------

class GatedModel:
  """The Q/DQ model with a boolean gate on every dequantized input: on = quantized as in the Q/DQ model, off =
  the FP32 tensor. `run(fp32_nodes=...)` sets the gates as `nodes_to_exclude` would leave the model, so one
  session serves every subset of nodes (exact: `Where` selects, and Q/DQ pairs are dedicated per consumer).

  ONNX Runtime also hands the dequantized tensor to the other consumers of a tensor it quantizes (a residual
  Add beside the Conv it feeds): such an input is quantized while any quantized node consuming that tensor is.
  """

  def __init__(self, fp32_model, qdq_model):
    from onnx import TensorProto, helper, numpy_helper  # pylint: disable=g-import-not-at-top
    fp32_nodes = {node.name: node for node in fp32_model.graph.node if node.name}
    producers = {out: node for node in qdq_model.graph.node for out in node.output}
    fp32_constants = onnx_quantize._constants(fp32_model)  # pylint: disable=protected-access
    present = {init.name for init in qdq_model.graph.initializer}
    present |= {out for node in qdq_model.graph.node for out in node.output}
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
    where_before = {}
    for node, j, original, owner in inputs:
      nodes = {owner} if owner else owners.get(original, set())
      if not nodes:
        continue  # quantized whatever the search keeps: no quantized node of ours owns this tensor
      if original not in present:
        # A weight: the Q/DQ model holds only its INT8 copy; the gate's FP32 side needs the original.
        graph.initializer.append(numpy_helper.from_array(fp32_constants[original], original))
        present.add(original)
      gate = f"{_GATE_PREFIX}{len(self._gates)}"
      self._gates[gate] = frozenset(nodes)
      graph.input.append(helper.make_tensor_value_info(gate, TensorProto.BOOL, []))
      selected = f"{gate}__selected"
      where_before.setdefault(id(node), []).append(
          helper.make_node("Where", [gate, node.input[j], original], [selected], name=f"{gate}__where"))
      node.input[j] = selected
    ordered = []
    for node in graph.node:  # each Where right before its consumer: the graph stays topologically sorted
      ordered.extend(where_before.get(id(node), []))
      ordered.append(node)
    del graph.node[:]
    graph.node.extend(ordered)
    self.session = _session(qdq_model)

  def run(self, samples, dtypes, fp32_nodes=(), limit=None):
    """Outputs with every node quantized but `fp32_nodes`."""
    keep = set(fp32_nodes)
    gates = {gate: np.array(bool(nodes - keep)) for gate, nodes in self._gates.items()}
    return _run(self.session, samples, dtypes, gates, limit)

  def only(self, samples, dtypes, node, limit=None):
    """Outputs with `node` alone quantized."""
    return self.run(samples, dtypes, fp32_nodes=[n for n in self.nodes if n != node], limit=limit)


def _quantized_source(producers, dequantized):
  """The FP32 tensor a DequantizeLinear output stands for when it comes from a QuantizeLinear (an activation);
  None for a weight (its DequantizeLinear reads an INT8 initializer)."""
  quantize = producers.get(producers[dequantized].input[0])
  return quantize.input[0] if quantize is not None and quantize.op_type == "QuantizeLinear" else None


# --- the search --------------------------------------------------------------------------------------------------

class _Budget:
  def __init__(self, seconds, clock):
    self.seconds, self._clock, self._start = seconds, clock, clock()

  def elapsed(self):
    return self._clock() - self._start

  def left(self):
    return self.seconds - self.elapsed()

  def share(self, fraction):
    """A budget of `fraction` of what is left of this one, starting now."""
    return _Budget(max(0.0, self.left()) * fraction, self._clock)


def _sensitivity(gated, judge, budget):
  """[{"node", "relative_error_alone", "agreement_delta_alone"}], most sensitive first: each node alone
  quantized, on the first SENSITIVITY_SAMPLES of the hold-out. Stops when the budget runs out; the nodes not
  measured come last, in graph order, with None figures."""
  measured = []
  limit = min(SENSITIVITY_SAMPLES, judge.samples)
  for node in gated.nodes:
    if budget.left() <= 0:
      break
    outputs = gated.only(judge.holdout, judge.dtypes, node, limit=limit)
    measured.append({"node": node, "relative_error_alone": round(judge.relative_error(outputs, limit), 6),
                     "agreement_delta_alone": judge.agreement_delta(outputs, limit)})
  ranked = sorted(measured, key=lambda entry: -entry["relative_error_alone"])
  done = {entry["node"] for entry in measured}
  return ranked + [{"node": node, "relative_error_alone": None, "agreement_delta_alone": None}
                   for node in gated.nodes if node not in done], len(measured)


def _exclusion_search(gated, judge, nodes, budget, plain):
  """Fewest of `nodes` (most sensitive first) to keep FP32 so that the gate holds: 1, 2, 4, ... kept until it
  holds, then bisection between the last miss and the first hold. Returns (how many, every step tried); when
  nothing tried holds, how many gave the best margin (fewer on a tie)."""
  steps, tried = [], {0: plain}  # 0 kept: the plain model, which missed; it is the best when nothing beats it

  def passes(k):
    figures = judge.figures(gated.run(judge.holdout, judge.dtypes, nodes[:k]))
    tried[k] = figures
    steps.append({"kept": k, "margin": figures["margin"], "passed": figures["passed"],
                  "seconds": round(budget.elapsed(), 3)})
    return figures["passed"]

  low, high, k = 0, None, 1
  while high is None and k <= len(nodes) and budget.left() > 0:
    if passes(k):
      high = k
    elif k == len(nodes):
      break
    else:
      low, k = k, min(2 * k, len(nodes))
  while high is not None and high - low > 1 and budget.left() > 0:
    middle = (low + high) // 2
    if passes(middle):
      high = middle
    else:
      low = middle
  if high is not None:
    return high, steps
  return max(tried, key=lambda key: (tried[key]["margin"], -key)), steps


def _methods(requested):
  return ["minmax", "percentile"] if requested == AUTO else [requested]


def build_int8(fp32_path, output_path, samples, dtypes, options, onnx_options, clock=time.monotonic):
  """Writes the INT8 Q/DQ model to `output_path` and returns `quantize_int8`'s details plus a "fallback"
  record for `model.json` (see this module's docstring).

  Args:
    fp32_path: the `onnx_fp32` model file.
    output_path: where the INT8 model goes.
    samples: {input name: array} calibration samples (never verification samples).
    dtypes: {input name: numpy dtype}.
    options: the export's `ConversionOptions` (its INT8 tolerance and agreement threshold are the gate).
    onnx_options: `OnnxOptions` (`int8_calibration`, `percentile`, `int8_search_budget`).
    clock: seconds as a float.
  """
  calibrate, holdout = split_calibration(samples)
  requested = onnx_options.int8_calibration
  if holdout is None:
    method = "minmax" if requested == AUTO else requested
    result = onnx_quantize.quantize_int8(fp32_path, output_path, calibrate, dtypes, calibration=method,
                                         percentile=onnx_options.percentile)
    total = len(next(iter(samples.values())))
    result["fallback"] = {"searched": False, "calibration_requested": requested, "calibration_chosen": method,
                          "why": f"only {total} calibration samples: judging INT8 on a calibration-side hold-out "
                                 f"needs at least {2 * MIN_HOLDOUT} (half held out)"}
    return result
  with tempfile.TemporaryDirectory(prefix="tftrt_int8_") as scratch:
    return _build_with_holdout(fp32_path, output_path, calibrate, holdout, dtypes, options, onnx_options,
                               scratch, clock)


def _build_with_holdout(fp32_path, output_path, calibrate, holdout, dtypes, options, onnx_options, scratch,
                        clock):
  requested = onnx_options.int8_calibration
  record = {"calibration_requested": requested, "holdout_samples": len(next(iter(holdout.values()))),
            "methods": {}}
  started = clock()
  judge = HoldoutJudge(fp32_path, holdout, dtypes, options)
  check_seconds = clock() - started
  built, plain_seconds, search_started = {}, None, None
  for method in _methods(requested):
    start = clock()
    path = os.path.join(scratch, f"{method}.onnx")
    cache = os.path.join(scratch, f"{method}.calibration.json")
    result = onnx_quantize.quantize_int8(fp32_path, path, calibrate, dtypes, calibration=method,
                                         percentile=onnx_options.percentile, calibration_cache=cache)
    build_seconds = clock() - start
    start = clock()
    figures = judge.figures(_run(_session(path), holdout, dtypes))
    if plain_seconds is None:
      plain_seconds, check_seconds, search_started = build_seconds, check_seconds + clock() - start, clock()
    record["methods"][method] = {"build_seconds": round(build_seconds, 3), **figures}
    built[method] = (path, cache, result, figures)
    if figures["passed"]:
      break
  method = max(built, key=lambda m: built[m][3]["margin"])
  path, cache, result, figures = built[method]
  record.update(calibration_chosen=method, calibration_why=_calibration_why(requested, built, figures),
                calibration_samples=result["calibration_samples"], before=figures,
                plain_build_seconds=round(plain_seconds, 3), holdout_check_seconds=round(check_seconds, 3),
                budget_seconds=round(onnx_options.int8_search_budget * max(plain_seconds, MIN_BUILD_SECONDS), 3))
  if figures["passed"] or not onnx_options.int8_search_budget:
    shutil.copyfile(path, output_path)
    why = ("plain INT8 clears the gate on the calibration-side hold-out" if figures["passed"]
           else "int8_search_budget is 0: no search; verification decides")
    record.update(searched=False, why=why, kept=[], after=figures, search_seconds=round(clock() - search_started, 3))
  else:
    # What is left of the budget after the method choice, less one more build: the final one.
    budget = _Budget(record["budget_seconds"] - (clock() - search_started) - plain_seconds, clock)
    kept, search = _search(fp32_path, path, judge, figures, budget)
    why = "kept FP32 by the INT8 fallback: its quantization costs the most on the calibration-side hold-out"
    result = onnx_quantize.quantize_int8(fp32_path, output_path, calibrate, dtypes, calibration=method,
                                         percentile=onnx_options.percentile, calibration_cache=cache,
                                         keep_fp32={entry["node"]: why for entry in kept})
    after = judge.figures(_run(_session(output_path), holdout, dtypes))
    record.update(searched=True, kept=kept, after=after, reached_gate=after["passed"], **search,
                  search_seconds=round(clock() - search_started, 3))
    if not after["passed"]:
      record["why"] = (f"the gate was not reached{' within the budget' if search['budget_exhausted'] else ''}: "
                       f"the best found keeps {len(kept)} node(s) FP32 (margin {after['margin']}); "
                       "verification decides")
  result["fallback"] = record
  return result


def _calibration_why(requested, built, figures):
  if requested != AUTO:
    return "int8_calibration set explicitly"
  if len(built) == 1:
    return "MinMax cleared the gate on the hold-out: no other method tried"
  return f"the best hold-out margin ({figures['margin']}) of {sorted(built)}"


def _search(fp32_path, qdq_path, judge, plain, budget):
  """([kept node entries], figures of the search for model.json) for the Q/DQ model at `qdq_path`."""
  import onnx  # pylint: disable=g-import-not-at-top
  gated = GatedModel(onnx.load(fp32_path), onnx.load(qdq_path))
  # Ranking must leave time to act on it: the bisection over the ranked nodes gets at least 40%.
  ranked, measured = _sensitivity(gated, judge, budget.share(0.6))
  # At least one node stays INT8: a model with none quantized is FP32 with extra nodes, not an INT8 variant.
  k, steps = _exclusion_search(gated, judge, [entry["node"] for entry in ranked][:-1], budget, plain)
  kept = [dict(entry, op_type=gated.op_types[entry["node"]], rank=rank + 1) for rank, entry in enumerate(ranked[:k])]
  return kept, {"steps": steps, "nodes_measured": measured, "nodes_quantizable": len(gated.nodes),
                "budget_exhausted": budget.left() <= 0}
