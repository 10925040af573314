"""The one module that talks to TensorRT, either edition: builds an engine from an ONNX file, and loads one to run it.

Both editions share every line: TensorRT (`tensorrt`, format `trt`) and TensorRT-RTX (`tensorrt_rtx`, format
`trt_rtx`). What to call is decided by what the module offers (`hasattr`), never by its version number:
TensorRT-RTX 1.7 is "older" than TensorRT 8 by number and newer by API. Precision comes from the ONNX model:
networks are strongly typed where the module has them (TensorRT 9.1+, TensorRT-RTX), else (TensorRT 8.6) the
precision's builder flag allows the model's types. Modelled on Polygraphy's `backend/trt/loader.py`.
"""

import dataclasses
import json
import re
import time
import warnings

from tftrt_keras.formats.base import VariantFailed, thread_limit
from tftrt_keras.formats.tensorrt.binding import TensorSpec
from tftrt_keras.formats.tensorrt.log import ERROR_LINES_KEPT, close_log, open_log, process_logger, recording

TENSORRT, TENSORRT_RTX = "tensorrt", "tensorrt_rtx"  # the editions, by module name
EDITION_NAMES = {TENSORRT: "TensorRT", TENSORRT_RTX: "TensorRT-RTX"}
TENSORRT_INSTALL = ("`pip install tensorrt` (NVIDIA's wheels: TensorRT 10 for CUDA 12/13; needs an NVIDIA GPU and "
                    "driver), or run in an NVIDIA container such as nvcr.io/nvidia/tensorrt")
TENSORRT_RTX_INSTALL = ("`pip install 'tftrt_keras[trt_rtx]'` (tensorrt-rtx-cu13==1.7.1.116: builds engines on any "
                        "machine, GPU or not)")
# What TensorRT logs when it does not take a timing cache it was given (TensorRT-RTX 1.7 without a GPU: "Failed to
# deserialize timing cache. Returning an empty timing cache." and "The timing cache will not be used!").
_CACHE_REFUSED = re.compile(r"timing cache.*(not be used|fail|ignor|mismatch|invalid|corrupt)|"
                            r"(fail|unable|cannot|could not).*timing cache", re.IGNORECASE)


def import_tensorrt(edition=TENSORRT):
  """The module of `edition` (`TENSORRT` or `TENSORRT_RTX`); raises ImportError (or OSError) when it does not load."""
  if edition == TENSORRT_RTX:
    import tensorrt_rtx  # pylint: disable=g-import-not-at-top
    return tensorrt_rtx
  if edition != TENSORRT:
    raise ValueError(f"unknown TensorRT edition {edition!r}; expected one of {sorted(EDITION_NAMES)}")
  import tensorrt  # pylint: disable=g-import-not-at-top
  return tensorrt


def tensorrt_version(edition=TENSORRT):
  """(version, None) when the edition's module imports, else (None, why not)."""
  try:
    return import_tensorrt(edition).__version__, None
  except Exception as err:  # pylint: disable=broad-except
    # Not only ImportError: a wheel whose libraries cannot load raises OSError.
    return None, f"{type(err).__name__}: {err}"


def hardware_levels(edition=TENSORRT):
  """Names of the installed module's `HardwareCompatibilityLevel` members (empty where it has none)."""
  levels = getattr(import_tensorrt(edition), "HardwareCompatibilityLevel", None)
  return set(levels.__members__) if levels is not None else set()


# TensorRT types numpy has no dtype for, by the names signatures, Triton and ml_dtypes use (not "bf16").
_NON_NUMPY_DTYPES = {"BF16": "bfloat16", "FP8": "float8_e4m3fn", "INT4": "int4", "FP4": "float4_e2m1fn",
                     "E8M0": "float8_e8m0fnu"}


def numpy_dtype_name(trt, dtype):
  """The dtype name of a TensorRT `DataType`: numpy's where it has one, else ml_dtypes' ("bfloat16")."""
  try:
    import numpy as np  # pylint: disable=g-import-not-at-top
    return np.dtype(trt.nptype(dtype)).name
  except (TypeError, KeyError):
    name = getattr(dtype, "name", None) or str(dtype).rsplit(".", 1)[-1]
    return _NON_NUMPY_DTYPES.get(name, name.lower())


