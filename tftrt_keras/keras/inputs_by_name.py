"""A Keras model's samples as its serving signature takes them: the signature's input structure (a list of
named inputs, a dict, one input) and dtypes, applied to captured or given batches by
`tftrt_keras.samples.by_name`."""

from tftrt_keras.samples import by_name


def expected_inputs(signature):
  """The signature's structure with each TensorSpec replaced by its input name."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.nest.map_structure(lambda spec: spec.name, signature)


def input_dtypes(signature):
  """{input name: dtype name} of the signature ("float32", "string"...)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return {spec.name: tf.as_dtype(spec.dtype).name for spec in tf.nest.flatten(signature)}


def input_shapes(signature):
  """{input name: shape as a list (None for unknown dimensions), or None for an unknown rank}."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return {spec.name: (spec.shape.as_list() if spec.shape.rank is not None else None)
          for spec in tf.nest.flatten(signature)}


def batches_by_name(signature, batches, *, argument, extra="error", report=None):
  """Keys every batch by input name and casts it to the signature's dtypes and ranks, as `fit` does.

  Args:
    signature: the serving signature's TensorSpec structure (named specs).
    batches: input batches (numpy structures).
    argument: named in the error.
    extra: "drop" dict keys that name no input (as `fit` does), or "error".
    report: a `by_name.CastReport` counting what the casts lost.

  Raises:
    ValueError: a batch cannot be matched to the inputs by name, or a string/number mismatch.
  """
  expected, dtypes = expected_inputs(signature), input_dtypes(signature)
  shapes = input_shapes(signature)
  return [by_name.samples_by_name(b, expected, dtypes, argument=argument, extra=extra, report=report,
                                  shapes=shapes) for b in batches]


def captured_by_name(signature, batches, verification):
  """Captured validation batches keyed by input name; a mismatch is recorded, never raised (training goes on).

  Returns:
    (calibration batches, verification batches or None, the casts' manifest entries, why unusable or None).
  """
  report = by_name.CastReport()
  try:
    keyed = batches_by_name(signature, batches, argument="validation_data", extra="drop", report=report)
    held = None if verification is None else batches_by_name(signature, verification, argument="validation_data",
                                                             extra="drop", report=report)
  except ValueError as err:
    return [], None, [], f"the validation batches cannot be fed to the serving signature by name: {err}"
  return keyed, held, report.entries(), None
