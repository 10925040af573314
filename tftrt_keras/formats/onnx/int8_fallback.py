"""INT8 that earns its gate: choose the calibration method, and keep the layers that cost most in FP32.

`build_int8` splits the calibration samples into a calibrating part and a hold-out judged by verification's rule
(`tftrt_keras.agreement`): each method in play is judged and one that passes ends the search; otherwise a gated
model (`Where(gate, dequantized, fp32)` per quantized input) lets node sets run FP32 without recalibrating, and
the most sensitive nodes are kept FP32, fewest first, until the gate holds or `int8_search_budget` is spent.
The shipped model is calibrated on all calibration samples with those decisions; verification judges it.
Figures: benchmarks/README.md.
"""

import os
import tempfile
import time

import numpy as np

from tftrt_keras import agreement
from tftrt_keras.formats.onnx import quantize as onnx_quantize
from tftrt_keras.formats.onnx.gated_model import BATCH, GatedModel, open_session, run_session

# Half of the calibration samples judge, at most this many; with fewer than MIN_HOLDOUT to judge on, a Wilson
# bound near 0.97 cannot be reached (100 of 100 agreeing gives 0.974), so there is no check and no search.
MAX_HOLDOUT = 500
MIN_HOLDOUT = 100
AUTO = "auto"
# Sensitivity is an output error, continuous: a slice of the hold-out ranks the nodes as well as all of it,
# at a fraction of the cost. The gate itself is always judged on the whole hold-out.
SENSITIVITY_SAMPLES = 64
# The budget counts a plain build as at least this long: on a tiny model ONNX Runtime's fixed costs (a session,
# a graph copy) are most of the search, and 5x a 0.05 s build would not pay for ranking three nodes.
MIN_BUILD_SECONDS = 0.5
_KEPT_WHY = "kept FP32 by the INT8 fallback: its quantization costs the most on the calibration-side hold-out"


def _final_calibration(used, total):
  """The sentence model.json carries on what the shipped model was calibrated on and what judges it."""
  which = f"all {total}" if used == total else f"{used} of the {total} (Percentile drops a last batch under 32)"
  return (f"the shipped model was recalibrated on {which} calibration samples, calibration part and hold-out "
          "together, with the method and the FP32 nodes chosen on the halves; \"before\"/\"after\" are hold-out "
          "figures of the models calibrated on the calibration part alone, so they do not judge the shipped model: "
          "verification does, on samples no calibration saw")


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


class HoldoutJudge:
  """The verdict rule of verification (`agreement.judge` at INT8), applied on the calibration-side hold-out
  against the FP32 ONNX model's outputs."""

  def __init__(self, fp32_path, holdout, dtypes, options):
    self.holdout, self.dtypes = holdout, dtypes
    self.samples = len(next(iter(holdout.values())))
    self.thresholds = agreement.thresholds_for("INT8", options)
    self.reference = run_session(open_session(fp32_path), holdout, dtypes)

  def figures(self, outputs):
    """{"passed", "verdict", "margin", "outputs"}; margin >= 0 exactly when passed, larger is better.

    Passed means verification's `ok`: `unverified` (bounds straddling the gate) is not a pass, so the search goes on.
    """
    per_output = {name: agreement.compare_output(ref, outputs[name]) for name, ref in self.reference.items()}
    verdict, reason = agreement.judge("INT8", per_output, self.thresholds)
    return {"passed": verdict == agreement.OK, "verdict": verdict, "reason": reason,
            "margin": round(self._margin(per_output), 6),
            "outputs": {name: _short(f) for name, f in per_output.items()}}

  def evaluate(self, run_batch):
    """Figures of a candidate whose outputs `run_batch(samples)` gives for a slice of the hold-out, batch by
    batch; stops as soon as the candidate cannot pass whatever the rest gives (too many disagreements for the
    bound, or an error past the tolerance), and then judges it as if the rest matched the reference exactly:
    a failing verdict, with an optimistic margin (`stopped_early_at` says after how many samples)."""
    parts = []
    for start in range(0, self.samples, BATCH):
      parts.append(run_batch({k: v[start:start + BATCH] for k, v in self.holdout.items()}))
      done = min(start + BATCH, self.samples)
      outputs = {name: np.concatenate([np.asarray(p[name]) for p in parts] + [ref[done:]])
                 for name, ref in self.reference.items()}
      if done < self.samples and self._hopeless(outputs, done):
        return dict(self.figures(outputs), stopped_early_at=done)
    return self.figures(outputs)

  def _hopeless(self, outputs, done):
    """True when the candidate cannot pass even if the rest of the hold-out matches the reference exactly:
    `outputs` already holds the reference past `done`, the best case for every figure (an agreement, an error
    maximum or quantile), so its verdict on them is the best the candidate can still get."""
    del done
    for name, ref in self.reference.items():
      figures = {name: agreement.compare_output(ref, outputs[name])}
      if agreement.judge("INT8", figures, self.thresholds)[0] != agreement.OK:
        return True
    return False

  def _margin(self, per_output):
    margins = []
    for figures in per_output.values():
      if "shape_mismatch" in figures:
        margins.append(-1.0)
      elif "agreement" in figures:
        margins.append(figures["agreement_lower_bound"] - self.thresholds["min_agreement"])
      elif "top1_agreement" in figures:
        margins.append(figures["top1_agreement_lower_bound"] - self.thresholds["min_agreement"])
      elif "element_top1_agreement" in figures:
        margins.append(figures["element_top1_agreement_lower_bound"] - self.thresholds["min_agreement"])
      elif "relative_error_quantile" in figures:
        tolerance = self.thresholds["max_relative_error"]
        margins.append((tolerance - min(figures["relative_error_quantile"], 1e6)) / tolerance)
      else:
        tolerance = self.thresholds["max_relative_error"]
        margins.append((tolerance - min(figures["max_relative_error"], 1e6)) / tolerance)
    return min(margins)


