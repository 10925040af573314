"""Is a candidate model's output still the reference's? The verdict rule, as pure numpy functions.

Verification judges every artifact with these; the INT8 fallback search judges its candidates with the same rule,
so what the search calls passing is what verification will. Imports nothing of tftrt_keras (formats use it).

Verdicts: `ok` (every output within its thresholds, on outputs that vary enough to tell); `rejected` (a figure
outside them; for an agreement, even its upper bound below the gate); `unverified` (nothing failed, but the
comparison cannot vouch: bounds straddling the gate, reference outputs that do not vary, or a top-1 agreement
on outputs giving one class nearly everywhere). `compare_output` picks the figure: top-1 agreement for
classifier-like outputs at FP16/INT8 (per element, with `clustered_bounds`, for rank >= 3), a quantile of the
relative error for other dense rank >= 3 floats, else the max relative error; other dtypes agree exactly.
"""

import collections
import math
import warnings

import numpy as np

# The manifest's statuses (tftrt_keras.artifacts.manifest), spelled here because this module imports nothing of
# tftrt_keras; tests/test_verification.py checks that they stay equal.
OK, REJECTED, UNVERIFIED = "ok", "rejected", "unverified"

# One-sided 95%: the agreement is at least the lower bound (at most the upper one) with 95% confidence.
_CONFIDENCE_Z = 1.6448536269514722

# When the normal export's outputs cannot tell a good artifact from a bad one:
# - the same top-1 class for at least ONE_CLASS_SHARE of the samples, once there are ONE_CLASS_MIN_SAMPLES of
#   them. Then top-1 agreement is high for any artifact leaning to that class, whatever it does to the others.
#   Ten balanced classes never look like that; an untrained or unsettled network (BatchNorm statistics still at
#   their initial values) does: it gives every input the same scores. Below 20 samples one class is too likely
#   by chance for a genuine but imbalanced classifier (90/10: 0.9^20 = 12%, 0.9^5 = 59%), and an agreement
#   on so few cannot clear its bound anyway.
# - a spread across samples (the largest per-column standard deviation) below MIN_RELATIVE_SPREAD of the
#   output's scale (max |reference|). That is FP32's tolerance: an artifact returning one constant vector for
#   every input would pass an FP32 check, and any looser one, on such an output.
ONE_CLASS_MIN_SAMPLES = 20
ONE_CLASS_SHARE = 0.99
MIN_RELATIVE_SPREAD = 1e-3
NOT_VARYING = "the model's outputs do not vary enough over the held-out samples to judge"
# One class disqualifies only a verdict by top-1 agreement; a tolerance verdict on varying values stands.
ONE_CLASS = "top-1 agreement cannot judge: the normal export gives one class nearly everywhere"

# A rank >= 3 output is per-element classification when, at every element, its values along the last axis (more
# than one) are a distribution: >= -DISTRIBUTION_TOLERANCE and summing to 1 within DISTRIBUTION_TOLERANCE (a
# softmax: segmentation, per-token tagging). Only a distribution says "classes" for sure: the same shape also holds
# images, fields and feature sequences, whose last axis is not classes. Per-element logits are judged as dense
# values (by the error quantile), which an artifact keeping the values passes too.
DISTRIBUTION_TOLERANCE = 1e-3
# Dense values at FP16/INT8 are judged by this quantile of |error| / scale over all elements: one element in a
# hundred thousand off by more than the tolerance (a saturated pixel) is not a broken conversion; a shifted 1% is.
DENSE_ERROR_QUANTILE = 0.99


class Verdict(collections.namedtuple("Verdict", ["status", "reason"])):
  """(status, reason): status `ok`, `rejected` or `unverified`; reason None for `ok`, else the figures."""

  @property
  def passed(self):
    return self.status == OK


def is_classifier_like(reference):
  """Rank-2 float output with more than one column: scores or probabilities over classes."""
  return reference.ndim == 2 and reference.shape[1] > 1 and np.issubdtype(reference.dtype, np.floating)


def is_dense_classification(reference):
  """Rank >= 3 float output whose values along the last axis are a distribution at every element (see
  DISTRIBUTION_TOLERANCE): per-element class probabilities, as a U-Net's final softmax gives."""
  reference = np.asarray(reference)
  if reference.ndim < 3 or reference.shape[-1] < 2 or not np.issubdtype(reference.dtype, np.floating):
    return False
  values = reference.astype(np.float64)
  if not values.size or not np.isfinite(values).all() or values.min() < -DISTRIBUTION_TOLERANCE:
    return False
  return bool(np.abs(values.sum(axis=-1) - 1.0).max() <= DISTRIBUTION_TOLERANCE)


