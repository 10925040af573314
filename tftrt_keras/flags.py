"""absl flag definitions for training scripts and `tftrt-export`: `define_export_flags()` defines them.

Nothing is defined at import. Every flag starts with `export_` (`--export_precisions`, `--export_verify`,
...), so a training script that owns `--precisions`, `--max_batch_size` or `--verify` itself keeps them.

Example:
  from absl import app, flags
  import tftrt_keras
  from tftrt_keras import flags as tftrt_flags

  FLAGS = flags.FLAGS
  tftrt_flags.define_export_flags()
  flags.adopt_module_key_flags(tftrt_flags)  # --help then lists the export flags

  def main(_):
    model.fit(..., callbacks=[tftrt_keras.TrtExport.from_flags(FLAGS)])

  app.run(main)
"""

import json

from absl import flags

from tftrt_keras.options import (ALL_THREADS, AUTO_WORKER, CONVERSION_POLICIES, DEFAULT_TIMEOUT_SECONDS,
                                 DEFAULT_WORKSPACE_BYTES, LOWEST_PRIORITY, ConversionOptions)
from tftrt_keras.formats import AUTO, FORMATS, normalize_formats
from tftrt_keras.precisions import PRECISIONS, normalize_precisions

# Flag name -> `ConversionOptions` field, for every flag `conversion_options_from_flags` reads (when defined).
OPTION_FLAGS = {
    "export_precisions": "precisions",
    "export_formats": "formats",
    "export_format_options": "format_options",
    "export_max_batch_size": "max_batch_size",
    "export_max_workspace_size_bytes": "max_workspace_size_bytes",
    "export_minimum_segment_size": "minimum_segment_size",
    "export_maximum_cached_engines": "maximum_cached_engines",
    "export_require_tensorrt": "require_tensorrt",
    "export_gpu_memory_limit_mb": "gpu_memory_limit_mb",
    "export_timeout_seconds": "timeout_seconds",
    "export_conversion_policy": "conversion_policy",
    "export_conversion_device": "conversion_device",
    "export_triton_repository": "triton_repository",
    "export_triton_model_name": "triton_model_name",
    "export_verify": "verify",
    "export_verification_samples": "verification_samples",
    "export_worker_threads": "worker_threads",
    "export_worker_nice": "worker_nice",
}


class _NameList(list):
  """A list flag value that prints as the user typed it (`FP16,INT8`), not as a Python list repr.

  absl prints a flag's value in its validation messages (`flags export_precisions=...`).
  """

  def __str__(self):
    return ",".join(self)


class _CheckedParser(flags.ArgumentParser):
  """A parser whose `convert` raises ValueError with a plain message; absl prefixes it with the flag and the
  value as typed: `flag --export_precisions=FP8: expected a subset of FP32,FP16,INT8 (unknown: FP8)`."""

  def __init__(self, convert, type_name, syntactic_help=""):
    super().__init__()
    self._convert = convert
    self._type_name = type_name
    self.syntactic_help = syntactic_help

  def parse(self, argument):
    return self._convert(argument)

  def flag_type(self):
    return self._type_name


def _precisions(argument):
  items = argument.split(",") if isinstance(argument, str) else list(argument)
  unknown = [p.strip() for p in items if p.strip() and p.strip().upper() not in PRECISIONS]
  if unknown:
    raise ValueError(f"expected a subset of {','.join(PRECISIONS)} (unknown: {','.join(unknown)})")
  return _NameList(normalize_precisions(items))


def _formats(argument):
  if isinstance(argument, str) and argument.strip().lower() == AUTO:
    return AUTO
  items = argument.split(",") if isinstance(argument, str) else list(argument)
  unknown = [f.strip() for f in items if f.strip() and f.strip().lower() not in FORMATS]
  if unknown:
    raise ValueError(f"expected {AUTO} or a subset of {','.join(FORMATS)} (unknown: {','.join(unknown)})")
  return _NameList(normalize_formats(items))


