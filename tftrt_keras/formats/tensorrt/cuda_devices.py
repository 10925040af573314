"""Which GPUs this process can see, asked through cuda-python's runtime bindings.

cuda-python imports without a driver; its calls then fail with CUDA's own error, which is what a user should read.
"""

import dataclasses

CUDA_PYTHON_INSTALL = "pip install cuda-python"
NO_DRIVER = " (no NVIDIA driver is loaded: this machine has no usable GPU)"


class CudaUnavailable(RuntimeError):
  """cuda-python is missing, or a CUDA runtime call failed (no driver, no device, out of memory, ...)."""


def runtime():
  """cuda-python's runtime module.

  Raises:
    CudaUnavailable: cuda-python (>= 12.6, which has `cuda.bindings`) is not installed.
  """
  try:
    from cuda.bindings import runtime as cuda_runtime  # pylint: disable=g-import-not-at-top
  except ImportError as err:
    raise CudaUnavailable(f"cuda-python is not installed ({err}): `{CUDA_PYTHON_INSTALL}`") from err
  return cuda_runtime


def cuda_python_version():
  """The installed cuda-python bindings' version, or None."""
  from importlib import metadata  # pylint: disable=g-import-not-at-top
  for dist in ("cuda-bindings", "cuda-python"):
    try:
      return metadata.version(dist)
    except metadata.PackageNotFoundError:
      continue
  return None


def check(result, call):
  """The values of a cuda-python call's `(error, *values)` result.

  Raises:
    CudaUnavailable: the call failed; the message names the call, CUDA's error name and its text.
  """
  rt = runtime()
  error, values = result[0], result[1:]
  if error != rt.cudaError_t.cudaSuccess:
    name = rt.cudaGetErrorName(error)[1]
    text = rt.cudaGetErrorString(error)[1]
    message = f"{call} failed: {_text(name)}: {_text(text)}"
    if error == rt.cudaError_t.cudaErrorInsufficientDriver:
      hint = driver_hint()
      # Without any driver CUDA's text ("driver version is insufficient") misleads; the hint says what is true.
      message = f"{call} failed: {_text(name)}{hint}" if hint == NO_DRIVER else message + hint
    raise CudaUnavailable(message)
  if not values:
    return None
  return values[0] if len(values) == 1 else values


def _text(value):
  return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


def driver_hint():
  """What to do about cudaErrorInsufficientDriver: no driver at all, or one older than the bindings."""
  rt = runtime()
  error, driver = rt.cudaDriverGetVersion()
  if error != rt.cudaError_t.cudaSuccess or not driver:
    return NO_DRIVER
  runtime_version = rt.cudaRuntimeGetVersion()[1]
  return (f" (the driver supports CUDA {driver // 1000}.{driver % 1000 // 10}, these bindings are for CUDA "
          f"{runtime_version // 1000}.{runtime_version % 1000 // 10}: `pip install \"cuda-python=={driver // 1000}.*\"`)")


@dataclasses.dataclass(frozen=True)
class Gpu:
  index: int
  name: str
  compute_capability: str  # "8.6"
  memory_mb: int

  def to_json(self):
    return dataclasses.asdict(self)


def list_gpus():
  """Every visible GPU ([] with a driver and no GPU).

  Raises:
    CudaUnavailable: cuda-python is missing, or CUDA cannot count devices (e.g. no driver).
  """
  rt = runtime()
  result = rt.cudaGetDeviceCount()
  if result[0] == rt.cudaError_t.cudaErrorNoDevice:
    return []
  count = check(result, "cudaGetDeviceCount")
  gpus = []
  for index in range(count):
    props = check(rt.cudaGetDeviceProperties(index), f"cudaGetDeviceProperties({index})")
    name = props.name
    name = name.split(b"\0", 1)[0].decode(errors="replace") if isinstance(name, bytes) else str(name)
    gpus.append(Gpu(index, name.strip(), f"{props.major}.{props.minor}", int(props.totalGlobalMem) // (1 << 20)))
  return gpus


def set_device(index):
  """Makes GPU `index` this thread's current device (TensorRT builds and runs on the current device)."""
  check(runtime().cudaSetDevice(int(index)), f"cudaSetDevice({index})")
