"""Architectures nobody here designed (`keras.applications`, standard Keras layers), briefly trained on digits.

For the test suite (`TEST_SUITE`, small and quick) and for `benchmarks/bench_zoo.py` (all of `ARCHITECTURES`;
benchmarks import this module as they import `tests.onnx_models`). Every model learns a real task, so
verification figures mean something: scikit-learn's 8x8 digits (shipped inside the package) upsampled to
32x32x3 images for the CNNs, or read as 64 pixel-intensity tokens (ints 0-16) for the sequence models;
1100 training and 697 validation samples. `keras.applications` models are built with `weights=None` at
32x32 (the smallest size each accepts) and their BatchNormalization momentum set to 0.9, so that the moving
statistics inference uses settle within a few hundred steps (Keras' default 0.99 leaves them near their
initial values after 3 epochs, and the inference model then scores at chance).

    zoo = trained("MobileNetV3Small")      # cached per process
    zoo.model, zoo.x_val, zoo.val_accuracy
"""

import dataclasses
import functools
import time

import numpy as np

IMAGE_SIZE = 32
TOKENS, VOCABULARY = 64, 17  # 8x8 pixels, intensities 0..16
TRAIN_SAMPLES = 1100
CLASSES = 10
BATCHNORM_MOMENTUM = 0.9


@dataclasses.dataclass(frozen=True)
class Architecture:
  """How one zoo entry is built and fed.

  Attributes:
    name: the key in `ARCHITECTURES`.
    data: "image" (float32 (32, 32, 3)) or "tokens" (int32 (64,) pixel intensities).
    epochs: training epochs (enough for validation accuracy well above chance, 0.1).
    pixel_scale: images are digits in [0, 1] mapped to `pixels * scale + offset`: the range the model's own
      preprocessing expects ([0, 255] where it includes Rescaling/Normalization layers, else [-1, 1]).
    pixel_offset: see `pixel_scale`.
    learning_rate: Adam's (the small sequence models learn in a few epochs only at 3e-3).
  """

  name: str
  data: str
  epochs: int
  pixel_scale: float = 255.0
  pixel_offset: float = 0.0
  learning_rate: float = 1e-3


def _application(name):
  def build(keras):
    # A named input: the signature (and every variant's graph input) is `image`, not `keras_tensor_177`.
    image = keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3), name="image")
    return getattr(keras.applications, name)(weights=None, input_tensor=image, classes=CLASSES)
  return build


