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
  """Checks `calibration_data` before any model is known: its kind, its sample counts, and its names against
  the user's `input_signature` when there is one.

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
    batches_by_name(signature, batches_from(data, 1, 1), argument="calibration_data")


def batches_from(data, max_batches, max_batch_size):
  """Turns `calibration_data` into at most `max_batches` input batches (structures of numpy arrays)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if isinstance(data, tf.data.Dataset):
    return [tf.nest.map_structure(np.asarray, unpack_inputs(element))
            for element in data.take(max_batches).as_numpy_iterator()]
  size = max_batch_size or 32
  total = len(_arrays(data)[0])
  starts = range(0, total, size)
  return [tf.nest.map_structure(lambda a, s=s: a[s:s + size], data) for s in list(starts)[:max_batches]]


def given_batches(data, signature_for, max_batches, max_batch_size):
  """`calibration_data` as batches keyed by the serving signature's input names, cast to its dtypes.

  Args:
    data: the `calibration_data` argument.
    signature_for: callable(raw batches) -> the serving signature's TensorSpec structure, or None.
    max_batches, max_batch_size: as `batches_from`.

  Returns:
    ([{input name: array}], the casts' manifest entries).

  Raises:
    ValueError: naming `calibration_data`, when its structure cannot be matched to the inputs by name.
  """
  raw = batches_from(data, max_batches, max_batch_size)
  signature = signature_for(raw)
  if not raw or signature is None:
    return [], []
  report = by_name.CastReport()
  return batches_by_name(signature, raw, argument="calibration_data", report=report), report.entries()
