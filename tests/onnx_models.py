"""Models and build jobs for the ONNX format's tests: real SavedModels on disk, written as the callback does."""

import os

import numpy as np
import tensorflow as tf

from examples import digits as digits_data
from examples.train_keras import build_model as build_digits_model
from tests import keras_models
from tftrt_keras.options import ConversionOptions
from tftrt_keras.formats.base import BuildJob
from tftrt_keras.keras.snapshot import SavedModelSnapshotter, signature_from_model
from tftrt_keras.formats.signature import load_signature


def primary_keras():
  keras = keras_models.keras_for(keras_models.flavors()[0])
  keras.utils.set_random_seed(0)
  return keras


def save_keras_model(model, directory):
  """Writes `model`'s normal export the way `TrtExport` does; returns the directory."""
  SavedModelSnapshotter(model, signature_from_model(model)).save(str(directory))
  return str(directory)


def digits_saved_model(directory, epochs=2):
  """The main job's digits CNN (examples/train_keras.py), briefly trained; returns (dir, validation images)."""
  keras = primary_keras()
  (x_train, y_train), (x_val, _) = digits_data.load_digits(validation_fraction=0.3, seed=0)
  model = build_digits_model(keras)
  model.fit(x_train, y_train, epochs=epochs, batch_size=64, verbose=0)
  return save_keras_model(model, directory), x_val


def mobilenet_saved_model(directory):
  """`MobileNetV2(weights=None, input_shape=(96, 96, 3))` with its random weights, as the issue names it.

  Random weights make a poor judge of INT8 or FP16 quality: untouched, every image gets nearly the same 1000
  near-tied scores (top-1 agreement is then trivially high); with BatchNorm statistics reset from data and a
  fitted head, the random features separate classes by differences so small that even FP16 flips 5% of them
  (measured here). Conversion, names, dtypes and Q/DQ structure are what this model tests.
  """
  keras = primary_keras()
  model = keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3))
  return save_keras_model(model, directory)


def mobilenet_images(n, seed=0, with_labels=False):
  """Images in [-1, 1] of 10 classes: sample i is fixed low-frequency pattern i % 10 plus its own noise."""
  patterns = np.random.default_rng(1234).uniform(-1, 1, size=(10, 6, 6, 3))
  rng = np.random.default_rng(seed)
  labels = np.arange(n) % 10
  coarse = patterns[labels] * 0.7 + rng.uniform(-0.3, 0.3, size=(n, 6, 6, 3))
  images = np.repeat(np.repeat(coarse, 16, axis=1), 16, axis=2) + rng.normal(0, 0.1, (n, 96, 96, 3))
  images = np.clip(images, -1, 1).astype("float32")
  return (images, labels) if with_labels else images


class _Unconvertible(tf.Module):
  """A signature using `Igamma` (the regularized incomplete gamma function): tf2onnx has no handler for it."""

  @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
  def serve(self, x):
    return {"y": tf.math.igamma(tf.abs(x) + 1.0, tf.abs(x) + 0.5)}


def unconvertible_saved_model(directory):
  module = _Unconvertible()
  tf.saved_model.save(module, str(directory), signatures={"serving_default": module.serve})
  return str(directory)


class _WithStringOutput(tf.Module):
  """Like a canned Estimator classifier: numeric scores and class ids beside the class names as strings."""

  def __init__(self):
    super().__init__()
    self.w = tf.Variable(np.random.default_rng(0).normal(size=(4, 3)).astype("float32"))

  @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32, name="x")])
  def serve(self, x):
    scores = tf.nn.softmax(tf.matmul(x, self.w))
    class_ids = tf.argmax(scores, axis=1)
    return {"probabilities": scores, "class_ids": class_ids,
            "classes": tf.gather(tf.constant(["cat", "dog", "eel"]), class_ids)}


def string_output_saved_model(directory):
  module = _WithStringOutput()
  tf.saved_model.save(module, str(directory), signatures={"serving_default": module.serve})
  return str(directory)


def build_job(saved_model_dir, root, samples=None, options=None, version=1, signature_key="serving_default"):
  """A `BuildJob` like `pipeline.ExportRun` makes, for `saved_model_dir` and optional calibration `samples`."""
  loaded, _, info = load_signature(saved_model_dir, signature_key)
  del loaded
  signature = {"inputs": [t.to_json() for t in info.inputs], "outputs": [t.to_json() for t in info.outputs]}
  count = len(next(iter(samples.values()))) if samples else 0
  return BuildJob(root=str(root), version=version, native_dir=str(saved_model_dir), signature_key=signature_key,
                  signature=signature, options=options or ConversionOptions(formats=("onnx",)),
                  calibration_batch_sizes=[min(count, 32)] if count else [],
                  load_calibration=(lambda: samples) if samples else None)


def build_variant(fmt, job, precision, root, source_dir=None):
  """Builds one variant into `root/<artifact>` through `fmt.build`; returns (directory, manifest details)."""
  directory = os.path.join(str(root), f"{fmt.name}_{precision.lower()}")
  os.makedirs(directory)
  details = fmt.build(job, precision, source_dir or job.native_dir, directory)
  return directory, details


def input_name(job):
  return job.signature["inputs"][0]["name"]
