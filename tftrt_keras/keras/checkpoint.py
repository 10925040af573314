"""What the model's own `ModelCheckpoint` decides, so that `TrtExport` decides the same: when an integer
`save_freq` is due, which way the monitored metric improves, and what a missing value means."""

import importlib
import os
import tempfile

import numpy as np
from absl import logging

from tftrt_keras.errors import invalid_argument
from tftrt_keras.monitor import improves, mode_from_name
from tftrt_keras.keras import internals as keras_internals


class BatchCounter:
  """Counts batches as `ModelCheckpoint._should_save_on_batch` does, from the index Keras passes to
  `on_train_batch_end`: one call stands for every batch since the previous one (`steps_per_execution`), a
  smaller index starts a new epoch, and the count runs on across epochs and `fit` calls."""

  def __init__(self, every):
    self.every = every
    self._since_due = 0
    self._last_batch = None

  def due(self, batch):
    new_epoch = self._last_batch is None or batch <= self._last_batch
    self._since_due += batch + 1 if new_epoch else batch - self._last_batch
    self._last_batch = batch
    if self._since_due >= self.every:
      self._since_due = 0
      return True
    return False


class BestValue:
  """The monitored metric's best value so far and its direction, as the model's `ModelCheckpoint` has them.

  Args:
    model: the model being trained (its Keras, and on Keras 3.11+ its metrics, decide `mode="auto"`).
    monitor, mode, initial_value_threshold: as in `ModelCheckpoint`.

  Raises:
    ValueError: Keras cannot tell the direction of `monitor` under `mode="auto"`.
  """

  def __init__(self, model, monitor, mode, initial_value_threshold):
    self.mode, self.best = _ask_model_checkpoint(model, monitor, mode, initial_value_threshold)

  def update(self, value):
    """True, keeping `value` as the best, when it beats the best so far."""
    if not improves(value, self.best, self.mode):
      return False
    self.best = value
    return True


def saves_without_value(model):
  """Whether the model's `ModelCheckpoint(save_best_only=True)` saves when the monitored value is missing from the
  logs: Keras 3.10 and later warn and save; Keras 2 and earlier Keras 3 warn and skip."""
  package = keras_package(model)
  return package is not None and _major_minor(package) >= (3, 10)


def keras_package(model):
  """The Keras package `model` belongs to: `keras` (Keras 3, or Keras 2 as tf.keras on TF 2.15) or `tf_keras`."""
  for cls in type(model).__mro__:
    root = cls.__module__.split(".")[0]
    if root in ("keras", "tf_keras"):
      return importlib.import_module(root)
  return None


def _major_minor(package):
  return tuple(int(part) for part in package.__version__.split(".")[:2])


def _ask_model_checkpoint(model, monitor, mode, initial_value_threshold):
  """("min" or "max", the initial best value) of a real `ModelCheckpoint` of the model's Keras."""
  package = keras_package(model)
  try:
    probe = package.callbacks.ModelCheckpoint(os.path.join(tempfile.gettempdir(), "unused.keras"), monitor=monitor,
                                              mode=mode, initial_value_threshold=initial_value_threshold)
    probe.set_model(model)
    if probe.monitor_op is None:  # Keras 3.11+ resolves it at the first epoch end; older Keras in __init__
      keras_internals.resolve_monitor_op(probe)
    maximizes = bool(np.asarray(probe.monitor_op(1.0, 0.0)))
  except ValueError as err:
    raise invalid_argument("mode", mode, f"'min' or 'max' for monitor={monitor!r}",
                           hint=f"Keras cannot tell which way it improves: {err}") from err
  except (AttributeError, TypeError) as err:
    logging.warning("tftrt_keras: cannot ask this Keras' ModelCheckpoint for the direction of %r (%s); using the "
                    "name rule", monitor, err)
    direction = mode if mode in ("min", "max") else mode_from_name(monitor)
    return direction, initial_value_threshold
  return ("max" if maximizes else "min"), probe.best
