"""What a Keras model compiles (its loss and metrics, as Keras serializes them), per output, for the worker to
rebuild; and the metric names `max_metric_drop` may refer to. Runs in the training process; imports no Keras."""


def _per_output(value, outputs, *, listed):
  """A compile argument as {output: value}: a dict by output name, a list by position, else every output.

  `listed`: the per-output value is itself a list (metrics), so a flat list applies to every output."""
  if value is None:
    return {}
  if isinstance(value, dict) and not _is_config(value):  # a serialized loss/metric object is one value
    return {k: v for k, v in value.items() if k in outputs}
  if isinstance(value, (list, tuple)):
    nested = listed and any(isinstance(v, (list, tuple, dict)) and not _is_config(v) for v in value)
    if (not listed and len(value) == len(outputs)) or nested:
      return dict(zip(outputs, value))
  return {o: value for o in outputs}


def _is_config(value):
  return isinstance(value, dict) and "class_name" in value


def _as_list(value):
  if value is None:
    return []
  return list(value) if isinstance(value, (list, tuple)) else [value]


def compile_spec(model, output_names, flavor):
  """The model's loss and compiled metrics as JSON, per output (None when the model is not compiled).

  Args:
    model: a compiled Keras model (Keras 2 or 3).
    output_names: the serving signature's output names, in the model's output order.
    flavor: "keras3", "tf_keras" or "tf.keras": the Keras the worker rebuilds them with.

  Returns:
    {"keras", "outputs", "loss", "loss_weights", "metrics", "weighted_metrics", "left_out": {what: why}}.
  """
  try:
    config = model.get_compile_config()
  except Exception as err:  # pylint: disable=broad-except
    return nothing_computed(flavor, output_names, f"Keras could not serialize it: {type(err).__name__}: {err}")
  if not config:
    return None
  outputs = list(output_names)
  weights = _per_output(config.get("loss_weights"), outputs, listed=False)
  return {"keras": flavor, "outputs": outputs,
          "loss": _per_output(config.get("loss"), outputs, listed=False),
          "loss_weights": {o: float(w) for o, w in weights.items() if isinstance(w, (int, float))},
          "metrics": {o: _as_list(v) for o, v in _per_output(config.get("metrics"), outputs, listed=True).items()},
          "weighted_metrics": {o: _as_list(v) for o, v in
                               _per_output(config.get("weighted_metrics"), outputs, listed=True).items()},
          "left_out": {}}


def nothing_computed(flavor, output_names, why):
  """A spec with no loss and no metrics whose `left_out` says why (under "compile()")."""
  return {"keras": flavor, "outputs": list(output_names), "loss": {}, "loss_weights": {}, "metrics": {},
          "weighted_metrics": {}, "left_out": {"compile()": why}}


def config_name(config):
  """The name Keras logs a metric under: its identifier string, or its config's `name`."""
  if isinstance(config, str):
    return config
  if isinstance(config, dict):
    inner = config.get("config")
    if isinstance(inner, dict) and inner.get("name"):
      return str(inner["name"])
    return str(config.get("class_name") or config.get("registered_name") or "metric")
  return str(config)


def metric_names(spec):
  """Every name the worker reports for `spec` (as Keras logs them without `val_`): `loss`, and per output the
  metric names, prefixed by the output name when the model has several outputs."""
  if not spec:
    return []
  outputs = spec["outputs"]
  prefix = (lambda o: f"{o}_") if len(outputs) > 1 else (lambda o: "")
  names = ["loss"] if spec["loss"] else []
  if len(outputs) > 1:
    names += [f"{o}_loss" for o in outputs if spec["loss"].get(o) is not None]
  for key in ("metrics", "weighted_metrics"):
    for output in outputs:
      names += [prefix(output) + config_name(c) for c in spec[key].get(output, [])]
  return names
