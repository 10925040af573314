"""Labels (and sample weights) of the verification samples, keyed by output name: `label:<output>` and
`sample_weight:<output>` arrays in `verification_labels.npz`, beside `verification.npz`, row for row."""

import numpy as np

from tftrt_keras.task_metrics.compute import LABEL_PREFIX, WEIGHT_PREFIX

LABELS_FILE = "verification_labels.npz"
NO_LABELS = "no labels: the verification samples came without targets (predict-only data)"


def split_element(data):
  """(x, y, sample_weight) of a Keras data element `(x,)`, `(x, y)` or `(x, y, sample_weight)`; y and
  sample_weight None when absent."""
  if isinstance(data, list):
    data = tuple(data)
  if not isinstance(data, tuple):
    return data, None, None
  padded = tuple(data) + (None, None)
  return padded[0], padded[1], padded[2]


def _by_output(value, output_names, prefix):
  if value is None:
    return {}
  if isinstance(value, dict):
    return {prefix + k: np.asarray(v) for k, v in value.items() if k in output_names and v is not None}
  if isinstance(value, (list, tuple)):
    if len(value) != len(output_names):
      return {}
    return {prefix + name: np.asarray(v) for name, v in zip(output_names, value) if v is not None}
  if len(output_names) == 1:
    return {prefix + output_names[0]: np.asarray(value)}
  return {}


def labels_by_output(y, sample_weight, output_names):
  """{"label:<output>": array, "sample_weight:<output>": array} of one batch ({} when y matches no output):
  a dict by output name, a list or tuple by output position, one array for a single-output model."""
  keyed = _by_output(y, output_names, LABEL_PREFIX)
  if keyed:
    keyed.update(_by_output(sample_weight, output_names, WEIGHT_PREFIX))
  return keyed


def concat(parts):
  """One {key: array} of several batches' labels; {} when any batch has none (labels must cover every row)."""
  if not parts or any(not p for p in parts):
    return {}
  keys = [k for k in parts[0] if all(k in p for p in parts)]
  return {k: np.concatenate([p[k] for p in parts]) for k in keys}


def num_rows(labels):
  return len(next(iter(labels.values()))) if labels else 0


def manifest_entry(spec, has_labels):
  """The manifest's `task_metrics` as the trainer writes it; the worker adds the figures."""
  entry = {"spec": spec}
  if not spec.get("outputs") and spec.get("left_out"):  # nothing to match labels to: say why
    entry["skipped"] = "; ".join(spec["left_out"].values())
  elif has_labels:
    entry["labels_file"] = LABELS_FILE
  else:
    entry["skipped"] = NO_LABELS
  return entry