def _transformer_block(keras):
  """Token + position embedding, one post-norm encoder block (MultiHeadAttention, LayerNormalization, a Dense
  feed-forward with exact GELU, Keras 3's default "gelu"), a flattened softmax head.

  Flattened rather than mean-pooled: a pixel's position is what tells digits apart, and a mean over
  intensity tokens loses it (mean pooling reached 0.28 validation accuracy in 12 epochs, this 0.95 in 3).
  """
  layers = keras.layers
  tokens = keras.Input((TOKENS,), dtype="int32", name="tokens")
  width = 16
  x = layers.Embedding(VOCABULARY, width)(tokens)
  x = x + layers.Embedding(TOKENS, width)(keras.ops.arange(TOKENS) if hasattr(keras, "ops") else _positions())
  attended = layers.MultiHeadAttention(num_heads=4, key_dim=width // 4)(x, x)
  x = layers.LayerNormalization()(x + attended)
  hidden = layers.Dense(2 * width, activation="gelu")(x)
  x = layers.LayerNormalization()(x + layers.Dense(width)(hidden))
  x = layers.Flatten()(x)
  return keras.Model(tokens, layers.Dense(CLASSES, activation="softmax", name="probabilities")(x))


def _positions():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.range(TOKENS)  # Keras 2 has no keras.ops; a TF op is a layer input there


def _embedding_bilstm(keras):
  layers = keras.layers
  tokens = keras.Input((TOKENS,), dtype="int32", name="tokens")
  x = layers.Embedding(VOCABULARY, 16)(tokens)
  x = layers.Bidirectional(layers.LSTM(32))(x)
  return keras.Model(tokens, layers.Dense(CLASSES, activation="softmax", name="probabilities")(x))


def _gru(keras):
  layers = keras.layers
  tokens = keras.Input((TOKENS,), dtype="int32", name="tokens")
  x = layers.Embedding(VOCABULARY, 16)(tokens)
  x = layers.GRU(48)(x)
  return keras.Model(tokens, layers.Dense(CLASSES, activation="softmax", name="probabilities")(x))


ARCHITECTURES = {
    "ResNet50": (Architecture("ResNet50", "image", 3, 2.0, -1.0), _application("ResNet50")),
    "MobileNetV2": (Architecture("MobileNetV2", "image", 3, 2.0, -1.0), _application("MobileNetV2")),
    "MobileNetV3Small": (Architecture("MobileNetV3Small", "image", 3), _application("MobileNetV3Small")),
    "EfficientNetB0": (Architecture("EfficientNetB0", "image", 3), _application("EfficientNetB0")),
    "EfficientNetV2B0": (Architecture("EfficientNetV2B0", "image", 3), _application("EfficientNetV2B0")),
    "ConvNeXtTiny": (Architecture("ConvNeXtTiny", "image", 3), _application("ConvNeXtTiny")),
    "TransformerBlock": (Architecture("TransformerBlock", "tokens", 4, learning_rate=3e-3), _transformer_block),
    "EmbeddingBiLSTM": (Architecture("EmbeddingBiLSTM", "tokens", 8, learning_rate=3e-3), _embedding_bilstm),
    "GRU": (Architecture("GRU", "tokens", 10, learning_rate=3e-3), _gru),
}
# Two or three small ones for the test suite: depthwise/SE/hard-swish (FP16 error), exact GELU (Erfc) with
# attention and LayerNormalization, and a recurrent model with int token inputs (the FP16 Loop types).
TEST_SUITE = ("MobileNetV3Small", "TransformerBlock", "EmbeddingBiLSTM")


@dataclasses.dataclass
class ZooModel:
  """A trained zoo model and its data (validation samples are never used for training)."""

  architecture: Architecture
  model: object
  input_name: str
  x_train: np.ndarray
  y_train: np.ndarray
  x_val: np.ndarray
  y_val: np.ndarray
  val_accuracy: float
  train_seconds: float


@functools.lru_cache(maxsize=None)
def digits_split():
  """((images, labels) train, (images, labels) validation): 8x8 digits in [0, 1], 1100 / 697."""
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
  digits = load_digits()
  images = (digits.images / 16.0).astype("float32")
  labels = digits.target.astype("int32")
  order = np.random.default_rng(0).permutation(len(images))
  train, val = order[:TRAIN_SAMPLES], order[TRAIN_SAMPLES:]
  return (images[train], labels[train]), (images[val], labels[val])


def inputs_for(architecture, images):
  """8x8 digits in [0, 1] as `architecture` takes them: 32x32x3 scaled images, or int32 tokens."""
  if architecture.data == "tokens":
    return np.rint(images.reshape(len(images), TOKENS) * (VOCABULARY - 1)).astype("int32")
  factor = IMAGE_SIZE // images.shape[1]
  upsampled = np.repeat(np.repeat(images, factor, axis=1), factor, axis=2)
  rgb = np.repeat(upsampled[..., None], 3, axis=-1)
  return (rgb * architecture.pixel_scale + architecture.pixel_offset).astype("float32")


def build(keras, name):
  """The compiled, untrained model `name` (one of `ARCHITECTURES`)."""
  if name not in ARCHITECTURES:
    raise ValueError(f"name: received {name!r}, expected one of {sorted(ARCHITECTURES)}")
  architecture, builder = ARCHITECTURES[name]
  model = builder(keras)
  for layer in _all_layers(model):
    if isinstance(layer, keras.layers.BatchNormalization):
      layer.momentum = BATCHNORM_MOMENTUM
  model.compile(optimizer=keras.optimizers.Adam(architecture.learning_rate), loss="sparse_categorical_crossentropy",
                metrics=["accuracy"])
  return model


def _all_layers(model):
  for layer in model.layers:
    yield layer
    if hasattr(layer, "layers"):  # nested models (none in keras.applications today, but cheap to follow)
      yield from _all_layers(layer)


@functools.lru_cache(maxsize=None)
def trained(name, flavor=None, epochs=None):
  """`name` built with Keras `flavor` (tests/keras_models.py; the TF line's first by default), trained for
  `epochs` (the architecture's own by default) with seed 0; cached for the process."""
  from tests import keras_models  # pylint: disable=g-import-not-at-top
  keras = keras_models.keras_for(flavor or keras_models.flavors()[0])
  keras.utils.set_random_seed(0)
  model = build(keras, name)  # checks `name`
  architecture, _ = ARCHITECTURES[name]
  (train_images, y_train), (val_images, y_val) = digits_split()
  x_train, x_val = inputs_for(architecture, train_images), inputs_for(architecture, val_images)
  start = time.perf_counter()
  model.fit(x_train, y_train, epochs=epochs or architecture.epochs, batch_size=32, verbose=0)
  seconds = time.perf_counter() - start
  predicted = np.argmax(model.predict(x_val, batch_size=128, verbose=0), axis=1)
  input_name = model.inputs[0].name.split(":")[0]
  return ZooModel(architecture, model, input_name, x_train, y_train, x_val, y_val,
                  float(np.mean(predicted == y_val)), seconds)
