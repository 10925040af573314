"""Paired bootstrap intervals for a metric's difference between a variant and the normal export, and the
`max_metric_drop` verdict on them. Pure numpy."""

import numpy as np

RESAMPLES = 1000       # per-sample metrics: a resample costs a weighted mean
SLOW_RESAMPLES = 200   # metrics recomputed on each resample (AUC, precision...): each costs a metric update
SEED = 0
LEVEL = 0.95

# Metric names whose smaller values are better (losses and errors); every other metric is "higher is better".
_LOWER_IS_BETTER = ("loss", "error", "crossentropy", "hinge", "divergence", "poisson", "logcosh", "log_cosh",
                    "mae", "mse", "mape", "msle", "rmse")


def lower_is_better(name):
  name = name.lower()
  return any(word in name for word in _LOWER_IS_BETTER)


def method_text(resamples):
  return (f"paired bootstrap over the verification samples ({resamples} resamples, seed {SEED}; the same "
          f"resampled samples on both sides), {LEVEL:.0%} percentile interval of variant - normal")


def resample_indices(count, resamples, seed=SEED):
  return np.random.default_rng(seed).integers(0, count, size=(resamples, count))


def ratio_of_sums(numerators, denominators, indices):
  """sum(numerators[idx]) / sum(denominators[idx]) per resample row of `indices`."""
  top = numerators[indices].sum(axis=1)
  bottom = denominators[indices].sum(axis=1)
  with np.errstate(invalid="ignore", divide="ignore"):
    return top / bottom


def percentile_interval(differences):
  tail = (1 - LEVEL) / 2 * 100
  finite = differences[np.isfinite(differences)]
  if not len(finite):
    return None
  return [float(np.percentile(finite, tail)), float(np.percentile(finite, 100 - tail))]


def gate(name, difference_interval, allowed):
  """The `max_metric_drop` verdict: ("ok"|"rejected"|"unverified", reason).

  The drop is normal - variant (variant - normal for losses and errors); rejected when its whole interval is
  above `allowed`, ok when at or below it.
  """
  if difference_interval is None:
    return "unverified", f"{name}: no interval (the metric is undefined on these samples)"
  low, high = difference_interval
  drop = (low, high) if lower_is_better(name) else (-high, -low)
  word = "rise" if lower_is_better(name) else "drop"
  text = f"{name} {word} {drop[0]:.4g} to {drop[1]:.4g} ({LEVEL:.0%} interval), allowed {allowed:g}"
  if drop[0] > allowed:
    return "rejected", text
  if drop[1] <= allowed:
    return "ok", text
  return "unverified", text + ": the samples cannot tell"
