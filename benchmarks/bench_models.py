"""The model and data the Keras benchmarks share: a small CNN on synthetic 32x32x3 images."""

import numpy as np


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
