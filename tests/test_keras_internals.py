"""The Keras internals this package relies on (`tftrt_keras/keras/internals.py`) are all there, on every Keras
of this TF line: a Keras release that changes one fails here, naming it, not quietly in a user's `fit`."""

import importlib

import pytest

from tftrt_keras.keras import internals

pytestmark = pytest.mark.tf


def _kerases():
  """Every Keras installed on this line: tf.keras (Keras 2 on 2.15), keras (Keras 3 on 2.17/2.21), tf_keras."""
  found = {}
  for name in ("keras", "tf_keras"):
    try:
      found[name] = importlib.import_module(name)
    except ImportError:
      continue
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if getattr(tf.keras, "__version__", "2.").startswith("2."):  # Keras 2.15's tf.keras has no __version__
    found.setdefault("tf.keras", tf.keras)
  return found


def _hub():
  try:
    return importlib.import_module("tensorflow_hub")
  except ImportError:
    return None


@pytest.mark.parametrize("name", sorted(_kerases()))
def test_every_keras_internal_we_use_is_there(name):
  package = _kerases()[name]
  assert internals.missing(package, hub=_hub()) == [], name


def test_the_check_names_what_a_keras_lacks():
  """A Keras whose fit lost the locals we read is named for each."""
  package = next(iter(_kerases().values()))

  class FitWithoutLocals(package.Model):  # pylint: disable=abstract-method
    def fit(self, *args, **kwargs):  # pylint: disable=unused-argument
      return None

  class Stripped:
    __name__ = "stripped_keras"
    __version__ = getattr(package, "__version__", "2.15")
    Model, Input, layers, callbacks = FitWithoutLocals, package.Input, package.layers, package.callbacks

  gone = internals.missing(Stripped)
  assert any("no local `validation_data`" in g for g in gone), gone
  assert any("no local `callbacks`" in g for g in gone), gone
