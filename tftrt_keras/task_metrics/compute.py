"""The model's loss and compiled metrics, rebuilt in the export worker from their Keras configs, on the normal
export's outputs and each variant's, over the same labelled verification samples.

Per-sample means (losses, `MeanMetricWrapper`s) are bootstrapped as weighted means; other metrics (AUC, ...) are
recomputed on each resample. The interval is paired: each resample draws the same samples for both.
"""

import importlib

import numpy as np

from tftrt_keras.task_metrics import confusion, interval
from tftrt_keras.task_metrics.spec import config_name

LABEL_PREFIX = "label:"
WEIGHT_PREFIX = "sample_weight:"
_KERAS_MODULES = ("keras", "tf_keras", "tensorflow")


def load_keras(flavor):
  if flavor == "keras3":
    return importlib.import_module("keras")
  if flavor == "tf_keras":
    return importlib.import_module("tf_keras")
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.keras


def _import_owner(config):
  """Imports the module a registered custom object was defined in, so that deserializing finds it."""
  module = config.get("module") if isinstance(config, dict) else None
  if module and module.split(".")[0] not in _KERAS_MODULES and module != "__main__":
    importlib.import_module(module)


def _same_rank(y_true, y_pred):
  """Keras' `squeeze_or_expand_to_same_rank`: a trailing axis of 1 on one side meets a rank-1 other side by
  expanding it, else is squeezed."""
  if y_pred.ndim == y_true.ndim + 1 and y_pred.shape[-1] == 1:
    return (y_true[..., None], y_pred) if y_true.ndim == 1 else (y_true, y_pred[..., 0])
  if y_true.ndim == y_pred.ndim + 1 and y_true.shape[-1] == 1:
    return (y_true, y_pred[..., None]) if y_pred.ndim == 1 else (y_true[..., 0], y_pred)
  if y_true.ndim == y_pred.ndim == 1:  # one value per sample: Keras' functions reduce the last axis
    return y_true[..., None], y_pred[..., None]
  return y_true, y_pred


def _accuracy_like(keras, identifier, y_true, y_pred):
  """What Keras' compile makes of "accuracy" / "crossentropy": binary, sparse or categorical by the shapes."""
  word = identifier.lower()
  binary = y_pred.ndim == 1 or y_pred.shape[-1] == 1
  sparse = y_true.ndim < y_pred.ndim or (y_true.shape[-1] == 1 and not binary)
  if word in ("accuracy", "acc"):
    kind = "binary_accuracy" if binary else ("sparse_categorical_accuracy" if sparse else "categorical_accuracy")
  else:
    kind = ("binary_crossentropy" if binary else
            "sparse_categorical_crossentropy" if sparse else "categorical_crossentropy")
  return keras.metrics.get(kind)


def rebuild(keras, config, kind, y_true, y_pred):
  """The Keras loss or metric object (or function) for one compile() entry. Raises when it cannot be rebuilt."""
  _import_owner(config)
  if kind == "metric" and isinstance(config, str) and config.lower() in ("accuracy", "acc", "crossentropy", "ce"):
    return _accuracy_like(keras, config, y_true, y_pred)
  module = keras.losses if kind == "loss" else keras.metrics
  built = module.get(config)
  if built is None or not (callable(built) or hasattr(built, "update_state")):
    raise ValueError(f"Keras returned {built!r} for {config!r}, not a metric")
  return built


