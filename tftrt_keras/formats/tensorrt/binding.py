"""Binding a signature's feeds to an engine's tensors by name, and its outputs back. Pure: numpy only.

Names, dtypes and shapes inside the profile are checked here, apart from any device, so this runs under test
without a GPU (ONNX Runtime stands in for the engine).
"""

import dataclasses

import numpy as np

from tftrt_keras.formats.base import Runner
from tftrt_keras.formats.tensorrt.profile import in_profile


@dataclasses.dataclass(frozen=True)
class TensorSpec:
  """One engine input or output: numpy dtype name and shape (None for a dynamic dimension)."""
  name: str
  dtype: str
  shape: tuple

  def to_json(self):
    return {"name": self.name, "dtype": self.dtype,
            "shape": None if self.shape is None else [None if d is None else int(d) for d in self.shape]}


def numpy_dtype(name):
  """np.dtype of a dtype name, "bfloat16" and the float8/int4 names too (registered by ml_dtypes, which
  TensorFlow and JAX install); raises TypeError for a name neither knows."""
  try:
    return np.dtype(name)
  except TypeError:
    import ml_dtypes  # pylint: disable=g-import-not-at-top,unused-import  (registers its dtypes with numpy)
    return np.dtype(name)


def _kind(dtype):
  # ml_dtypes' floats (bfloat16, float8_*) have numpy kind "V": they are floats to a feed.
  return "f" if dtype.kind == "V" and "float" in dtype.name else dtype.kind


class BindingError(ValueError):
  """Feeds that do not fit the engine: a missing or unknown name, a dtype or a shape it cannot take."""


def match_outputs(engine_outputs, signature_outputs):
  """{engine output name: signature output name}: by name, without a `:0`, or single to single.

  Raises:
    BindingError: the names cannot be matched (both lists are in the message).
  """
  engine_names = [spec.name for spec in engine_outputs]
  if signature_outputs is None:
    return {name: name for name in engine_names}
  wanted = [spec["name"] for spec in signature_outputs]
  mapping = {}
  for name in engine_names:
    if name in wanted:
      mapping[name] = name
    elif name.split(":")[0] in wanted:
      mapping[name] = name.split(":")[0]
  if len(engine_names) == 1 and len(wanted) == 1 and not mapping:
    mapping = {engine_names[0]: wanted[0]}
  if sorted(mapping.values()) != sorted(wanted):
    raise BindingError(f"the engine's outputs {engine_names} do not match the signature's outputs {wanted}")
  return mapping


def castable(source, target):
  """Whether values of dtype `source` may be given as `target`: a wider or narrower type of the same kind
  (float64/float32/float16; int64/int32), never across kinds (int to float would hide a wrong feed)."""
  source, target = numpy_dtype(source), numpy_dtype(target)
  if "V" in (source.kind, target.kind):
    return _kind(source) == _kind(target) == "f"
  return source.kind == target.kind and np.can_cast(source, target, casting="same_kind")


def output_array(spec, shape):
  """An empty host array for output `spec` at the `shape` the engine reports for the bound inputs.

  Raises:
    BindingError: the shape still has an unresolved dimension (a data-dependent output size).
  """
  shape = tuple(int(d) for d in shape)
  if any(d < 0 for d in shape):
    raise BindingError(f"output `{spec.name}` has a data-dependent shape {shape}; this runner needs output shapes "
                       "that follow from the input shapes")
  return np.empty(shape, dtype=numpy_dtype(spec.dtype))


class EngineBinding:
  """Feeds in, outputs out, for one engine.

  Args:
    inputs, outputs: the engine's `TensorSpec`s.
    profile: {input name: {"min": [...], "max": [...]}} the engine serves.
    signature: the signature outputs are returned under, or None for the engine's own names and dtypes.
  """

  def __init__(self, inputs, outputs, profile, signature=None):
    self.inputs = list(inputs)
    self.outputs = list(outputs)
    self.profile = profile
    self._output_names = match_outputs(self.outputs, signature["outputs"] if signature else None)
    self._output_dtypes = {spec["name"]: spec["dtype"] for spec in signature["outputs"]} if signature else {}

  def engine_inputs(self, feeds):
    """{engine input name: C-contiguous array in the engine's dtype} for `feeds` ({name: array-like}).

    Raises:
      BindingError: a missing or unexpected name, a dtype of another kind (see `castable`), another rank, another
        static size, or a dimension outside the profile.
    """
    names = [spec.name for spec in self.inputs]
    missing = [n for n in names if n not in feeds]
    unknown = sorted(set(feeds) - set(names))
    if missing or unknown:
      raise BindingError(f"the engine takes inputs {names}; missing {missing}, unknown {unknown}")
    arrays = {}
    for spec in self.inputs:
      array = np.asarray(feeds[spec.name])
      if array.dtype != numpy_dtype(spec.dtype):
        if not castable(array.dtype, spec.dtype):
          raise BindingError(f"input `{spec.name}` is {array.dtype.name}; the engine takes {spec.dtype}")
        array = array.astype(numpy_dtype(spec.dtype))
      if spec.shape is not None:
        if len(array.shape) != len(spec.shape):
          raise BindingError(f"input `{spec.name}` has shape {array.shape}; the engine takes rank {len(spec.shape)} "
                             f"{self._shape_text(spec.shape)}")
        for axis, (size, dim) in enumerate(zip(array.shape, spec.shape)):
          if dim is not None and size != dim:
            raise BindingError(f"input `{spec.name}` has shape {array.shape}; the engine takes "
                               f"{self._shape_text(spec.shape)} (dimension {axis} must be {dim})")
      if spec.name in self.profile:
        problem = in_profile(array.shape, self.profile[spec.name])
        if problem:
          raise BindingError(f"input `{spec.name}` has shape {array.shape}: {problem}; serve it in smaller pieces "
                             "or rebuild with a larger max_batch_size")
      arrays[spec.name] = np.ascontiguousarray(array)
    return arrays

  @staticmethod
  def _shape_text(shape):
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"

  def signature_outputs(self, results):
    """{signature output name: array} from {engine output name: array}, cast back to the signature's dtypes
    (an FP16 engine's float16 output comes back float32, as the normal export returns it)."""
    outputs = {}
    for engine_name, name in self._output_names.items():
      value = np.asarray(results[engine_name])
      dtype = self._output_dtypes.get(name)
      if dtype and value.dtype != numpy_dtype(dtype) and castable(value.dtype, dtype):
        value = value.astype(numpy_dtype(dtype))
      outputs[name] = value
    return outputs


class EngineRunner(Runner):
  """A `Runner` on an executor: an object with `inputs`, `outputs`, `profile` (see `EngineBinding`), `run(arrays)`
  returning {engine output name: host array} after the result is on the host, and `close()`."""

  def __init__(self, executor, signature=None):
    self.executor = executor
    self.binding = EngineBinding(executor.inputs, executor.outputs, executor.profile, signature)

  def prepared_call(self, feeds):
    arrays = self.binding.engine_inputs(feeds)
    return lambda: self.binding.signature_outputs(self.executor.run(arrays))

  def close(self):
    if self.executor is not None:
      self.executor.close()
      self.executor = None
