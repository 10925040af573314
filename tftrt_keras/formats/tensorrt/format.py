"""TensorRT engines (`trt_fp32`, `trt_fp16`, `trt_int8`), each built from the ONNX variant of its precision.

    trt_int8/3/model.plan    the serialized engine: `trtexec --loadEngine`, Triton's tensorrt_plan
    trt_int8/3/model.json    TensorRT version, GPU, profile, builder options, source SHA-256, checks, warnings

An engine runs only on the GPU model and TensorRT version that built it, so the export worker builds it on the
machine's GPU, with a profile from the captured batch sizes (`profile`) and the root's timing cache (`cache`).
Without TensorRT or a GPU every `trt_*` variant is `skipped`; a build TensorRT refuses is `failed` with its
error lines. Only `build` imports TensorRT.
"""

import dataclasses
import json
import os

from absl import logging

from tftrt_keras.errors import invalid_argument
from tftrt_keras.formats.base import Format, RunnerUnavailable, VariantFailed, VariantUnavailable, artifact_name
from tftrt_keras.formats.tensorrt.serving import TRT_SERVING, plan_batching
from tftrt_keras.formats.tensorrt.compat import HARDWARE_LEVELS, host_code_allowed, plan_refusal, runs_on
from tftrt_keras.formats.tensorrt.variant import (METADATA_FILE, PLAN_FILE, build_checks, check_integer_options,
                                                  file_sha256, inspect_layers, plan_metadata, source_model,
                                                  write_variant)

CUDA_BINDINGS = ("cuda-python", "pycuda")


def _argument(name):
  return f"format_options['trt'].{name}"


@dataclasses.dataclass(frozen=True)
class TensorRTOptions:
  """Options of the `trt` format (`ConversionOptions(format_options={"trt": {...}})`).

  Attributes:
    workspace_mb: the builder's workspace pool limit in MiB; None: `max_workspace_size_bytes`.
    builder_optimization_level: 0 (fastest build) to 5; None: TensorRT's default (3). TensorRT 8.6+.
    device: index of the GPU to build on, among those the export worker sees; None: the first.
    timing_cache: keep TensorRT's timing cache in the export root and reuse it.
    cuda_binding: "cuda-python" (default) or "pycuda" (where it imports, else cuda-python with a warning).
    hardware_compatibility: "none" (default: the building GPU's compute capability), "same_compute_capability"
      or "ampere_plus" (any GPU of compute capability 8.0+; slower).
    version_compatible: build a plan later TensorRT versions run too (carries a lean runtime; may be slower).
    exclude_lean_runtime: with `version_compatible`, leave the lean runtime out (smaller plan).
  """

  workspace_mb: int = None
  builder_optimization_level: int = None
  device: int = None
  timing_cache: bool = True
  cuda_binding: str = "cuda-python"
  hardware_compatibility: str = "none"
  version_compatible: bool = False
  exclude_lean_runtime: bool = False

  def __post_init__(self):
    check_integer_options(self, _argument, (("workspace_mb", 1, None), ("builder_optimization_level", 0, 5),
                                            ("device", 0, None)))
    if not isinstance(self.timing_cache, bool):
      raise invalid_argument(_argument("timing_cache"), self.timing_cache, "True or False")
    if self.cuda_binding not in CUDA_BINDINGS:
      raise invalid_argument(_argument("cuda_binding"), self.cuda_binding, f"one of {CUDA_BINDINGS}")
    if self.hardware_compatibility not in HARDWARE_LEVELS:
      raise invalid_argument(_argument("hardware_compatibility"), self.hardware_compatibility,
                             f"one of {tuple(HARDWARE_LEVELS)}")
    for name in ("version_compatible", "exclude_lean_runtime"):
      if not isinstance(getattr(self, name), bool):
        raise invalid_argument(_argument(name), getattr(self, name), "True or False")
    if self.exclude_lean_runtime and not self.version_compatible:
      raise invalid_argument(_argument("exclude_lean_runtime"), True, "False unless version_compatible=True",
                             hint="Only a version-compatible plan carries a lean runtime to leave out.")