def is_dense_values(reference):
  """Rank >= 3 float output that is not per-element classification: an image, a field, a sequence of values."""
  reference = np.asarray(reference)
  return (reference.ndim >= 3 and np.issubdtype(reference.dtype, np.floating)
          and not is_dense_classification(reference))


def _wilson(agreeing, total, z, sign):
  p = agreeing / total
  denominator = 1 + z * z / total
  centre = p + z * z / (2 * total)
  margin = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total))
  return (centre + sign * margin) / denominator


def agreement_lower_bound(agreeing, total, z=_CONFIDENCE_Z):
  """The Wilson score lower bound of a proportion: `agreeing` of `total` samples agree, so the true agreement
  is at least this with the confidence `z` stands for (one-sided 95% by default). 0.0 for no samples."""
  if total <= 0:
    return 0.0
  return max(0.0, _wilson(agreeing, total, z, -1))


def agreement_upper_bound(agreeing, total, z=_CONFIDENCE_Z):
  """The Wilson score upper bound: the true agreement is at most this with the confidence `z` stands for
  (one-sided 95% by default). 1.0 for no samples (nothing shows it is lower)."""
  if total <= 0:
    return 1.0
  return min(1.0, _wilson(agreeing, total, z, +1))


def _bounds(agreeing, total):
  return {"lower_bound": round(agreement_lower_bound(agreeing, total), 6),
          "upper_bound": round(agreement_upper_bound(agreeing, total), 6)}


def clustered_bounds(agreeing_per_sample, elements_per_sample):
  """Wilson bounds of a per-element agreement on an effective count, since a sample's elements are not independent.

  The effective count is the element count over the design effect (variance across samples over the variance of
  independent elements), between the sample count and the element count. With no disagreement, or one sample,
  there is no cluster to see: elements count as independent, or the sample counts once.

  Args:
    agreeing_per_sample: how many elements of each sample agree (one number per sample).
    elements_per_sample: elements in each sample (the same for all).

  Returns:
    {"effective_elements", "lower_bound", "upper_bound"}.
  """
  agreeing = np.asarray(agreeing_per_sample, np.float64)
  samples, per_sample = len(agreeing), max(1, int(elements_per_sample))
  total = samples * per_sample
  if not samples:
    return {"effective_elements": 0.0, "lower_bound": 0.0, "upper_bound": 1.0}
  share = float(agreeing.sum()) / total
  if samples < 2:
    design_effect = per_sample
  elif 0.0 < share < 1.0:
    across_samples = float(np.var(agreeing / per_sample, ddof=1)) / samples
    design_effect = across_samples / (share * (1.0 - share) / total)
  else:
    design_effect = 1.0
  effective = total / min(max(design_effect, 1.0), per_sample)
  return {"effective_elements": round(effective, 3),
          "lower_bound": round(agreement_lower_bound(share * effective, effective), 6),
          "upper_bound": round(agreement_upper_bound(share * effective, effective), 6)}