def _spec(trt, name, dtype, dims):
  try:
    shape = tuple(None if d < 0 else int(d) for d in dims)
  except ValueError:  # Dims of unknown rank (nbDims == -1) cannot be iterated
    shape = None
  return TensorSpec(name, numpy_dtype_name(trt, dtype), shape)


@dataclasses.dataclass
class BuildSettings:
  """How to build one engine.

  Attributes:
    precision: FP32/FP16/INT8; selects builder flags only where networks are not strongly typed.
    workspace_bytes: the builder's workspace memory pool limit.
    builder_optimization_level: 0-5 or None for the builder's default (3).
    use_timing_cache: build with a timing cache (and return it).
    timing_cache: bytes of a trusted earlier cache (see `cache`), or None to start empty.
    compute_capabilities: `ComputeCapability` member names ("SM86", "CURRENT"), or None for the default.
    hardware_compatibility: a `HardwareCompatibilityLevel` member name, or None for the default.
    version_compatible: build with BuilderFlag.VERSION_COMPATIBLE (runs on later TensorRT versions).
    exclude_lean_runtime: with `version_compatible`, leave the lean runtime out (EXCLUDE_LEAN_RUNTIME).
  """
  precision: str
  workspace_bytes: int
  builder_optimization_level: int = None
  use_timing_cache: bool = True
  timing_cache: bytes = None
  compute_capabilities: tuple = None
  hardware_compatibility: str = None
  version_compatible: bool = False
  exclude_lean_runtime: bool = False


@dataclasses.dataclass
class BuiltEngine:
  """A serialized engine and how it was built (what TensorRT itself reports back, where it can)."""
  plan: bytes
  tensorrt_version: str
  strongly_typed: bool
  builder_flags: list
  inputs: list  # TensorSpec of the parsed network
  outputs: list
  timing_cache: bytes  # None without a timing cache
  timing_cache_status: str  # None: the given cache (if any) was taken; else what happened, in TensorRT's words
  warnings: list
  seconds: float
  edition: str = TENSORRT
  # Read back from the builder config: network flags, workspace, optimization level, compute capabilities.
  builder: dict = None
  profile: dict = None  # {input: {"min", "opt", "max"}} as TensorRT holds it after `set_shape`


def _parser_errors(parser):
  errors = []
  for index in range(parser.num_errors):
    error = parser.get_error(index)
    where = getattr(error, "node_name", lambda: "")() or ""
    op = getattr(error, "node_operator", lambda: "")() or ""
    code = str(getattr(error, "code", lambda: "")()).rsplit(".", 1)[-1]
    func = getattr(error, "func", lambda: "")() or ""
    prefix = f"node {where} ({op}): " if where or op else ""
    checker = f" ({func})" if func else ""
    errors.append(prefix + (f"{code}{checker}: " if code else "") + " ".join(str(error.desc()).split()))
  return errors


def _network_flags(trt):
  """(creation flags, their names) from what `trt` offers: EXPLICIT_BATCH where it exists (TensorRT 8.x needs it;
  10 keeps it as a no-op; TensorRT-RTX has none), STRONGLY_TYPED where it exists."""
  creation = trt.NetworkDefinitionCreationFlag
  flags, names = 0, []
  for name in ("EXPLICIT_BATCH", "STRONGLY_TYPED"):
    if hasattr(creation, name):
      flags |= 1 << int(getattr(creation, name))
      names.append(name)
  return flags, names


