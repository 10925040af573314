"""Is a candidate model's output still the reference's? The verdict rule, as pure numpy functions.

Verification (tftrt_keras.verify.verification) judges every artifact with these on the held-out verification samples;
the INT8 fallback search (tftrt_keras.formats.onnx.int8_fallback) judges its candidates with the same rule on a
calibration-side hold-out, so that what the search calls passing is what verification will call passing. This
module imports nothing of tftrt_keras: formats may use it without importing verification (which imports them).
"""

import math

import numpy as np

# One-sided 95%: the agreement is at least the bound with 95% confidence.
_CONFIDENCE_Z = 1.6448536269514722


def is_classifier_like(reference):
  """Rank-2 float output with more than one column: scores or probabilities over classes."""
  return reference.ndim == 2 and reference.shape[1] > 1 and np.issubdtype(reference.dtype, np.floating)


def agreement_lower_bound(agreeing, total, z=_CONFIDENCE_Z):
  """The Wilson score lower bound of a proportion: `agreeing` of `total` samples agree, so the true agreement
  is at least this with the confidence `z` stands for (one-sided 95% by default). 0.0 for no samples."""
  if total <= 0:
    return 0.0
  p = agreeing / total
  denominator = 1 + z * z / total
  centre = p + z * z / (2 * total)
  margin = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total))
  return max(0.0, (centre - margin) / denominator)


def compare_output(reference, candidate):
  """Figures for one output of one artifact against the normal export.

  Args:
    reference: the normal export's output, samples along axis 0.
    candidate: the artifact's output for the same samples.

  Returns:
    A dict. Float outputs: `max_abs_error`, `max_relative_error` (max abs error / max |reference|; the error
    relative to the output's scale, stable where single reference values are near zero) and, when
    classifier-like, `top1_agreement` (fraction of samples with the same arg-max). Other dtypes: `agreement`
    (fraction of samples whose values are all equal). A shape mismatch gives `shape_mismatch` instead.
  """
  reference, candidate = np.asarray(reference), np.asarray(candidate)
  if reference.shape != candidate.shape:
    return {"shape_mismatch": f"{list(candidate.shape)} instead of {list(reference.shape)}"}
  if not np.issubdtype(reference.dtype, np.floating):
    same = reference == candidate
    per_sample = same.reshape(len(same), -1).all(axis=1) if same.ndim else np.array([bool(same)])
    return {"agreement": float(per_sample.mean()) if per_sample.size else 1.0, "samples": int(per_sample.size),
            "agreement_lower_bound": round(agreement_lower_bound(int(per_sample.sum()), int(per_sample.size)), 6)}
  ref, cand = reference.astype(np.float64), candidate.astype(np.float64)
  diff = np.abs(ref - cand)
  both_nan = np.isnan(ref) & np.isnan(cand)
  # NaN where the normal export has a number (or the reverse) is as wrong as an error can be.
  diff = np.where(both_nan, 0.0, np.where(np.isnan(diff), np.inf, diff))
  max_abs = float(diff.max()) if diff.size else 0.0
  finite_ref = np.abs(ref[np.isfinite(ref)])
  scale = float(finite_ref.max()) if finite_ref.size else 0.0
  if scale > 0:
    relative = max_abs / scale
  else:
    relative = 0.0 if max_abs == 0 else float("inf")
  figures = {"max_abs_error": max_abs, "max_relative_error": relative, "scale": scale}
  if is_classifier_like(reference):
    agree = np.argmax(ref, axis=1) == np.argmax(cand, axis=1)
    figures["top1_agreement"] = float(np.mean(agree))
    figures["samples"] = int(agree.size)
    figures["top1_agreement_lower_bound"] = round(agreement_lower_bound(int(agree.sum()), int(agree.size)), 6)
  return figures


def thresholds_for(precision, options):
  """The thresholds an artifact of `precision` is judged by (stored in the manifest beside the figures)."""
  tolerance = {
      "frozen": options.verify_tolerance_frozen, "FP32": options.verify_tolerance_fp32,
      "FP16": options.verify_tolerance_fp16, "INT8": options.verify_tolerance_int8,
  }.get(precision, options.verify_tolerance_fp32)
  thresholds = {"max_relative_error": tolerance, "min_agreement": options.verify_min_agreement}
  # INT8 moves logits a lot while keeping the decision; judge what the user serves: the top-1 class.
  thresholds["classifier_judged_by"] = "top1_agreement" if precision == "INT8" else "max_relative_error"
  # INT8 is expected to change some answers, so its agreement is a statistical claim and is judged on the
  # lower confidence bound; at any other precision an exact output must simply agree (the observed figure).
  thresholds["agreement_judged_by"] = "lower_bound" if precision == "INT8" else "observed"
  return thresholds


def judge(precision, outputs, thresholds):
  """Returns (passed, reason) for one artifact's per-output figures; reason names the output and figure."""
  failures = []
  label = {"frozen": "frozen graph", None: "default"}.get(precision, precision)
  for name in sorted(outputs):
    figures = outputs[name]
    if "shape_mismatch" in figures:
      failures.append(f"output `{name}` has shape {figures['shape_mismatch']}")
    elif "agreement" in figures:
      failure = _agreement_failure(figures, "agreement", "values agree on", thresholds, label)
      if failure:
        failures.append(f"output `{name}`: {failure}")
    elif "top1_agreement" in figures and thresholds["classifier_judged_by"] == "top1_agreement":
      failure = _agreement_failure(figures, "top1_agreement", "top-1 agreement", thresholds, label)
      if failure:
        failures.append(f"output `{name}`: {failure}")
    elif not figures["max_relative_error"] <= thresholds["max_relative_error"]:
      failures.append(f"output `{name}`: max relative error {figures['max_relative_error']:.4g} "
                      f"> {thresholds['max_relative_error']:g} ({label} tolerance; max abs error "
                      f"{figures['max_abs_error']:.4g})")
  if not failures:
    return True, None
  return False, "verification failed: " + "; ".join(failures)


def _agreement_failure(figures, key, words, thresholds, label):
  """None when the agreement's lower confidence bound reaches the threshold; else what failed, with the figures
  (and, when the observed agreement would pass, that the samples were too few to tell)."""
  observed, bound = figures[key], figures.get(key + "_lower_bound", figures[key])
  threshold = thresholds["min_agreement"]
  samples = figures.get("samples")
  if thresholds.get("agreement_judged_by", "lower_bound") == "observed":
    if observed >= threshold:
      return None
    return f"{words} {observed:.4g} on {samples} samples < {threshold:g} ({label} threshold)"
  if bound >= threshold:
    return None
  text = (f"{words} {observed:.4g} on {samples} samples, 95% lower bound {bound:.4g} < {threshold:g} "
          f"({label} threshold)")
  if observed >= threshold:
    text += "; too few verification samples to tell (raise verification_samples or give more validation data)"
  return text
