"""TensorRT-RTX engines (`trt_rtx_fp32`, `trt_rtx_fp16`, `trt_rtx_int8`), each built from the ONNX variant of its
precision, on any machine: TensorRT-RTX compiles ahead of time without a GPU.

    trt_rtx_int8/3/model.plan   the serialized engine (TensorRT-RTX's Runtime loads it; Triton cannot)
    trt_rtx_int8/3/model.json   TensorRT-RTX version, targeted compute capabilities, profile, builder settings,
                                SHA-256 of the source model.onnx, build time, checks, warnings

Builder and runner are the `trt` format's (`build`, `cuda_runner`). Networks are strongly typed (precision is in
the ONNX model); a plan targets compute capabilities, not one GPU (`compute_capabilities`). Running it needs a
GPU of a targeted compute capability: elsewhere `open_runner` raises `RunnerUnavailable` and `model.json` says
which checks could not run. No timing cache: it does not change TensorRT-RTX engines and loading one needs a GPU.
"""

import dataclasses
import json
import os

from absl import logging

from tftrt_keras.errors import invalid_argument
from tftrt_keras.formats.base import Format, RunnerUnavailable, VariantUnavailable, artifact_name
from tftrt_keras.formats.tensorrt.format import probe
from tftrt_keras.formats.tensorrt.serving import RTX_SERVING
from tftrt_keras.formats.tensorrt.variant import (METADATA_FILE, PLAN_FILE, build_checks, check_integer_options,
                                                  file_sha256, inspect_layers, plan_metadata, source_model,
                                                  write_variant)

EDITION = "tensorrt_rtx"  # build.TENSORRT_RTX, without importing the builder module here
PORTABLE, CURRENT = "portable", "current"
# The members of tensorrt_rtx.ComputeCapability a plan can target (1.7; NONE and CURRENT aside), checked against
# the real enum by the tests; kept here so options are validated without importing TensorRT-RTX.
COMPUTE_CAPABILITIES = ("SM75", "SM80", "SM86", "SM89", "SM120", "SM121")
# TensorRT-RTX's documented portable default, what a plan targets when the builder config names none.
PORTABLE_TARGETS = ("8.6", "8.9", "12.0")
TIMING_CACHE = ("not used: TensorRT-RTX's timing cache does not change its engines (deprecated in TensorRT-RTX 1.2) "
                "and loading one needs a GPU")


def _argument(name):
  return f"format_options['trt_rtx'].{name}"


def capability_number(name):
  """"8.6" for "SM86", "12.0" for "SM120"."""
  digits = name[2:]
  return f"{digits[:-1]}.{digits[-1]}"


@dataclasses.dataclass(frozen=True)
class TensorRTRTXOptions:
  """Options of the `trt_rtx` format (`ConversionOptions(format_options={"trt_rtx": {...}})`).

  Attributes:
    compute_capabilities: "portable" (default: 8.6, 8.9, 12.0), "current" (the export worker's GPU), or a tuple
      of `COMPUTE_CAPABILITIES` names, e.g. ("SM75",) for a device-specific Turing build.
    workspace_mb: the builder's workspace memory pool limit in MiB; None: `max_workspace_size_bytes`.
    builder_optimization_level: 0 (fastest build) to 5; None: TensorRT-RTX's default (3).
  """

  compute_capabilities: object = PORTABLE
  workspace_mb: int = None
  builder_optimization_level: int = None

  def __post_init__(self):
    object.__setattr__(self, "compute_capabilities", _checked_capabilities(self.compute_capabilities))
    check_integer_options(self, _argument, (("workspace_mb", 1, None), ("builder_optimization_level", 0, 5)))


def _checked_capabilities(value):
  expected = (f"'{PORTABLE}', '{CURRENT}', or a non-empty tuple of distinct names among {COMPUTE_CAPABILITIES}")
  if isinstance(value, str):
    if value.strip().lower() in (PORTABLE, CURRENT):
      return value.strip().lower()
    raise invalid_argument(_argument("compute_capabilities"), value, expected)
  if not isinstance(value, (list, tuple)) or not value or not all(isinstance(v, str) for v in value):
    raise invalid_argument(_argument("compute_capabilities"), value, expected)
  names = tuple(v.strip().upper() for v in value)
  unknown = [n for n in names if n not in COMPUTE_CAPABILITIES]
  if unknown or len(set(names)) != len(names):
    raise invalid_argument(_argument("compute_capabilities"), value, expected,
                           hint=f"Unknown: {unknown}." if unknown else "Each at most once.")
  return names


