"""`ModelCheckpoint`'s rules for a monitored metric, shared by `TrtExport` and the Estimator's best exporter."""


def mode_from_name(monitor):
  """"min" or "max": the direction `mode="auto"` gives `monitor` by name, as tf.keras 2's `ModelCheckpoint` does.

  Larger is better when the name contains "acc" or starts with "fmeasure"; everything else is better smaller.
  """
  return "max" if "acc" in monitor or monitor.startswith("fmeasure") else "min"


# The directions Keras 3's metric classes declare (`_direction = "up"`: Accuracy, AUC, Precision, Recall, F1Score,
# FBetaScore, IoU, R2Score), by the names they report; for monitors no compiled metric can answer for (the
# Estimator's evaluation keys). Losses and errors are better smaller.
_LARGER_IS_BETTER = ("acc", "auc", "precision", "recall", "f1", "fbeta", "iou", "fmeasure", "r2")


def mode_from_metric_name(monitor):
  """"min" or "max": the direction of the metric `monitor` names, as Keras 3 metric classes declare it.

  Other names fall back to `mode_from_name`.
  """
  key = monitor[len("val_"):] if monitor.startswith("val_") else monitor
  if key.endswith("loss") or "error" in key:
    return "min"
  return "max" if any(word in key for word in _LARGER_IS_BETTER) else mode_from_name(monitor)


def improves(value, best, mode):
  """Whether `value` beats `best` (None: nothing yet, anything does) in direction `mode` ("min" or "max")."""
  if best is None:
    return True
  return value < best if mode == "min" else value > best
