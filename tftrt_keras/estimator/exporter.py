"""`TrtExporter`: a `tf.estimator.Exporter` that writes deployment variants next to the normal export (TF 2.15).

The normal export is what `tf.estimator.BestExporter` (or `LatestExporter` / `FinalExporter`) writes at
`<model_dir>/export/<name>/<timestamp>`; frozen graph, samples, variants and the manifest sit beside it in the
shared layout (`tftrt_keras.artifacts.layout`). Variants are built from one signature (`signature_key`, else
`serving_default`, `predict`, or the only one): a canned Estimator behind a raw float receiver has only
`predict`. Samples come from the evaluation pass (`exporter.calibration_hook`) or `calibration_input_fn`, stored
as the signature takes them (serialized `tf.Example`s or raw arrays).

Estimator exists only up to TensorFlow 2.15; on newer TensorFlow importing this module raises ImportError.
"""

import math
import numbers
import os
import warnings

from absl import logging
import numpy as np

from tftrt_keras.errors import invalid_argument
from tftrt_keras.checks import ESTIMATOR
from tftrt_keras.options import (DEFAULT_CALIBRATION_BATCHES, DEFAULT_EXPORTS_TO_KEEP, option_table,
                                 options_from_keywords, with_option_keywords)
from tftrt_keras.estimator.calibration import (CalibrationCaptureHook, CalibrationUnusable, ReceiverSpec, signature_keys,
                                               signature_of)
from tftrt_keras.estimator import own_metrics
from tftrt_keras.estimator.own_metrics import task_inputs
from tftrt_keras.estimator.export_policy import best_from_event_files, loss_smaller, metric_compare_fn
from tftrt_keras.estimator.samples import EvaluationSamples
from tftrt_keras.estimator.signatures import choose_signature_key
from tftrt_keras.errors import TensorRTUnavailableError
from tftrt_keras.preflight import require_tensorrt_or_raise
from tftrt_keras.artifacts.layout import ExportLayout, ExportRootBusy, RootLock
from tftrt_keras.pipeline.scheduler import ExportScheduler
from tftrt_keras.pipeline.prepare import prepare_export, record_failed_export

import tensorflow as tf

try:
  from tensorflow_estimator.python.estimator import exporter as _exporter_lib  # pylint: disable=g-import-not-at-top
  from tensorflow_estimator.python.estimator import util as _estimator_util  # pylint: disable=g-import-not-at-top
except ImportError as err:
  raise ImportError(
      "tftrt_keras.TrtExporter is a tf.estimator exporter, and Estimator is supported with TensorFlow 2.15 "
      f"only (TensorFlow 2.16 and later removed it; this is TensorFlow {tf.__version__}). Use TensorFlow 2.15 with "
      "tensorflow-estimator for Estimator training, or the Keras callback tftrt_keras.TrtExport. "
      f"(Import failed with: {err})") from err

POLICIES = ("best", "latest", "final")
DEFAULT_EVENT_FILE_PATTERN = "eval/*.tfevents.*"
def _check_compare_fn(compare_fn):
  if not callable(compare_fn):
    raise invalid_argument("compare_fn", compare_fn, "None or a callable(best_eval_result, current_eval_result)")
  try:
    args = set(_estimator_util.fn_args(compare_fn))
  except (TypeError, ValueError) as err:
    raise invalid_argument("compare_fn", compare_fn, "a callable(best_eval_result, current_eval_result)",
                           hint=f"Its arguments cannot be read: {err}") from err
  if args != {"best_eval_result", "current_eval_result"}:
    raise invalid_argument("compare_fn", compare_fn,
                           "a callable taking exactly the arguments best_eval_result and current_eval_result "
                           f"(it takes {sorted(args)})")


def _check_name(name):
  if (not isinstance(name, str) or not name.strip() or name in (".", "..") or "/" in name or os.sep in name
      or name != name.strip()):
    raise invalid_argument("name", name, "a non-empty directory name without '/' (the export goes to "
                           "<model_dir>/export/<name>)")


