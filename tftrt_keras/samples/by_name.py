"""Samples keyed by the serving signature's input names, cast to its dtypes as Keras casts inputs in `fit`.

Every entry point turns its data into `{input name: array}` here: a dict by key, a list or tuple by position,
a single array to a single input; what cannot be matched is refused with both sides named. Lossy casts are
counted in a `CastReport`, shown in the manifest's calibration entry.
"""

import numpy as np

from tftrt_keras.errors import invalid_argument

# A float narrowed (float64 -> float32) counts as lost beyond this relative error: rounding alone stays under
# 2**-24 for normal values, so only overflow to inf and underflow to zero or subnormals get past it.
FLOAT_NARROWING_TOLERANCE = 1e-3


def leaf_names(expected):
  """The input names of an expected structure (a name, a list/tuple or dict of them, nested), in order."""
  if isinstance(expected, dict):
    return [n for key in expected for n in leaf_names(expected[key])]
  if isinstance(expected, (list, tuple)):
    return [n for item in expected for n in leaf_names(item)]
  return [expected]


class _Mismatch(Exception):
  """Raised inside the matching; turned into one `invalid_argument` that shows the whole data and model."""


def key_by_name(data, expected, *, argument="calibration_data", extra="error"):
  """Maps one batch of model inputs to `{input name: numpy array}`, in the order of `leaf_names(expected)`.

  Args:
    data: an array, a list/tuple of arrays (by position), a dict (by key), or a nesting of these.
    expected: an input name, a list/tuple of names, or a dict {key: name}, nested alike.
    argument: the argument named in the error.
    extra: "error", or "drop" for dict keys that name no input (Keras ignores them in `fit`).

  Raises:
    ValueError: the data cannot be matched by name (missing key, extra key, count mismatch).
  """
  out = {}
  try:
    _match(data, expected, out, extra)
  except _Mismatch as err:
    names = leaf_names(expected)
    how = " (a dict keyed by these names, or a list in this order)" if isinstance(expected, (list, tuple)) else ""
    raise invalid_argument(argument, describe(data), f"one array per model input, named {names}{how}",
                           hint=str(err)) from None
  return {name: out[name] for name in leaf_names(expected)}


def _match(data, expected, out, extra):
  if isinstance(expected, dict):
    if not isinstance(data, dict):
      raise _Mismatch(f"The model takes a dict keyed by {sorted(expected)}; got {describe(data)}.")
    _check_keys(data, list(expected), extra)
    for key in expected:
      _match(data[key], expected[key], out, extra)
  elif isinstance(expected, (list, tuple)):
    if isinstance(data, dict):
      names = leaf_names(expected)
      _check_keys(data, names, extra)
      for name in names:
        _match(data[name], name, out, extra)
    elif isinstance(data, (list, tuple)):
      if len(data) != len(expected):
        raise _Mismatch(f"{len(data)} arrays for {len(expected)} inputs.")
      for item, want in zip(data, expected):
        _match(item, want, out, extra)
    elif len(expected) == 1:
      _match(data, expected[0], out, extra)
    else:
      raise _Mismatch(f"one array for {len(expected)} inputs.")
  elif isinstance(data, dict):
    _check_keys(data, [expected], extra)
    _match(data[expected], expected, out, extra)
  elif isinstance(data, (list, tuple)):
    if len(data) != 1:
      raise _Mismatch(f"{len(data)} arrays for the one input {expected!r}.")
    _match(data[0], expected, out, extra)
  else:
    out[expected] = np.asarray(data)


def _check_keys(data, names, extra):
  missing = [n for n in names if n not in data]
  unknown = sorted(str(k) for k in data if k not in names)
  if missing or (unknown and extra != "drop"):
    parts = ([f"missing: {missing}"] if missing else []) + ([f"not model inputs: {unknown}"] if unknown else [])
    raise _Mismatch(f"Keys are matched to input names; {'; '.join(parts)}.")


def describe(data):
  """A short phrase for what a user passed: the keys of a dict, the length of a list, an array's shape."""
  if isinstance(data, dict):
    return f"arrays named {sorted(str(k) for k in data)}"
  if isinstance(data, (list, tuple)):
    return f"a {type(data).__name__} of {len(data)} arrays"
  return f"one array of shape {tuple(np.shape(data))}"


class CastReport:
  """What casting samples to the signature's dtypes did, summed over batches, per input."""

  def __init__(self):
    self._casts = {}  # name -> {"from", "to", "values", "lost": {what: count}}

  def add(self, name, source, target, values, lost):
    entry = self._casts.setdefault(name, {"from": source, "to": target, "values": 0, "lost": {}})
    entry["values"] += int(values)
    for what, count in lost.items():
      if count:
        entry["lost"][what] = entry["lost"].get(what, 0) + int(count)

  def entries(self):
    """[{"input", "from", "to", "values", "lost"}]: `lost` says what the cast lost, None when nothing."""
    return [{"input": name, "from": c["from"], "to": c["to"], "values": c["values"],
             "lost": "; ".join(f"{n} of {c['values']} values {what}" for what, n in c["lost"].items()) or None}
            for name, c in self._casts.items()]



