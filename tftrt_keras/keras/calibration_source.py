"""`calibration_data=`: what a user may give instead of captured validation batches, and its batches."""

import numpy as np

from tftrt_keras.keras.capture import unpack_inputs


def is_calibration_source(data):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if isinstance(data, tf.data.Dataset) or isinstance(data, np.ndarray):
    return True
  if isinstance(data, dict):
    return all(isinstance(v, np.ndarray) for v in data.values())
  if isinstance(data, (list, tuple)):
    return all(isinstance(v, np.ndarray) for v in data)
  return False


def batches_from(data, max_batches, max_batch_size):
  """Turns `calibration_data` into at most `max_batches` input batches (structures of numpy arrays)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if isinstance(data, tf.data.Dataset):
    return [tf.nest.map_structure(np.asarray, unpack_inputs(element))
            for element in data.take(max_batches).as_numpy_iterator()]
  size = max_batch_size or 32
  total = len(tf.nest.flatten(data)[0])
  starts = range(0, total, size)
  return [tf.nest.map_structure(lambda a, s=s: a[s:s + size], data) for s in list(starts)[:max_batches]]
