"""The knobs of one export, validated once, shared by every entry point and sent to the worker as JSON."""

import dataclasses
import numbers

from tftrt_keras.argument_errors import invalid_argument
from tftrt_keras.precisions import PRECISIONS, normalize_precisions

DEFAULT_WORKSPACE_BYTES = 1 << 30
# Where the worker finds the converter. A backend is any `module:attribute` that follows the interface in
# `tftrt_keras.conversion_backend`; TF-TRT is the only one the product ships.
DEFAULT_BACKEND = "tftrt_keras.trt_convert:TfTrtBackend"


def _check_positive_int(name, value, *, allow_none):
  if value is None and allow_none:
    return
  if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
    expected = "a positive integer" + (" or None" if allow_none else "")
    raise invalid_argument(name, value, expected)


def _check_positive_number(name, value, *, allow_none):
  if value is None and allow_none:
    return
  if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value > 0:
    expected = "a positive number (seconds)" + (" or None" if allow_none else "")
    raise invalid_argument(name, value, expected)


@dataclasses.dataclass(frozen=True)
class ConversionOptions:
  """What to build and how; every field is checked in `__post_init__`.

  Attributes:
    precisions: subset of ("FP32", "FP16", "INT8"); one TF-TRT variant each.
    max_batch_size: largest batch the engines must serve. TF2 has no static batch size: it becomes the
      upper end of the dynamic-shape profile the engines are prebuilt for. None: the largest captured batch.
    max_workspace_size_bytes: TensorRT builder workspace per engine.
    minimum_segment_size: smallest subgraph TF-TRT replaces with an engine.
    maximum_cached_engines: engines kept per TRT op (one per input-shape profile).
    require_tensorrt: fail before any work when TF-TRT cannot run, instead of recording skipped variants.
    gpu_memory_limit_mb: TensorFlow's share of GPU memory inside the worker; the rest of the device is left
      to TensorRT (the TensorFlow/TensorRT memory split). None: TensorFlow grows on demand.
    timeout_seconds: a worker still running after this long is killed and its export recorded as failed.
    backend: `module:attribute` of the conversion backend.
  """

  precisions: tuple = PRECISIONS
  max_batch_size: int = None
  max_workspace_size_bytes: int = DEFAULT_WORKSPACE_BYTES
  minimum_segment_size: int = 3
  maximum_cached_engines: int = 1
  require_tensorrt: bool = False
  gpu_memory_limit_mb: int = None
  timeout_seconds: float = None
  backend: str = DEFAULT_BACKEND

  def __post_init__(self):
    object.__setattr__(self, "precisions", normalize_precisions(self.precisions))
    _check_positive_int("max_batch_size", self.max_batch_size, allow_none=True)
    _check_positive_int("max_workspace_size_bytes", self.max_workspace_size_bytes, allow_none=False)
    _check_positive_int("minimum_segment_size", self.minimum_segment_size, allow_none=False)
    _check_positive_int("maximum_cached_engines", self.maximum_cached_engines, allow_none=False)
    _check_positive_int("gpu_memory_limit_mb", self.gpu_memory_limit_mb, allow_none=True)
    _check_positive_number("timeout_seconds", self.timeout_seconds, allow_none=True)
    if not isinstance(self.require_tensorrt, bool):
      raise invalid_argument("require_tensorrt", self.require_tensorrt, "True or False")
    if not isinstance(self.backend, str) or ":" not in self.backend:
      raise invalid_argument("backend", self.backend, "a 'module:attribute' string")

  def to_json(self):
    data = dataclasses.asdict(self)
    data["precisions"] = list(self.precisions)
    return data

  @classmethod
  def from_json(cls, data):
    return cls(**data)
