"""Labelled samples for `tftrt-export`: `label:<output>` (and `sample_weight:<output>`) arrays in the calibration
data, row for row with the inputs, and the Keras metrics to compute on every variant from them."""

from tftrt_keras.errors import invalid_argument
from tftrt_keras.task_metrics.compute import LABEL_PREFIX, WEIGHT_PREFIX


def split_labels(arrays, signature):
  """({input name: array}, {"label:<output>" / "sample_weight:<output>": array}) of the calibration data.

  Raises:
    ValueError: naming `calibration_data`, for a label of no signature output or with another row count.
  """
  prefixes = (LABEL_PREFIX, WEIGHT_PREFIX)
  labels = {k: v for k, v in arrays.items() if k.startswith(prefixes)}
  outputs = [t.name for t in signature.outputs]
  for key, value in labels.items():
    output = key.split(":", 1)[1]
    if output not in outputs:
      raise invalid_argument("calibration_data", key, f"label arrays named label:<output> for outputs {outputs}")
    rows = {len(v) for k, v in arrays.items() if not k.startswith(prefixes)}
    if rows and rows != {len(value)}:
      raise invalid_argument("calibration_data", f"{key} with {len(value)} rows",
                             f"as many rows as the inputs ({sorted(rows)})")
  return {k: v for k, v in arrays.items() if k not in labels}, labels


def _flavor():
  """The Keras the worker rebuilds the metrics with: Keras 3 where installed as `keras`, else tf.keras."""
  try:
    import keras  # pylint: disable=g-import-not-at-top
    return "keras3" if int(keras.__version__.split(".")[0]) >= 3 else "tf.keras"
  except ImportError:
    return "tf.keras"


def metrics_spec(metrics, labels):
  """The `task_metrics` spec for `metrics` (a list for every labelled output, or {output: list}); None without labels.

  Raises:
    ValueError: naming `metrics`, when it is not a list or dict of identifiers, or names an unlabelled output.
  """
  outputs = sorted(k[len(LABEL_PREFIX):] for k in labels if k.startswith(LABEL_PREFIX))
  if not outputs:
    return None
  metrics = metrics or []
  if isinstance(metrics, str):
    metrics = [m.strip() for m in metrics.split(",") if m.strip()]
  if isinstance(metrics, (list, tuple)):
    metrics = {output: list(metrics) for output in outputs}
  if not isinstance(metrics, dict) or set(metrics) - set(outputs):
    raise invalid_argument("metrics", metrics, f"a list of Keras metric names, or {{output: [names]}} for the "
                           f"labelled outputs {outputs}")
  left_out = {} if any(metrics.values()) else {
      "metrics": "labels were given but no metrics named (--metrics=accuracy,... or metrics=[...])"}
  return {"keras": _flavor(), "outputs": outputs, "loss": {}, "loss_weights": {}, "left_out": left_out,
          "metrics": {o: list(m) for o, m in metrics.items()}, "weighted_metrics": {}}
