"""Object detection with a Vision Transformer (bounding-box regression head), through TrtExport.

Follows https://keras.io/examples/vision/object_detection_using_vision_transformer/ (keras-io
examples/vision/object_detection_using_vision_transformer.py): the same mlp(), Patches layer
(keras.ops.image.extract_patches and a reshape), PatchEncoder (Dense projection plus a position Embedding of
keras.ops.arange), create_vit_object_detector (LayerNormalization, MultiHeadAttention, residual Adds, an MLP
head, Dense(4) box), and run_experiment's compile(AdamW(learning_rate, weight_decay), MeanSquaredError) and
fit(x=x_train, y=y_train, batch_size=..., validation_split=0.1, callbacks=[ModelCheckpoint, EarlyStopping]).
Keras 3 only (keras.ops).
Changed: synthetic images (noise with one bright rectangle; the target its normalized corners) instead of the
Caltech 101 airplanes; image_size 64 instead of 224 with patch_size 16 instead of 32, 2 transformer layers
instead of 4, mlp_head_units [256, 64, 32] instead of [2048, 1024, 512, 64, 32]; 400 images, batch 32, 2 epochs
instead of 100; TrtExport added to fit's callbacks (in place of the weights-only ModelCheckpoint).

Usage: python vit_object_detection.py <export_dir>   (or TRTEXPORT_DIR=<export_dir>)
"""
# corpus-lines: 2.17 2.21

import os
import sys

import numpy as np
import keras
from keras import layers
from keras import ops

import tftrt_keras

export_dir = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("TRTEXPORT_DIR", "/tmp/vit_detection_export")
keras.utils.set_random_seed(1337)

image_size = 64
rng = np.random.default_rng(1337)
images, targets = [], []
for _ in range(400):
  image = rng.uniform(0, 0.4, size=(image_size, image_size, 3))
  top_left_x, top_left_y = rng.integers(0, 40, size=2)
  bottom_right_x, bottom_right_y = top_left_x + rng.integers(12, 24), top_left_y + rng.integers(12, 24)
  image[top_left_y:bottom_right_y, top_left_x:bottom_right_x] = 1.0
  images.append(image)
  # apply relative scaling to bounding boxes as per given image and append to list
  targets.append((top_left_x / image_size, top_left_y / image_size, bottom_right_x / image_size,
                  bottom_right_y / image_size))

# Convert the list to numpy array, split to train and test dataset
(x_train), (y_train) = (np.asarray(images[: int(len(images) * 0.8)]), np.asarray(targets[: int(len(targets) * 0.8)]))
(x_test), (y_test) = (np.asarray(images[int(len(images) * 0.8) :]), np.asarray(targets[int(len(targets) * 0.8) :]))


def mlp(x, hidden_units, dropout_rate):
  for units in hidden_units:
    x = layers.Dense(units, activation=keras.activations.gelu)(x)
    x = layers.Dropout(dropout_rate)(x)
  return x


class Patches(layers.Layer):
  def __init__(self, patch_size):
    super().__init__()
    self.patch_size = patch_size

  def call(self, images):
    input_shape = ops.shape(images)
    batch_size = input_shape[0]
    height = input_shape[1]
    width = input_shape[2]
    channels = input_shape[3]
    num_patches_h = height // self.patch_size
    num_patches_w = width // self.patch_size
    patches = keras.ops.image.extract_patches(images, size=self.patch_size)
    patches = ops.reshape(
        patches,
        (
            batch_size,
            num_patches_h * num_patches_w,
            self.patch_size * self.patch_size * channels,
        ),
    )
    return patches


class PatchEncoder(layers.Layer):
  def __init__(self, num_patches, projection_dim):
    super().__init__()
    self.num_patches = num_patches
    self.projection = layers.Dense(units=projection_dim)
    self.position_embedding = layers.Embedding(input_dim=num_patches, output_dim=projection_dim)

  def call(self, patch):
    positions = ops.expand_dims(ops.arange(start=0, stop=self.num_patches, step=1), axis=0)
    projected_patches = self.projection(patch)
    encoded = projected_patches + self.position_embedding(positions)
    return encoded


def create_vit_object_detector(input_shape, patch_size, num_patches, projection_dim, num_heads,
                               transformer_units, transformer_layers, mlp_head_units):
  inputs = keras.Input(shape=input_shape)
  # Create patches
  patches = Patches(patch_size)(inputs)
  # Encode patches
  encoded_patches = PatchEncoder(num_patches, projection_dim)(patches)

  # Create multiple layers of the Transformer block.
  for _ in range(transformer_layers):
    # Layer normalization 1.
    x1 = layers.LayerNormalization(epsilon=1e-6)(encoded_patches)
    # Create a multi-head attention layer.
    attention_output = layers.MultiHeadAttention(num_heads=num_heads, key_dim=projection_dim, dropout=0.1)(x1, x1)
    # Skip connection 1.
    x2 = layers.Add()([attention_output, encoded_patches])
    # Layer normalization 2.
    x3 = layers.LayerNormalization(epsilon=1e-6)(x2)
    # MLP
    x3 = mlp(x3, hidden_units=transformer_units, dropout_rate=0.1)
    # Skip connection 2.
    encoded_patches = layers.Add()([x3, x2])

  # Create a [batch_size, projection_dim] tensor.
  representation = layers.LayerNormalization(epsilon=1e-6)(encoded_patches)
  representation = layers.Flatten()(representation)
  representation = layers.Dropout(0.3)(representation)
  # Add MLP.
  features = mlp(representation, hidden_units=mlp_head_units, dropout_rate=0.3)

  bounding_box = layers.Dense(4)(features)  # Final four neurons that output bounding box

  # return Keras model.
  return keras.Model(inputs=inputs, outputs=bounding_box)


def run_experiment(model, learning_rate, weight_decay, batch_size, num_epochs):
  optimizer = keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=weight_decay)

  # Compile model.
  model.compile(optimizer=optimizer, loss=keras.losses.MeanSquaredError())

  history = model.fit(
      x=x_train,
      y=y_train,
      batch_size=batch_size,
      epochs=num_epochs,
      validation_split=0.1,
      callbacks=[
          tftrt_keras.TrtExport(export_dir, precisions=("FP32", "FP16", "INT8")),
          keras.callbacks.EarlyStopping(monitor="val_loss", patience=10),
      ],
  )

  return history


input_shape = (image_size, image_size, 3)  # input image shape
learning_rate = 0.001
weight_decay = 0.0001
batch_size = 32
num_epochs = 2
patch_size = 16  # Size of the patches to be extracted from the input images
num_patches = (image_size // patch_size) ** 2
projection_dim = 64
num_heads = 4
# Size of the transformer layers
transformer_units = [
    projection_dim * 2,
    projection_dim,
]
transformer_layers = 2
mlp_head_units = [256, 64, 32]  # Size of the dense layers

vit_object_detector = create_vit_object_detector(
    input_shape,
    patch_size,
    num_patches,
    projection_dim,
    num_heads,
    transformer_units,
    transformer_layers,
    mlp_head_units,
)

# Train model
history = run_experiment(vit_object_detector, learning_rate, weight_decay, batch_size, num_epochs)
