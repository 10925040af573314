"""`TrtExport`: the Keras callback that writes deployment variants next to a normal SavedModel while `fit` runs."""

import importlib.util
import math
import os
import weakref

import numpy as np
from absl import logging

from tftrt_keras.keras import flavor as keras_flavor
from tftrt_keras.errors import invalid_argument
from tftrt_keras.samples.reservoir import SplitReservoir
from tftrt_keras.checks import KERAS
from tftrt_keras.options import (DEFAULT_CALIBRATION_BATCHES, DEFAULT_EXPORTS_TO_KEEP, artifact_names, option_table,
                                 options_from_keywords, with_option_keywords)
from tftrt_keras.artifacts.layout import ExportLayout, RootLock
from tftrt_keras.pipeline.scheduler import ExportScheduler
from tftrt_keras.keras.calibration_source import check_calibration_source, given_batches
from tftrt_keras.keras.inputs_by_name import captured_by_name
from tftrt_keras.keras.capture import CapturingTestFunction
from tftrt_keras.keras.checkpoint import BatchCounter, BestValue, saves_without_value
from tftrt_keras.keras import internals as keras_internals
from tftrt_keras.keras import snapshot as keras_snapshot
from tftrt_keras.keras import task_labels
from tftrt_keras.artifacts.manifest import PENDING, fail_pending, read_manifest, write_manifest
from tftrt_keras.pipeline.prepare import prepare_export, record_failed_export
from tftrt_keras.precisions import BASE_ARTIFACTS as _BASE_ARTIFACTS
from tftrt_keras.verify.summary import known_skips_text, summary_table, variant_groups


# Export root -> the TrtExport of this process holding it (weak: a callback that is gone held nothing).
_ROOT_HOLDERS = weakref.WeakValueDictionary()