# --- can it run here? ----------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class TensorRTProbe:
  """What this machine offers one TensorRT edition (printed by the preflight, recorded in the manifest)."""

  tensorrt_version: str  # None: the edition's module does not import
  tensorrt_error: str
  cuda_python_version: str  # None: cuda-python is not installed
  cuda_error: str  # why GPUs could not be counted, or None
  gpus: tuple  # cuda_devices.Gpu
  pycuda: bool
  edition: str = "tensorrt"  # the module asked: "tensorrt" or "tensorrt_rtx"

  @property
  def usable(self):
    return bool(self.tensorrt_version and self.gpus)

  def to_json(self):
    return {self.edition: self.tensorrt_version, f"{self.edition}_error": self.tensorrt_error,
            "cuda_python": self.cuda_python_version, "cuda_error": self.cuda_error,
            "gpu_count": len(self.gpus), "gpus": [gpu.to_json() for gpu in self.gpus], "pycuda": self.pycuda}


_PROBES = {}  # edition -> TensorRTProbe


def probe(refresh=False, edition="tensorrt"):
  """The `TensorRTProbe` of this process for `edition` (imports its module and cuda-python if present; asked once)."""
  if edition not in _PROBES or refresh:
    from tftrt_keras.formats.tensorrt import build as tensorrt_build, cuda_devices, cuda_runner  # pylint: disable=g-import-not-at-top
    version, error = tensorrt_build.tensorrt_version(edition)
    try:
      gpus, cuda_error = tuple(cuda_devices.list_gpus()), None
    except cuda_devices.CudaUnavailable as err:
      gpus, cuda_error = (), str(err)
    _PROBES[edition] = TensorRTProbe(version, error, cuda_devices.cuda_python_version(), cuda_error, gpus,
                                     cuda_runner.pycuda_importable(), edition)
  return _PROBES[edition]


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

def compatibility_record(options, built):
  """What `model.json` says about where the plan runs: the options asked, and what the builder read back."""
  applied = built.builder or {}
  return {"hardware_compatibility": options.hardware_compatibility,
          "hardware_compatibility_level": applied.get("hardware_compatibility_level"),
          "version_compatible": options.version_compatible, "exclude_lean_runtime": options.exclude_lean_runtime,
          "tf32": applied.get("tf32")}


def engine_metadata(*, precision, source_artifact, source_sha256, built, gpu, profile, builder_options,
                    timing_cache, layers, checks, created=None, compatibility=None):
  """The content of `model.json` beside a `trt` plan.

  Args:
    precision, source_artifact, source_sha256, built, profile, checks, created: see `variant.plan_metadata`.
    gpu: the `cuda_devices.Gpu` it was built on.
    builder_options: dict of the builder settings used.
    timing_cache: what happened to the timing cache (a sentence).
    layers: `variant.layer_precisions` of the engine.
    compatibility: `compatibility_record` (None: built without the options).
  """
  extra = {}
  if compatibility is not None:
    extra["compatibility"] = compatibility
  metadata = plan_metadata(format_name="trt", precision=precision, source_artifact=source_artifact,
                       source_sha256=source_sha256, built=built, profile=profile,
                       builder=dict(builder_options, timing_cache=timing_cache), checks=checks, created=created,
                       gpu_name=gpu.name, compute_capability=gpu.compute_capability, gpu=gpu.to_json(),
                       layers_by_precision=layers, **extra)
  if compatibility is not None:
    metadata["compatibility"]["runs_on"] = runs_on(metadata)
  return metadata


# --- the format ----------------------------------------------------------------------------------------------

