"""The Keras side of the model's own metrics on every variant: which outputs the labels belong to, what the model
compiles (for the worker to rebuild), and `max_metric_drop` checked against it before the first step."""

from tftrt_keras.errors import invalid_argument
from tftrt_keras.keras import flavor as keras_flavor
from tftrt_keras.keras import snapshot as keras_snapshot
from tftrt_keras.task_metrics import labels as task_labels
from tftrt_keras.task_metrics import spec as task_spec


def output_names(model):
  """The serving signature's output names in the model's output order, or None before the model is built."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  outputs = getattr(model, "outputs", None)
  if not outputs:
    return None
  structure = getattr(model, "_outputs_struct", None)  # Keras 3 dict outputs: the keys are the names
  if isinstance(structure, dict):
    return list(structure)
  return keras_snapshot._output_names(model, len(tf.nest.flatten(outputs)))  # pylint: disable=protected-access


# Why a compiled model without symbolic outputs gets no figures (said in the manifest, not left silent).
NO_OUTPUT_NAMES = ("the model has no symbolic outputs (a subclassed model), so its labels cannot be matched to "
                   "the serving signature's outputs")


def compile_spec(model):
  """`task_metrics.spec.compile_spec` of a compiled model (None when uncompiled; for a model without symbolic
  outputs, a spec whose `left_out` says why nothing is computed)."""
  names = output_names(model)
  if names is None:
    if not getattr(model, "compiled", getattr(model, "_is_compiled", False)):
      return None
    return task_spec.nothing_computed(keras_flavor.flavor_name(model), [], NO_OUTPUT_NAMES)
  return task_spec.compile_spec(model, names, keras_flavor.flavor_name(model))


def label_keys(model):
  """callable(y, sample_weight) -> the batch's labels keyed by output name (see `task_metrics.labels`)."""
  def keyed(y, sample_weight):
    names = output_names(model)
    return {} if names is None else task_labels.labels_by_output(y, sample_weight, names)
  return keyed


def check_metric_drops(max_metric_drop, model):
  """Raises ValueError naming `max_metric_drop` when it names a metric the model does not compile."""
  if not max_metric_drop:
    return
  available = task_spec.metric_names(compile_spec(model))
  unknown = sorted(set(max_metric_drop) - set(available))
  if unknown:
    raise invalid_argument("max_metric_drop", max_metric_drop, f"metric names among {available}",
                           hint=f"The model does not compile {', '.join(map(repr, unknown))} (names as Keras "
                                "logs them, without `val_`).")