def _set_compute_capabilities(trt, config, names, log):
  if not hasattr(config, "set_compute_capability") or not hasattr(trt, "ComputeCapability"):
    raise VariantFailed(f"compute capabilities {list(names)} were asked for, but {trt.__name__} {trt.__version__} has "
                        "no compute-capability targets (IBuilderConfig.set_compute_capability)")
  unknown = [n for n in names if not hasattr(trt.ComputeCapability, n)]
  if unknown:
    raise VariantFailed(f"{trt.__name__} {trt.__version__} has no compute capability {unknown}; it has "
                        f"{sorted(trt.ComputeCapability.__members__)}")
  config.num_compute_capabilities = len(names)
  for index, name in enumerate(names):
    if not config.set_compute_capability(getattr(trt.ComputeCapability, name), index):
      raise VariantFailed(f"{trt.__name__} refused compute capability {name}: {log.error_text()}")


def _compute_capabilities(config):
  if not hasattr(config, "num_compute_capabilities"):
    return None
  return [config.get_compute_capability(i).name for i in range(config.num_compute_capabilities)]


def _use_timing_cache(config, given, log):
  """Attaches a timing cache to `config`; returns (cache, status): status None when TensorRT took `given` (or
  nothing was given), else "ignored: ..." / "not used: ..." with TensorRT's own words. cache is None when
  TensorRT took none (then nothing is serialized after the build)."""
  if not hasattr(config, "create_timing_cache"):
    return None, "not used: this TensorRT has no timing cache"
  mark = log.mark()
  cache, status = None, None
  if given:
    try:
      cache = config.create_timing_cache(given)
    except Exception as err:  # pylint: disable=broad-except
      status = f"ignored: TensorRT refused it ({type(err).__name__}: {err})"
    else:
      if cache is None:  # it returns nothing for bytes it cannot read instead of raising
        status = f"ignored: TensorRT could not read it ({log.error_text()})"
  if cache is not None and not config.set_timing_cache(cache, ignore_mismatch=False):
    status, cache = f"ignored: TensorRT refused it ({log.error_text()})", None
  if cache is None:
    cache = config.create_timing_cache(b"")
    if cache is None or not config.set_timing_cache(cache, ignore_mismatch=False):
      return None, f"not used: TensorRT took no timing cache ({log.error_text()})" + (f"; {status}" if status else "")
  said = log.since(mark)
  if given and status is None and any(_CACHE_REFUSED.search(line) for line in said):
    # It returns an empty cache instead of failing: only its log says the given one was not used.
    status = "ignored: TensorRT said: " + " | ".join(" ".join(line.split()) for line in said)
  return cache, status


def serialized_timing_cache(config):
  """The bytes of the timing cache `config` holds after a build, or None (it can hold none, as Polygraphy's
  EngineBytesFromNetwork guards: `get_timing_cache()` returns None)."""
  cache = config.get_timing_cache() if hasattr(config, "get_timing_cache") else None
  if cache is None:
    return None
  data = cache.serialize()
  return bytes(data) if data is not None and len(bytes(data)) else None


_PLUGINS_INITIALIZED = set()  # module names whose plugin library was initialized in this process


def init_plugins(trt):
  """Registers TensorRT's own plugins once per process (ONNX ops such as RoiAlign are served by them) and returns
  the registered creators, "name/version"; TensorRT-RTX registers its few plugins itself."""
  if trt.__name__ not in _PLUGINS_INITIALIZED and hasattr(trt, "init_libnvinfer_plugins"):
    trt.init_libnvinfer_plugins(process_logger(trt), "")
    _PLUGINS_INITIALIZED.add(trt.__name__)
  registry = trt.get_plugin_registry()
  creators = getattr(registry, "all_creators", None)
  if creators is None:  # TensorRT 8.6 names the list differently
    creators = getattr(registry, "plugin_creator_list", [])
  return sorted(f"{c.name}/{c.plugin_version}" for c in creators)


def _set_hardware_compatibility(trt, config, name, log):
  levels = getattr(trt, "HardwareCompatibilityLevel", None)
  if levels is None or not hasattr(config, "hardware_compatibility_level"):
    raise VariantFailed(f"hardware compatibility level {name} was asked for, but {trt.__name__} {trt.__version__} "
                        "has no hardware compatibility levels (IBuilderConfig.hardware_compatibility_level)")
  if not hasattr(levels, name):
    raise VariantFailed(f"hardware compatibility level {name} is unknown to the installed {trt.__name__} "
                        f"{trt.__version__}; it knows {sorted(levels.__members__)}")
  mark = log.mark()
  config.hardware_compatibility_level = getattr(levels, name)
  held = _hardware_level(config)
  if held != name:  # TensorRT-RTX takes the call and keeps NONE ("... is unsupported in TensorRT-RTX")
    said = " | ".join(log.since(mark)) or log.error_text()
    raise VariantFailed(f"{trt.__name__} {trt.__version__} did not take hardware compatibility level {name}: it "
                        f"reads back {held} ({said})")


