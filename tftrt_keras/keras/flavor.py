"""Which Keras a model belongs to: Keras 2 (`tf.keras` on TF 2.15, `tf_keras` on TF 2.17) or Keras 3.

One callback class serves both: a Keras 3 `Callback` carrying the hooks Keras 2's `CallbackList` asks for.
"""

import importlib


def _keras3():
  try:
    keras = importlib.import_module("keras")
  except ImportError:
    return None
  return keras if keras.__version__.startswith("3.") else None


def callback_base():
  keras3 = _keras3()
  if keras3 is not None:
    return keras3.callbacks.Callback
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.keras.callbacks.Callback


def is_keras3_model(model):
  keras3 = _keras3()
  return keras3 is not None and isinstance(model, keras3.Model)


def keras_version(model):
  """'keras 3.6.0', 'tf_keras 2.17.0', 'tf.keras 2.15.0' – for the manifest."""
  module = type(model).__module__.split(".")[0]
  if is_keras3_model(model):
    return f"keras {_keras3().__version__}"
  try:
    package = importlib.import_module("tf_keras" if module == "tf_keras" else "keras")
    return f"{'tf_keras' if module == 'tf_keras' else 'tf.keras'} {package.__version__}"
  except ImportError:
    return "keras (unknown version)"


def flavor_name(model):
  """"keras3", "tf_keras" or "tf.keras": the Keras an export worker rebuilds the model's metrics with."""
  if is_keras3_model(model):
    return "keras3"
  return "tf_keras" if type(model).__module__.split(".")[0] == "tf_keras" else "tf.keras"


def is_chief(model):
  """True on the worker that writes: everywhere outside multi-worker training, the chief inside it."""
  strategy = getattr(model, "distribute_strategy", None)
  extended = getattr(strategy, "extended", None)
  return bool(getattr(extended, "should_checkpoint", True))
