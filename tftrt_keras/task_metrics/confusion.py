"""Keras' Precision, Recall and AUC (its thresholded, interpolated summation) in numpy, for the bootstrap: a
resample costs a weighted sum here, where a Keras update costs milliseconds (200 resamples per variant and
metric). Only default-like configurations; any other returns None and Keras' own object is used."""

import numpy as np

_EPSILON = 1e-7  # Keras' backend epsilon, which pads AUC's first and last thresholds


def _config(built):
  try:
    return built.get_config()
  except Exception:  # pylint: disable=broad-except
    return None


def _flat(y_true, y_pred):
  """Labels and scores as (N,) float arrays, or None when they are not one value per sample."""
  y_true, y_pred = np.asarray(y_true, dtype=np.float64), np.asarray(y_pred, dtype=np.float64)
  if y_pred.ndim > 2 or (y_pred.ndim == 2 and y_pred.shape[1] != 1) or y_true.size != y_pred.size:
    return None
  return y_true.reshape(-1), y_pred.reshape(-1)


def evaluate(built, y_true, y_pred, weights):
  """(numerators, denominators) per sample for Precision/Recall, a callable(indices) for AUC, else None."""
  name = type(built).__name__
  if name == "MeanIoU":
    return _mean_iou(_config(built), y_true, y_pred, weights)
  config = _config(built) if name in ("Precision", "Recall", "AUC") else None
  flat = _flat(y_true, y_pred) if config else None
  if flat is None:
    return None
  labels, scores = flat
  weights = np.ones_like(scores) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
  if name in ("Precision", "Recall"):
    thresholds = config.get("thresholds")
    if config.get("top_k") is not None or config.get("class_id") is not None or isinstance(thresholds, (list, tuple)):
      return None
    predicted = (scores > (0.5 if thresholds is None else thresholds)).astype(np.float64)
    positive = (labels > 0.5).astype(np.float64)
    hits = weights * predicted * positive
    return hits, weights * (predicted if name == "Precision" else positive)
  if (config.get("summation_method", "interpolation").lower() != "interpolation" or config.get("multi_label")
      or config.get("label_weights") is not None or config.get("from_logits")):
    return None
  count = int(config.get("num_thresholds") or 200)
  thresholds = config.get("thresholds")
  if thresholds is None:
    thresholds = [(i + 1) / (count - 1) for i in range(count - 2)]
  thresholds = np.array([0.0 - _EPSILON] + list(thresholds)[-(count - 2):] + [1.0 + _EPSILON])
  above = (scores[:, None] > thresholds[None, :]).astype(np.float64)  # (N, thresholds)
  positive = (labels > 0.5).astype(np.float64)
  curve = str(config.get("curve", "ROC")).upper()

  def value(indices):
    drawn = np.bincount(indices, minlength=len(scores)) * weights
    return auc(drawn * positive @ above, drawn * (1 - positive) @ above, (drawn * positive).sum(),
               (drawn * (1 - positive)).sum(), curve)
  return value


def _mean_iou(config, y_true, y_pred, weights):
  """Keras' MeanIoU as a callable(indices): per-sample confusion matrices, summed over each resample."""
  if not config or config.get("axis", -1) != -1:
    return None
  classes = int(config["num_classes"])
  y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
  truth = y_true if config.get("sparse_y_true", True) else np.argmax(y_true, axis=-1)
  guess = y_pred if config.get("sparse_y_pred", True) else np.argmax(y_pred, axis=-1)
  count = len(truth)
  truth, guess = truth.reshape(count, -1).astype(np.int64), guess.reshape(count, -1).astype(np.int64)
  if truth.shape != guess.shape:
    return None
  keep = np.ones(truth.shape, dtype=np.float64)
  if config.get("ignore_class") is not None:
    keep = (truth != config["ignore_class"]).astype(np.float64)
  cells = np.clip(truth, 0, classes - 1) * classes + np.clip(guess, 0, classes - 1)
  per_sample = np.zeros((count, classes * classes))
  np.add.at(per_sample, (np.repeat(np.arange(count), truth.shape[1]), cells.reshape(-1)), keep.reshape(-1))
  if weights is not None:
    weights = np.asarray(weights, dtype=np.float64).reshape(count, -1).mean(axis=1)
    # Keras casts the weights to the metric's dtype (MeanIoU's may be an int: 1.7 counts as 1).
    per_sample *= (np.trunc(weights) if "int" in str(config.get("dtype")) else weights)[:, None]

  def value(indices):
    matrix = (np.bincount(indices, minlength=count) @ per_sample).reshape(classes, classes)
    hits = np.diag(matrix)
    union = matrix.sum(axis=0) + matrix.sum(axis=1) - hits
    valid = np.count_nonzero(union)
    return float(_divide(hits, union).sum() / valid) if valid else 0.0
  return value


def _divide(top, bottom):
  with np.errstate(divide="ignore", invalid="ignore"):
    return np.where(bottom != 0, top / np.where(bottom != 0, bottom, 1), 0.0)


def auc(tp, fp, positives, negatives, curve):
  """Keras' AUC result from true and false positives per threshold (interpolation summation)."""
  fn, tn = positives - tp, negatives - fp
  if curve == "PR":
    dtp = tp[:-1] - tp[1:]
    p = tp + fp
    slope = _divide(dtp, np.maximum(p[:-1] - p[1:], 0))
    intercept = tp[1:] - slope * p[1:]
    ratio = np.where((p[:-1] > 0) & (p[1:] > 0), _divide(p[:-1], np.maximum(p[1:], 0)), 1.0)
    return float(np.sum(_divide(slope * (dtp + intercept * np.log(ratio)), np.maximum(tp[1:] + fn[1:], 0))))
  recall = _divide(tp, tp + fn)
  rate = _divide(fp, fp + tn)
  return float(np.sum((rate[:-1] - rate[1:]) * (recall[:-1] + recall[1:]) / 2))