def _format_options(argument):
  if argument is None or isinstance(argument, dict):
    value = argument
  else:
    try:
      value = json.loads(argument) if argument.strip() else {}
    except json.JSONDecodeError as err:
      raise ValueError(f"expected a JSON object such as '{{\"onnx\": {{\"opset\": 17}}}}' ({err})") from None
  if value is not None and not isinstance(value, dict):
    raise ValueError(f"expected a JSON object {{format name: {{option: value}}}} with formats among "
                     f"{','.join(FORMATS)}")
  try:
    return ConversionOptions(format_options=value).format_options
  except ValueError as err:  # each format checks its own options; its message says what is wrong
    raise ValueError(f"expected options each format accepts: {err}") from None


def _conversion_device(argument):
  if argument is None:
    return None
  device = argument.strip().lower()
  if not device:
    return None
  if not (device == "cpu" or (device.startswith("gpu:") and device[4:].isdigit())):
    raise ValueError("expected cpu or gpu:<index> (e.g. gpu:1), or empty for the first GPU")
  return device


def _timeout(argument):
  value = float(argument) if isinstance(argument, str) else argument
  if value is None:
    return None
  if not value >= 0:
    raise ValueError("expected a number of seconds, or 0 to wait without limit")
  return value


def _worker_threads(argument):
  value = str(argument).strip().lower()
  if value in (AUTO_WORKER, ALL_THREADS):
    return value
  if not value.isdigit() or int(value) <= 0:
    raise ValueError(f"expected a positive number of threads, {ALL_THREADS} or {AUTO_WORKER}")
  return int(value)


def _worker_nice(argument):
  value = str(argument).strip().lower()
  if value == AUTO_WORKER:
    return value
  if not value.isdigit() or int(value) > LOWEST_PRIORITY:
    raise ValueError(f"expected a niceness from 0 to {LOWEST_PRIORITY}, or {AUTO_WORKER}")
  return int(value)


def _non_empty(argument):
  if argument is None or not str(argument).strip():
    return None
  return str(argument).strip()


def _define(parser, name, default, help_text, fv, serializer=None):
  flags.DEFINE(parser, name, default, help_text, flag_values=fv,
               serializer=serializer or flags.ArgumentSerializer())


