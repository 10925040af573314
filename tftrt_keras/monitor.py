"""`ModelCheckpoint`'s rules for a monitored metric, shared by `TrtExport` and the Estimator's best exporter."""


def mode_from_name(monitor):
  """The direction `mode="auto"` gives `monitor` from its name alone, as tf.keras 2's `ModelCheckpoint` (and
  Keras 3's before 3.11) decides it: larger is better when the name contains "acc" or starts with "fmeasure";
  everything else (`val_auc` and `val_precision` too) is better smaller.

  Returns:
    "min" or "max".
  """
  return "max" if "acc" in monitor or monitor.startswith("fmeasure") else "min"


# The directions Keras 3's metric classes declare (`_direction = "up"`: Accuracy, AUC, Precision, Recall, F1Score,
# FBetaScore, IoU, R2Score), by the names they report; for monitors no compiled metric can answer for (the
# Estimator's evaluation keys). Losses and errors are better smaller.
_LARGER_IS_BETTER = ("acc", "auc", "precision", "recall", "f1", "fbeta", "iou", "fmeasure", "r2")


def mode_from_metric_name(monitor):
  """The direction of `monitor` by the metric it names, as Keras 3 metric classes declare it ("max" for
  accuracy, auc, precision, recall, ...; "min" for losses and errors); the name rule (`mode_from_name`) for any
  other name.

  Returns:
    "min" or "max".
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
