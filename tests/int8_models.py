"""Briefly trained `keras.applications` classifiers on digits, where plain INT8 falls off NVIDIA's cliff.

Shared by tests/test_onnx_int8_fallback.py and benchmarks/bench_int8_fallback.py: scikit-learn's 8x8 digits
upsampled to 32x32x3 (nearest neighbour, in [-1, 1]), random initial weights (`weights=None`: nothing can be
downloaded here), BatchNorm momentum 0.9 so that inference statistics settle within a few epochs (Keras'
0.999 leaves them near their initial values after ~100 steps, and then every precision looks alike).
"""

import numpy as np

from tests import onnx_models

SIZE = 32
# keras.applications constructors by the names the table uses, with the arguments that fit 32x32x3.
APPLICATIONS = {
    "MobileNetV2": ("MobileNetV2", {}),
    "MobileNetV2_035": ("MobileNetV2", {"alpha": 0.35}),
    "MobileNetV3Small": ("MobileNetV3Small", {"include_preprocessing": False}),
    "EfficientNetB0": ("EfficientNetB0", {}),  # its Rescaling and Normalization layers are always in
    "EfficientNetV2B0": ("EfficientNetV2B0", {"include_preprocessing": False}),
    "ResNet50": ("ResNet50", {}),
}


def upscale(images, size=SIZE):
  """8x8x1 digits in [0, 1] -> size x size x 3 in [-1, 1] (nearest neighbour)."""
  factor = size // images.shape[1]
  big = np.repeat(np.repeat(images, factor, axis=1), factor, axis=2)
  return np.repeat(big * 2.0 - 1.0, 3, axis=3).astype("float32")


def digits_32(seed=0):
  """((x_train, y_train), (x_rest, y_rest)): 1257 training images and 540 others, 32x32x3."""
  from examples import digits as digits_data  # pylint: disable=g-import-not-at-top
  (x_train, y_train), (x_rest, y_rest) = digits_data.load_digits(validation_fraction=0.3, seed=seed)
  return (upscale(x_train), y_train), (upscale(x_rest), y_rest)


def train_application(name, x, y, epochs=3, batch_size=32):
  """`keras.applications.<name>(weights=None, input_shape=(32, 32, 3), classes=10)` trained on (x, y)."""
  keras = onnx_models.primary_keras()
  constructor, kwargs = APPLICATIONS[name]
  model = getattr(keras.applications, constructor)(weights=None, input_shape=x.shape[1:], classes=10, **kwargs)
  for layer in model.layers:
    if isinstance(layer, keras.layers.BatchNormalization):
      layer.momentum = 0.9
  model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                metrics=["accuracy"])
  model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0)
  return model


def digits_cnn_and_outlier_twin(x, y, epochs=2, factor=1000.0):
  """The main job's digits CNN trained on (x, y), and its twin with one outlier channel: the first Conv's most
  active channel scaled by `factor` and the second Conv's weights on it by 1/factor. ReLU and max pooling
  commute with a positive scale, so both compute the same function; but the second Conv's input now has one
  channel `factor` times the others, and per-tensor INT8 of that input rounds the other channels to nothing
  (one layer of extreme activation range: plain INT8 misses its gate, that one Conv kept FP32 fixes it)."""
  from examples.train_keras import build_model  # pylint: disable=g-import-not-at-top
  keras = onnx_models.primary_keras()
  model = build_model(keras)
  model.fit(x, y, epochs=epochs, batch_size=64, verbose=0)
  twin = keras.models.clone_model(model)
  twin.set_weights(model.get_weights())
  first, second = (layer for layer in twin.layers if isinstance(layer, keras.layers.Conv2D))
  activity = keras.Model(twin.inputs, first.output).predict(x[:256], verbose=0).mean(axis=(0, 1, 2))
  channel = int(np.argmax(activity))
  kernel, bias = first.get_weights()
  kernel[..., channel] *= factor
  bias[channel] *= factor
  first.set_weights([kernel, bias])
  kernel, bias = second.get_weights()
  kernel[:, :, channel, :] /= factor
  second.set_weights([kernel, bias])
  return model, twin
