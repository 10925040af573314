"""The one module that talks to TensorRT: builds an engine from an ONNX file, and loads an engine to run it.

Nothing else in the library imports `tensorrt`; everything around these calls (profiles, caches, metadata,
binding feeds) is plain Python and runs under test on machines without TensorRT.

Precision comes from the ONNX model itself: FP16 types, INT8 as Q/DQ pairs. Where TensorRT has strongly typed
networks (9.1 and later; TensorRT 11 has nothing else) the network is created strongly typed and TensorRT
follows the model's types exactly; on TensorRT 8.6 the builder flag matching the variant's precision allows
those types instead (INT8 without a calibrator: the Q/DQ scales are in the model). Modelled on Polygraphy's
`backend/trt/loader.py` (NetworkFromOnnxPath, EngineBytesFromNetwork with its timing cache) and `runner.py`.
"""

import dataclasses
import json
import time

from absl import logging

from tftrt_keras.formats.base import VariantFailed
from tftrt_keras.formats.tensorrt.binding import TensorSpec

TENSORRT_INSTALL = ("`pip install tensorrt` (NVIDIA's wheels: TensorRT 10 for CUDA 12/13; needs an NVIDIA GPU and "
                    "driver), or run in an NVIDIA container such as nvcr.io/nvidia/tensorrt")
# A failed build's reason keeps TensorRT's last error lines, not its whole log.
ERROR_LINES_KEPT = 12


def import_tensorrt():
  import tensorrt  # pylint: disable=g-import-not-at-top
  return tensorrt


def tensorrt_version():
  """(version, None) when `tensorrt` imports, else (None, why not)."""
  try:
    return import_tensorrt().__version__, None
  except Exception as err:  # pylint: disable=broad-except
    # Not only ImportError: a wheel whose libnvinfer cannot load raises OSError.
    return None, f"{type(err).__name__}: {err}"


def _major(version):
  return int(str(version).split(".")[0])


def _collecting_logger(trt):
  """An ILogger that keeps TensorRT's warnings and errors (for a failed build's reason) and logs them."""

  class CollectingLogger(trt.ILogger):

    def __init__(self):
      trt.ILogger.__init__(self)
      self.errors, self.warnings = [], []

    def log(self, severity, msg):
      if severity in (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR):
        self.errors.append(msg)
        logging.error("TensorRT: %s", msg)
      elif severity == trt.ILogger.Severity.WARNING:
        self.warnings.append(msg)
        logging.warning("TensorRT: %s", msg)

    def error_text(self):
      lines = self.errors[-ERROR_LINES_KEPT:]
      return " | ".join(lines) if lines else "TensorRT logged no error"

  return CollectingLogger()


def _numpy_dtype(trt, dtype):
  try:
    import numpy as np  # pylint: disable=g-import-not-at-top
    return np.dtype(trt.nptype(dtype)).name
  except (TypeError, KeyError):
    return str(dtype).rsplit(".", 1)[-1].lower()  # bfloat16, fp8, int4: no numpy dtype


def _spec(trt, name, dtype, dims):
  try:
    shape = tuple(None if d < 0 else int(d) for d in dims)
  except ValueError:  # Dims of unknown rank (nbDims == -1) cannot be iterated
    shape = None
  return TensorSpec(name, _numpy_dtype(trt, dtype), shape)


@dataclasses.dataclass
class BuildSettings:
  """How to build one engine.

  Attributes:
    precision: the variant's precision (FP32/FP16/INT8); it selects builder flags only where TensorRT has no
      strongly typed networks.
    workspace_bytes: the builder's workspace memory pool limit.
    builder_optimization_level: 0-5 (TensorRT's default 3) or None for TensorRT's default.
    use_timing_cache: build with a timing cache (and return it).
    timing_cache: bytes of a trusted earlier cache (see `tensorrt_cache`), or None to start empty.
  """
  precision: str
  workspace_bytes: int
  builder_optimization_level: int = None
  use_timing_cache: bool = True
  timing_cache: bytes = None


@dataclasses.dataclass
class BuiltEngine:
  """A serialized engine and how it was built."""
  plan: bytes
  tensorrt_version: str
  strongly_typed: bool
  builder_flags: list
  inputs: list  # TensorSpec
  outputs: list
  timing_cache: bytes  # None without a timing cache
  timing_cache_status: str  # None, or why the given cache was not used
  warnings: list
  seconds: float


def _parser_errors(parser):
  errors = []
  for index in range(parser.num_errors):
    error = parser.get_error(index)
    where = getattr(error, "node_name", lambda: "")() or ""
    op = getattr(error, "node_operator", lambda: "")() or ""
    prefix = f"node {where} ({op}): " if where or op else ""
    errors.append(prefix + error.desc())
  return errors