def compare_output(reference, candidate):
  """Figures for one output of one artifact against the normal export (samples along axis 0 in both).

  Returns:
    Float outputs: `max_abs_error`, `max_relative_error` (max abs error / max |reference|) and, by shape,
    `top1_agreement` with its 95% Wilson bounds, `element_top1_agreement` with `elements`, `effective_elements`
    and bounds, or `relative_error_quantile` with `elements`. Other dtypes: `agreement` with its bounds.
    A shape mismatch gives `shape_mismatch` instead.
  """
  reference, candidate = np.asarray(reference), np.asarray(candidate)
  if reference.shape != candidate.shape:
    return {"shape_mismatch": f"{list(candidate.shape)} instead of {list(reference.shape)}"}
  if not np.issubdtype(reference.dtype, np.floating):
    same = reference == candidate
    per_sample = same.reshape(len(same), -1).all(axis=1) if same.ndim else np.array([bool(same)])
    bounds = _bounds(int(per_sample.sum()), int(per_sample.size))
    return {"agreement": float(per_sample.mean()) if per_sample.size else 1.0, "samples": int(per_sample.size),
            "agreement_lower_bound": bounds["lower_bound"], "agreement_upper_bound": bounds["upper_bound"]}
  ref, cand = reference.astype(np.float64), candidate.astype(np.float64)
  diff = np.abs(ref - cand)
  both_nan = np.isnan(ref) & np.isnan(cand)
  # NaN where the normal export has a number (or the reverse) is as wrong as an error can be.
  diff = np.where(both_nan, 0.0, np.where(np.isnan(diff), np.inf, diff))
  max_abs = float(diff.max()) if diff.size else 0.0
  scale = output_scale(ref)
  if scale > 0:
    relative = max_abs / scale
  else:
    relative = 0.0 if max_abs == 0 else float("inf")
  figures = {"max_abs_error": max_abs, "max_relative_error": relative, "scale": scale}
  if is_dense_classification(reference):
    agree = (np.argmax(ref, axis=-1) == np.argmax(np.nan_to_num(cand, nan=-np.inf), axis=-1))
    agree = agree.reshape(len(agree), -1)
    bounds = clustered_bounds(agree.sum(axis=1), agree.shape[1])
    figures.update(element_top1_agreement=float(agree.mean()), samples=int(len(agree)), elements=int(agree.size),
                   effective_elements=bounds["effective_elements"],
                   element_top1_agreement_lower_bound=bounds["lower_bound"],
                   element_top1_agreement_upper_bound=bounds["upper_bound"])
  elif is_dense_values(reference):
    quantile = float(np.quantile(diff, DENSE_ERROR_QUANTILE)) if diff.size else 0.0
    figures.update(samples=int(len(diff)), elements=int(diff.size),
                   relative_error_quantile=(quantile / scale if scale > 0 else (0.0 if quantile == 0 else
                                                                                float("inf"))))
  if is_classifier_like(reference):
    agree = np.argmax(ref, axis=1) == np.argmax(cand, axis=1)
    bounds = _bounds(int(agree.sum()), int(agree.size))
    figures["top1_agreement"] = float(np.mean(agree))
    figures["samples"] = int(agree.size)
    figures["top1_agreement_lower_bound"] = bounds["lower_bound"]
    figures["top1_agreement_upper_bound"] = bounds["upper_bound"]
  return figures


def output_scale(values):
  """The scale errors are relative to: the largest finite |value| (0.0 when there is none)."""
  finite = np.abs(values[np.isfinite(values)])
  return float(finite.max()) if finite.size else 0.0


# --- does the reference vary? ------------------------------------------------------------------------------------

def output_variation(reference):
  """How much one output of the normal export varies over the samples; None for non-float outputs.

  Returns:
    {"samples", "scale", "relative_spread"} and, for classifier-like outputs, "top1_class", "top1_count",
    "top1_share" (over elements, with "elements", for per-element classification).
  """
  ref = np.asarray(reference)
  if not np.issubdtype(ref.dtype, np.floating) or ref.ndim == 0 or not len(ref):
    return None
  total = len(ref)
  flat = ref.reshape(total, -1).astype(np.float64)
  scale = output_scale(flat)
  spread = None
  if total >= 2:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore", RuntimeWarning)  # a column with no finite value: no spread to see there
      deviations = np.nanstd(np.where(np.isfinite(flat), flat, np.nan), axis=0)
    largest = float(np.nanmax(deviations)) if np.isfinite(deviations).any() else 0.0
    spread = largest / scale if scale > 0 else 0.0
  figures = {"samples": int(total), "scale": scale, "relative_spread": spread}
  dense = is_dense_classification(ref)
  if is_classifier_like(ref) or dense:
    classes = np.argmax(ref, axis=-1).ravel()
    counts = np.bincount(classes, minlength=ref.shape[-1])
    top = int(np.argmax(counts))
    figures.update(top1_class=top, top1_count=int(counts[top]), top1_share=float(counts[top]) / classes.size)
    if dense:
      figures["elements"] = int(classes.size)
  return figures


def does_not_vary(variation):
  """None when an output with these `output_variation` figures varies enough to judge artifacts by; else the
  figures that say it does not, as words ("spread across samples 2e-07 of its largest value 0.1 (< 0.001)")."""
  spread = (variation or {}).get("relative_spread")
  if spread is None or spread >= MIN_RELATIVE_SPREAD:
    return None
  if variation["scale"] == 0:
    return f"0 for all {variation['samples']} samples"
  return (f"spread across samples {spread:.2g} of its largest value {variation['scale']:.3g} "
          f"(< {MIN_RELATIVE_SPREAD:g})")


def one_class(variation):
  """None unless an output with these `output_variation` figures gives one top-1 class for ONE_CLASS_SHARE of its
  samples (of its elements, for per-element classification), once there are ONE_CLASS_MIN_SAMPLES samples; else
  words saying so ("top-1 class 0 for 24 of 24 samples"). Such an output cannot judge by top-1 agreement."""
  if not variation or variation["samples"] < ONE_CLASS_MIN_SAMPLES:
    return None
  if variation.get("top1_share", 0.0) < ONE_CLASS_SHARE:
    return None
  if "elements" in variation:
    return f"top-1 class {variation['top1_class']} for {variation['top1_count']} of {variation['elements']} elements"
  return f"top-1 class {variation['top1_class']} for {variation['top1_count']} of {variation['samples']} samples"