# --- where it can run -----------------------------------------------------------------------------------------

def targets(options, status):
  """The compute capabilities ("8.6", ...) a plan built with `options` runs on, as far as can be told here."""
  if options.compute_capabilities == PORTABLE:
    return list(PORTABLE_TARGETS)
  if options.compute_capabilities == CURRENT:
    return [gpu.compute_capability for gpu in _supported_gpus(status)[:1]]
  return [capability_number(name) for name in options.compute_capabilities]


def _supported_gpus(status):
  supported = {capability_number(name) for name in COMPUTE_CAPABILITIES}
  return [gpu for gpu in status.gpus if gpu.compute_capability in supported]


def gpus_here(status):
  """What this machine has to run engines on, in a phrase."""
  if status.cuda_python_version is None:
    return "no GPU can be looked for here: cuda-python is not installed (`pip install cuda-python`)"
  if status.cuda_error:
    return f"CUDA finds no GPU here ({status.cuda_error})"
  if not status.gpus:
    return "this machine has no GPU (CUDA counts 0 devices)"
  return "this machine has " + ", ".join(f"GPU {g.index}: {g.name} (compute capability {g.compute_capability})"
                                         for g in status.gpus)


def cannot_run_text(plan_targets, status, how_known=""):
  """Why nothing here can run a plan targeting `plan_targets`, naming the GPUs that can."""
  return (f"no GPU here can run this TensorRT-RTX engine: it runs on NVIDIA GPUs of compute capability "
          f"{', '.join(plan_targets)}{how_known}; {gpus_here(status)}")


def _how_known(options):
  return " (TensorRT-RTX's portable default)" if options.compute_capabilities == PORTABLE else ""


# --- the format -----------------------------------------------------------------------------------------------

