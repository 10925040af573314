"""The examples' data: scikit-learn's 8x8 digits, which ship inside the package (no download)."""

import numpy as np


def load_digits(validation_fraction, seed):
  """sklearn's 8x8 digits as float images in [0, 1], split into training and validation sets."""
  from sklearn.datasets import load_digits as sklearn_digits  # pylint: disable=g-import-not-at-top
  digits = sklearn_digits()
  images = (digits.images / 16.0).astype("float32")[..., None]
  labels = digits.target.astype("int32")
  order = np.random.default_rng(seed).permutation(len(images))
  cut = int(len(images) * (1 - validation_fraction))
  return (images[order[:cut]], labels[order[:cut]]), (images[order[cut:]], labels[order[cut:]])