def not_varying_words(variations):
  """{output name: words} for the outputs whose `output_variation` figures ({name: figures}) say they do not vary
  enough to judge by."""
  words = {name: does_not_vary(variations[name]) for name in sorted(variations)}
  return {name: text for name, text in words.items() if text}


def one_class_words(variations):
  """{output name: words} for the outputs whose `output_variation` figures ({name: figures}) give one class
  nearly everywhere (see `one_class`)."""
  words = {name: one_class(variations[name]) for name in sorted(variations)}
  return {name: text for name, text in words.items() if text}


def outputs_not_varying(reference):
  """{output name: words} for the outputs of `reference` ({name: array}) that do not vary enough to judge by."""
  return not_varying_words({name: output_variation(value) for name, value in reference.items()})


# --- thresholds and the verdict ----------------------------------------------------------------------------------

def thresholds_for(precision, options):
  """The thresholds an artifact of `precision` is judged by (stored in the manifest beside the figures)."""
  tolerance = {
      "frozen": options.verify_tolerance_frozen, "FP32": options.verify_tolerance_fp32,
      "FP16": options.verify_tolerance_fp16, "INT8": options.verify_tolerance_int8,
  }.get(precision, options.verify_tolerance_fp32)
  thresholds = {"max_relative_error": tolerance, "min_agreement": options.verify_min_agreement}
  if precision == "INT8":
    # INT8 moves logits a lot while keeping the decision; judge what the user serves: the top-1 class.
    thresholds["classifier_judged_by"] = "top1_agreement"
  elif precision == "FP16":
    # FP16 keeps the decision too, but its error grows with depth: on deep depthwise/SE networks probabilities
    # move by more than `verify_tolerance_fp16` while top-1 agreement stays at 0.997-1.0 (benchmarks/README.md,
    # bench_fp16_tolerance). Judge the decision, and bound the error at what FP16 arithmetic gives there, so
    # that a broken conversion (an overflowing softmax, a lost layer) is still caught by the error.
    thresholds["classifier_judged_by"] = "top1_agreement_and_max_relative_error"
    thresholds["classifier_max_relative_error"] = options.verify_tolerance_fp16_classifier
  else:
    thresholds["classifier_judged_by"] = "max_relative_error"
  # INT8 and FP16 are expected to change some answers, so their agreements are statistical claims, judged on the
  # confidence bounds; at any other precision an exact output must simply agree (the observed figure).
  thresholds["agreement_judged_by"] = "bounds" if precision in ("INT8", "FP16") else "observed"
  # Dense values: FP16/INT8 move a few elements far (a saturated pixel) while keeping the output; the worst element
  # decides only at FP32 and for the frozen graph, which must compute what the model computes.
  if precision in ("INT8", "FP16"):
    thresholds.update(dense_judged_by="relative_error_quantile", dense_error_quantile=DENSE_ERROR_QUANTILE)
  else:
    thresholds["dense_judged_by"] = "max_relative_error"
  return thresholds


def judge(precision, outputs, thresholds, not_varying=None, one_class=None):
  """The verdict on one artifact from its per-output figures.

  Args:
    precision: "frozen", "FP32", "FP16", "INT8" (names the threshold in the reason).
    outputs: {output name: `compare_output` figures}.
    thresholds: `thresholds_for(precision, options)`.
    not_varying: {output name: words} of outputs that do not vary enough: they can reject, never vouch.
    one_class: {output name: words} of outputs giving one class nearly everywhere: a top-1 agreement on them can
      reject, never vouch; a tolerance verdict stands.

  Returns:
    A `Verdict`: `rejected` (the reason names every failing figure), else `unverified` (the reason says why),
    else `ok` with reason None.
  """
  rejected, unverified, steady, single = [], [], [], []
  label = {"frozen": "frozen graph", None: "default"}.get(precision, precision)
  for name in sorted(outputs):
    status, text = _judge_output(outputs[name], thresholds, label)
    if status == REJECTED:
      rejected.append(f"output `{name}`: {text}")
    elif (not_varying or {}).get(name):
      steady.append(f"output `{name}`: {not_varying[name]}")
    elif (one_class or {}).get(name) and _judged_by_top1(outputs[name], thresholds):
      single.append(f"output `{name}`: {one_class[name]}")
    elif status == UNVERIFIED:
      unverified.append(f"output `{name}`: {text}")
  if rejected:
    return Verdict(REJECTED, "verification failed: " + "; ".join(rejected))
  if steady or single or unverified:
    return Verdict(UNVERIFIED, "; ".join(([f"{NOT_VARYING} ({'; '.join(steady)})"] if steady else [])
                                         + ([f"{ONE_CLASS} ({'; '.join(single)})"] if single else []) + unverified))
  return Verdict(OK, None)


