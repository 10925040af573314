"""TensorRT engines (`trt_fp32`, `trt_fp16`, `trt_int8`), each built from the ONNX variant of its precision.

    trt_int8/3/model.plan    the serialized engine, raw bytes: `trtexec --loadEngine`, Triton's tensorrt_plan
    trt_int8/3/model.json    TensorRT version, GPU and compute capability, optimization profile, builder
                             options, SHA-256 of the source model.onnx, build time, engine size, inputs/outputs

An engine runs only on the GPU model and TensorRT version that built it, so it is built in the export worker on
the machine's GPU (`format_options={"trt": {"device": 1}}` picks another), with a profile from the captured
batch sizes (see `tensorrt_profile`) and the export root's timing cache (see `tensorrt_cache`). Where TensorRT
or a GPU is missing every `trt_*` variant is `skipped` with `unavailable_reason`; a build TensorRT refuses is
`failed` with TensorRT's own error lines. Only `tensorrt_build` imports TensorRT.

Example:
  options = ConversionOptions(formats=("onnx", "trt"), max_batch_size=32,
                              format_options={"trt": {"workspace_mb": 2048, "builder_optimization_level": 4}})
"""

import collections
import dataclasses
import hashlib
import json
import numbers
import os
import time

from absl import logging

from tftrt_keras.errors import invalid_argument
from tftrt_keras.formats.base import Format, VariantFailed, VariantUnavailable, artifact_name

PLAN_FILE = "model.plan"
METADATA_FILE = "model.json"
ONNX_FILE = "model.onnx"
CUDA_BINDINGS = ("cuda-python", "pycuda")


def _argument(name):
  return f"format_options['trt'].{name}"


@dataclasses.dataclass(frozen=True)
class TensorRTOptions:
  """Options of the `trt` format (`ConversionOptions(format_options={"trt": {...}})`).

  Attributes:
    workspace_mb: the builder's workspace memory pool limit in MiB; None: `max_workspace_size_bytes` of the
      conversion options (the seed's knob). With `gpu_memory_limit_mb` it is the TensorFlow/TensorRT split.
    builder_optimization_level: TensorRT's builder optimization level, 0 (fastest build) to 5 (most tactics);
      None: TensorRT's default (3). Needs TensorRT 8.6 or later.
    device: index of the GPU to build on, among those the export worker sees; None: the first.
    timing_cache: keep TensorRT's timing cache in the export root and reuse it (see `tensorrt_cache`).
    cuda_binding: "cuda-python" (default) or "pycuda" for the runner's memory and stream calls; pycuda is used
      only where it imports, else cuda-python (with a warning).
  """

  workspace_mb: int = None
  builder_optimization_level: int = None
  device: int = None
  timing_cache: bool = True
  cuda_binding: str = "cuda-python"

  def __post_init__(self):
    for name, low, high in (("workspace_mb", 1, None), ("builder_optimization_level", 0, 5), ("device", 0, None)):
      value = getattr(self, name)
      if value is None:
        continue
      if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low or (high and value > high):
        expected = f"None or an integer from {low} to {high}" if high else f"None or an integer >= {low}"
        raise invalid_argument(_argument(name), value, expected)
    if not isinstance(self.timing_cache, bool):
      raise invalid_argument(_argument("timing_cache"), self.timing_cache, "True or False")
    if self.cuda_binding not in CUDA_BINDINGS:
      raise invalid_argument(_argument("cuda_binding"), self.cuda_binding, f"one of {CUDA_BINDINGS}")


# --- can it run here? ----------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class TensorRTProbe:
  """What this machine offers the `trt` format (printed by the preflight, recorded in the manifest)."""

  tensorrt_version: str  # None: `tensorrt` does not import
  tensorrt_error: str
  cuda_python_version: str  # None: cuda-python is not installed
  cuda_error: str  # why GPUs could not be counted, or None
  gpus: tuple  # cuda_devices.Gpu
  pycuda: bool

  @property
  def usable(self):
    return bool(self.tensorrt_version and self.gpus)

  def to_json(self):
    return {"tensorrt": self.tensorrt_version, "tensorrt_error": self.tensorrt_error,
            "cuda_python": self.cuda_python_version, "cuda_error": self.cuda_error,
            "gpu_count": len(self.gpus), "gpus": [gpu.to_json() for gpu in self.gpus], "pycuda": self.pycuda}


