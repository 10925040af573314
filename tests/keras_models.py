"""Keras flavours present in this environment, and small models for callback tests."""

import functools
import importlib.util

import numpy as np
import tensorflow as tf


def flavors():
  """The Keras flavours installed beside this TF line, the line's own first.

  TF 2.15: Keras 2 as tf.keras. TF 2.16 and later: Keras 3, and Keras 2 through tf_keras where it is installed
  (TF 2.17's environment has it; TF 2.21's has not).
  """
  if tf.__version__.startswith("2.15"):
    return ["tf.keras"]
  found = ["keras3"]
  if importlib.util.find_spec("tf_keras") is not None:
    found.append("tf_keras")
  return found


def keras_for(flavor):
  if flavor == "keras3":
    import keras  # pylint: disable=g-import-not-at-top
    return keras
  if flavor == "tf_keras":
    import tf_keras  # pylint: disable=g-import-not-at-top
    return tf_keras
  return tf.keras


def classifier(keras, kind="functional", features=8, classes=3):
  """A small softmax classifier built three ways; all take a (None, features) float input named 'features'."""
  if kind == "sequential":
    model = keras.Sequential([keras.Input((features,), name="features"),
                              keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(classes, activation="softmax")])
  elif kind == "functional":
    inputs = keras.Input((features,), name="features")
    hidden = keras.layers.Dense(16, activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(classes, activation="softmax", name="probs")(hidden))
  elif kind == "subclassed":
    class Subclassed(keras.Model):

      def __init__(self):
        super().__init__()
        self.hidden = keras.layers.Dense(16, activation="relu")
        self.out = keras.layers.Dense(classes, activation="softmax")

      def call(self, x, training=False):
        return self.out(self.hidden(x))
    model = Subclassed()
  else:
    raise ValueError(kind)
  model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
  return model


def train_data(n=128, features=8, classes=3, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.uniform(0, 1, size=(n, features)).astype("float32")
  return x, (x.sum(axis=1) * classes / features).astype("int32") % classes


def indexed_validation(n=160, features=8):
  """Validation inputs that say where they came from: row i is 1000 + i (training data lies in [0, 1))."""
  x = (1000 + np.repeat(np.arange(n, dtype="float32")[:, None], features, axis=1))
  return x, np.zeros(n, "int32")


@functools.lru_cache(maxsize=None)
def _tensorrt_status():
  from tftrt_keras.preflight import check_tftrt  # pylint: disable=g-import-not-at-top
  return check_tftrt()


def assert_tftrt_outcome(entry):
  """A TF-TRT variant's manifest entry is what this machine allows: built where TF-TRT runs (preflight usable on a
  TF line that has TF-TRT): `ok`, or `unverified` with the reason (the callback tests capture few samples, too few
  for an FP16 or INT8 agreement to clear its bound); else `skipped` with the reason the preflight (or the TF line)
  gives."""
  from tftrt_keras.formats.tftrt.format import tensorflow_has_tftrt  # pylint: disable=g-import-not-at-top
  status = _tensorrt_status()
  if not tensorflow_has_tftrt():
    reason = entry.get("reason") or ""
    assert entry["status"] == "skipped" and "TF-TRT" in reason and f"TensorFlow {tf.__version__}" in reason, entry
  elif status.usable:
    assert entry["status"] in ("ok", "unverified") and (entry["status"] == "ok" or entry.get("reason")), entry
  else:
    assert entry["status"] == "skipped" and status.reason in entry["reason"], (entry, status.reason)
