"""`ModelCheckpoint`'s rules for a monitored metric, shared by `TrtExport` and the Estimator's best exporter."""


def mode_from_name(monitor):
  """The direction `mode="auto"` gives `monitor` from its name alone, as tf.keras 2's `ModelCheckpoint` (and
  Keras 3's before 3.11) decides it: larger is better when the name contains "acc" or starts with "fmeasure";
  everything else (`val_auc` and `val_precision` too) is better smaller.

  Returns:
    "min" or "max".
  """
  return "max" if "acc" in monitor or monitor.startswith("fmeasure") else "min"


def improves(value, best, mode):
  """Whether `value` beats `best` (None: nothing yet, anything does) in direction `mode` ("min" or "max")."""
  if best is None:
    return True
  return value < best if mode == "min" else value > best
