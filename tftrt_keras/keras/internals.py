"""Every use this package makes of Keras' internals, in one place, each with the reason no public hook serves.

`missing(keras_package)` names what a Keras no longer has; tests/test_keras_internals.py runs it on every
supported Keras, so a release that changes one fails there instead of in a user's `fit`.
"""

import inspect
import sys


# --- fit's own frame: Keras tells a callback neither whether `fit` got validation data (before the first epoch
# ends) nor whether an earlier `fit` is still running (an interrupted one never calls `on_train_end`).

FIT_LOCALS = ("validation_data", "callbacks")


def running_fit_frames(predicate):
  """Frames of `fit` calls running now in any thread of this process for which predicate(frame) holds."""
  found = []
  for top in sys._current_frames().values():  # pylint: disable=protected-access
    frame = top
    while frame is not None:
      if frame.f_code.co_name == "fit" and predicate(frame):
        found.append(frame)
      frame = frame.f_back
  return found


def fit_has_validation(model):
  """True/False when the running `fit` of `model` was given validation data (`validation_split` too), None when
  no such frame is seen."""
  frame = sys._getframe(1)  # pylint: disable=protected-access
  while frame is not None:
    if frame.f_code.co_name == "fit" and frame.f_locals.get("self") is model:
      return frame.f_locals.get("validation_data") is not None
    frame = frame.f_back
  return None


def callbacks_of(frame):
  """The callbacks of the `fit` running in `frame` (its `callbacks` local: a CallbackList or the user's list)."""
  callbacks = frame.f_locals.get("callbacks")
  callbacks = getattr(callbacks, "callbacks", callbacks)
  return callbacks if isinstance(callbacks, (list, tuple)) else ()


# --- the validation step: capturing its batches needs the function `evaluate`/`fit` call per step. Both Keras
# read `model.test_function` (set by `make_test_function`, which Keras 2 also returns); no callback sees inputs.

def built_test_function(model):
  """The validation step function Keras built for `model` (building it if needed)."""
  return model.make_test_function() or model.test_function


def set_test_function(model, function):
  model.test_function = function


def test_function_of(model):
  return getattr(model, "test_function", None)


def steps_per_execution(model):
  """Batches one call of the step function consumes (Keras 2: a variable `_steps_per_execution`)."""
  steps = getattr(model, "_steps_per_execution", None)
  return int(steps.numpy()) if hasattr(steps, "numpy") else int(getattr(model, "steps_per_execution", 1) or 1)


# --- ModelCheckpoint's direction: Keras 3.11+ resolves `monitor_op` only at the first epoch end, in
# `MonitorCallback._set_monitor_op` (from the compiled metric's direction under "auto").

def resolve_monitor_op(probe):
  """Makes a Keras 3.11+ ModelCheckpoint `probe` (its model set) resolve `monitor_op` now."""
  probe._set_monitor_op()  # pylint: disable=protected-access


# --- TF-Hub: `hub.KerasLayer` keeps its loaded module (assets, tables) in `_func`; the SavedModel of the model
# must track it or its resources are lost.

def loaded_hub_module(layer):
  return getattr(layer, "_func", None)


class Keras2CallbackFlags:
  """What Keras 2's CallbackList asks of every callback, privately (Keras 3 asks nothing): batch hooks only when
  exporting every N batches (else Keras 2 skips the per-batch Python calls), no TF logs, every worker runs it
  (the callback decides which worker writes)."""

  _supports_tf_logs = False
  _chief_worker_only = None

  def _implements_train_batch_hooks(self):
    return self.save_freq != "epoch"

  def _implements_test_batch_hooks(self):  # pylint: disable=no-self-use
    return False
  _implements_predict_batch_hooks = _implements_test_batch_hooks


def missing(keras_package, hub=None):
  """What of the above `keras_package` lacks, one sentence each ([] when all hold); `hub`: tensorflow_hub or None."""
  gone = []
  fit = inspect.unwrap(keras_package.Model.fit)
  local_names = set(getattr(getattr(fit, "__code__", None), "co_varnames", ()))
  for name in FIT_LOCALS:
    if name not in local_names:
      gone.append(f"{keras_package.__name__}.Model.fit has no local `{name}` (running_fit_frames, "
                  "fit_has_validation, callbacks_of read it)")
  if not hasattr(keras_package.Model, "make_test_function"):
    gone.append(f"{keras_package.__name__}.Model.make_test_function is gone (the validation capture)")
  inputs = keras_package.Input((2,))
  model = keras_package.Model(inputs, keras_package.layers.Dense(1)(inputs))
  model.compile(loss="mse")
  if not hasattr(model, "test_function"):
    gone.append(f"{keras_package.__name__} models have no `test_function` attribute (the validation capture)")
  probe = keras_package.callbacks.ModelCheckpoint("unused.keras", monitor="val_loss")
  if getattr(probe, "monitor_op", None) is None and not hasattr(probe, "_set_monitor_op"):
    gone.append(f"{keras_package.__name__}.callbacks.ModelCheckpoint has neither `monitor_op` after __init__ nor "
                "`_set_monitor_op` (resolve_monitor_op)")
  if getattr(keras_package, "__version__", "2.").startswith("2.") and not hasattr(keras_package.callbacks.Callback,
                                                                "_implements_train_batch_hooks"):
    gone.append(f"{keras_package.__name__}.callbacks.Callback no longer has `_implements_train_batch_hooks` "
                "(Keras2CallbackFlags)")
  if hub is not None and "self._func" not in inspect.getsource(hub.KerasLayer.__init__):
    gone.append("tensorflow_hub.KerasLayer no longer keeps its module in `_func` (loaded_hub_module)")
  return gone
