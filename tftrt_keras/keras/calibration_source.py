"""`calibration_data=`: what a user may give instead of captured validation batches, and its batches keyed by
the serving signature's input names."""

import numpy as np

from tftrt_keras.errors import invalid_argument
from tftrt_keras.keras.capture import unpack_inputs
from tftrt_keras.keras.snapshot import named_signature
from tftrt_keras.keras.inputs_by_name import batches_by_name, expected_inputs
from tftrt_keras.samples import by_name


def _arrays(data):
  """The arrays of a (nested) list/tuple/dict of numpy arrays, or None when `data` is not one."""
  if isinstance(data, np.ndarray):
    return [data]
  if isinstance(data, dict):
    parts = [_arrays(v) for v in data.values()]
  elif isinstance(data, (list, tuple)):
    parts = [_arrays(v) for v in data]
  else:
    return None
  if not parts or any(p is None for p in parts):
    return None
  return [a for p in parts for a in p]


def is_calibration_source(data):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return isinstance(data, tf.data.Dataset) or _arrays(data) is not None


def check_calibration_source(data, input_signature=None):
  """Checks `calibration_data` (kind, sample counts, names against `input_signature`) before any model is known.

  Raises:
    ValueError: naming `calibration_data`.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  signature = None if input_signature is None else named_signature(input_signature)
  if not is_calibration_source(data):
    raise invalid_argument("calibration_data", type(data).__name__,
                           "a tf.data.Dataset, a numpy array, or a list/tuple/dict of numpy arrays")
  if isinstance(data, tf.data.Dataset):
    if signature is not None:
      # Names only: the element spec has no values to cast.
      structure = tf.nest.map_structure(lambda spec: 0, unpack_inputs(data.element_spec))
      by_name.key_by_name(structure, expected_inputs(signature), argument="calibration_data")
    return
  counts = sorted({len(a) if a.ndim else 0 for a in _arrays(data)})
  if counts[0] == 0 or len(counts) != 1:
    raise invalid_argument("calibration_data", f"arrays with {counts} samples",
                           "the same, non-zero number of samples (axis 0) in every array")
  if signature is not None:
    batches_by_name(signature, batches_from(data, 1, 1, signature=signature), argument="calibration_data")


def _labelled(data, signature):
  """Whether numpy `calibration_data` is `(x, y)` or `(x, y, sample_weight)`: a tuple of 2 or 3 that the
  model does not take as that many inputs."""
  if signature is None or not isinstance(data, tuple) or len(data) not in (2, 3):
    return False
  expected = expected_inputs(signature)
  return not (isinstance(expected, (list, tuple)) and len(expected) == len(data))


def batches_from(data, max_batches, max_batch_size, signature=None, with_targets=False):
  """Turns `calibration_data` into at most `max_batches` input batches (structures of numpy arrays); with
  `with_targets`, into (inputs, y or None, sample_weight or None) triples."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tftrt_keras.task_metrics.labels import split_element  # pylint: disable=g-import-not-at-top
  if isinstance(data, tf.data.Dataset):
    elements = [tf.nest.map_structure(np.asarray, element) for element in data.take(max_batches).as_numpy_iterator()]
  else:
    size = max_batch_size or 32
    total = len(_arrays(data)[0])
    starts = list(range(0, total, size))[:max_batches]
    elements = [tf.nest.map_structure(lambda a, s=s: a[s:s + size], data) for s in starts]
    if not _labelled(data, signature):
      elements = [(e,) for e in elements]
  triples = [split_element(e) for e in elements]
  return triples if with_targets else [x for x, _, _ in triples]


def given_batches(data, signature_for, max_batches, max_batch_size, label_keys=None):
  """`calibration_data` as batches keyed by the serving signature's input names, cast to its dtypes.

  Args:
    data: the `calibration_data` argument.
    signature_for: callable(raw batches) -> the serving signature's TensorSpec structure, or None.
    max_batches, max_batch_size: as `batches_from`.
    label_keys: callable(y, sample_weight) -> the batch's labels by output name.

  Returns:
    ([{input name: array}], the casts' manifest entries, [labels per batch] or None).

  Raises:
    ValueError: naming `calibration_data`, when it cannot be matched to the inputs by name.
  """
  first = batches_from(data, max_batches, max_batch_size)
  signature = signature_for(first)
  if not first or signature is None:
    return [], [], None
  triples = batches_from(data, max_batches, max_batch_size, signature=signature, with_targets=True)
  labels = None
  if label_keys is not None and all(y is not None for _, y, _ in triples):
    labels = [label_keys(y, weight) for _, y, weight in triples]
    labels = labels if all(labels) else None
  report = by_name.CastReport()
  keyed = batches_by_name(signature, [x for x, _, _ in triples], argument="calibration_data", report=report)
  return keyed, report.entries(), labels
