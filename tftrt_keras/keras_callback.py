"""`TrtExport`: the Keras callback that writes TF-TRT variants next to a normal SavedModel while `fit` runs."""

import os
import sys

import numpy as np
from absl import logging

from tftrt_keras import keras_flavor
from tftrt_keras.argument_errors import invalid_argument
from tftrt_keras.batch_sampler import BatchReservoir
from tftrt_keras.conversion_options import DEFAULT_BACKEND, DEFAULT_WORKSPACE_BYTES, ConversionOptions
from tftrt_keras.export_layout import ExportLayout, RootLock
from tftrt_keras.export_scheduler import ExportScheduler
from tftrt_keras.keras_capture import CapturingTestFunction, unpack_inputs
from tftrt_keras import keras_snapshot
from tftrt_keras.manifest import read_manifest
from tftrt_keras.pipeline import prepare_export, record_failed_export
from tftrt_keras.precisions import PRECISIONS, normalize_precisions
from tftrt_keras.summary import summary_table


def _mode_for(monitor, mode):
  if mode == "auto":
    return "max" if ("acc" in monitor or monitor.startswith("fmeasure") or "auc" in monitor) else "min"
  return mode


def _fit_has_validation(model):
  """True/False when the running `fit` call was given validation data, None when that cannot be seen.

  Keras tells callbacks nothing about validation before the first epoch ends; `fit`'s own frame does
  (`validation_data` is set by then, also for `validation_split`).
  """
  frame = sys._getframe(1)  # pylint: disable=protected-access
  while frame is not None:
    if frame.f_code.co_name == "fit" and frame.f_locals.get("self") is model:
      return frame.f_locals.get("validation_data") is not None
    frame = frame.f_back
  return None