_PROBE = None


def probe(refresh=False):
  """The `TensorRTProbe` of this process (imports `tensorrt` and cuda-python if present; asked once)."""
  global _PROBE
  if _PROBE is None or refresh:
    from tftrt_keras.formats.tensorrt import build as tensorrt_build, cuda_devices, cuda_runner  # pylint: disable=g-import-not-at-top
    version, error = tensorrt_build.tensorrt_version()
    try:
      gpus, cuda_error = tuple(cuda_devices.list_gpus()), None
    except cuda_devices.CudaUnavailable as err:
      gpus, cuda_error = (), str(err)
    _PROBE = TensorRTProbe(version, error, cuda_devices.cuda_python_version(), cuda_error, gpus,
                           cuda_runner.pycuda_importable())
  return _PROBE


def unavailable_text(status, device=None):
  """One line saying why engines cannot be built with `status` (a `TensorRTProbe`) and what to do, or None."""
  from tftrt_keras.formats.tensorrt.build import TENSORRT_INSTALL  # pylint: disable=g-import-not-at-top
  problems, fixes = [], []
  if not status.tensorrt_version:
    problems.append(f"TensorRT's Python package does not import ({status.tensorrt_error})")
    fixes.append(f"install TensorRT: {TENSORRT_INSTALL}")
  if status.cuda_python_version is None:
    problems.append("no GPU can be looked for: cuda-python is not installed")
    fixes.append("`pip install cuda-python` (finds the GPU and runs the engines)")
  elif status.cuda_error:
    problems.append(f"no GPU is visible ({status.cuda_error})")
    fixes.append("run the export on a machine with an NVIDIA GPU and driver")
  elif not status.gpus:
    problems.append("no GPU is visible (CUDA counts 0 devices)")
    fixes.append("run the export on a machine with an NVIDIA GPU, or check CUDA_VISIBLE_DEVICES")
  elif device is not None and device >= len(status.gpus):
    problems.append(f"{_argument('device')}={device} but the export worker sees {len(status.gpus)} GPU(s): "
                    + ", ".join(f"{g.index}: {g.name}" for g in status.gpus))
    fixes.append(f"pass a device index below {len(status.gpus)}")
  if not problems:
    return None
  return f"TensorRT engines cannot be built here: {'; '.join(problems)}. To build them: {'; '.join(fixes)}."


# --- what was built ------------------------------------------------------------------------------------------

def _precision_word(datatype):
  text = datatype.lower()
  for word, names in (("int8", ("int8",)), ("fp8", ("fp8",)), ("bf16", ("bf16", "bfloat")),
                      ("fp16", ("fp16", "half")), ("fp32", ("fp32", "float")), ("int32", ("int32",)),
                      ("int64", ("int64",)), ("bool", ("bool",))):
    if any(name in text for name in names):
      return word
  return "other"


def layer_precisions(information):
  """{precision: layer count} of an engine, from the engine inspector's JSON (`LoadedEngine.layer_information`).

  A layer counts under the datatype of its first input (`"Format/Datatype": "Row major linear Int8 format"`):
  an INT8 convolution reads INT8, the Quantize layer before it reads float. Reformat layers only copy and are
  not counted. Engines built without DETAILED profiling verbosity list layer names only: "unknown".
  """
  counts = collections.Counter()
  for layer in (information or {}).get("Layers", []):
    if not isinstance(layer, dict):
      counts["unknown"] += 1
      continue
    if layer.get("LayerType") == "Reformat":
      continue
    inputs = layer.get("Inputs") or []
    datatype = inputs[0].get("Format/Datatype", "") if inputs and isinstance(inputs[0], dict) else ""
    counts[_precision_word(str(datatype)) if datatype else "other"] += 1
  return dict(sorted(counts.items()))