class TensorRTFormat(Format):
  name = "trt"
  description = "TensorRT engine (model.plan + model.json), built from the ONNX variant of the same precision"
  options_class = TensorRTOptions
  model_file = PLAN_FILE
  serving = TRT_SERVING

  def triton_batching(self, metadata, input_names, max_batch_size, batch_sizes):
    del max_batch_size, batch_sizes  # a plan serves what its optimization profile covers
    return plan_batching(metadata, input_names)

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
    options = job.format_options(self.name)
    status = probe()
    device = options.device or 0
    reason = unavailable_text(status, device)
    if reason:
      raise VariantUnavailable(reason)
    source = self.source_of(precision)
    onnx_path, io, profile = source_model(job, source, source_dir)

    gpu = status.gpus[device]
    if options.hardware_compatibility == "ampere_plus" and int(gpu.compute_capability.split(".")[0]) < 8:
      raise VariantFailed(f"{_argument('hardware_compatibility')}='ampere_plus' builds only on an Ampere or later "
                          f"GPU; GPU {device}: {gpu.name} has compute capability {gpu.compute_capability}")
    key = CacheKey(gpu.name, gpu.compute_capability, status.tensorrt_version)
    store = TimingCacheStore(job.root)
    loaded = store.load(key) if options.timing_cache else None
    workspace = options.workspace_mb * (1 << 20) if options.workspace_mb else job.options.max_workspace_size_bytes
    settings = tensorrt_build.BuildSettings(
        precision=precision, workspace_bytes=workspace, builder_optimization_level=options.builder_optimization_level,
        use_timing_cache=options.timing_cache, timing_cache=loaded.data if loaded else None,
        hardware_compatibility=(None if options.hardware_compatibility == "none"
                                else HARDWARE_LEVELS[options.hardware_compatibility]),
        version_compatible=options.version_compatible, exclude_lean_runtime=options.exclude_lean_runtime)
    try:
      cuda_devices.set_device(device)
    except cuda_devices.CudaUnavailable as err:
      raise VariantUnavailable(str(err)) from err
    built = tensorrt_build.build_engine(onnx_path, settings, profile, tensorrt_build.TENSORRT)
    checks = build_checks(built, io, profile, source, job.max_batch_size)
    # Loading it back proves the plan deserializes here; the inspector says what its layers really run in.
    layers = inspect_layers(built.plan, tensorrt_build.TENSORRT, precision, source,
                            host_code_allowed=options.version_compatible and not options.exclude_lean_runtime)
    checks["deserialize"] = f"passed: the engine deserializes on {gpu.name} (compute capability {gpu.compute_capability})"
    if precision == "INT8":
      checks["int8_layers"] = f"passed: {layers['int8']} layer(s) run in INT8 (engine inspector)"

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
                               timing_cache=timing_cache, layers=layers, checks=checks,
                               compatibility=compatibility_record(options, built))
    write_variant(output_dir, built.plan, metadata)
    logging.info("tftrt_keras: built %s engine (%d bytes) in %.1f s on %s", precision, len(built.plan),
                 built.seconds, gpu.name)
    return {"file": PLAN_FILE, "engine_bytes": len(built.plan), "tensorrt_version": built.tensorrt_version,
            "gpu_name": gpu.name, "compute_capability": gpu.compute_capability, "profiles": profile,
            "strongly_typed": built.strongly_typed, "timing_cache": timing_cache,
            "build_seconds": round(built.seconds, 3), "layers_by_precision": layers,
            "runs_on": metadata["compatibility"]["runs_on"]}

  def open_runner(self, path, job):
    """The runner on the plan, after `compat.plan_refusal` found nothing against this GPU and TensorRT.

    Raises:
      RunnerUnavailable: no TensorRT or GPU here, or the plan's model.json says it cannot run on them (the
        message says exactly why and what to rebuild with).
    """
    from tftrt_keras.formats.tensorrt import build as tensorrt_build  # pylint: disable=g-import-not-at-top
    from tftrt_keras.formats.tensorrt.cuda_runner import open_plan_runner  # pylint: disable=g-import-not-at-top
    options = job.format_options(self.name)
    device = options.device or 0
    status = probe()
    reason = unavailable_text(status, device)
    if reason:
      raise RunnerUnavailable(reason)
    with open(os.path.join(path, METADATA_FILE)) as f:
      metadata = json.load(f)
    plan_path = os.path.join(path, PLAN_FILE)
    refusal, notes = plan_refusal(metadata, status.tensorrt_version, status.gpus[device],
                                  tensorrt_build.hardware_levels())
    if refusal:
      raise RunnerUnavailable(f"this TensorRT plan cannot run here: {refusal}")
    for note in notes:
      logging.warning("tftrt_keras: %s: %s", plan_path, note)
    return open_plan_runner(plan_path, job.signature or None, options.cuda_binding, device,
                            host_code_allowed=host_code_allowed(metadata, file_sha256(plan_path)))


FORMAT = TensorRTFormat()
