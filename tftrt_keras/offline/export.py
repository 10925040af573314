"""The pipeline on an existing SavedModel: what `tftrt-export` runs, and a Python API for the same."""

import os
import shutil

from tftrt_keras.samples import calibration_data
from tftrt_keras.errors import invalid_argument
from tftrt_keras.checks import OFFLINE
from tftrt_keras.options import options_from_keywords, with_option_keywords
from tftrt_keras.preflight import require_tensorrt_or_raise
from tftrt_keras.artifacts.layout import ExportLayout, RootLock
from tftrt_keras.pipeline.scheduler import ExportScheduler
from tftrt_keras.pipeline.prepare import prepare_export
from tftrt_keras.formats.signature import DEFAULT_SIGNATURE_KEY, load_signature
from tftrt_keras.offline.labels import metrics_spec, split_labels


# tftrt-export has no calibration_batches: every sample it calibrates on comes from --calibration_data.
MORE_SAMPLES = "put more samples in the calibration data (--calibration_data)"


def _samples_from(calibration, signature):
  """Accepts an `.npz` path or {input name: array}; returns ({name: array} checked against the signature,
  the `label:<output>` arrays beside them)."""
  if calibration is None:
    return None, {}
  if isinstance(calibration, (str, os.PathLike)):
    if not os.path.isfile(calibration):
      raise invalid_argument("calibration_data", str(calibration), "the path of an existing .npz file")
    arrays = calibration_data.load_samples(calibration)
  elif isinstance(calibration, dict):
    arrays = dict(calibration)
  else:
    raise invalid_argument("calibration_data", type(calibration).__name__,
                           "an .npz path or a dict {input name: array}")
  arrays, labels = split_labels(arrays, signature)
  calibration_data.check_against_signature(arrays, signature)
  return arrays, labels


@with_option_keywords(OFFLINE)
def export_saved_model(saved_model_dir, output_dir, *, signature_key=DEFAULT_SIGNATURE_KEY, calibration_data=None,
                       calibration_batch_size=None, source=None, exports_to_keep=None, metrics=None, options=None,
                       **option_keywords):
  """Copies a SavedModel into `output_dir`'s layout as a new version and builds every artifact for it.

  Args:
    saved_model_dir: an existing SavedModel.
    output_dir: export root (created when missing).
    signature_key: the signature to freeze and convert.
    calibration_data: `.npz` path or {input name: array}, samples along axis 0; required for INT8. Arrays
      named `label:<output>` (and `sample_weight:<output>`) are labels, for `metrics`.
    calibration_batch_size: batch size for calibration and engine building (default `max_batch_size` or 8).
    source: extra fields for the manifest's `source`.
    exports_to_keep: keep only this many versions in `output_dir`.
    options: a `ConversionOptions`, instead of option keywords.
    **option_keywords: any `ConversionOptions` option (precisions, formats, ...).
    metrics: Keras metrics computed on every variant from the labels, e.g. ["accuracy"] or {output: ["mae"]}.

  Returns:
    The closed manifest (a dict).

  Raises:
    ValueError: a bad argument (checked before anything is written), or `options` with option keywords.
    TypeError: an unknown keyword.
    TensorRTUnavailableError: `options.require_tensorrt` and no requested TensorRT format can run here.
  """
  options = options_from_keywords(OFFLINE, options, option_keywords, "export_saved_model")
  _check_output_dir(output_dir)
  loaded, _, signature = load_signature(saved_model_dir, signature_key)
  del loaded
  samples, labels = _samples_from(calibration_data, signature)
  task_spec = metrics_spec(metrics, labels)
  if "INT8" in options.precisions and samples is None:
    raise invalid_argument("calibration_data", None, "calibration samples (.npz) when precisions include INT8",
                           hint="Pass --calibration_data, or drop INT8 from --export_precisions.")
  if calibration_batch_size is not None and (not isinstance(calibration_batch_size, int) or calibration_batch_size <= 0):
    raise invalid_argument("calibration_batch_size", calibration_batch_size, "a positive integer")
  if options.require_tensorrt:
    require_tensorrt_or_raise(options)
  layout = ExportLayout(output_dir)
  # Also catches what `_check_output_dir` cannot foresee (sysfs, a full disk, ...).
  layout.ensure_root(argument="output_dir")
  with RootLock(layout):
    layout.recover_interrupted()
    version = layout.next_version()
    batch_size = calibration_batch_size or options.max_batch_size or 8
    batches = calibration_data_batches(samples, batch_size)
    request = prepare_export(
        layout.root, version, dict({"kind": "saved_model", "saved_model_dir": os.path.abspath(saved_model_dir)},
                                   **(source or {})),
        options, write_native=lambda d: _copy_tree(saved_model_dir, d), batches=batches,
        signature_key=signature_key, more_samples=MORE_SAMPLES, task_spec=task_spec,
        labels=calibration_data_batches(labels, batch_size) if task_spec else None)
    scheduler = ExportScheduler(exports_to_keep=exports_to_keep)
    scheduler.submit(request, blocking=True)
    return scheduler.finished[-1]


def _check_output_dir(output_dir):
  """Raises ValueError unless `output_dir` is, or can be created as, a directory this process writes into.

  Checked before anything is written, so a bad path leaves the file system as it was.
  """
  if not isinstance(output_dir, (str, os.PathLike)) or not os.fspath(output_dir):
    raise invalid_argument("output_dir", output_dir, "the path of a directory to write the export into")
  path = os.path.abspath(os.fspath(output_dir))
  if os.path.exists(path) and not os.path.isdir(path):
    raise invalid_argument("output_dir", str(output_dir), "a directory (this path is an existing file)")
  existing = path
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise invalid_argument("output_dir", str(output_dir), "a directory this process can create and write",
                           hint=f"It cannot be created: {existing} is a file, not a directory.")
  if not os.access(existing, os.W_OK | os.X_OK):
    raise invalid_argument("output_dir", str(output_dir), "a directory this process can create and write",
                           hint=f"{existing} is not writable (permissions or a read-only file system).")


def calibration_data_batches(samples, batch_size):
  return calibration_data.batches(samples, batch_size) if samples else []


def _copy_tree(source, destination):
  # copytree wants to create the destination itself.
  os.rmdir(destination)
  shutil.copytree(source, destination)