def file_sha256(path):
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def engine_metadata(*, precision, source_artifact, source_sha256, built, gpu, profile, builder_options,
                    timing_cache, layers, created=None):
  """The content of `model.json` beside `model.plan` (everything a server or a user needs to trust the plan).

  Args:
    precision: FP32/FP16/INT8.
    source_artifact: the ONNX variant it was built from (`onnx_int8`).
    source_sha256: SHA-256 of that variant's model.onnx.
    built: the `tensorrt_build.BuiltEngine`.
    gpu: the `cuda_devices.Gpu` it was built on.
    profile: {input name: {"min", "opt", "max"}}.
    builder_options: dict of the builder settings used.
    timing_cache: what happened to the timing cache (a sentence).
    layers: `layer_precisions` of the engine.
    created: seconds since the epoch (injectable); now by default.
  """
  return {
      "format": "trt",
      "file": PLAN_FILE,
      "precision": precision,
      "tensorrt_version": built.tensorrt_version,
      "gpu_name": gpu.name,
      "compute_capability": gpu.compute_capability,
      "gpu": gpu.to_json(),
      "profiles": profile,
      "builder": dict(builder_options, strongly_typed=built.strongly_typed, builder_flags=list(built.builder_flags),
                      timing_cache=timing_cache),
      "source": {"artifact": source_artifact, "file": ONNX_FILE, "sha256": source_sha256},
      "build_seconds": round(built.seconds, 3),
      "engine_bytes": len(built.plan),
      "engine_sha256": hashlib.sha256(built.plan).hexdigest(),
      "layers_by_precision": layers,
      "inputs": [spec.to_json() for spec in built.inputs],
      "outputs": [spec.to_json() for spec in built.outputs],
      "builder_warnings": len(built.warnings),
      "created": round(time.time() if created is None else created, 3),
  }


def model_io(source_dir, signature):
  """{"inputs": [...], "outputs": [...]} of the ONNX variant in `source_dir` (its model.json), else the
  signature's (the ONNX inputs are named after the signature's)."""
  path = os.path.join(source_dir, METADATA_FILE)
  if os.path.isfile(path):
    with open(path) as f:
      described = json.load(f)
    if described.get("inputs"):
      return {"inputs": described["inputs"], "outputs": described.get("outputs") or []}
  return {"inputs": list((signature or {}).get("inputs", [])), "outputs": list((signature or {}).get("outputs", []))}


def needs_samples(inputs):
  """Whether the profile needs the captured samples: an input of unknown rank or a dynamic non-batch dimension."""
  from tftrt_keras.formats.tensorrt.profile import is_static  # pylint: disable=g-import-not-at-top
  return any(spec.get("shape") is None or not all(is_static(d) for d in spec["shape"][1:]) for spec in inputs)


# --- the format ----------------------------------------------------------------------------------------------

