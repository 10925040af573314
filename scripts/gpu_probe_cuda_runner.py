"""On a machine with an NVIDIA GPU and cuda-python, without TensorFlow or TensorRT: what `cuda_devices` finds and
the `trt` runner's device-memory round trip on device 0, printed as JSON.

    PYTHONPATH=. python scripts/gpu_probe_cuda_runner.py [out.json]

It runs the library's own code: `cuda_devices.list_gpus`/`set_device`, `cuda_runner.CudaPythonMemory` (stream,
cudaMalloc, host-to-device and device-to-host copies, synchronize, free) and `cuda_runner.TensorRTExecutor`'s
buffer handling (allocate per tensor, grow for a larger batch, copy in, copy out). No TensorRT is needed: where
TensorRT would execute the engine, `_CopyEngine` copies the input buffer to the output buffer on the same stream
(cudaMemcpyAsync device to device), so what comes back proves the copy in, the addresses and the copy out.
Exits 1 if any check fails.
"""

import json
import os
import sys

import numpy as np

from tftrt_keras.formats.tensorrt import cuda_devices, cuda_runner
from tftrt_keras.formats.tensorrt.binding import TensorSpec, numpy_dtype


class _CopyEngine:
  """Stands in for TensorRT's engine: output = input, by a device-to-device copy on the runner's stream."""

  def __init__(self, memory, dtype):
    self.memory = memory
    self.inputs = [TensorSpec("x", dtype, (None, 4))]
    self.outputs = [TensorSpec("y", dtype, (None, 4))]
    self.profile = {"x": {"min": [1, 4], "opt": [8, 4], "max": [64, 4]}}
    self.addresses, self.shape, self.closed = {}, None, False

  def set_input_shape(self, name, shape):
    self.shape = tuple(shape)

  def output_shape(self, name):
    return self.shape

  def set_tensor_address(self, name, address):
    self.addresses[name] = address

  def execute_async(self, stream_handle):
    rt = cuda_devices.runtime()
    nbytes = int(np.prod(self.shape)) * numpy_dtype(self.inputs[0].dtype).itemsize
    cuda_devices.check(rt.cudaMemcpyAsync(self.addresses["y"], self.addresses["x"], nbytes,
                                          rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice, stream_handle),
                       "cudaMemcpyAsync(device to device)")

  def close(self):
    self.closed = True


def main(argv):
  report = {"cuda_python": cuda_devices.cuda_python_version(), "checks": {}}
  rt = cuda_devices.runtime()
  report["driver_version"] = rt.cudaDriverGetVersion()[1]
  report["runtime_version"] = rt.cudaRuntimeGetVersion()[1]
  gpus = cuda_devices.list_gpus()
  report["gpus"] = [gpu.to_json() for gpu in gpus]
  checks = report["checks"]
  cuda_devices.set_device(0)

  memory = cuda_runner.CudaPythonMemory()
  host = np.arange(1 << 16, dtype="float32") * 0.5
  back = np.zeros_like(host)
  address = memory.alloc(host.nbytes)
  memory.to_device(address, host)
  memory.to_host(back, address)
  memory.synchronize()
  memory.free(address)
  checks["memory_round_trip_256KiB"] = bool(np.array_equal(back, host))

  executor = cuda_runner.TensorRTExecutor(_CopyEngine(memory, "float32"), memory)
  sizes = []
  for batch in (1, 8, 3, 64):  # grows at 8 and 64, reuses at 3
    x = np.random.default_rng(batch).normal(size=(batch, 4)).astype("float32")
    y = executor.run({"x": x})["y"]
    sizes.append({"batch": batch, "equal": bool(np.array_equal(x, y)),
                  "buffer_bytes": {n: c for n, (_, c) in executor._buffers.items()}})  # pylint: disable=protected-access
  checks["executor_round_trip_every_batch"] = all(s["equal"] for s in sizes)
  report["executor_batches"] = sizes
  engine = executor.engine
  executor.close()
  checks["executor_closed_engine_and_freed"] = engine.closed and not executor._buffers  # pylint: disable=protected-access

  try:  # a bfloat16 engine's buffers: the dtype the runner reads as "bfloat16" (ml_dtypes)
    memory = cuda_runner.CudaPythonMemory()
    bf16 = cuda_runner.TensorRTExecutor(_CopyEngine(memory, "bfloat16"), memory)
    x = np.linspace(-2, 2, 32).astype(numpy_dtype("bfloat16")).reshape(8, 4)
    y = bf16.run({"x": x})["y"]
    checks["bfloat16_round_trip"] = bool(np.array_equal(x.view("uint16"), y.view("uint16")))
    bf16.close()
  except Exception as err:  # pylint: disable=broad-except
    checks["bfloat16_round_trip"] = f"{type(err).__name__}: {err}"

  try:
    memory = cuda_runner.CudaPythonMemory()
    memory.alloc(1 << 50)  # 1 PiB: CUDA's own refusal, in the library's words
    report["huge_alloc"] = "allocated?!"
  except cuda_devices.CudaUnavailable as err:
    report["huge_alloc"] = str(err)
  checks["huge_alloc_refused_with_cuda_error"] = report["huge_alloc"].startswith(
      f"cudaMalloc({1 << 50}) failed: cudaErrorMemoryAllocation")
  memory.close()

  text = json.dumps(report, indent=1, sort_keys=True)
  print(text)
  if len(argv) > 1:
    with open(argv[1], "w") as f:
      f.write(text + "\n")
  failed = [name for name, ok in checks.items() if ok is not True]
  print("FAILED: " + ", ".join(failed) if failed else f"ALL {len(checks)} CHECKS PASSED", file=sys.stderr)
  return 1 if failed else 0


if __name__ == "__main__":
  os.environ.setdefault("CUDA_MODULE_LOADING", "LAZY")
  sys.exit(main(sys.argv))