def _is_count(value, minimum):
  return not isinstance(value, bool) and isinstance(value, numbers.Integral) and value >= minimum


# ----------------------------------------------------------------------------------------------- exporter
def _scalar_metrics(eval_result):
  metrics = {}
  for key, value in (eval_result or {}).items():
    if np.ndim(value) == 0 and isinstance(np.asarray(value).item(), (int, float)):
      value = np.asarray(value).item()
      if isinstance(value, float) and not math.isfinite(value):
        value = str(value)
      metrics[str(key)] = value
  return metrics


class TrtExporter(_exporter_lib.Exporter):
  """Exports like `tf.estimator.BestExporter`, plus frozen graph, samples and deployment variants, verified.

  Example:

    feature_columns = [tf.feature_column.numeric_column("x", shape=[64])]
    estimator = tf.estimator.DNNClassifier([32], feature_columns, n_classes=10, model_dir="/tmp/digits")
    exporter = tftrt_keras.TrtExporter(
        "tftrt", tf.estimator.export.build_parsing_serving_input_receiver_fn(
            tf.feature_column.make_parse_example_spec(feature_columns)))
    tf.estimator.train_and_evaluate(
        estimator, tf.estimator.TrainSpec(train_input_fn, max_steps=1000),
        tf.estimator.EvalSpec(eval_input_fn, exporters=[exporter], hooks=[exporter.calibration_hook]))

  Args:
    name: exports go to `<model_dir>/export/<name>`.
    serving_input_receiver_fn: as for `BestExporter`.
    compare_fn: `callable(best_eval_result, current_eval_result)`, True when current is better (policy "best";
      default: smaller `loss`).
    exports_to_keep: keep the newest N exports (None: all). Deletes only what our manifests list.
    calibration_batches: evaluation batches `calibration_hook` keeps for calibration; 0 keeps none (and no
      verification samples either).
    calibration_input_fn: callable returning an iterable or `tf.data.Dataset` of batches (dict by input name,
      features dict, or (features, labels)), used instead of the hook's calibration sample.
    signature_key: the signature every variant is built from (None: `serving_default`, `predict`, or the only
      one). A missing key raises ValueError at the first export.
    policy: "best" (as `BestExporter`; the best result is reread from event files on restart), "latest" (as
      `LatestExporter`) or "final" (as `FinalExporter`).
    event_file_pattern: evaluation event files relative to `model_dir`, read for the best result on restart.
    blocking: wait for each conversion instead of converting in the background (the final export always waits).
    assets_extra, as_text: passed to `estimator.export_saved_model`, as by `BestExporter`.
    options: a `ConversionOptions`, instead of option keywords (`conversion_options=` is its deprecated name).
    **option_keywords: any `ConversionOptions` option (precisions, formats, verification_samples, ...).

  Raises:
    ValueError: a bad argument (the message names it), or `options` together with option keywords.
    TypeError: an unknown keyword.
    TensorRTUnavailableError: `require_tensorrt=True` and no requested TensorRT format can run on this machine.
  """

  @with_option_keywords(ESTIMATOR)
  def __init__(self, name, serving_input_receiver_fn, *, compare_fn=None, exports_to_keep=DEFAULT_EXPORTS_TO_KEEP,
               calibration_batches=DEFAULT_CALIBRATION_BATCHES, calibration_input_fn=None, policy="best",
               event_file_pattern=DEFAULT_EVENT_FILE_PATTERN, blocking=False, assets_extra=None, as_text=False,
               signature_key=None, options=None, **option_keywords):
    _check_name(name)
    if not callable(serving_input_receiver_fn):
      raise invalid_argument("serving_input_receiver_fn", serving_input_receiver_fn,
                             "a callable returning a ServingInputReceiver")
    if policy not in POLICIES:
      raise invalid_argument("policy", policy, f"one of {POLICIES}")
    if compare_fn is not None:
      if policy != "best":
        raise invalid_argument("compare_fn", compare_fn, f"None with policy={policy!r}",
                               hint="compare_fn decides which evaluation is best; it applies to policy='best' only.")
      _check_compare_fn(compare_fn)
    if exports_to_keep is not None and not _is_count(exports_to_keep, 1):
      raise invalid_argument("exports_to_keep", exports_to_keep, "a positive integer or None")
    if not _is_count(calibration_batches, 0):
      raise invalid_argument("calibration_batches", calibration_batches, "an integer >= 0")
    if calibration_input_fn is not None and not callable(calibration_input_fn):
      raise invalid_argument("calibration_input_fn", calibration_input_fn,
                             "None or a callable returning batches of calibration inputs")
    if not isinstance(blocking, bool):
      raise invalid_argument("blocking", blocking, "True or False")
    if signature_key is not None and (not isinstance(signature_key, str) or not signature_key.strip()):
      raise invalid_argument("signature_key", signature_key, "None or the name of a signature of the export")
    if "conversion_options" in option_keywords:
      warnings.warn("TrtExporter(conversion_options=...) is deprecated: pass options=... instead",
                    DeprecationWarning, stacklevel=2)
      if options is not None:
        raise invalid_argument("conversion_options", "ConversionOptions(...)", "None when options= is given",
                               hint="conversion_options is the old name of options; pass one of them.")
      options = option_keywords.pop("conversion_options")
    options = options_from_keywords(ESTIMATOR, options, option_keywords, type(self).__name__)
    own_metrics.check_metric_drops(options.max_metric_drop)
    if "INT8" in options.precisions and calibration_batches == 0 and calibration_input_fn is None:
      raise invalid_argument("calibration_batches", calibration_batches,
                             "1 or more when precisions include INT8 and no calibration_input_fn is given",
                             hint="INT8 needs calibration data: keep evaluation batches, pass "
                                  "calibration_input_fn, or drop INT8 from precisions.")
    # Verification samples are stored beside the calibration samples: with neither a calibration batch nor a
    # calibration_input_fn there is nowhere to keep them, so the hook captures nothing at all.
    captures = calibration_batches > 0 or calibration_input_fn is not None
    if options.require_tensorrt:
      require_tensorrt_or_raise(options)  # before training: a run whose variants cannot be built would be wasted

    self._name = name
    self._signature_key = signature_key
    self._serving_input_receiver_fn = serving_input_receiver_fn
    self._options = options
    self._policy = policy
    self._compare_fn = compare_fn or loss_smaller
    self._exports_to_keep = exports_to_keep
    self._calibration_batches = calibration_batches
    self._calibration_input_fn = calibration_input_fn
    self._event_file_pattern = event_file_pattern
    self._blocking = blocking
    self._assets_extra = assets_extra
    self._as_text = as_text
    self._scheduler = ExportScheduler(exports_to_keep=exports_to_keep)
    # With calibration_input_fn, evaluation batches are captured for verification only.
    self._hook = CalibrationCaptureHook(
        self, 0 if calibration_input_fn is not None else calibration_batches,
        verification_samples=options.verification_samples if options.verify and captures else 0)
    self._samples = EvaluationSamples(self._hook, calibration_input_fn, calibration_batches, self.receiver_spec)
    self._receiver = None
    self._model_dir = None
    self._best_eval_result = None
    self._export_path = None
    self._lock = None

  @classmethod
  def from_flags(cls, flag_values, name, serving_input_receiver_fn, **overrides):
    """A `TrtExporter` configured by the flags of `tftrt_keras.flags.define_export_flags()`.

    `--export_save_best_only` selects policy "best" judged by `--export_monitor` (`val_loss` is the Estimator's
    `loss`), otherwise "latest". An undefined flag leaves its argument at its default; `overrides` win.
    """
    from tftrt_keras import flags as tftrt_flags  # pylint: disable=g-import-not-at-top
    fv = flag_values
    settings = tftrt_flags.training_settings_from_flags(fv)
    save_best_only, monitor = settings.pop("save_best_only", False), settings.pop("monitor", "val_loss")
    settings.pop("export_dir", None)  # the Estimator exports under its model_dir
    settings["signature_key"] = settings.get("signature_key") or None
    if "conversion_options" in overrides and "options" not in overrides:
      overrides["options"] = overrides.pop("conversion_options")  # the constructor's deprecation, said once
      warnings.warn("TrtExporter(conversion_options=...) is deprecated: pass options=... instead",
                    DeprecationWarning, stacklevel=2)
    names = {row.name for row in option_table(ESTIMATOR)}
    if "options" not in overrides:
      overrides["options"] = tftrt_flags.conversion_options_from_flags(
          fv, **{k: overrides.pop(k) for k in list(overrides) if k in names})
    arguments = dict(settings, policy="best" if save_best_only else "latest")
    if save_best_only and monitor not in ("loss", "val_loss"):
      arguments["compare_fn"] = metric_compare_fn(monitor)
    arguments.update(overrides)
    return cls(name, serving_input_receiver_fn, **arguments)

  # --- the Exporter contract
  @property
  def name(self):
    return self._name

  @property
  def calibration_hook(self):
    """The `SessionRunHook` for `EvalSpec(hooks=[...])` that samples evaluation batches for calibration."""
    return self._hook

  @property
  def options(self):
    """The `ConversionOptions` every export of this exporter uses."""
    return self._options

  @property
  def policy(self):
    return self._policy

  @property
  def signature_key(self):
    """The signature key asked for (None: chosen per export, see `choose_signature_key`)."""
    return self._signature_key

  @property
  def exports_to_keep(self):
    return self._exports_to_keep

  @property
  def compare_fn(self):
    return self._compare_fn

  @property
  def best_eval_result(self):
    """The best evaluation result seen so far (read from the event files after a restart), or None."""
    return self._best_eval_result

  @property
  def manifest_paths(self):
    """Paths of the manifests of the exports in this exporter's directory, oldest first."""
    if self._export_path is None:
      return []
    layout = ExportLayout(self._export_path)
    return [layout.manifest_path(v) for v in layout.versions()]

  def receiver_spec(self):
    if self._receiver is None:
      self._receiver = ReceiverSpec(self._serving_input_receiver_fn)
    return self._receiver

  def export(self, estimator, export_path, checkpoint_path, eval_result, is_the_final_export):
    """Writes the normal export when the policy says so, then starts its conversion.

    Returns:
      The normal export's path, or None when not exporting.

    Raises:
      ValueError: the normal export has no usable signature (raised after the normal export is written).
      TensorRTUnavailableError: `require_tensorrt=True` and the worker cannot run TensorRT.
    """
    export_path = os.fspath(export_path)
    self._export_path = export_path
    try:
      if not self._should_export(estimator, eval_result, is_the_final_export):
        return None
      logging.info("tftrt_keras: exporting (policy %s) to %s", self._policy, export_path)
      export_result = estimator.export_saved_model(
          export_path, self._serving_input_receiver_fn, assets_extra=self._assets_extra, as_text=self._as_text,
          checkpoint_path=checkpoint_path)
      self._best_eval_result = eval_result
      native_dir = tf.compat.as_str_any(export_result)
      # A wrong signature_key would leave every export of the run without variants: stop at the first one.
      signature_key, available = self._choose_signature(native_dir)
      try:
        self._start_conversion(native_dir, signature_key, available, checkpoint_path, eval_result,
                               is_the_final_export)
      except TensorRTUnavailableError:
        raise
      except ExportRootBusy as err:
        # Another process owns this directory: write nothing into it, not even a manifest.
        logging.error("tftrt_keras: %s The normal export %s was written; its deployment variants were not.",
                      err, native_dir)
      except Exception as err:  # pylint: disable=broad-except
        # The normal export is written and stays usable; the conversion's failure is recorded, never raised.
        logging.exception("tftrt_keras: preparing the deployment variants of %s failed", native_dir)
        self._record_failure(native_dir, signature_key, checkpoint_path, eval_result, err)
      return export_result
    finally:
      if is_the_final_export:
        self.wait()
        self._release()

  def wait(self, timeout=None):
    """Waits for conversions still running or queued; returns the manifests finished so far."""
    return self._scheduler.wait_all(timeout)

  def close(self):
    """Waits for running conversions and releases the export directory (done by the final export)."""
    self.wait()
    self._release()

  # --- policy
  def _should_export(self, estimator, eval_result, is_the_final_export):
    if self._policy == "final":
      return bool(is_the_final_export)
    if self._policy == "latest":
      return True
    if self._model_dir != estimator.model_dir and self._event_file_pattern:
      self._model_dir = estimator.model_dir
      step = (eval_result or {}).get("global_step")
      self._best_eval_result = best_from_event_files(
          os.path.join(self._model_dir, self._event_file_pattern), step, self._compare_fn)
      logging.info("tftrt_keras: best evaluation so far (from event files): %s", self._best_eval_result)
    if self._best_eval_result is None:
      return True
    try:
      return bool(self._compare_fn(best_eval_result=self._best_eval_result, current_eval_result=eval_result))
    except KeyError as err:
      logging.warning("tftrt_keras: compare_fn needs metric %s, missing from the evaluation result; exporting", err)
      return True

  # --- conversion
  def _acquire(self, layout):
    if self._lock is None:
      lock = RootLock(layout)
      lock.acquire()
      self._lock = lock
      layout.recover_interrupted()

  def _release(self):
    if self._lock is not None:
      self._lock.release()
      self._lock = None

  def _source(self, checkpoint_path, eval_result, **extra):
    step = (eval_result or {}).get("global_step")
    source = {"kind": "estimator", "exporter": self._name, "policy": self._policy,
              "step": int(step) if step is not None else None, "metrics": _scalar_metrics(eval_result),
              "checkpoint_path": tf.compat.as_str_any(checkpoint_path) if checkpoint_path else None}
    source.update(extra)
    return source

  def _choose_signature(self, native_dir):
    """(the signature key the variants are built from, the export's signature keys)."""
    available = signature_keys(native_dir)
    return choose_signature_key(available, self._signature_key), available

  def _start_conversion(self, native_dir, signature_key, available, checkpoint_path, eval_result,
                        is_the_final_export):
    layout = ExportLayout(os.path.dirname(native_dir))
    self._acquire(layout)
    version = int(os.path.basename(native_dir))
    calibration_problem, calibration_origin, casts = None, {}, []
    try:
      batches, verification_batches, calibration_origin, casts = self._samples.collect(native_dir, signature_key)
    except CalibrationUnusable as err:
      batches, verification_batches, calibration_problem = [], None, str(err)
    metric_inputs = task_inputs(self._samples, signature_of(native_dir, signature_key)[0], eval_result)
    source = self._source(checkpoint_path, eval_result, calibration=calibration_origin,
                          signature={"key": signature_key, "available": available, "requested": self._signature_key})
    request = prepare_export(
        root=layout.root, version=version, source=source, options=self._options, native_dir=native_dir,
        batches=batches, verification_batches=verification_batches, signature_key=signature_key, sample_casts=casts,
        calibration_skip_reason=calibration_problem or "calibration_batches=0 and no calibration_input_fn",
        more_samples="raise calibration_batches", **metric_inputs)
    self._scheduler.submit(request, blocking=self._blocking or bool(is_the_final_export))

  def _record_failure(self, native_dir, signature_key, checkpoint_path, eval_result, err):
    """Closes this export's manifest as failed (the normal export itself is fine) and applies retention."""
    try:
      layout = ExportLayout(os.path.dirname(native_dir))
      record_failed_export(layout.root, int(os.path.basename(native_dir)), self._source(checkpoint_path, eval_result),
                           self._options, f"preparing the export failed: {type(err).__name__}: {err}",
                           signature_key=signature_key)
      if self._exports_to_keep and not self._scheduler.busy():
        layout.retain(self._exports_to_keep)
    except Exception:  # pylint: disable=broad-except
      logging.exception("tftrt_keras: could not record the failed export of %s", native_dir)



