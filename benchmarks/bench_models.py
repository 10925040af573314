"""What the Keras benchmarks share: the Keras flavour, a small CNN and synthetic 32x32x3 images."""

import numpy as np


def keras_module(name):
  """(Keras package, its name and version, whether it is Keras 3) for `--keras`; 'default' is what `tf.keras`
  resolves to on this TF line."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if name == "default":
    name = "keras3" if tf.__version__ >= "2.16" else "tf.keras"
  if name == "keras3":
    import keras  # pylint: disable=g-import-not-at-top
    return keras, f"keras {keras.__version__}", True
  if name == "tf_keras":
    import tf_keras  # pylint: disable=g-import-not-at-top
    return tf_keras, f"tf_keras {tf_keras.__version__}", False
  import keras  # pylint: disable=g-import-not-at-top  # what tf.keras is on TF 2.15
  return tf.keras, f"tf.keras {keras.__version__}", False


def small_cnn(keras, classes=10):
  """A realistic small image classifier: two conv blocks and a dense head, about 20k parameters."""
  model = keras.Sequential([
      keras.Input((32, 32, 3), name="image"),
      keras.layers.Conv2D(16, 3, activation="relu"), keras.layers.MaxPooling2D(),
      keras.layers.Conv2D(32, 3, activation="relu"), keras.layers.MaxPooling2D(),
      keras.layers.Flatten(), keras.layers.Dense(32, activation="relu"),
      keras.layers.Dense(classes, activation="softmax")])
  model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
  return model


def images(n, seed, classes=10):
  """n synthetic images and labels that depend on them (so training has something to learn)."""
  rng = np.random.default_rng(seed)
  x = rng.uniform(0, 1, size=(n, 32, 32, 3)).astype("float32")
  return x, (x[:, :4, :4, 0].mean(axis=(1, 2)) * classes).astype("int32") % classes