def _short(figures):
  keys = ("top1_agreement", "top1_agreement_lower_bound", "element_top1_agreement",
          "element_top1_agreement_lower_bound", "agreement", "agreement_lower_bound", "max_relative_error",
          "relative_error_quantile", "shape_mismatch")
  return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in figures.items() if k in keys}


# --- the search --------------------------------------------------------------------------------------------------

class _Budget:
  def __init__(self, seconds, clock):
    self.seconds, self._clock, self._start = seconds, clock, clock()

  def elapsed(self):
    return self._clock() - self._start

  def left(self):
    return self.seconds - self.elapsed()


def _sensitivity(gated, judge):
  """[{"node", "local_relative_error"}], most sensitive first (see `GatedModel.local_errors`)."""
  errors = gated.local_errors({k: v[:SENSITIVITY_SAMPLES] for k, v in judge.holdout.items()}, judge.dtypes)
  return [{"node": node, "local_relative_error": round(error, 6)}
          for node, error in sorted(errors.items(), key=lambda item: -item[1])]


def _exclusion_search(gated, judge, nodes, budget, plain):
  """Fewest of `nodes` (most sensitive first) to keep FP32 so that the gate holds: 1, 2, 4, ... kept until it
  holds, then bisection between the last miss and the first hold. Returns (how many, every step tried); when
  nothing tried holds, how many gave the best margin on the whole hold-out (fewer on a tie)."""
  steps, tried = [], {0: plain}  # 0 kept: the plain model, which missed; it is the best when nothing beats it

  def passes(k):
    figures = judge.evaluate(gated.run_batch(nodes[:k], judge.dtypes))
    tried[k] = figures
    steps.append({"kept": k, "margin": figures["margin"], "passed": figures["passed"],
                  "samples_judged": figures.get("stopped_early_at", judge.samples),
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
  # Nothing held. A step stopped early carries an optimistic margin (the rest of the hold-out counted as agreeing):
  # on MobileNetV2 the steps keeping 2, 4, 16 and 51 nodes all showed -0.004 after 64 samples, and the fewest won
  # with -0.063 on the whole hold-out where 51 had -0.012. So each is judged on the whole hold-out (a gated run,
  # 0.1-0.3 s) before the best is picked, the most promising first (best slice margin, then more nodes kept: the
  # budget may end first); one the budget leaves unjudged is not picked.
  for step in sorted(steps, key=lambda step: (step["margin"], step["kept"]), reverse=True):
    if "stopped_early_at" in tried[step["kept"]] and budget.left() > 0:
      tried[step["kept"]] = judge.figures(gated.run(judge.holdout, judge.dtypes, nodes[:step["kept"]]))
      step["whole_holdout_margin"] = tried[step["kept"]]["margin"]
  judged = {k: figures for k, figures in tried.items() if "stopped_early_at" not in figures}
  return max(judged, key=lambda key: (judged[key]["margin"], -key)), steps


def _methods(requested):
  return ["minmax", "percentile"] if requested == AUTO else [requested]


def build_int8(fp32_path, output_path, samples, dtypes, options, onnx_options, clock=time.monotonic):
  """Writes the INT8 Q/DQ model to `output_path`; returns `quantize_int8`'s details plus a "fallback" record.

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
                          "final_calibration_samples": result["calibration_samples"],
                          "why": f"only {total} calibration samples: judging INT8 on a calibration-side hold-out "
                                 f"needs at least {2 * MIN_HOLDOUT} (half held out)"}
    return result
  with tempfile.TemporaryDirectory(prefix="tftrt_int8_") as scratch:
    return _build_with_holdout(fp32_path, output_path, samples, calibrate, holdout, dtypes, options, onnx_options,
                               scratch, clock)


def _build_with_holdout(fp32_path, output_path, samples, calibrate, holdout, dtypes, options, onnx_options, scratch,
                        clock):
  requested, started = onnx_options.int8_calibration, clock()
  judge = HoldoutJudge(fp32_path, holdout, dtypes, options)
  check_seconds = clock() - started
  record = {"calibration_requested": requested, "holdout_samples": judge.samples, "methods": {}}
  built, plain_seconds, search_started = {}, None, None
  for method in _methods(requested):
    start = clock()
    path = os.path.join(scratch, f"{method}.onnx")
    cache = os.path.join(scratch, f"{method}.calibration.json")
    result = onnx_quantize.quantize_int8(fp32_path, path, calibrate, dtypes, calibration=method,
                                         percentile=onnx_options.percentile, calibration_cache=cache)
    build_seconds = clock() - start
    start = clock()
    figures = judge.figures(run_session(open_session(path), holdout, dtypes))
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
  kept, keep = [], {}
  if figures["passed"] or not onnx_options.int8_search_budget:
    why = ("plain INT8 clears the gate on the calibration-side hold-out" if figures["passed"]
           else "int8_search_budget is 0: no search; verification decides")
    record.update(searched=False, why=why, kept=[], after=figures, search_seconds=round(clock() - search_started, 3))
  else:
    # What is left after the method choice, less one more build: the judged one (the shipped one is not the search's).
    budget = _Budget(record["budget_seconds"] - (clock() - search_started) - plain_seconds, clock)
    kept, search = _search(fp32_path, path, judge, figures, budget)
    after, keep = figures, {entry["node"]: _KEPT_WHY for entry in kept}
    if kept:  # something beat the plain model: built from the cached ranges and judged
      path = os.path.join(scratch, "kept.onnx")
      onnx_quantize.quantize_int8(fp32_path, path, calibrate, dtypes, calibration=method,
                                  percentile=onnx_options.percentile, calibration_cache=cache, keep_fp32=keep)
      after = judge.figures(run_session(open_session(path), holdout, dtypes))
    record.update(searched=True, kept=kept, after=after, reached_gate=after["passed"], **search,
                  search_seconds=round(clock() - search_started, 3))
    if not after["passed"]:
      record["why"] = (f"the gate was not reached{' within the budget' if search['budget_exhausted'] else ''}: "
                       f"the best found keeps {len(kept)} node(s) FP32 (margin {after['margin']}); "
                       "verification decides")
  # The model shipped: the same method and kept nodes, calibrated on every calibration sample (hold-out included).
  start, total = clock(), len(next(iter(samples.values())))
  result = onnx_quantize.quantize_int8(fp32_path, output_path, samples, dtypes, calibration=method,
                                       percentile=onnx_options.percentile, keep_fp32=keep)
  record.update(final_calibration_samples=result["calibration_samples"], final_build_seconds=round(clock() - start, 3),
                final_calibration=_final_calibration(result["calibration_samples"], total))
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
  ranked = _sensitivity(gated, judge)
  # At least one node stays INT8: a model with none quantized is FP32 with extra nodes, not an INT8 variant.
  k, steps = _exclusion_search(gated, judge, [entry["node"] for entry in ranked][:-1], budget, plain)
  exhausted = budget.left() <= 0
  kept = [dict(entry, op_type=gated.op_types[entry["node"]], rank=rank + 1) for rank, entry in enumerate(ranked[:k])]
  _agreement_deltas(gated, judge, kept, budget)
  return kept, {"steps": steps, "nodes_quantizable": len(gated.nodes), "budget_exhausted": exhausted}


def _agreement_deltas(gated, judge, kept, budget):
  """Sets each kept node's "agreement_delta": what quantizing it again would change in the hold-out top-1
  agreement of the chosen model (negative: it costs that much, per sample or per element); None past the budget
  or without a classifier."""
  names = [name for name, ref in judge.reference.items()
           if agreement.is_classifier_like(ref) or agreement.is_dense_classification(ref)]
  kept_nodes = [entry["node"] for entry in kept]

  def top1(outputs):
    return min(float(np.mean(np.argmax(outputs[n], -1) == np.argmax(judge.reference[n], -1))) for n in names)

  base = top1(gated.run(judge.holdout, judge.dtypes, kept_nodes)) if names and kept and budget.left() > 0 else None
  for entry in kept:
    entry["agreement_delta"] = None
    if base is not None and budget.left() > 0:
      others = [node for node in kept_nodes if node != entry["node"]]
      entry["agreement_delta"] = round(top1(gated.run(judge.holdout, judge.dtypes, others)) - base, 6)
