"""Running a TensorRT plan: device memory and a stream from cuda-python (or pycuda, on request), the engine from
`build`, names, dtypes and shapes from `binding`.

cuda-python is the default (wheels, imports without a driver); pycuda only where asked for and importable.
"""

from absl import logging

from tftrt_keras.formats.tensorrt import cuda_devices
from tftrt_keras.formats.tensorrt.binding import EngineRunner, output_array

CUDA_PYTHON = "cuda-python"
PYCUDA = "pycuda"
CUDA_BINDINGS = (CUDA_PYTHON, PYCUDA)


class CudaPythonMemory:
  """Device buffers and one stream through `cuda.bindings.runtime`, on the current device.

  Args:
    stream: a `cudaStream_t` to run on (not destroyed by `close`); None creates one.

  Raises:
    CudaUnavailable: cuda-python is missing, or no stream can be created (no driver, no device).
  """

  binding = CUDA_PYTHON

  def __init__(self, stream=None):
    self._rt = cuda_devices.runtime()
    self._owns_stream = stream is None
    self._stream = cuda_devices.check(self._rt.cudaStreamCreate(), "cudaStreamCreate") if stream is None else stream

  @property
  def stream_handle(self):
    return int(self._stream)

  def alloc(self, nbytes):
    return int(cuda_devices.check(self._rt.cudaMalloc(nbytes), f"cudaMalloc({nbytes})"))

  def free(self, address):
    cuda_devices.check(self._rt.cudaFree(address), "cudaFree")

  def to_device(self, address, array):
    cuda_devices.check(self._rt.cudaMemcpyAsync(address, array.ctypes.data, array.nbytes,
                                                self._rt.cudaMemcpyKind.cudaMemcpyHostToDevice, self._stream),
                       "cudaMemcpyAsync(host to device)")

  def to_host(self, array, address):
    cuda_devices.check(self._rt.cudaMemcpyAsync(array.ctypes.data, address, array.nbytes,
                                                self._rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, self._stream),
                       "cudaMemcpyAsync(device to host)")

  def synchronize(self):
    cuda_devices.check(self._rt.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")

  def close(self):
    if self._stream is not None and self._owns_stream:
      cuda_devices.check(self._rt.cudaStreamDestroy(self._stream), "cudaStreamDestroy")
    self._stream = None


class PycudaMemory:
  """The same calls through pycuda, on the device's primary context (the one TensorRT's runtime API uses)."""

  binding = PYCUDA

  def __init__(self, device=0):
    import pycuda.driver as driver  # pylint: disable=g-import-not-at-top
    self._driver = driver
    driver.init()
    self._context = driver.Device(int(device)).retain_primary_context()
    self._context.push()
    self._stream = driver.Stream()
    self._allocations = {}

  @property
  def stream_handle(self):
    return self._stream.handle

  def alloc(self, nbytes):
    allocation = self._driver.mem_alloc(nbytes)
    self._allocations[int(allocation)] = allocation
    return int(allocation)

  def free(self, address):
    self._allocations.pop(address).free()

  def to_device(self, address, array):
    self._driver.memcpy_htod_async(address, array, self._stream)

  def to_host(self, array, address):
    self._driver.memcpy_dtoh_async(array, address, self._stream)

  def synchronize(self):
    self._stream.synchronize()

  def close(self):
    if self._context is not None:
      self._stream = None
      self._context.pop()
      self._context = None


def pycuda_importable():
  try:
    import pycuda.driver  # pylint: disable=g-import-not-at-top,unused-import
  except Exception:  # pylint: disable=broad-except
    return False  # ImportError, or the OSError of a pycuda built against a driver that is not there
  return True


def open_memory(cuda_binding=CUDA_PYTHON, device=0):
  """Device memory on `device` through `cuda_binding`; pycuda only where asked for and importable."""
  if cuda_binding == PYCUDA:
    if pycuda_importable():
      return PycudaMemory(device)
    logging.warning("tftrt_keras: cuda_binding='pycuda' was asked for but pycuda does not import here; using "
                    "cuda-python")
  cuda_devices.set_device(device)
  return CudaPythonMemory()


class TensorRTExecutor:
  """Runs a `build.LoadedEngine` on host arrays: copy in, execute, copy out, wait.

  Device buffers are kept per tensor and grown when a larger batch comes; shapes and addresses are set on every
  call, so calls prepared for different batch sizes can alternate (as verification's timing does).
  """

  def __init__(self, engine, memory):
    self.engine = engine
    self.memory = memory
    self.inputs, self.outputs, self.profile = engine.inputs, engine.outputs, engine.profile
    self._buffers = {}  # name -> (address, capacity in bytes)

  def _buffer(self, name, nbytes):
    nbytes = max(int(nbytes), 1)  # a zero-size tensor still needs a valid address
    address, capacity = self._buffers.get(name, (None, 0))
    if nbytes > capacity:
      if address is not None:
        self.memory.free(address)
        del self._buffers[name]
      address, capacity = self.memory.alloc(nbytes), nbytes
      self._buffers[name] = (address, capacity)
    return address

  def run(self, arrays):
    for name, array in arrays.items():
      self.engine.set_input_shape(name, array.shape)
      address = self._buffer(name, array.nbytes)
      self.memory.to_device(address, array)
      self.engine.set_tensor_address(name, address)
    results = {}
    for spec in self.outputs:
      host = output_array(spec, self.engine.output_shape(spec.name))
      self.engine.set_tensor_address(spec.name, self._buffer(spec.name, host.nbytes))
      results[spec.name] = host
    self.engine.execute_async(self.memory.stream_handle)
    for name, host in results.items():
      self.memory.to_host(host, self._buffers[name][0])
    self.memory.synchronize()
    return results

  def close(self):
    for address, _ in self._buffers.values():
      self.memory.free(address)
    self._buffers = {}
    self.engine.close()
    self.memory.close()


def open_plan_runner(plan_path, signature=None, cuda_binding=CUDA_PYTHON, device=0, edition=None,
                     host_code_allowed=False):
  """An `EngineRunner` on the plan at `plan_path`, returning outputs under `signature`'s names.

  Args:
    plan_path: a `model.plan`.
    signature: the signature outputs are returned under, or None for the engine's own names.
    cuda_binding: CUDA_PYTHON or PYCUDA (see `open_memory`).
    device: the GPU to run on.
    edition: `build.TENSORRT` (default) or `build.TENSORRT_RTX`.
    host_code_allowed: run a version-compatible plan's lean runtime (trusted plans only: `compat`).

  Raises:
    CudaUnavailable: no usable GPU or CUDA binding.
    RuntimeError: TensorRT could not load the plan (e.g. built for another GPU or TensorRT version).
  """
  from tftrt_keras.formats.tensorrt import build as tensorrt_build  # pylint: disable=g-import-not-at-top
  memory = open_memory(cuda_binding, device)
  try:
    with open(plan_path, "rb") as f:
      engine = tensorrt_build.LoadedEngine(f.read(), edition or tensorrt_build.TENSORRT, host_code_allowed)
  except BaseException:
    memory.close()
    raise
  return EngineRunner(TensorRTExecutor(engine, memory), signature)