def _top1_key(figures):
  return next((key for key in ("top1_agreement", "element_top1_agreement") if key in figures), None)


def _judged_by_top1(figures, thresholds):
  return _top1_key(figures) is not None and thresholds["classifier_judged_by"] != "max_relative_error"


def _judge_output(figures, thresholds, label):
  """(status, words) of one output: (OK, None), (REJECTED, what failed) or (UNVERIFIED, why it cannot tell)."""
  if "shape_mismatch" in figures:
    return REJECTED, f"has shape {figures['shape_mismatch']}"
  if "agreement" in figures:
    return _agreement_verdict(figures, "agreement", "values agree on", thresholds, label)
  if not _judged_by_top1(figures, thresholds):
    if "relative_error_quantile" in figures and thresholds.get("dense_judged_by") == "relative_error_quantile":
      return _quantile_verdict(figures, thresholds, f"{label} tolerance")
    return _error_verdict(figures, thresholds["max_relative_error"], f"{label} tolerance")
  key = _top1_key(figures)
  words = "top-1 agreement" if key == "top1_agreement" else "per-element top-1 agreement"
  checks = [_agreement_verdict(figures, key, words, thresholds, label)]
  if thresholds["classifier_judged_by"] == "top1_agreement_and_max_relative_error":
    checks.append(_error_verdict(figures, thresholds["classifier_max_relative_error"],
                                 f"{label} classifier tolerance"))
  for status in (REJECTED, UNVERIFIED):
    texts = [text for found, text in checks if found == status]
    if texts:
      return status, ", ".join(texts)
  return OK, None


def _error_verdict(figures, tolerance, words):
  if figures["max_relative_error"] <= tolerance:
    return OK, None
  return REJECTED, (f"max relative error {figures['max_relative_error']:.4g} > {tolerance:g} ({words}; max abs "
                    f"error {figures['max_abs_error']:.4g})")


def _quantile_verdict(figures, thresholds, words):
  """Dense values: the error quantile within the tolerance, and no element NaN or infinite where the normal
  export's is finite (a quantile would hide a few)."""
  tolerance, quantile = thresholds["max_relative_error"], figures["relative_error_quantile"]
  level = f"p{100 * thresholds.get('dense_error_quantile', DENSE_ERROR_QUANTILE):g}"
  if quantile <= tolerance and math.isfinite(figures["max_relative_error"]):
    return OK, None
  return REJECTED, (f"{level} relative error {quantile:.4g} > {tolerance:g} ({words}; max relative error "
                    f"{figures['max_relative_error']:.4g}, max abs error {figures['max_abs_error']:.4g})")


def _agreement_verdict(figures, key, words, thresholds, label):
  """Three-way on the confidence bounds: `ok` when the lower bound reaches the gate, `rejected` when even the
  upper bound is below it, `unverified` in between (the samples are too few to tell). Judged on the observed
  figure alone (pass or reject) where the thresholds say so."""
  observed, samples = figures[key], f"{figures.get('samples')} samples"
  if "elements" in figures:  # per element: how many, of how many samples, and the effective count judged on
    samples = f"{figures['elements']} elements of {samples} ({figures['effective_elements']:.4g} effective)"
  gate = thresholds["min_agreement"]
  if thresholds.get("agreement_judged_by", "bounds") == "observed":
    if observed >= gate:
      return OK, None
    return REJECTED, f"{words} {observed:.4g} on {samples} < {gate:g} ({label} threshold)"
  lower = figures.get(key + "_lower_bound", observed)
  upper = figures.get(key + "_upper_bound", observed)
  if lower >= gate:
    return OK, None
  if upper < gate:
    return REJECTED, (f"{words} {observed:.4g} on {samples}, 95% upper bound {upper:.4g} < {gate:g} "
                      f"({label} threshold)")
  return UNVERIFIED, (f"too few verification samples to tell: {words} {observed:.4g} on {samples}, 95% "
                      f"bounds [{lower:.4g}, {upper:.4g}] around the gate {gate:g} (raise verification_samples or "
                      "give more validation data)")