def define_export_flags(flag_values=flags.FLAGS, *, export_dir=True, training=True):
  """Defines the export flags on `flag_values`.

  Args:
    flag_values: the `FlagValues` to define on (absl's global `FLAGS` by default).
    export_dir: define `--export_dir` (the offline exporter names its own `--output_dir` instead).
    training: define the flags only a training run uses (`--export_calibration_batches`,
      `--export_save_best_only`, `--export_monitor`, `--export_blocking`, `--export_conversion_policy`,
      `--export_signature_key`) and word the help for training; False words it for an existing SavedModel
      (`tftrt-export`, which has its own `--signature_key` and `--calibration_data`).

  Returns:
    {flag name: FlagHolder} of the flags defined (for `flagsaver` in tests, or typed access).
  """
  fv = flag_values
  before = set(fv)
  if training:
    largest_batch = "the largest captured validation batch"
    fail_early = "Fail before training starts"
  else:
    largest_batch = "--calibration_batch_size, or 8"
    fail_early = "Fail before any work starts"
  if export_dir:
    flags.DEFINE_string("export_dir", None, "Directory for the normal export, its deployment variants and "
                        "manifests (one numbered version per export).", flag_values=fv)
  list_serializer = flags.CsvListSerializer(",")
  _define(_CheckedParser(_precisions, "list", f"a subset of {','.join(PRECISIONS)}"), "export_precisions",
          ",".join(PRECISIONS), f"Precisions to build in every format, a subset of {','.join(PRECISIONS)} "
          "(empty: the frozen graph and samples only).", fv, list_serializer)
  _define(_CheckedParser(_formats, "string", f"{AUTO} or a subset of {','.join(FORMATS)}"), "export_formats", AUTO,
          f"Deployment formats, {AUTO} or a subset of {','.join(FORMATS)}: tftrt (TF-TRT SavedModels, TensorFlow "
          "2.15-2.17), onnx (ONNX FP32/FP16/INT8 Q/DQ), trt (TensorRT engines from the ONNX variants), trt_rtx "
          "(TensorRT-RTX engines from the ONNX variants, built on any machine). auto: "
          "those this TensorFlow has, the rest recorded as skipped with the reason.", fv)
  _define(_CheckedParser(_format_options, "string", "a JSON object"), "export_format_options", None,
          "Per-format options as a JSON object, e.g. '{\"onnx\": {\"opset\": 17}}' (each format documents its "
          "own).", fv, _JsonSerializer())
  flags.DEFINE_integer("export_max_batch_size", None, "Largest batch the engines must serve (default: "
                       f"{largest_batch}).", lower_bound=1, flag_values=fv)
  flags.DEFINE_integer("export_max_workspace_size_bytes", DEFAULT_WORKSPACE_BYTES,
                       "TensorRT builder workspace per engine, in bytes.", lower_bound=1, flag_values=fv)
  flags.DEFINE_integer("export_minimum_segment_size", 3, "Smallest subgraph TF-TRT turns into an engine.",
                       lower_bound=1, flag_values=fv)
  flags.DEFINE_integer("export_maximum_cached_engines", 1, "Engines cached per TF-TRT op (one per input-shape "
                       "profile).", lower_bound=1, flag_values=fv)
  if training:
    flags.DEFINE_integer("export_exports_to_keep", 5, "Keep only the newest N exports this library wrote "
                         "under --export_dir.", lower_bound=1, flag_values=fv)
  else:
    flags.DEFINE_integer("export_exports_to_keep", None, "Keep only the newest N versions this tool wrote into "
                         "--output_dir (default: keep all).", lower_bound=1, flag_values=fv)
  flags.DEFINE_boolean("export_require_tensorrt", False, f"{fail_early} when no requested TensorRT format "
                       "(tftrt, trt, trt_rtx) can build and run engines here, instead of recording them as skipped.", flag_values=fv)
  flags.DEFINE_integer("export_gpu_memory_limit_mb", None, "TensorFlow's GPU memory inside the export worker, "
                       "in MB; TF-TRT allocates TensorRT's memory through TensorFlow's allocator, so this bounds "
                       "both (default: grow on demand).", lower_bound=1, flag_values=fv)
  _define(_CheckedParser(_conversion_device, "string", "cpu or gpu:<index>"), "export_conversion_device", None,
          "Device the export worker builds on: cpu or gpu:<index> (default: the first GPU, or the CPU where there "
          "is none). The worker sees only that device.", fv)
  _define(_CheckedParser(_timeout, "float", "seconds, 0 for no limit"), "export_timeout_seconds",
          DEFAULT_TIMEOUT_SECONDS, "Kill an export worker that runs longer than this many seconds "
          "(0: no limit).", fv)
  _define(_CheckedParser(_non_empty, "string"), "export_triton_repository", None,
          "Triton model repository to publish the servable ONNX and TensorRT variants into (one Triton model "
          "per variant, versions = export versions).", fv)
  _define(_CheckedParser(_non_empty, "string"), "export_triton_model_name", None,
          "Prefix of the Triton model names (<name>_onnx_fp16; default: the export directory's name).", fv)
  beside = "while training goes on, every core when --export_blocking" if training else "every core"
  _define(_CheckedParser(_worker_threads, "string", f"a number, {ALL_THREADS} or {AUTO_WORKER}"),
          "export_worker_threads", AUTO_WORKER, "Threads the export worker gives each library (TensorFlow, ONNX "
          f"Runtime, BLAS, the TensorRT builder): a number, {ALL_THREADS} (every core) or {AUTO_WORKER} "
          f"(max(1, cores // 4) {beside}).", fv)
  nice_auto = f"{LOWEST_PRIORITY} while training goes on, unchanged when --export_blocking" if training else "unchanged"
  _define(_CheckedParser(_worker_nice, "string", f"0-{LOWEST_PRIORITY} or {AUTO_WORKER}"), "export_worker_nice",
          AUTO_WORKER, f"CPU niceness of the export worker, 0-{LOWEST_PRIORITY} ({LOWEST_PRIORITY}: lowest "
          f"priority), or {AUTO_WORKER} ({nice_auto}).", fv)
  flags.DEFINE_boolean("export_verify", True, "Check every produced variant against the normal export on "
                       "held-out samples (errors, top-1 agreement, latency) and reject those outside the "
                       "thresholds.", flag_values=fv)
  flags.DEFINE_integer("export_verification_samples", 500, "Held-out samples verification aims for (never used "
                       "for calibration); fewer when fewer were " + ("captured." if training else "given."),
                       lower_bound=1, flag_values=fv)
  if training:
    flags.DEFINE_integer("export_calibration_batches", 16, "Validation batches captured (spread over the "
                         "validation pass) for INT8 calibration and verification.", lower_bound=0,
                         flag_values=fv)
    flags.DEFINE_boolean("export_save_best_only", False, "Export only when --export_monitor improves.",
                         flag_values=fv)
    flags.DEFINE_string("export_monitor", "val_loss", "Metric that decides --export_save_best_only.",
                        flag_values=fv)
    flags.DEFINE_boolean("export_blocking", False, "Wait for each conversion instead of converting in the "
                         "background while training goes on.", flag_values=fv)
    flags.DEFINE_enum("export_conversion_policy", "latest", CONVERSION_POLICIES, "When exports come faster than "
                      "conversions: latest converts the newest export and lets a waiting older one be superseded "
                      "(its frozen graph and samples are still made); every converts each export in turn.",
                      flag_values=fv)
    flags.DEFINE_string("export_signature_key", None, "Signature of the exported model to freeze and convert "
                        "(default: serving_default when present, else predict, else the only one).",
                        flag_values=fv)
    flags.register_multi_flags_validator(
        ["export_precisions", "export_calibration_batches"],
        lambda f: not ("INT8" in [str(p).strip().upper() for p in f["export_precisions"]]
                       and f["export_calibration_batches"] == 0),
        message="--export_precisions includes INT8, which needs calibration data, but "
                "--export_calibration_batches=0 captures none; set --export_calibration_batches to 1 or more, "
                "or drop INT8", flag_values=fv)
  return {name: flags.FlagHolder(fv, fv[name]) for name in sorted(set(fv) - before)}