class TensorRTFormat(Format):
  name = "trt"
  description = "TensorRT engine (model.plan + model.json), built from the ONNX variant of the same precision"
  options_class = TensorRTOptions

  def source_of(self, precision):
    return artifact_name("onnx", precision)

  def unavailable_reason(self, options):
    trt_options = options.options_for(self.name) if options is not None else TensorRTOptions()
    return unavailable_text(probe(), trt_options.device)

  def environment(self, options):
    trt_options = options.options_for(self.name) if options is not None else TensorRTOptions()
    status = probe()
    return dict(status.to_json(), cuda_binding="pycuda" if trt_options.cuda_binding == "pycuda" and status.pycuda
                else "cuda-python")

  def build(self, job, precision, source_dir, output_dir):
    from tftrt_keras.formats.tensorrt import build as tensorrt_build, cuda_devices  # pylint: disable=g-import-not-at-top
    from tftrt_keras.formats.tensorrt.cache import CacheKey, TimingCacheStore  # pylint: disable=g-import-not-at-top
    from tftrt_keras.formats.tensorrt.profile import ProfileError, engine_profile  # pylint: disable=g-import-not-at-top
    options = job.format_options(self.name)
    status = probe()
    device = options.device or 0
    reason = unavailable_text(status, device)
    if reason:
      raise VariantUnavailable(reason)
    source = self.source_of(precision)
    onnx_path = os.path.join(source_dir, ONNX_FILE)
    if not os.path.isfile(onnx_path):
      raise VariantFailed(f"{source} has no {ONNX_FILE} to build from")
    io = model_io(source_dir, job.signature)
    samples = job.calibration_samples() if needs_samples(io["inputs"]) else None
    try:
      profile = engine_profile(io["inputs"], job.calibration_batch_sizes, job.options.max_batch_size, samples)
    except ProfileError as err:
      raise VariantFailed(f"no optimization profile: {err}") from err

    gpu = status.gpus[device]
    key = CacheKey(gpu.name, gpu.compute_capability, status.tensorrt_version)
    store = TimingCacheStore(job.root)
    loaded = store.load(key) if options.timing_cache else None
    workspace = options.workspace_mb * (1 << 20) if options.workspace_mb else job.options.max_workspace_size_bytes
    settings = tensorrt_build.BuildSettings(
        precision=precision, workspace_bytes=workspace, builder_optimization_level=options.builder_optimization_level,
        use_timing_cache=options.timing_cache, timing_cache=loaded.data if loaded else None)
    try:
      cuda_devices.set_device(device)
    except cuda_devices.CudaUnavailable as err:
      raise VariantUnavailable(str(err)) from err
    built = tensorrt_build.build_engine(onnx_path, settings, profile)

    # Loading it back proves the plan deserializes here; the inspector says what its layers really run in.
    try:
      engine = tensorrt_build.LoadedEngine(built.plan)
      layers = layer_precisions(engine.layer_information())
      engine.close()
    except RuntimeError as err:
      raise VariantFailed(str(err)) from err
    if precision == "INT8" and not layers.get("int8"):
      raise VariantFailed(f"the INT8 engine runs no layer in INT8 (layers by input precision: {layers}); "
                          f"{source} should carry Q/DQ pairs TensorRT can fuse")

    with open(os.path.join(output_dir, PLAN_FILE), "wb") as f:
      f.write(built.plan)
    timing_cache = "off"
    if options.timing_cache:
      timing_cache = built.timing_cache_status or loaded.status
      if built.timing_cache:
        store.save(key, built.timing_cache)
    builder_options = {"workspace_bytes": int(workspace), "builder_optimization_level":
                       options.builder_optimization_level, "device": device,
                       "profiling_verbosity": "DETAILED"}
    metadata = engine_metadata(precision=precision, source_artifact=source, source_sha256=file_sha256(onnx_path),
                               built=built, gpu=gpu, profile=profile, builder_options=builder_options,
                               timing_cache=timing_cache, layers=layers)
    with open(os.path.join(output_dir, METADATA_FILE), "w") as f:
      json.dump(metadata, f, indent=2)
      f.write("\n")
    logging.info("tftrt_keras: built %s engine (%d bytes) in %.1f s on %s", precision, len(built.plan),
                 built.seconds, gpu.name)
    return {"file": PLAN_FILE, "engine_bytes": len(built.plan), "tensorrt_version": built.tensorrt_version,
            "gpu_name": gpu.name, "compute_capability": gpu.compute_capability, "profiles": profile,
            "strongly_typed": built.strongly_typed, "timing_cache": timing_cache,
            "build_seconds": round(built.seconds, 3), "layers_by_precision": layers}

  def open_runner(self, path, job):
    from tftrt_keras.formats.tensorrt.cuda_runner import open_plan_runner  # pylint: disable=g-import-not-at-top
    options = job.format_options(self.name)
    return open_plan_runner(os.path.join(path, PLAN_FILE), job.signature or None, options.cuda_binding,
                            options.device or 0)


FORMAT = TensorRTFormat()