def build_engine(onnx_path, settings, profile):
  """Builds a serialized engine from the ONNX model at `onnx_path`.

  Args:
    onnx_path: path of `model.onnx` (external weight files beside it are found by the parser).
    settings: `BuildSettings`.
    profile: {input name: {"min", "opt", "max"}} (see `tensorrt_profile.engine_profile`).

  Returns:
    A `BuiltEngine`.

  Raises:
    VariantFailed: TensorRT could not parse the model, accept the profile or options, or build an engine
      (unsupported layer, out of memory...); the message carries TensorRT's own error lines.
  """
  trt = import_tensorrt()
  logger = _collecting_logger(trt)
  builder = trt.Builder(logger)
  if not builder:
    raise VariantFailed(f"TensorRT could not create a builder: {logger.error_text()}")
  creation = trt.NetworkDefinitionCreationFlag
  strongly_typed = hasattr(creation, "STRONGLY_TYPED")
  flags = 0
  if _major(trt.__version__) < 10:
    flags |= 1 << int(creation.EXPLICIT_BATCH)  # 8.x default is implicit batch; 10 made it the only mode
  if strongly_typed:
    flags |= 1 << int(creation.STRONGLY_TYPED)
  network = builder.create_network(flags)
  parser = trt.OnnxParser(network, logger)
  if not parser.parse_from_file(onnx_path):
    raise VariantFailed("TensorRT could not parse the ONNX model: " + " | ".join(_parser_errors(parser)[-ERROR_LINES_KEPT:]
                                                                                 or [logger.error_text()]))
  inputs = [_spec(trt, t.name, t.dtype, t.shape) for t in (network.get_input(i) for i in range(network.num_inputs))]
  outputs = [_spec(trt, t.name, t.dtype, t.shape) for t in (network.get_output(i) for i in range(network.num_outputs))]

  config = builder.create_builder_config()
  config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(settings.workspace_bytes))
  if settings.builder_optimization_level is not None:
    if not hasattr(config, "builder_optimization_level"):
      raise VariantFailed(f"builder_optimization_level needs TensorRT 8.6 or later; this is {trt.__version__}")
    config.builder_optimization_level = int(settings.builder_optimization_level)
  # DETAILED keeps per-layer precisions readable by the engine inspector (how an INT8 engine is checked).
  config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
  builder_flags = []
  if not strongly_typed:
    flag = {"FP16": "FP16", "INT8": "INT8"}.get(settings.precision)
    if flag:
      config.set_flag(getattr(trt.BuilderFlag, flag))
      builder_flags.append(flag)

  trt_profile = builder.create_optimization_profile()
  for name, shapes in profile.items():
    trt_profile.set_shape(name, shapes["min"], shapes["opt"], shapes["max"])
  if config.add_optimization_profile(trt_profile) < 0:
    raise VariantFailed(f"TensorRT refused the optimization profile {profile}: {logger.error_text()}")

  cache_status = None
  if settings.use_timing_cache:
    cache = None
    if settings.timing_cache:
      try:
        cache = config.create_timing_cache(settings.timing_cache)
      except Exception as err:  # pylint: disable=broad-except
        cache_status = f"ignored: TensorRT refused it ({type(err).__name__}: {err})"
      if cache is None and cache_status is None:
        cache_status = f"ignored: TensorRT refused it ({logger.error_text()})"
    if cache is None:
      cache = config.create_timing_cache(b"")
    config.set_timing_cache(cache, ignore_mismatch=False)

  started = time.monotonic()
  try:
    plan = builder.build_serialized_network(network, config)
  except Exception as err:  # pylint: disable=broad-except
    raise VariantFailed(f"TensorRT failed building the engine ({type(err).__name__}: {err}): "
                        f"{logger.error_text()}") from err
  seconds = time.monotonic() - started
  if plan is None:
    raise VariantFailed(f"TensorRT built no engine: {logger.error_text()}")
  timing_cache = None
  if settings.use_timing_cache:
    timing_cache = bytes(config.get_timing_cache().serialize())
  return BuiltEngine(plan=bytes(plan), tensorrt_version=trt.__version__, strongly_typed=strongly_typed,
                     builder_flags=builder_flags, inputs=inputs, outputs=outputs, timing_cache=timing_cache,
                     timing_cache_status=cache_status, warnings=list(logger.warnings), seconds=seconds)


class LoadedEngine:
  """A deserialized engine and one execution context, behind the name-based tensor API (TensorRT 8.5+).

  Attributes:
    inputs, outputs: `TensorSpec`s of the engine's I/O tensors.
    profile: {input name: {"min", "opt", "max"}} of the engine's first optimization profile.
  """

  def __init__(self, plan):
    trt = self._trt = import_tensorrt()
    self._logger = _collecting_logger(trt)
    self._runtime = trt.Runtime(self._logger)
    self._engine = self._runtime.deserialize_cuda_engine(plan)
    if self._engine is None:
      raise RuntimeError(f"TensorRT could not load the engine: {self._logger.error_text()}")
    self._context = self._engine.create_execution_context()
    if self._context is None:
      raise RuntimeError(f"TensorRT could not create an execution context: {self._logger.error_text()}")
    self.inputs, self.outputs, self.profile = [], [], {}
    for index in range(self._engine.num_io_tensors):
      name = self._engine.get_tensor_name(index)
      spec = _spec(trt, name, self._engine.get_tensor_dtype(name), self._engine.get_tensor_shape(name))
      if self._engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
        self.inputs.append(spec)
        low, opt, high = self._engine.get_tensor_profile_shape(name, 0)
        self.profile[name] = {"min": list(low), "opt": list(opt), "max": list(high)}
      else:
        self.outputs.append(spec)

  def set_input_shape(self, name, shape):
    if not self._context.set_input_shape(name, tuple(int(d) for d in shape)):
      raise RuntimeError(f"TensorRT refused shape {tuple(shape)} for input `{name}`: {self._logger.error_text()}")

  def output_shape(self, name):
    return tuple(self._context.get_tensor_shape(name))

  def set_tensor_address(self, name, address):
    if not self._context.set_tensor_address(name, int(address)):
      raise RuntimeError(f"TensorRT refused the address of `{name}`: {self._logger.error_text()}")

  def execute_async(self, stream_handle):
    if not self._context.execute_async_v3(int(stream_handle)):
      raise RuntimeError(f"TensorRT could not run the engine: {self._logger.error_text()}")

  def layer_information(self):
    """The engine inspector's JSON ({"Layers": [...], "Bindings": [...]}): per-layer types and precisions."""
    inspector = self._engine.create_engine_inspector()
    return json.loads(inspector.get_engine_information(self._trt.LayerInformationFormat.JSON))

  def close(self):
    self._context = self._engine = self._runtime = None
