"""absl flag definitions for training scripts: `define_export_flags()` defines them (nothing at import).

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

from absl import flags

from tftrt_keras.conversion_options import DEFAULT_WORKSPACE_BYTES, ConversionOptions
from tftrt_keras.precisions import PRECISIONS


def define_export_flags(flag_values=flags.FLAGS, *, export_dir=True, training=True):
  """Defines the export flags on `flag_values`.

  Args:
    flag_values: the `FlagValues` to define on (absl's global `FLAGS` by default).
    export_dir: define `--export_dir` (the offline exporter names its own `--output_dir` instead).
    training: define the flags only a training run uses (`--calibration_batches`, `--export_save_best_only`,
      `--export_monitor`, `--export_blocking`).

  Returns:
    {flag name: FlagHolder} of the flags defined (for `flagsaver` in tests, or typed access).
  """
  fv = flag_values
  before = set(fv)
  if export_dir:
    flags.DEFINE_string("export_dir", None, "Directory for the normal export, its TF-TRT variants and manifests.",
                        flag_values=fv)
  flags.DEFINE_list("precisions", list(PRECISIONS), f"TF-TRT variants to build, a subset of {','.join(PRECISIONS)}.",
                    flag_values=fv)
  flags.DEFINE_integer("max_batch_size", None, "Largest batch the TensorRT engines must serve "
                       "(default: the largest captured batch).", flag_values=fv)
  flags.DEFINE_integer("max_workspace_size_bytes", DEFAULT_WORKSPACE_BYTES, "TensorRT builder workspace per engine.",
                       flag_values=fv)
  flags.DEFINE_integer("minimum_segment_size", 3, "Smallest subgraph TF-TRT turns into an engine.", flag_values=fv)
  flags.DEFINE_integer("maximum_cached_engines", 1, "Engines cached per TensorRT op.", flag_values=fv)
  flags.DEFINE_integer("exports_to_keep", None, "Keep only the newest N exports (default: all).", flag_values=fv)
  flags.DEFINE_boolean("require_tensorrt", False, "Fail before training when TF-TRT cannot run here, instead of "
                       "recording the TF-TRT variants as skipped.", flag_values=fv)
  flags.DEFINE_integer("gpu_memory_limit_mb", None, "TensorFlow's GPU memory inside the export worker; the rest "
                       "is left to TensorRT (default: grow on demand).", flag_values=fv)
  flags.DEFINE_boolean("verify", True, "Check every produced artifact against the normal export on held-out "
                       "samples (errors, top-1 agreement, latency) and reject those outside the thresholds.",
                       flag_values=fv)
  flags.DEFINE_float("export_timeout_seconds", None, "Kill an export worker that runs longer than this.",
                     flag_values=fv)
  if training:
    flags.DEFINE_integer("calibration_batches", 8, "Validation batches kept (uniformly sampled) for INT8 "
                         "calibration and verification.", flag_values=fv)
    flags.DEFINE_boolean("export_save_best_only", False, "Export only when `--export_monitor` improves.",
                         flag_values=fv)
    flags.DEFINE_string("export_monitor", "val_loss", "Metric that decides `--export_save_best_only`.",
                        flag_values=fv)
    flags.DEFINE_boolean("export_blocking", False, "Wait for each conversion instead of converting in the "
                         "background while training goes on.", flag_values=fv)

  def _validator(name, check, message):
    flags.register_validator(name, check, message=message, flag_values=fv)

  _validator("precisions", lambda v: bool(v) and all(p.strip().upper() in PRECISIONS for p in v),
             f"--precisions must be a non-empty subset of {','.join(PRECISIONS)}")
  for name in ("max_workspace_size_bytes", "minimum_segment_size", "maximum_cached_engines"):
    _validator(name, lambda v: v is not None and v > 0, f"--{name} must be a positive integer")
  for name in ("max_batch_size", "exports_to_keep", "gpu_memory_limit_mb", "export_timeout_seconds"):
    _validator(name, lambda v: v is None or v > 0, f"--{name} must be positive when set")
  if training:
    _validator("calibration_batches", lambda v: v is not None and v >= 0,
               "--calibration_batches must be zero or more")
    flags.register_multi_flags_validator(
        ["precisions", "calibration_batches"],
        lambda f: not ("INT8" in [p.strip().upper() for p in f["precisions"]] and f["calibration_batches"] == 0),
        message="--precisions includes INT8, which needs calibration data, but --calibration_batches=0 captures "
                "none; set --calibration_batches to 1 or more, or drop INT8", flag_values=fv)
  return {name: flags.FlagHolder(fv, fv[name]) for name in sorted(set(fv) - before)}


def conversion_options_from_flags(flag_values=flags.FLAGS, **overrides):
  """The `ConversionOptions` the export flags describe (`overrides` win)."""
  fv = flag_values
  options = dict(precisions=tuple(fv.precisions), max_batch_size=fv.max_batch_size,
                 max_workspace_size_bytes=fv.max_workspace_size_bytes, minimum_segment_size=fv.minimum_segment_size,
                 maximum_cached_engines=fv.maximum_cached_engines, require_tensorrt=fv.require_tensorrt,
                 gpu_memory_limit_mb=fv.gpu_memory_limit_mb, timeout_seconds=fv.export_timeout_seconds,
                 verify=fv.verify)
  options.update(overrides)
  return ConversionOptions(**options)
