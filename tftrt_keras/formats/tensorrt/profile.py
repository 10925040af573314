"""The optimization profile a TensorRT engine is built with, from what the export captured. Pure: no TensorRT.

The batch dimension runs from 1 to `max_batch_size` (or the largest captured batch), tuned for the batch size
seen most; other dynamic dimensions span the range the samples showed, tuned for the value seen most.
"""

import collections


class ProfileError(ValueError):
  """No profile can be made from what the export has (e.g. a dynamic non-batch dimension and no samples)."""


def most_seen(values):
  """The value seen most often; a tie goes to the larger value (an engine tuned bigger still serves smaller)."""
  counts = collections.Counter(values)
  return max(counts, key=lambda value: (counts[value], value))


def batch_range(batch_sizes, max_batch_size=None):
  """(1, the batch size seen most but at most the max, the max) of the batch dimension.

  Args:
    batch_sizes: sizes of the captured batches (may be empty).
    max_batch_size: the largest batch the engine must serve; None: the largest captured batch (1 without any).
  """
  seen = [int(size) for size in batch_sizes or () if size]
  largest = int(max_batch_size) if max_batch_size else max(seen, default=1)
  opt = min(most_seen(seen), largest) if seen else largest
  return 1, opt, largest


def is_static(dim):
  """A dimension of known size (ONNX model.json writes None for a dynamic one; TensorRT writes -1)."""
  return isinstance(dim, int) and not isinstance(dim, bool) and dim >= 0


def _sample_shapes(value):
  """Per-sample shapes (without the sample axis) of one input's captured samples: an array, or a list of
  arrays whose non-batch dimensions may differ (ragged captures)."""
  arrays = value if isinstance(value, (list, tuple)) else [value]
  return [tuple(int(d) for d in getattr(array, "shape", ())[1:]) for array in arrays]


def input_profile(spec, batch, samples=None):
  """{"min": [...], "opt": [...], "max": [...]} of one input.

  Args:
    spec: {"name", "shape"} (shape None for unknown rank: taken from the samples).
    batch: (min, opt, max) of the batch dimension (see `batch_range`).
    samples: this input's captured samples, or None.

  Raises:
    ProfileError: a dynamic dimension no sample sizes, or samples that contradict a static dimension.
  """
  name, shape = spec["name"], spec.get("shape")
  seen = _sample_shapes(samples) if samples is not None else []
  if shape is None:
    if not seen:
      raise ProfileError(f"input `{name}` has an unknown rank and the export captured no samples of it: give the "
                         "model's input a shape, or pass calibration data")
    shape = [None] * (len(seen[0]) + 1)
  if any(len(s) != len(shape) - 1 for s in seen):
    raise ProfileError(f"input `{name}` has rank {len(shape)} in the model but its captured samples have shapes "
                       f"{sorted({(None,) + s for s in seen})}")
  low, opt, high = [], [], []
  for axis, dim in enumerate(shape):
    if is_static(dim):
      values = {s[axis - 1] for s in seen} if axis else set()
      if values - {dim}:
        raise ProfileError(f"input `{name}` dimension {axis} is {dim} in the model but the captured samples have "
                           f"{sorted(values)}")
      low.append(dim), opt.append(dim), high.append(dim)
    elif axis == 0:
      low.append(batch[0]), opt.append(batch[1]), high.append(batch[2])
    else:
      values = [s[axis - 1] for s in seen]
      if not values:
        raise ProfileError(f"input `{name}` dimension {axis} is dynamic in the model and the export captured no "
                           "samples to size it: give the model a static size there, or pass calibration data")
      low.append(min(values)), opt.append(most_seen(values)), high.append(max(values))
  return {"min": low, "opt": opt, "max": high}


def engine_profile(inputs, batch_sizes, max_batch_size=None, samples=None):
  """{input name: {"min", "opt", "max"}} for every input of a model (static inputs: min = opt = max).

  Args:
    inputs: [{"name", "dtype", "shape"}] as in the ONNX variant's `model.json`.
    batch_sizes: `BuildJob.calibration_batch_sizes`.
    max_batch_size: `ConversionOptions.max_batch_size` (None: the largest captured batch).
    samples: `BuildJob.calibration_samples()` or None.

  Raises:
    ProfileError: see `input_profile`.
  """
  batch = batch_range(batch_sizes, max_batch_size)
  samples = samples or {}
  return {spec["name"]: input_profile(spec, batch, samples.get(spec["name"])) for spec in inputs}


def in_profile(shape, profile):
  """None when `shape` is inside `profile` ({"min","max"}), else a phrase saying which dimension is not."""
  if len(shape) != len(profile["min"]):
    return f"rank {len(shape)} instead of {len(profile['min'])}"
  for axis, (size, low, high) in enumerate(zip(shape, profile["min"], profile["max"])):
    if not low <= size <= high:
      what = "batch size" if axis == 0 else f"dimension {axis}"
      span = f"{low}" if low == high else f"{low}..{high}"
      return f"{what} {size} is outside the engine's profile ({span})"
  return None
