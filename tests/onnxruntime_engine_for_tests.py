"""TEST DOUBLE. An ONNX Runtime session standing in for a TensorRT engine, for tests only; the product never uses it.

It is an executor for `tftrt_keras.formats.tensorrt.binding.EngineRunner` -- the same runner the TensorRT plan
runs behind (`cuda_runner.open_plan_runner`) -- so the name, dtype, shape and profile logic between a
signature's feeds and an engine is exercised for real on machines without a GPU. Its optimization profile is
computed by `tensorrt_profile.engine_profile`, as the TensorRT build computes the one it gives TensorRT; like an
engine it refuses shapes outside that profile (in the shared binding code, before ONNX Runtime is called).
"""

from tftrt_keras.formats.tensorrt.binding import TensorSpec

# ONNX Runtime's type strings -> numpy dtype names.
_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
              "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(int32)": "int32", "tensor(int64)": "int64",
              "tensor(bool)": "bool"}


def _spec(arg):
  shape = None if arg.shape is None else tuple(d if isinstance(d, int) and d >= 0 else None for d in arg.shape)
  return TensorSpec(arg.name, _ORT_TYPES[arg.type], shape)


class OnnxRuntimeEngineForTests:
  """TEST DOUBLE for `tftrt_keras.formats.tensorrt.build.LoadedEngine` + `cuda_runner.TensorRTExecutor`.

  Args:
    onnx_path: the ONNX model the "engine" was built from.
    profile: {input name: {"min", "opt", "max"}}, as the TensorRT build would give TensorRT.
  """

  def __init__(self, onnx_path, profile):
    import onnxruntime  # pylint: disable=g-import-not-at-top
    self._session = onnxruntime.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    self.inputs = [_spec(arg) for arg in self._session.get_inputs()]
    self.outputs = [_spec(arg) for arg in self._session.get_outputs()]
    self.profile = profile
    self.calls = 0

  def run(self, arrays):
    self.calls += 1
    names = [spec.name for spec in self.outputs]
    return dict(zip(names, self._session.run(names, arrays)))

  def close(self):
    self._session = None