def cast_warnings(entries):
  """One sentence per cast (a `CastReport.entries()` item) that lost information."""
  return [f"input {e['input']!r} cast from {e['from']} to {e['to']} as Keras does in fit: {e['lost']}"
          for e in entries if e["lost"]]


def cast_to_dtypes(arrays, dtypes, report=None, argument="calibration_data"):
  """Casts `{name: array}` to `{name: dtype name}` (TensorFlow names); names or dtypes not known are left as they are.

  Args:
    report: a `CastReport` to count the casts in (None: not counted).
    argument: the argument named in the error.

  Raises:
    ValueError: strings for a numeric input or numbers for a string input.
  """
  out = {}
  for name, value in arrays.items():
    value = np.asarray(value)
    target = _numpy_dtype(dtypes.get(name))
    if target is None or value.dtype == target:
      out[name] = value
      continue
    strings = (value.dtype.kind in "SUO", target.kind in "SUO")
    if strings[0] or strings[1]:
      if strings[0] and strings[1]:
        out[name] = value
        continue
      raise invalid_argument(argument, f"{name}: dtype {value.dtype}", f"{name}: dtype {dtypes[name]} as in the "
                             "signature", hint="Strings and numbers are not cast into each other.")
    with np.errstate(over="ignore", invalid="ignore"):  # counted below, not warned about
      cast = value.astype(target)
    if report is not None:
      report.add(name, value.dtype.name, target.name, value.size, _lost(value, cast, target))
    out[name] = cast
  return out


def _numpy_dtype(name):
  if name is None:
    return None
  if name == "string":
    return np.dtype(object)
  try:
    return np.dtype(name)
  except TypeError:
    return None


def _lost(value, cast, target):
  """{what was lost: how many values} for one cast."""
  if value.size == 0:
    return {}
  if target.kind == "b":
    return {"were neither 0 nor 1": np.count_nonzero((value != 0) & (value != 1))}
  if target.kind in "iu":
    info = np.iinfo(target)
    if value.dtype.kind == "f":
      finite = np.isfinite(value)
      inside = finite & (value >= info.min) & (value <= info.max)
      return {"were not finite": np.count_nonzero(~finite),
              f"were out of {target.name}'s range": np.count_nonzero(finite & ~inside),
              "had a fractional part (truncated)": np.count_nonzero(inside & (value != np.trunc(value)))}
    wide = value.astype(np.int64) if value.dtype.kind in "bu" and value.dtype.itemsize < 8 else value
    return {f"were out of {target.name}'s range": np.count_nonzero((wide < info.min) | (wide > info.max))}
  if value.dtype.kind in "iub":
    exact = cast.astype(np.float64) == value.astype(np.float64)
    return {f"are not exact in {target.name}": np.count_nonzero(~exact)}
  finite = np.isfinite(value)
  overflow = finite & ~np.isfinite(cast)
  with np.errstate(divide="ignore", invalid="ignore"):
    error = np.abs(cast.astype(np.float64) - value.astype(np.float64)) / np.abs(value.astype(np.float64))
  inexact = finite & ~overflow & (value != 0) & (error > FLOAT_NARROWING_TOLERANCE)
  return {f"overflowed {target.name}": np.count_nonzero(overflow),
          f"lost more than {FLOAT_NARROWING_TOLERANCE:g} relative precision (underflow)": np.count_nonzero(inexact)}


def adjust_ranks(arrays, shapes):
  """Adds or drops a trailing axis of 1 where a sample is one rank off its input's shape, as Keras does in `fit`.

  Args:
    arrays: {name: array} samples.
    shapes: {name: the signature's shape as a list, None for unknown dimensions}; names it lacks are left.
  """
  out = {}
  for name, value in arrays.items():
    shape = shapes.get(name)
    if shape is not None and value.ndim == len(shape) - 1 and shape[-1] == 1:
      value = value[..., np.newaxis]
    elif shape is not None and value.ndim == len(shape) + 1 and value.shape[-1] == 1:
      value = value[..., 0]
    out[name] = value
  return out


def samples_by_name(data, expected, dtypes, *, argument="calibration_data", extra="error", report=None,
                    shapes=None):
  """`key_by_name`, `cast_to_dtypes` then `adjust_ranks` (with `shapes`): one batch as the signature takes it."""
  cast = cast_to_dtypes(key_by_name(data, expected, argument=argument, extra=extra), dtypes, report, argument)
  return adjust_ranks(cast, shapes) if shapes else cast