def _per_sample(built, kind, y_true, y_pred):
  """Per-sample values of a mean-type metric or loss, or None when it is not one."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  y_true, y_pred = _same_rank(y_true, y_pred)
  if kind == "loss" and hasattr(built, "call") and not hasattr(built, "update_state"):
    function, kwargs = built.call, {}
  elif hasattr(built, "update_state"):
    function = getattr(built, "_fn", None)
    kwargs = dict(getattr(built, "_fn_kwargs", None) or {})
    if function is None:
      return None
    # As the metric's update_state does: both sides in its dtype (int labels meet float predictions).
    dtype = getattr(getattr(built, "dtype", None), "name", None) or getattr(built, "dtype", None) or "float32"
    y_true, y_pred = np.asarray(y_true).astype(dtype), np.asarray(y_pred).astype(dtype)
  elif callable(built):
    function, kwargs = built, {}
  else:
    return None
  values = np.asarray(function(tf.convert_to_tensor(y_true), tf.convert_to_tensor(y_pred), **kwargs),
                      dtype=np.float64)
  if values.ndim == 0 or values.shape[0] != y_true.shape[0]:
    return None
  return values.reshape(len(values), -1).mean(axis=1)


def _weights(sample_weight, count):
  if sample_weight is None:
    return None
  weights = np.asarray(sample_weight, dtype=np.float64)
  return weights.reshape(count, -1).mean(axis=1)


class _Figure:
  """One reported metric: how to evaluate it on one side's outputs, and on resampled samples."""

  def __init__(self, name, output, built, kind, weighted):
    self.name, self.output, self.built, self.kind, self.weighted = name, output, built, kind, weighted

  def evaluate(self, y_true, y_pred, sample_weight):
    """(numerators, denominators) per sample for a mean-type metric, else a callable(indices) -> value."""
    weights = _weights(sample_weight, len(y_true)) if self.weighted else None
    fast = confusion.evaluate(self.built, y_true, y_pred, weights)
    if fast is not None:
      return fast
    values = _per_sample(self.built, self.kind, y_true, y_pred)
    if values is not None:
      if weights is None:
        return values, np.ones_like(values)
      # Keras divides a weighted loss by the sample count, a weighted metric by the weights' sum.
      return values * weights, (np.ones_like(values) if self.kind == "loss" else weights)
    return lambda indices: self._stateful(y_true, y_pred, weights, indices)

  def _stateful(self, y_true, y_pred, weights, indices):
    built = self.built
    if hasattr(built, "reset_state"):
      # A resample is the whole sample set weighted by how often each sample was drawn: every resample has
      # the same shapes, so one traced update serves them all (eager updates cost 20x more).
      counts = np.bincount(indices, minlength=len(y_true)).astype(np.float32)
      counts = counts if weights is None else counts * weights.astype(np.float32)
      # Per-element metrics (MeanIoU on (N, H, W) labels) take a weight per element.
      counts = np.broadcast_to(counts.reshape((-1,) + (1,) * (np.ndim(y_true) - 1)), np.shape(y_true))
      built.reset_state()
      self._update(y_true, y_pred, counts)
      return float(np.asarray(built.result()))
    return float(np.asarray(built(y_true[indices], y_pred[indices])))

  def _update(self, y_true, y_pred, weights):
    def update(labels, outputs, sample_weight):
      self.built.update_state(labels, outputs, sample_weight=sample_weight)
    if getattr(self, "_traced", None) is None:
      import tensorflow as tf  # pylint: disable=g-import-not-at-top
      self._traced = tf.function(update)
      try:
        return self._traced(y_true, y_pred, weights)
      except Exception:  # pylint: disable=broad-except
        self._traced = update  # not traceable: eager
        self.built.reset_state()
    return self._traced(y_true, y_pred, weights)


class _TotalLoss:
  """A multi-output model's `loss`: the loss weights' sum of its outputs' per-sample losses."""

  name = "loss"
  output = None

  def __init__(self, parts):
    self.parts = parts  # [(figure, weight)]

  def evaluate(self, evaluations):
    numerators = sum(weight * evaluations[figure.name][0] for figure, weight in self.parts)
    return numerators, np.ones_like(numerators)