class TrtExport(keras_flavor.callback_base()):
  """Exports the model at checkpoint time: the normal SavedModel, its frozen graph, calibration samples and
  TF-TRT FP32/FP16/INT8 variants, with a manifest of what was made, skipped or failed and why.

  Calibration batches are captured from `fit`'s validation pass (a uniform random sample over the whole
  pass, inputs only, bounded memory); conversion runs in a child process while training goes on.

  Example:
    model.fit(x, y, validation_data=(x_val, y_val), epochs=5,
              callbacks=[tftrt_keras.TrtExport("/tmp/exports", precisions=("FP16", "INT8"))])
    # /tmp/exports/<version>/ is the normal SavedModel; /tmp/exports/tftrt_fp16/<version>/ its variant.

  Args:
    export_dir: export root. Each export gets a new version number, also across resumed runs.
    precisions: TF-TRT variants to build, a subset of ("FP32", "FP16", "INT8").
    monitor, mode, save_best_only, save_freq, initial_value_threshold: as in `keras.callbacks.ModelCheckpoint`.
    calibration_batches: validation batches kept for INT8 calibration and verification (0: none).
    calibration_data: overrides capture: a `tf.data.Dataset` of batches (x or (x, y)), a numpy array, or a
      list/dict of arrays (samples along axis 0).
    exports_to_keep: keep only the newest N exports (None: all). Deletes only what this library wrote.
    max_batch_size, max_workspace_size_bytes, minimum_segment_size, maximum_cached_engines: TF-TRT settings.
    require_tensorrt: fail in `on_train_begin`, before the first step, when TF-TRT cannot run here.
    blocking: wait for each conversion instead of converting in the background.
    input_signature: TensorSpec (or list/dict of them) for the serving signature; default: the model's own
      inputs, or the structure of the validation batches.
    gpu_memory_limit_mb: TensorFlow's GPU memory in the conversion worker (the rest is left to TensorRT).
    timeout_seconds: kill a conversion worker that runs longer.
    log_dir: TensorBoard directory for verification scalars (e.g. the `TensorBoard` callback's log_dir).
    verbose: 0 silent, 1 a line per export and the summary table at the end.
    seed: seeds the batch sampling (identical on every worker of a distributed run).
    verify: check each artifact against the normal export on held-out captured samples; an artifact outside
      the thresholds is marked `rejected` (see `ConversionOptions` for the thresholds).
    backend: `module:attribute` of the conversion backend (advanced; default TF-TRT).
  """

  def __init__(self, export_dir, precisions=PRECISIONS, monitor="val_loss", mode="auto", save_best_only=False,
               save_freq="epoch", initial_value_threshold=None, calibration_batches=8, calibration_data=None,
               exports_to_keep=None, max_batch_size=None, max_workspace_size_bytes=DEFAULT_WORKSPACE_BYTES,
               minimum_segment_size=3, maximum_cached_engines=1, require_tensorrt=False, blocking=False,
               input_signature=None, gpu_memory_limit_mb=None, timeout_seconds=None, log_dir=None, verbose=1,
               seed=0, verify=True, backend=DEFAULT_BACKEND):
    super().__init__()
    if not isinstance(export_dir, (str, os.PathLike)) or not os.fspath(export_dir):
      raise invalid_argument("export_dir", export_dir, "a directory path")
    self.export_dir = os.fspath(export_dir)
    self.options = ConversionOptions(
        precisions=normalize_precisions(precisions), max_batch_size=max_batch_size,
        max_workspace_size_bytes=max_workspace_size_bytes, minimum_segment_size=minimum_segment_size,
        maximum_cached_engines=maximum_cached_engines, require_tensorrt=require_tensorrt,
        gpu_memory_limit_mb=gpu_memory_limit_mb, timeout_seconds=timeout_seconds, verify=verify, backend=backend)
    if not isinstance(monitor, str) or not monitor:
      raise invalid_argument("monitor", monitor, "a metric name such as 'val_loss'")
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
    if calibration_data is not None and not _is_calibration_source(calibration_data):
      raise invalid_argument("calibration_data", type(calibration_data).__name__,
                             "a tf.data.Dataset, a numpy array, or a list/dict of numpy arrays")
    if verbose not in (0, 1, 2):
      raise invalid_argument("verbose", verbose, "0, 1 or 2")
    keras_snapshot.check_input_signature(input_signature)
    self.monitor, self.save_best_only, self.save_freq = monitor, save_best_only, save_freq
    self.mode = _mode_for(monitor, mode)
    self.initial_value_threshold = initial_value_threshold
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
    """Builds the callback from flags defined by `tftrt_keras.flags.define_export_flags()`."""
    from tftrt_keras.flags import conversion_options_from_flags  # pylint: disable=g-import-not-at-top
    options = conversion_options_from_flags(flag_values)
    if not flag_values.export_dir and "export_dir" not in overrides:
      raise invalid_argument("export_dir", flag_values.export_dir, "a directory (set --export_dir)")
    kwargs = dict(
        export_dir=flag_values.export_dir, precisions=options.precisions, max_batch_size=options.max_batch_size,
        max_workspace_size_bytes=options.max_workspace_size_bytes,
        minimum_segment_size=options.minimum_segment_size, maximum_cached_engines=options.maximum_cached_engines,
        require_tensorrt=options.require_tensorrt, gpu_memory_limit_mb=options.gpu_memory_limit_mb,
        timeout_seconds=options.timeout_seconds, verify=options.verify, exports_to_keep=flag_values.exports_to_keep,
        calibration_batches=flag_values.calibration_batches, save_best_only=flag_values.export_save_best_only,
        monitor=flag_values.export_monitor, blocking=flag_values.export_blocking)
    kwargs.update(overrides)
    return cls(**kwargs)

  # --- Keras 2 CallbackList asks every callback these (Keras 3 ignores them).
  _supports_tf_logs = False
  _chief_worker_only = None

  def _implements_train_batch_hooks(self):
    return self.save_freq != "epoch"

  def _implements_test_batch_hooks(self):
    return False

  def _implements_predict_batch_hooks(self):
    return False

  def _reset_run_state(self):
    self._best = None
    self._batches_since_export = 0
    self._epoch = 0
    self._global_step = 0
    self._lock = None
    self._scheduler = None
    self._capture = None
    self._original_test_function = None
    self._snapshotter = None
    self._explicit_batches = None
    self._is_chief = True

  # --- training lifecycle
  def on_train_begin(self, logs=None):
    self._reset_run_state()
    model = self.model
    self._is_chief = _is_chief(model)
    self._best = self.initial_value_threshold
    if self.options.require_tensorrt:
      from tftrt_keras.errors import require_tensorrt_or_raise  # pylint: disable=g-import-not-at-top
      require_tensorrt_or_raise()
    if self.calibration_data is not None:
      self._explicit_batches = _batches_from(self.calibration_data, self.calibration_batches or 8,
                                             self.options.max_batch_size)
    elif "INT8" in self.options.precisions and _fit_has_validation(model) is False:
      raise invalid_argument(
          "calibration_data", None, "validation data in fit() or `calibration_data` when precisions include INT8",
          hint="INT8 calibrates on batches captured during validation, and this fit() call has no "
               "validation_data or validation_split. Pass one of them, pass `calibration_data=`, or drop INT8.")
    if self.input_signature is None and keras_snapshot.signature_from_model(model) is None and \
        self._explicit_batches is None and _fit_has_validation(model) is False:
      raise invalid_argument("input_signature", None, "a TensorSpec structure for this model",
                             hint="The model has no symbolic inputs (subclassed?) and fit() has no validation data "
                                  "to learn the input structure from.")
    if self.calibration_batches and self.calibration_data is None:
      self._install_capture(model)
    if self._is_chief:
      layout = ExportLayout(self.export_dir)
      layout.ensure_root()
      self._lock = RootLock(layout).acquire()
      layout.recover_interrupted()
      self._scheduler = ExportScheduler(exports_to_keep=self.exports_to_keep, on_done=self._on_export_done)

  def _install_capture(self, model):
    # Keras 2 returns the function; Keras 3 only sets `model.test_function`.
    original = model.make_test_function() or model.test_function
    steps = getattr(model, "_steps_per_execution", None)
    steps = int(steps.numpy()) if hasattr(steps, "numpy") else int(getattr(model, "steps_per_execution", 1) or 1)
    self._capture = CapturingTestFunction(model, original, BatchReservoir(self.calibration_batches, self.seed),
                                          steps_per_execution=steps)
    self._original_test_function = original
    model.test_function = self._capture

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
    if self.save_freq == "epoch":
      return
    self._batches_since_export += 1
    if self._batches_since_export >= self.save_freq:
      self._batches_since_export = 0
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
        self._scheduler.wait_all()
        if self.verbose and self.manifest_paths:
          # From disk: superseded and retained-away exports are part of the story too.
          manifests = [read_manifest(p) for p in self.manifest_paths if os.path.exists(p)]
          print("tftrt_keras exports:\n" + summary_table(manifests, root=self.export_dir), flush=True)
    finally:
      if self._original_test_function is not None:
        self.model.test_function = self._original_test_function
      if self._lock is not None:
        self._lock.release()
        self._lock = None

  # --- exporting
  def _improved(self, logs):
    if not self.save_best_only:
      return True
    value = logs.get(self.monitor)
    if value is None:
      logging.warning("tftrt_keras: save_best_only needs `%s` in the logs (available: %s); not exporting.",
                      self.monitor, sorted(logs))
      return False
    value = float(value)
    better = self._best is None or (value < self._best if self.mode == "min" else value > self._best)
    if better:
      self._best = value
    return better

  def _captured_batches(self):
    if self._explicit_batches is not None:
      return self._explicit_batches
    if self._capture is None:
      return []
    return self._capture.last_pass

  def _signature(self, batches):
    if self._snapshotter is not None:
      return self._snapshotter.signature
    if self.input_signature is not None:
      return keras_snapshot.named_signature(self.input_signature)
    return keras_snapshot.signature_from_model(self.model) or (
        keras_snapshot.signature_from_batch(batches[0]) if batches else None)

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
      source["batch"] = int(batch)
    try:
      batches = self._captured_batches()
      if self._snapshotter is None:
        signature = self._signature(batches)
        if signature is None:
          raise ValueError("no input signature: pass `input_signature=` to TrtExport")
        self._snapshotter = keras_snapshot.SavedModelSnapshotter(self.model, signature)
      named = [keras_snapshot.batch_by_name(self._snapshotter.signature, b) for b in batches]
      request = prepare_export(
          layout.root, version, source, self.options, write_native=self._snapshotter.save, batches=named,
          calibration_skip_reason="no validation pass ran before this export and no `calibration_data` was given")
    except Exception as err:  # pylint: disable=broad-except
      # Training goes on; the failure is on disk where the user looks for exports.
      logging.exception("tftrt_keras: export version %d failed before conversion", version)
      try:
        self.manifest_paths.append(record_failed_export(
            layout.root, version, source, self.options,
            f"export failed before conversion: {type(err).__name__}: {err}"))
      except OSError:
        # Even the manifest cannot be written (a full disk): the log is all that is left; training goes on.
        logging.exception("tftrt_keras: could not record the failure of export version %d", version)
      return
    self.manifest_paths.append(layout.manifest_path(version))
    if self.verbose:
      print(f"tftrt_keras: exported version {version} to {layout.path('native', version)}; converting "
            f"{', '.join(self.options.precisions)} {'now' if self.blocking else 'in the background'}", flush=True)
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
        from tftrt_keras.report import write_tensorboard_scalars  # pylint: disable=g-import-not-at-top
        write_tensorboard_scalars(manifest, self.log_dir, manifest["source"].get("step", 0))
      except Exception:  # pylint: disable=broad-except
        logging.exception("tftrt_keras: could not write verification scalars to %s", self.log_dir)


def _is_chief(model):
  """True on the worker that writes: everywhere outside multi-worker training, the chief inside it."""
  strategy = getattr(model, "distribute_strategy", None)
  extended = getattr(strategy, "extended", None)
  return bool(getattr(extended, "should_checkpoint", True))


def _is_calibration_source(data):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if isinstance(data, tf.data.Dataset) or isinstance(data, np.ndarray):
    return True
  if isinstance(data, dict):
    return all(isinstance(v, np.ndarray) for v in data.values())
  if isinstance(data, (list, tuple)):
    return all(isinstance(v, np.ndarray) for v in data)
  return False


def _batches_from(data, max_batches, max_batch_size):
  """Turns `calibration_data` into at most `max_batches` input batches (structures of numpy arrays)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if isinstance(data, tf.data.Dataset):
    return [tf.nest.map_structure(np.asarray, unpack_inputs(element))
            for element in data.take(max_batches).as_numpy_iterator()]
  size = max_batch_size or 32
  total = len(tf.nest.flatten(data)[0])
  starts = range(0, total, size)
  return [tf.nest.map_structure(lambda a, s=s: a[s:s + size], data) for s in list(starts)[:max_batches]]