class TensorRTRTXFormat(Format):
  name = "trt_rtx"
  description = ("TensorRT-RTX engine (model.plan + model.json), built from the ONNX variant of the same precision "
                 "on any machine; runs on RTX-class GPUs")
  options_class = TensorRTRTXOptions
  model_file = PLAN_FILE
  serving = RTX_SERVING

  def source_of(self, precision):
    return artifact_name("onnx", precision)

  def unavailable_reason(self, options):
    rtx_options = options.options_for(self.name) if options is not None else TensorRTRTXOptions()
    status = probe(edition=EDITION)
    if not status.tensorrt_version:
      from tftrt_keras.formats.tensorrt.build import TENSORRT_RTX_INSTALL  # pylint: disable=g-import-not-at-top
      return f"TensorRT-RTX is not installed ({status.tensorrt_error}): {TENSORRT_RTX_INSTALL}"
    if rtx_options.compute_capabilities == CURRENT and not _supported_gpus(status):
      return (f"{_argument('compute_capabilities')}='current' builds for this machine's GPU, but none here is one "
              f"TensorRT-RTX supports (compute capability "
              f"{', '.join(capability_number(n) for n in COMPUTE_CAPABILITIES)}): {gpus_here(status)}. Use "
              "'portable' or name the targets, e.g. ('SM86', 'SM89')")
    return None

  def environment(self, options):
    rtx_options = options.options_for(self.name) if options is not None else TensorRTRTXOptions()
    status = probe(edition=EDITION)
    facts = status.to_json()
    del facts["pycuda"]  # the runner uses cuda-python
    return dict(facts, compute_capabilities=rtx_options.compute_capabilities
                if isinstance(rtx_options.compute_capabilities, str) else list(rtx_options.compute_capabilities),
                targets=targets(rtx_options, status))

  def build(self, job, precision, source_dir, output_dir):
    from tftrt_keras.formats.tensorrt import build as tensorrt_build, cuda_devices  # pylint: disable=g-import-not-at-top
    options = job.format_options(self.name)
    reason = self.unavailable_reason(job.options)
    if reason:
      raise VariantUnavailable(reason)
    status = probe(edition=EDITION)
    source = self.source_of(precision)
    onnx_path, io, profile = source_model(job, source, source_dir)
    plan_targets = targets(options, status)
    names = {PORTABLE: None, CURRENT: ("CURRENT",)}.get(options.compute_capabilities, options.compute_capabilities)
    runnable = [gpu for gpu in status.gpus if gpu.compute_capability in plan_targets]
    if runnable:
      cuda_devices.set_device(runnable[0].index)  # "current" builds for, and a check loads on, the current device
    workspace = options.workspace_mb * (1 << 20) if options.workspace_mb else job.options.max_workspace_size_bytes
    settings = tensorrt_build.BuildSettings(
        precision=precision, workspace_bytes=workspace, builder_optimization_level=options.builder_optimization_level,
        use_timing_cache=False, compute_capabilities=names)
    built = tensorrt_build.build_engine(onnx_path, settings, profile, EDITION)
    checks = build_checks(built, io, profile, source, job.max_batch_size)
    layers = None
    if runnable:
      layers = inspect_layers(built.plan, EDITION, precision, source)
      checks["deserialize"] = (f"passed: the engine deserializes on {runnable[0].name} (compute capability "
                               f"{runnable[0].compute_capability})")
      if precision == "INT8":
        checks["int8_layers"] = f"passed: {layers['int8']} layer(s) run in INT8 (engine inspector)"
    else:
      checks["deserialize"] = "not run: " + cannot_run_text(plan_targets, status, _how_known(options))
      if precision == "INT8":
        checks["int8_layers"] = ("not run: which layers run in INT8 is read from a deserialized engine (engine "
                                 "inspector), and deserializing needs a GPU that can run it")
    capabilities = {"asked": options.compute_capabilities if isinstance(options.compute_capabilities, str)
                    else list(options.compute_capabilities), "targets": plan_targets,
                    "set_in_builder": built.builder.get("compute_capabilities")}
    if options.compute_capabilities == PORTABLE:
      capabilities["how_known"] = ("TensorRT-RTX's documented portable default: the builder config names no "
                                   "compute capability")
    builder = dict(built.builder, timing_cache=TIMING_CACHE)
    metadata = plan_metadata(format_name=self.name, precision=precision, source_artifact=source,
                             source_sha256=file_sha256(onnx_path), built=built, profile=profile, builder=builder,
                             checks=checks, compute_capabilities=capabilities, layers_by_precision=layers)
    write_variant(output_dir, built.plan, metadata)
    logging.info("tftrt_keras: built TensorRT-RTX %s engine (%d bytes) in %.1f s for compute capability %s",
                 precision, len(built.plan), built.seconds, ", ".join(plan_targets))
    return {"file": PLAN_FILE, "engine_bytes": len(built.plan), "tensorrt_version": built.tensorrt_version,
            "edition": "TensorRT-RTX", "compute_capabilities": plan_targets, "profiles": profile,
            "build_seconds": round(built.seconds, 3), "layers_by_precision": layers}

  def open_runner(self, path, job):
    """The cuda-python runner on the plan, on a GPU of a compute capability it targets.

    Raises:
      RunnerUnavailable: no GPU here can run it (the message names the compute capabilities that can), or
        TensorRT-RTX says the plan is invalid on the GPU there is.
    """
    from tftrt_keras.formats.tensorrt import build as tensorrt_build, cuda_devices  # pylint: disable=g-import-not-at-top
    from tftrt_keras.formats.tensorrt.cuda_runner import open_plan_runner  # pylint: disable=g-import-not-at-top
    with open(os.path.join(path, METADATA_FILE)) as f:
      capabilities = json.load(f).get("compute_capabilities") or {}
    plan_targets = capabilities.get("targets") or []
    how_known = " (TensorRT-RTX's portable default)" if capabilities.get("asked") == PORTABLE else ""
    status = probe(edition=EDITION)
    runnable = [gpu for gpu in status.gpus if gpu.compute_capability in plan_targets]
    if not status.tensorrt_version or not runnable:
      text = cannot_run_text(plan_targets, status, how_known)
      raise RunnerUnavailable(text if status.tensorrt_version else f"{text}; TensorRT-RTX is not installed here")
    gpu = runnable[0]
    plan_path = os.path.join(path, PLAN_FILE)
    try:
      cuda_devices.set_device(gpu.index)
      with open(plan_path, "rb") as f:
        validity = tensorrt_build.engine_validity(f.read(), EDITION)
    except cuda_devices.CudaUnavailable as err:
      raise RunnerUnavailable(f"{cannot_run_text(plan_targets, status, how_known)}; {err}") from err
    if validity and validity[0] == "INVALID":
      raise RunnerUnavailable(f"TensorRT-RTX says this plan cannot run on GPU {gpu.index}: {gpu.name} (compute "
                              f"capability {gpu.compute_capability}): {', '.join(validity[1]) or 'INVALID'}"
                              + (f" ({' | '.join(validity[2])})" if validity[2] else ""))
    return open_plan_runner(plan_path, job.signature or None, "cuda-python", gpu.index, edition=EDITION)


FORMAT = TensorRTRTXFormat()
