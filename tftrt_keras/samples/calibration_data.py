"""Calibration and verification samples on disk: an `.npz` (never pickle), one array per signature input,
keyed by input name, samples along axis 0."""

import os
import zipfile

import numpy as np

from tftrt_keras.errors import invalid_argument
from tftrt_keras.samples import by_name


def save_samples(path, arrays):
  """Writes `{input_name: array}` to `path` atomically (temp file, then rename)."""
  tmp = path + ".tmp.npz"
  with open(tmp, "wb") as f:
    np.savez(f, **{name: _without_objects(value) for name, value in arrays.items()})
  os.replace(tmp, path)


def _without_objects(value):
  """String tensors arrive as object arrays of bytes, which `np.savez` would pickle: store them as fixed-width
  bytes instead (numpy drops trailing NUL bytes there; serialized tf.Examples are padded against that)."""
  value = np.asarray(value)
  return value.astype(np.bytes_) if value.dtype == object else value


def load_samples(path, argument="calibration_data"):
  """Reads an `.npz` written by `save_samples` (or by a user); refuses pickled object arrays."""
  try:
    with np.load(path, allow_pickle=False) as data:
      return {name: data[name] for name in data.files}
  except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
    raise invalid_argument(argument, str(path), "a readable .npz file with one array per model input",
                           hint=f"Reading it failed: {type(err).__name__}: {err}") from err


def num_samples(arrays):
  return len(next(iter(arrays.values()))) if arrays else 0


def check_against_signature(arrays, signature, argument="calibration_data"):
  """Raises ValueError unless `arrays` has exactly the signature's inputs (by name, no other key) with
  compatible dtypes and shapes."""
  by_name.key_by_name(arrays, [t.name for t in signature.inputs], argument=argument)
  counts = {name: len(np.asarray(value)) if np.ndim(value) else 0 for name, value in arrays.items()}
  if len(set(counts.values())) != 1 or 0 in counts.values():
    raise invalid_argument(argument, f"sample counts {counts}", "the same, non-zero number of samples for every input")
  for tensor in signature.inputs:
    value = np.asarray(arrays[tensor.name])
    if not _dtype_compatible(value.dtype, tensor.dtype):
      raise invalid_argument(argument, f"{tensor.name}: dtype {value.dtype}",
                             f"{tensor.name}: dtype {tensor.dtype} as in the signature")
    if tensor.shape is not None:
      if value.ndim != len(tensor.shape) or any(
          want is not None and got != want for got, want in zip(value.shape[1:], tensor.shape[1:])):
        raise invalid_argument(argument, f"{tensor.name}: shape {value.shape}",
                               f"{tensor.name}: shape {tensor.shape} (samples along axis 0)")


def _dtype_compatible(numpy_dtype, tf_dtype_name):
  if tf_dtype_name == "string":
    return numpy_dtype.kind in ("S", "U", "O")
  return np.dtype(numpy_dtype).name == tf_dtype_name


def batches(arrays, batch_size):
  """Splits samples into `{name: array}` batches of at most `batch_size` samples."""
  total = num_samples(arrays)
  return [{name: value[start:start + batch_size] for name, value in arrays.items()}
          for start in range(0, total, batch_size)]
