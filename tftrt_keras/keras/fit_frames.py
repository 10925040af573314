"""Which `fit` calls are running in this process, read from the interpreter's frames: Keras tells a callback
neither whether `fit` got validation data (before the first epoch ends) nor whether an earlier `fit` is still
running (an interrupted one never calls `on_train_end`)."""

import sys


def fit_frames(predicate):
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


def callbacks_of(frame):
  callbacks = frame.f_locals.get("callbacks")
  callbacks = getattr(callbacks, "callbacks", callbacks)  # a CallbackList, or the user's list
  return callbacks if isinstance(callbacks, (list, tuple)) else ()
