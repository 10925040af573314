"""Tiny deterministic SavedModels for tests (TF only, no Keras), with known outputs."""

import numpy as np
import tensorflow as tf

FAKE_BACKEND = "tests.fake_trt_backend:FakeTrtBackendForTests"


class _Classifier(tf.Module):
  """probabilities = softmax(x @ w + b); logits too. Weights fixed by `seed`."""

  def __init__(self, seed, features=4, classes=3):
    super().__init__()
    rng = np.random.default_rng(seed)
    self.w = tf.Variable(rng.normal(size=(features, classes)).astype("float32"), name="w")
    self.b = tf.Variable(rng.normal(size=(classes,)).astype("float32"), name="b")

  @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
  def serve(self, x):
    logits = tf.matmul(x, self.w) + self.b
    return {"logits": logits, "probabilities": tf.nn.softmax(logits)}


def classifier(path, seed=0):
  """Writes a one-input, two-output classifier; returns a numpy function computing its outputs."""
  module = _Classifier(seed)
  tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
  w, b = module.w.numpy(), module.b.numpy()

  def reference(x):
    logits = x @ w + b
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return {"logits": logits, "probabilities": e / e.sum(axis=1, keepdims=True)}
  return reference


class _TwoInputs(tf.Module):

  def __init__(self):
    super().__init__()
    self.scale = tf.Variable([[2.0, -1.0, 0.5]], name="scale")

  # Declared in non-alphabetical order on purpose: names, not positions, must tie inputs together.
  @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.float32, name="zeta"),
                                tf.TensorSpec([None, 2], tf.int32, name="alpha")])
  def serve(self, zeta, alpha):
    return {"scaled": zeta * self.scale,
            "summed": tf.reduce_sum(tf.cast(alpha, tf.float32), axis=1) + tf.reduce_sum(zeta, axis=1)}


def two_inputs(path):
  module = _TwoInputs()
  tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})

  def reference(zeta, alpha):
    return {"scaled": zeta * np.array([[2.0, -1.0, 0.5]], np.float32),
            "summed": alpha.astype(np.float32).sum(axis=1) + zeta.sum(axis=1)}
  return reference


class _LookupTable(tf.Module):

  def __init__(self):
    super().__init__()
    self.table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(["a", "b"]), tf.constant([1, 2], tf.int64)), default_value=0)

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="token")])
  def serve(self, token):
    return {"id": self.table.lookup(token)}


def lookup_table(path):
  module = _LookupTable()
  tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})


def samples(n, features=4, seed=0):
  return {"x": np.random.default_rng(seed).normal(size=(n, features)).astype("float32")}


def writer_copying(saved_model_dir):
  """A `write_native` for `pipeline.prepare_export` that publishes a copy of an existing SavedModel."""
  import shutil  # pylint: disable=g-import-not-at-top

  def write_native(directory):
    shutil.rmtree(directory)  # copytree creates the directory itself
    shutil.copytree(saved_model_dir, directory)
  return write_native