class TaskMetrics:
  """The model's own metrics on the labelled verification samples.

  Args:
    spec: `spec.compile_spec(...)` as stored in the manifest.
    labels: {"label:<output>": array, "sample_weight:<output>": array} for the verification samples.
    reference: the normal export's outputs on those samples, {output name: array}.
  """

  def __init__(self, spec, labels, reference):
    self.left_out = dict(spec.get("left_out") or {})
    self._labels = labels
    self._columns = dict(spec.get("columns") or {})
    reference = self._with_columns(reference)
    count = len(next(iter(reference.values())))
    self.samples = count
    keras = load_keras(spec["keras"])
    outputs = [o for o in spec["outputs"] if o in reference]
    several = len(spec["outputs"]) > 1 and not spec.get("flat_names")
    self._figures, losses = [], []
    for output in outputs:
      y_true = labels.get(LABEL_PREFIX + output)
      entries = ([("loss", spec["loss"].get(output), False)] if spec["loss"].get(output) is not None else [])
      entries += [("metric", c, False) for c in spec["metrics"].get(output, [])]
      entries += [("metric", c, True) for c in spec["weighted_metrics"].get(output, [])]
      for kind, config, weighted in entries:
        name = ("loss" if kind == "loss" else config_name(config))
        name = f"{output}_{name}" if several else name
        if y_true is None:
          self.left_out[name] = f"no labels for output `{output}`"
          continue
        try:
          built = rebuild(keras, config, kind, np.asarray(y_true), np.asarray(reference[output]))
        except Exception as err:  # pylint: disable=broad-except
          self.left_out[name] = f"cannot be rebuilt from its config: {type(err).__name__}: {err}"
          continue
        figure = _Figure(name, output, built, kind, weighted=(kind == "loss" or weighted))
        self._figures.append(figure)
        if kind == "loss":
          losses.append((figure, spec["loss_weights"].get(output, 1.0)))
    self._total = _TotalLoss(losses) if several and losses and len(losses) == len(
        [o for o in spec["outputs"] if spec["loss"].get(o) is not None]) else None
    self._reference = self._evaluate(reference)
    self.resamples = interval.RESAMPLES if all(isinstance(v, tuple) for v in self._reference.values()) \
        else interval.SLOW_RESAMPLES
    self._indices = interval.resample_indices(count, self.resamples)
    self._reference_resampled = {}

  def _with_columns(self, outputs):
    """The outputs plus the derived ones `spec["columns"]` names ({derived: [output, column]})."""
    derived = {name: np.asarray(outputs[source])[..., column]
               for name, (source, column) in self._columns.items() if source in outputs}
    return {**outputs, **derived}

  @property
  def names(self):
    return [f.name for f in self._figures] + ([self._total.name] if self._total else [])

  def _evaluate(self, outputs):
    evaluations = {}
    for figure in self._figures:
      try:
        evaluation = figure.evaluate(np.asarray(self._labels[LABEL_PREFIX + figure.output]),
                                     np.asarray(outputs[figure.output]), self._labels.get(WEIGHT_PREFIX + figure.output))
        if callable(evaluation):
          evaluation(np.arange(self.samples))  # fails here, for this metric alone, if it cannot be computed
        evaluations[figure.name] = evaluation
      except Exception as err:  # pylint: disable=broad-except
        self.left_out.setdefault(figure.name, f"could not be computed: {type(err).__name__}: {err}")
    if self._total is not None and all(f.name in evaluations and isinstance(evaluations[f.name], tuple)
                                       for f, _ in self._total.parts):
      evaluations["loss"] = self._total.evaluate(evaluations)
    return evaluations

  def normal_values(self):
    """{metric name: value} of the normal export on all samples."""
    everything = np.arange(self.samples)
    return {name: _value(e, everything) for name, e in self._reference.items()}

  def compare(self, outputs, max_metric_drop=None):
    """Per metric: the variant's value, the normal export's, their difference with its interval, and the gate's verdict.

    Returns:
      ({metric name: figures}, (verdict, reason) of the gate, or None when no gated metric was computed).
    """
    everything = np.arange(self.samples)
    evaluations = self._evaluate(self._with_columns(outputs))
    figures, verdicts = {}, []
    for name, reference in self._reference.items():
      mine = evaluations.get(name)
      if mine is None:
        continue
      value, normal = _value(mine, everything), _value(reference, everything)
      if name not in self._reference_resampled:  # the normal export's side is the same for every variant
        self._reference_resampled[name] = _resampled(reference, self._indices)
      differences = _resampled(mine, self._indices) - self._reference_resampled[name]
      bounds = interval.percentile_interval(differences)
      figures[name] = {"value": value, "normal": normal, "difference": value - normal, "interval": bounds,
                       "lower_is_better": interval.lower_is_better(name)}
      if max_metric_drop and name in max_metric_drop:
        verdict, reason = interval.gate(name, bounds, max_metric_drop[name])
        figures[name].update(max_drop=max_metric_drop[name], verdict=verdict)
        verdicts.append((verdict, reason))
    return figures, _combined(verdicts)


def _value(evaluation, indices):
  if isinstance(evaluation, tuple):
    numerators, denominators = evaluation
    return float(numerators[indices].sum() / denominators[indices].sum())
  return evaluation(indices)


def _resampled(evaluation, indices):
  if isinstance(evaluation, tuple):
    return interval.ratio_of_sums(evaluation[0], evaluation[1], indices)
  return np.array([evaluation(row) for row in indices])


def _combined(verdicts):
  """The worst gate verdict (rejected, then unverified, then ok), with the reasons of that verdict."""
  for status in ("rejected", "unverified", "ok"):
    reasons = [reason for verdict, reason in verdicts if verdict == status]
    if reasons:
      return status, "; ".join(reasons)
  return None