class _JsonSerializer(flags.ArgumentSerializer):

  def serialize(self, value):
    return "" if value is None else json.dumps(value, sort_keys=True)


def conversion_options_from_flags(flag_values=flags.FLAGS, **overrides):
  """The `ConversionOptions` the export flags describe; `overrides` (field names) win.

  Reads every flag of `OPTION_FLAGS` that `flag_values` defines (`tftrt-export` has no
  `--export_conversion_policy`, for instance); fields without a flag keep their defaults.

  Raises:
    ValueError: a value `ConversionOptions` refuses (flags set programmatically skip the parsers); the message
      names the flag.
  """
  fv = flag_values
  options = {}
  for flag_name, field in OPTION_FLAGS.items():
    if flag_name in fv:
      options[field] = fv[flag_name].value
  if "precisions" in options:
    options["precisions"] = tuple(options["precisions"])
  if options.get("formats") is not None and options["formats"] != AUTO:
    options["formats"] = tuple(options["formats"])
  if "format_options" in options:
    options["format_options"] = options["format_options"] or {}
  if options.get("timeout_seconds") == 0:
    options["timeout_seconds"] = None  # --export_timeout_seconds=0: no limit
  options.update(overrides)
  try:
    return ConversionOptions(**options)
  except ValueError as err:
    flag_of = {field: name for name, field in OPTION_FLAGS.items() if name in fv and field not in overrides}
    named = [f"--{flag}" for field, flag in flag_of.items() if f"`{field}`" in str(err)]
    if not named:
      raise
    raise ValueError(f"{', '.join(named)}: {err}") from err


def training_settings_from_flags(flag_values=flags.FLAGS):
  """The flags of a training run that are not `ConversionOptions`: {argument name: value}.

  Keys are the `TrtExport` / `TrtExporter` argument names (`export_dir`, `exports_to_keep`,
  `calibration_batches`, `save_best_only`, `monitor`, `blocking`, `signature_key`); flags not defined on
  `flag_values` are left out.
  """
  names = {"export_dir": "export_dir", "export_exports_to_keep": "exports_to_keep",
           "export_calibration_batches": "calibration_batches", "export_save_best_only": "save_best_only",
           "export_monitor": "monitor", "export_blocking": "blocking", "export_signature_key": "signature_key"}
  return {argument: flag_values[flag].value for flag, argument in names.items() if flag in flag_values}