class TrtExport(keras_internals.Keras2CallbackFlags, keras_flavor.callback_base()):
  """Exports the model at checkpoint time: the normal SavedModel, its frozen graph, calibration samples and the
  deployment variants (TF-TRT, ONNX, TensorRT engines), each verified against the normal export, with a manifest.

  Samples are captured from `fit`'s validation pass; conversion runs in a child process while training goes on,
  and `fit` waits at its end for those still running. A new `TrtExport` on the `export_dir` of an interrupted
  `fit` in the same process takes the directory over.

  Example:
    model.fit(x, y, validation_data=(x_val, y_val), epochs=5,
              callbacks=[tftrt_keras.TrtExport("/tmp/exports", precisions=("FP16", "INT8"))])
    # /tmp/exports/<version>/ is the normal SavedModel; /tmp/exports/onnx_int8/<version>/model.onnx a variant;
    # /tmp/exports/manifests/<version>/manifest.json says what each variant is.

  Args:
    export_dir: export root. Each export gets a new version number, also across resumed runs.
    monitor, verbose, save_best_only, mode, save_freq, initial_value_threshold: as in the model's Keras'
      `keras.callbacks.ModelCheckpoint`. `verbose`: 0 silent; 1 a line per export and a summary at the end.
    calibration_batches: validation batches kept for INT8 calibration (0: none, no verification sample either).
    calibration_data: overrides capture: a `tf.data.Dataset` of batches, a numpy array, or a list (input order)
      or dict (input names) of arrays, samples along axis 0. A random part is held out for verification.
    exports_to_keep: keep only the newest N exports (default 5; None: all). Deletes only what this library wrote.
    blocking: wait for each conversion instead of converting in the background.
    input_signature: TensorSpec (or list/dict of them) for the serving signature; default: the model's inputs.
    log_dir: TensorBoard directory for verification scalars.
    seed: seeds the batch sampling (identical on every worker of a distributed run).
    options: a `ConversionOptions`, instead of option keywords.
    **option_keywords: any `ConversionOptions` option (precisions, formats, format_options, verify, ...).

  Raises:
    ValueError: a bad argument (the message names it), or `options` together with option keywords.
    TypeError: an unknown keyword.
  """

  @with_option_keywords(KERAS)
  def __init__(self, export_dir, monitor="val_loss", verbose=1, save_best_only=False, mode="auto",
               save_freq="epoch", initial_value_threshold=None, *, calibration_batches=DEFAULT_CALIBRATION_BATCHES,
               calibration_data=None, exports_to_keep=DEFAULT_EXPORTS_TO_KEEP, blocking=False, input_signature=None,
               log_dir=None, seed=0, options=None, **option_keywords):
    super().__init__()
    if not isinstance(export_dir, (str, os.PathLike)) or not os.fspath(export_dir):
      raise invalid_argument("export_dir", export_dir, "a directory path")
    if os.path.exists(export_dir) and not os.path.isdir(export_dir):
      raise invalid_argument("export_dir", os.fspath(export_dir), "a directory (this path is an existing file)")
    self.export_dir = os.fspath(export_dir)
    if not isinstance(monitor, str) or not monitor:
      raise invalid_argument("monitor", monitor, "a metric name such as 'val_loss'",
                             hint="Precisions and the other options are keywords: "
                                  "TrtExport(export_dir, precisions=(...)).")
    self.options = options_from_keywords(KERAS, options, option_keywords, type(self).__name__)
    if mode not in ("auto", "min", "max"):
      raise invalid_argument("mode", mode, "one of 'auto', 'min', 'max'")
    if save_freq != "epoch" and (isinstance(save_freq, bool) or not isinstance(save_freq, int) or save_freq <= 0):
      raise invalid_argument("save_freq", save_freq, "'epoch' or a positive integer number of batches")
    if initial_value_threshold is not None and not isinstance(initial_value_threshold, (int, float)):
      raise invalid_argument("initial_value_threshold", initial_value_threshold, "a number or None")
    if isinstance(calibration_batches, bool) or not isinstance(calibration_batches, int) or calibration_batches < 0:
      raise invalid_argument("calibration_batches", calibration_batches, "an integer >= 0")
    if "INT8" in self.options.precisions and calibration_batches == 0 and calibration_data is None:
      raise invalid_argument("calibration_batches", 0, "at least 1 when precisions include INT8",
                             hint="INT8 calibrates on captured validation batches; or pass `calibration_data`.")
    if exports_to_keep is not None and (isinstance(exports_to_keep, bool) or not isinstance(exports_to_keep, int)
                                        or exports_to_keep <= 0):
      raise invalid_argument("exports_to_keep", exports_to_keep, "a positive integer or None")
    if verbose not in (0, 1, 2):
      raise invalid_argument("verbose", verbose, "0, 1 or 2")
    if log_dir is not None and importlib.util.find_spec("tensorboard") is None:
      # TensorFlow 2.21 no longer installs TensorBoard, and tf.summary cannot write without it.
      raise invalid_argument("log_dir", log_dir, "None, or a directory with the `tensorboard` package installed",
                             hint="Install it (pip install tensorboard) to get verification scalars.")
    keras_snapshot.check_input_signature(input_signature)
    if calibration_data is not None:
      check_calibration_source(calibration_data, input_signature)
    self.monitor, self.save_best_only, self.save_freq = monitor, save_best_only, save_freq
    self.mode = mode
    self.initial_value_threshold = initial_value_threshold
    # As in ModelCheckpoint, the best value and the batch count outlive one fit(); the best is set at the first
    # decision, once the model's compiled metrics exist (Keras 3.11+ reads their direction).
    self._best_value = None
    self._batch_counter = None if save_freq == "epoch" else BatchCounter(save_freq)
    self.calibration_batches = calibration_batches
    self.calibration_data = calibration_data
    self.exports_to_keep = exports_to_keep
    self.blocking = bool(blocking)
    self.input_signature = input_signature
    self.log_dir = log_dir
    self.verbose = verbose
    self.seed = seed
    self.manifest_paths = []
    self._reset_run_state()

  @classmethod
  def from_flags(cls, flag_values, **overrides):
    """Builds the callback from flags of `tftrt_keras.flags.define_export_flags()`; `overrides` win over the flags.

    Raises:
      ValueError: `--export_dir` is not set (and no `export_dir` override), or a flag's value is invalid.
    """
    from tftrt_keras import flags as tftrt_flags  # pylint: disable=g-import-not-at-top
    settings = tftrt_flags.training_settings_from_flags(flag_values)
    settings.pop("signature_key", None)  # the Estimator's
    export_dir = overrides.pop("export_dir", settings.pop("export_dir", None))
    if not export_dir:
      raise invalid_argument("export_dir", export_dir, "a directory (set --export_dir)")
    names = {row.name for row in option_table(KERAS)}
    if "options" not in overrides:
      overrides["options"] = tftrt_flags.conversion_options_from_flags(
          flag_values, **{name: overrides.pop(name) for name in list(overrides) if name in names})
    return cls(export_dir, **dict(settings, **overrides))


  def _reset_run_state(self):
    self._epoch = 0
    self._global_step = 0
    self._lock = None
    self._scheduler = None
    self._capture = None
    self._captured_model = None
    self._original_test_function = None
    self._snapshotter = None
    self._chosen_signature = None
    self._explicit_batches = None
    self._explicit_casts, self._explicit_labels = [], None
    self._is_chief = True
    self._run_manifests = []  # this run's exports (manifest paths), for closing them if the run is abandoned
    self._known_skips = {}  # {variant: why this machine cannot build it}, said once before the first export

  # --- training lifecycle
  def on_train_begin(self, logs=None):
    if self._lock is not None or self._captured_model is not None:
      # This callback's previous fit() ended without on_train_end (Ctrl-C, an exception): close that run first.
      self._end_abandoned_run("interrupted: the fit() that made this export ended without finishing (e.g. Ctrl-C), "
                              "and the same TrtExport started a new fit()")
    self._reset_run_state()
    model = self.model
    self._is_chief = keras_flavor.is_chief(model)
    if self.options.require_tensorrt:
      from tftrt_keras.preflight import require_tensorrt_or_raise  # pylint: disable=g-import-not-at-top
      require_tensorrt_or_raise(self.options)
    if self.calibration_data is not None:
      # Keyed by input name now: data the model cannot take fails before the first step.
      self._explicit_batches, self._explicit_casts, self._explicit_labels = given_batches(
          self.calibration_data, self._signature, self.calibration_batches or DEFAULT_CALIBRATION_BATCHES,
          self.options.max_batch_size, label_keys=task_labels.label_keys(model))
    elif "INT8" in self.options.precisions and keras_internals.fit_has_validation(model) is False:
      raise invalid_argument(
          "calibration_data", None, "validation data in fit() or `calibration_data` when precisions include INT8",
          hint="INT8 calibrates on batches captured during validation, and this fit() call has no "
               "validation_data or validation_split. Pass one of them, pass `calibration_data=`, or drop INT8.")
    task_labels.check_metric_drops(self.options.max_metric_drop, model)
    if self.input_signature is None and keras_snapshot.signature_from_model(model) is None and \
        self._explicit_batches is None and keras_internals.fit_has_validation(model) is False:
      raise invalid_argument("input_signature", None, "a TensorSpec structure for this model",
                             hint="The model has no symbolic inputs (subclassed?) and fit() has no validation data "
                                  "to learn the input structure from.")
    if self._is_chief:
      layout = ExportLayout(self.export_dir)
      layout.ensure_root()
      self._take_over_from_interrupted_run(layout.root)
      self._lock = RootLock(layout).acquire()
      _ROOT_HOLDERS[layout.root] = self
      layout.recover_interrupted()
      self._scheduler = ExportScheduler(exports_to_keep=self.exports_to_keep, on_done=self._on_export_done)
      if self.verbose:
        from tftrt_keras.preflight import variants_skipped_here  # pylint: disable=g-import-not-at-top
        self._known_skips = variants_skipped_here(self.options)
        if self._known_skips:
          print(known_skips_text(self._known_skips), flush=True)
    if self.calibration_batches and self.calibration_data is None:
      self._install_capture(model)

  def _take_over_from_interrupted_run(self, root):
    """Ends the run of an earlier TrtExport of this process on `root` whose fit() is no longer running.

    A fit() interrupted by Ctrl-C never calls on_train_end, so its lock, worker and test function linger.
    """
    holder = _ROOT_HOLDERS.get(root)
    if holder is None or holder is self or holder._lock is None:  # pylint: disable=protected-access
      return
    if keras_internals.running_fit_frames(
        lambda frame: any(c is holder for c in keras_internals.callbacks_of(frame))):
      return
    logging.warning("tftrt_keras: %s was held by a TrtExport whose fit() ended without finishing (interrupted?); "
                    "this run takes it over and stops that run's conversions", root)
    holder._end_abandoned_run(  # pylint: disable=protected-access
        "interrupted: the fit() that made this export ended without finishing (e.g. Ctrl-C), and a new run "
        "took the export directory over")

  def _end_abandoned_run(self, reason):
    """Stops this callback's run whose fit() ended without on_train_end: its worker, its queue, its pending
    manifests (closed with `reason`), its installed test function and its lock. Never raises for a manifest."""
    scheduler, self._scheduler = self._scheduler, None
    if scheduler is not None:
      scheduler.stop(reason)
    for path in self._run_manifests:
      try:
        manifest = read_manifest(path)
        if any(entry["status"] == PENDING for entry in manifest["artifacts"].values()):
          fail_pending(manifest, reason)
          write_manifest(os.path.dirname(path), manifest)
      except (OSError, ValueError) as err:
        logging.error("tftrt_keras: could not close %s (%s): %s", path, reason, err)
    self._run_manifests = []
    self._uninstall_capture()
    if self._lock is not None:
      self._lock.release()
      self._lock = None

  def _install_capture(self, model):
    original = keras_internals.built_test_function(model)
    if isinstance(original, CapturingTestFunction):  # left by a fit() that never reached on_train_end
      original = original.original
    steps = keras_internals.steps_per_execution(model)
    verification_samples = self.options.verification_samples if self.options.verify else 0
    reservoir = SplitReservoir(self.calibration_batches, 0, seed=self.seed)
    self._capture = CapturingTestFunction(model, original, reservoir, steps_per_execution=steps,
                                          verification_samples=verification_samples,
                                          label_keys=task_labels.label_keys(model))
    self._original_test_function = original
    self._captured_model = model
    keras_internals.set_test_function(model, self._capture)

  def _uninstall_capture(self):
    model, capture = self._captured_model, self._capture
    if model is not None and keras_internals.test_function_of(model) is capture:
      keras_internals.set_test_function(model, self._original_test_function)
    # `_capture` stays (its last samples and counters) until the next run; the model no longer calls it.
    self._captured_model = None
    self._original_test_function = None

  def on_test_begin(self, logs=None):
    if self._capture is not None:
      self._capture.begin_pass()

  def on_test_end(self, logs=None):
    if self._capture is not None:
      self._capture.end_pass()

  def on_train_batch_end(self, batch, logs=None):
    self._global_step += 1
    if self._scheduler is not None:
      self._scheduler.poll()
    if self._batch_counter is not None and self._batch_counter.due(batch):
      self._maybe_export(logs or {}, batch=batch)

  def on_epoch_begin(self, epoch, logs=None):
    self._epoch = epoch

  def on_epoch_end(self, epoch, logs=None):
    self._epoch = epoch
    if self.save_freq == "epoch":
      self._maybe_export(logs or {})

  def on_train_end(self, logs=None):
    try:
      if self._scheduler is not None:
        if self.verbose and self._scheduler.busy():
          print(f"tftrt_keras: waiting for the conversions still running (at most "
                f"{_describe_timeout(self.options.timeout_seconds)} each)", flush=True)
        self._scheduler.wait_all()
        if self.verbose and self._run_manifests:
          # From disk: superseded and retained-away exports are part of the story too.
          manifests = [read_manifest(p) for p in self._run_manifests if os.path.exists(p)]
          if manifests:
            said = set(self._known_skips.values())  # told at on_train_begin: "said above", not again
            print(summary_table(manifests, self.export_dir, said=said, heading="tftrt_keras exports:"), flush=True)
    finally:
      self._run_manifests = []
      self._scheduler = None
      self._uninstall_capture()
      if self._lock is not None:
        self._lock.release()
        self._lock = None

  # --- exporting
  def _improved(self, logs):
    if not self.save_best_only:
      return True
    value = logs.get(self.monitor)
    if value is None:
      exports = saves_without_value(self.model)
      logging.warning("tftrt_keras: save_best_only needs `%s` in the logs (available: %s); %s, as this Keras' "
                      "ModelCheckpoint does.", self.monitor, sorted(logs), "exporting" if exports else "not exporting")
      return exports
    if np.ndim(value) > 0:
      logging.warning("tftrt_keras: `%s` is not a scalar; exporting as if save_best_only=False, as Keras 3's "
                      "ModelCheckpoint does.", self.monitor)
      return True
    if self._best_value is None:
      self._best_value = BestValue(self.model, self.monitor, self.mode, self.initial_value_threshold)
    return self._best_value.update(float(value))

  def _captured_batches(self):
    """(calibration batches, verification batches or None). None: the pipeline holds out a random part of the
    calibration batches (given `calibration_data`, or a validation pass too short to share)."""
    if self._explicit_batches is not None:
      return self._explicit_batches, None
    if self._capture is None:
      return [], None
    return self._capture.last_pass, (self._capture.last_verification or None)

  def _signature(self, batches):
    # Kept: the signature that keys `calibration_data` in on_train_begin is the one the model is traced with.
    if self._chosen_signature is None and self.input_signature is not None:
      self._chosen_signature = keras_snapshot.named_signature(self.input_signature)
    elif self._chosen_signature is None:
      self._chosen_signature = keras_snapshot.signature_from_model(self.model) or (
          keras_snapshot.signature_from_batch(batches[0]) if batches else None)
    return self._chosen_signature

  def _maybe_export(self, logs, batch=None):
    if not self._improved(logs):
      return
    if not self._is_chief:
      return  # other workers neither write nor wait
    layout = ExportLayout(self.export_dir)
    version = layout.next_version()
    source = {"kind": "keras", "keras": keras_flavor.keras_version(self.model), "epoch": self._epoch + 1,
              "step": self._optimizer_step(), "metrics": {k: float(v) for k, v in logs.items() if np.ndim(v) == 0}}
    if batch is not None:
      source["batch"] = int(batch) + 1  # 1-based like `epoch`: ModelCheckpoint's `{batch}`
    try:
      batches, verification = self._captured_batches()
      if self._snapshotter is None:
        signature = self._signature(batches)
        if signature is None:
          raise ValueError("no input signature: pass `input_signature=` to TrtExport")
        self._snapshotter = keras_snapshot.SavedModelSnapshotter(self.model, signature)
      labels = {"labels": self._explicit_labels, "verification_labels": getattr(
          self._capture, "last_verification_labels", None)}
      if self._explicit_batches is not None:
        named, casts, problem = batches, self._explicit_casts, None
      else:
        named, verification, casts, problem = captured_by_name(self._snapshotter.signature, batches, verification)
        if problem:
          logging.error("tftrt_keras: export version %d: %s", version, problem)
      # The manifest is ours from the moment it is written: an interrupted run closes it (see on_train_begin).
      self._run_manifests.append(layout.manifest_path(version))
      request = prepare_export(
          layout.root, version, source, self.options, write_native=self._snapshotter.save, batches=named,
          verification_batches=verification, sample_casts=casts, calibration_skip_reason=problem or
          "no validation pass ran before this export and no `calibration_data` was given",
          task_spec=task_labels.compile_spec(self.model), **labels)
    except Exception as err:  # pylint: disable=broad-except
      # Training goes on; the failure is on disk where the user looks for exports.
      logging.exception("tftrt_keras: export version %d failed before conversion", version)
      try:
        self.manifest_paths.append(record_failed_export(
            layout.root, version, source, self.options,
            f"export failed before conversion: {type(err).__name__}: {err}"))
        if layout.manifest_path(version) not in self._run_manifests:
          self._run_manifests.append(layout.manifest_path(version))
      except OSError:
        # Even the manifest cannot be written (a full disk): the log is all that is left; training goes on.
        logging.exception("tftrt_keras: could not record the failure of export version %d", version)
      return
    self.manifest_paths.append(layout.manifest_path(version))
    if self.verbose:
      variants = [n for n in artifact_names(self.options) if n not in _BASE_ARTIFACTS and n not in self._known_skips]
      doing = (f"converting {variant_groups(variants)} {'now' if self.blocking else 'in the background'}" if variants
               else "freezing and verifying it (no variant " + ("can be built here)" if self._known_skips else "requested)"))
      print(f"tftrt_keras: exported version {version} to {layout.path('native', version)}; {doing}", flush=True)
    self._scheduler.submit(request, blocking=self.blocking)

  def _optimizer_step(self):
    iterations = getattr(getattr(self.model, "optimizer", None), "iterations", None)
    try:
      return int(np.asarray(iterations.numpy() if hasattr(iterations, "numpy") else iterations))
    except (TypeError, ValueError):
      return self._global_step

  def _on_export_done(self, manifest):
    if self.log_dir:
      try:
        from tftrt_keras.verify.report import write_tensorboard_scalars  # pylint: disable=g-import-not-at-top
        write_tensorboard_scalars(manifest, self.log_dir, manifest["source"].get("step", 0))
      except Exception:  # pylint: disable=broad-except
        logging.exception("tftrt_keras: could not write verification scalars to %s", self.log_dir)


def _describe_timeout(seconds):
  if seconds is None:
    return "no time limit (timeout_seconds=None)"
  minutes = seconds / 60
  return f"{minutes:g} min" if minutes >= 1 and math.isclose(minutes, round(minutes)) else f"{seconds:g} s"