def _set_flag(trt, config, name, why):
  if not hasattr(trt.BuilderFlag, name):
    raise VariantFailed(f"{why} needs BuilderFlag.{name}, which the installed {trt.__name__} {trt.__version__} "
                        "does not have")
  config.set_flag(getattr(trt.BuilderFlag, name))


def _flag_is_set(trt, config, name):
  return bool(config.get_flag(getattr(trt.BuilderFlag, name))) if hasattr(trt.BuilderFlag, name) else None


def _hardware_level(config):
  try:
    return config.hardware_compatibility_level.name
  except AttributeError:
    return None


def build_engine(onnx_path, settings, profile, edition=TENSORRT):
  """Builds a serialized engine from the ONNX model at `onnx_path` with the builder of `edition`.

  Args:
    onnx_path: path of `model.onnx` (external weight files beside it are found by the parser).
    settings: `BuildSettings`.
    profile: {input name: {"min", "opt", "max"}} (see `profile.engine_profile`).
    edition: `TENSORRT` or `TENSORRT_RTX`.

  Returns:
    A `BuiltEngine`.

  Raises:
    VariantFailed: parsing, profile, options or build failed; the message carries TensorRT's own error lines.
  """
  trt = import_tensorrt(edition)
  name = EDITION_NAMES[edition]
  with recording(trt, name) as log, warnings.catch_warnings(record=True) as python_warnings:
    # TensorRT-RTX says through Python's warnings too ("Timing cache operations are no-ops in TensorRT-RTX").
    warnings.simplefilter("always", DeprecationWarning)
    try:  # a factory that fails raises (it never returns None)
      builder = trt.Builder(process_logger(trt))
    except Exception as err:  # pylint: disable=broad-except
      raise VariantFailed(f"{name} could not create a builder ({type(err).__name__}: {err}): "
                          f"{log.error_text()}") from err
    if thread_limit() and hasattr(builder, "max_threads"):  # TensorRT 8.6+, TensorRT-RTX: the worker's bound
      builder.max_threads = thread_limit()
    plugins = init_plugins(trt)
    flags, flag_names = _network_flags(trt)
    strongly_typed = "STRONGLY_TYPED" in flag_names
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, process_logger(trt))
    if not parser.parse_from_file(onnx_path):
      errors = _parser_errors(parser)[-ERROR_LINES_KEPT:] or [log.error_text()]
      if any("plugin" in error.lower() for error in errors):
        errors.append(f"plugins registered in {name} {trt.__version__}: {', '.join(plugins) or 'none'}")
      raise VariantFailed(f"{name} could not parse the ONNX model: " + " | ".join(errors))
    inputs = [_spec(trt, t.name, t.dtype, t.shape) for t in (network.get_input(i) for i in range(network.num_inputs))]
    outputs = [_spec(trt, t.name, t.dtype, t.shape)
               for t in (network.get_output(i) for i in range(network.num_outputs))]

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(settings.workspace_bytes))
    if settings.builder_optimization_level is not None:
      if not hasattr(config, "builder_optimization_level"):
        raise VariantFailed(f"builder_optimization_level needs TensorRT 8.6 or later; this is {trt.__version__}")
      config.builder_optimization_level = int(settings.builder_optimization_level)
    if settings.compute_capabilities:
      _set_compute_capabilities(trt, config, settings.compute_capabilities, log)
    # DETAILED keeps per-layer precisions readable by the engine inspector (how an INT8 engine is checked).
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    builder_flags = []
    if not strongly_typed:
      flag = {"FP16": "FP16", "INT8": "INT8"}.get(settings.precision)
      if flag and hasattr(trt.BuilderFlag, flag):
        config.set_flag(getattr(trt.BuilderFlag, flag))
        builder_flags.append(flag)
    if settings.precision == "FP32" and hasattr(trt.BuilderFlag, "TF32"):
      # TF32 is on by default (10-bit mantissa): an FP32 engine computes in FP32 (as Polygraphy builds).
      config.clear_flag(trt.BuilderFlag.TF32)
    if settings.hardware_compatibility:
      _set_hardware_compatibility(trt, config, settings.hardware_compatibility, log)
    if settings.version_compatible:
      _set_flag(trt, config, "VERSION_COMPATIBLE", "version_compatible")
      builder_flags.append("VERSION_COMPATIBLE")
      if settings.exclude_lean_runtime:
        _set_flag(trt, config, "EXCLUDE_LEAN_RUNTIME", "exclude_lean_runtime")
        builder_flags.append("EXCLUDE_LEAN_RUNTIME")

    trt_profile = builder.create_optimization_profile()
    for input_name, shapes in profile.items():
      trt_profile.set_shape(input_name, shapes["min"], shapes["opt"], shapes["max"])
    if config.add_optimization_profile(trt_profile) < 0:
      raise VariantFailed(f"{name} refused the optimization profile {profile}: {log.error_text()}")
    held = {n: dict(zip(("min", "opt", "max"), ([int(d) for d in dims] for dims in trt_profile.get_shape(n))))
            for n in profile}

    cache, cache_status = None, None
    if settings.use_timing_cache:
      cache, cache_status = _use_timing_cache(config, settings.timing_cache, log)

    started = time.monotonic()
    try:
      plan = builder.build_serialized_network(network, config)
    except Exception as err:  # pylint: disable=broad-except
      raise VariantFailed(f"{name} failed building the engine ({type(err).__name__}: {err}): "
                          f"{log.error_text()}") from err
    seconds = time.monotonic() - started
    if plan is None or not plan.nbytes:
      raise VariantFailed(f"{name} built no engine: {log.error_text()}")
    timing_cache = serialized_timing_cache(config) if cache is not None else None
    applied = {"network_flags": flag_names, "workspace_bytes": int(config.get_memory_pool_limit(
        trt.MemoryPoolType.WORKSPACE)), "builder_optimization_level": getattr(config, "builder_optimization_level",
                                                                              None),
               "compute_capabilities": _compute_capabilities(config), "profiling_verbosity": "DETAILED",
               "tf32": _flag_is_set(trt, config, "TF32"),
               "hardware_compatibility_level": _hardware_level(config) if settings.hardware_compatibility else None,
               "version_compatible": _flag_is_set(trt, config, "VERSION_COMPATIBLE"),
               "exclude_lean_runtime": _flag_is_set(trt, config, "EXCLUDE_LEAN_RUNTIME"), "plugins": plugins}
    said = list(dict.fromkeys(list(log.warnings) + [f"{w.category.__name__}: {w.message}" for w in python_warnings]))
  return BuiltEngine(plan=bytes(plan), tensorrt_version=trt.__version__, strongly_typed=strongly_typed,
                     builder_flags=builder_flags, inputs=inputs, outputs=outputs, timing_cache=timing_cache,
                     timing_cache_status=cache_status, warnings=said, seconds=seconds, edition=edition,
                     builder=applied, profile=held)


class LoadedEngine:
  """A deserialized engine and one execution context, behind the name-based tensor API (TensorRT 8.5+).

  Attributes:
    inputs, outputs: `TensorSpec`s of the engine's I/O tensors.
    profile: {input name: {"min", "opt", "max"}} of the engine's first optimization profile.
  """

  def __init__(self, plan, edition=TENSORRT, host_code_allowed=False):
    trt = self._trt = import_tensorrt(edition)
    self._log = open_log(trt, EDITION_NAMES[edition])
    try:
      self._load(trt, plan, host_code_allowed)
    except BaseException:
      self.close()
      raise

  def _load(self, trt, plan, host_code_allowed):
    name = self._log.edition_name
    init_plugins(trt)  # a plan that uses TensorRT's plugins finds them (as Polygraphy's EngineFromBytes does)
    self._runtime = trt.Runtime(process_logger(trt))
    if host_code_allowed:
      # A version-compatible plan carries its lean runtime: host code TensorRT runs only when told to trust it.
      self._runtime.engine_host_code_allowed = True
    self._engine = self._runtime.deserialize_cuda_engine(plan)
    if self._engine is None:
      raise RuntimeError(f"{name} could not load the engine: {self._log.error_text()}")
    self._context = self._engine.create_execution_context()
    if self._context is None:
      raise RuntimeError(f"{name} could not create an execution context: {self._log.error_text()}")
    self.inputs, self.outputs, self.profile = [], [], {}
    for index in range(self._engine.num_io_tensors):
      tensor = self._engine.get_tensor_name(index)
      spec = _spec(trt, tensor, self._engine.get_tensor_dtype(tensor), self._engine.get_tensor_shape(tensor))
      if self._engine.get_tensor_mode(tensor) == trt.TensorIOMode.INPUT:
        self.inputs.append(spec)
        low, opt, high = self._engine.get_tensor_profile_shape(tensor, 0)
        self.profile[tensor] = {"min": list(low), "opt": list(opt), "max": list(high)}
      else:
        self.outputs.append(spec)

  def set_input_shape(self, name, shape):
    if not self._context.set_input_shape(name, tuple(int(d) for d in shape)):
      raise RuntimeError(f"TensorRT refused shape {tuple(shape)} for input `{name}`: {self._log.error_text()}")

  def output_shape(self, name):
    return tuple(self._context.get_tensor_shape(name))

  def set_tensor_address(self, name, address):
    if not self._context.set_tensor_address(name, int(address)):
      raise RuntimeError(f"TensorRT refused the address of `{name}`: {self._log.error_text()}")

  def execute_async(self, stream_handle):
    if not self._context.execute_async_v3(int(stream_handle)):
      raise RuntimeError(f"TensorRT could not run the engine: {self._log.error_text()}")

  def layer_information(self):
    """The engine inspector's JSON ({"Layers": [...], "Bindings" or "I/O Tensors": [...]}): per-layer types and
    precisions, with every dynamic input at its profile's `opt` shape: without an execution context whose shapes
    are set the inspector writes "N/A due to dynamic shapes" for the formats."""
    inspector = self._engine.create_engine_inspector()
    try:
      for tensor, shapes in self.profile.items():
        self.set_input_shape(tensor, shapes["opt"])
      inspector.execution_context = self._context
    except RuntimeError:  # a shape the context refuses: the layer types are still worth reading
      pass
    return json.loads(inspector.get_engine_information(self._trt.LayerInformationFormat.JSON))

  def close(self):
    self._context = self._engine = self._runtime = None
    if self._log is not None:
      close_log(self._trt, self._log)
      self._log = None


def engine_validity(plan, edition=TENSORRT_RTX):
  """(validity, diagnostics, what TensorRT said) from the plan's header, where the runtime can tell
  (`IRuntime.get_engine_validity`, TensorRT-RTX 1.1+): ("VALID" | "SUBOPTIMAL" | "INVALID", ["UNSUPPORTED_CC", ...],
  [lines]); None where the module cannot tell. It reads the current GPU: call it only where one is visible."""
  trt = import_tensorrt(edition)
  with recording(trt, EDITION_NAMES[edition]) as log:
    runtime = trt.Runtime(process_logger(trt))
    if not hasattr(runtime, "get_engine_validity"):
      return None
    validity, bits = runtime.get_engine_validity(plan)
    members = getattr(getattr(trt, "EngineInvalidityDiagnostics", None), "__members__", None)
    if members is None:
      diagnostics = [f"diagnostics bits {int(bits)}"] if int(bits) else []
    else:
      diagnostics = [n for n, member in members.items() if int(bits) & int(member)]
    return validity.name, diagnostics, list(log.lines)
