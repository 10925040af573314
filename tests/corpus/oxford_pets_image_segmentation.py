"""Image segmentation with a U-Net-like architecture, through TrtExport.

Follows https://keras.io/examples/vision/oxford_pets_image_segmentation/ (keras-io
examples/vision/oxford_pets_image_segmentation.py): the same keras.utils.Sequence of (float32 images, uint8
masks with classes 0..2), the same get_model() (Xception-style downsampling with separable convolutions and
residuals, Conv2DTranspose/UpSampling2D upsampling, per-pixel softmax Conv2D), compile(optimizer="rmsprop",
loss="sparse_categorical_crossentropy") and fit(train_gen, epochs=..., validation_data=val_gen, callbacks=...).
Changed: synthetic images (noise with a bright disc, the trimap: disc, its border, background) instead of
Oxford Pets from disk; 64x64 instead of 160x160, 192 training and 96 validation images, batch 16 instead of
32; 1 epoch instead of 15; TrtExport added to fit's callbacks (in place of the example's ModelCheckpoint).

Usage: python oxford_pets_image_segmentation.py <export_dir>   (or TRTEXPORT_DIR=<export_dir>)
"""
# corpus-lines: 2.15 2.17 2.21

import os
import sys

import numpy as np
import keras
from keras import layers

import tftrt_keras

export_dir = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("TRTEXPORT_DIR", "/tmp/oxford_pets_export")
keras.utils.set_random_seed(1337)

img_size = (64, 64)
num_classes = 3
batch_size = 16


def synthetic_pet(seed):
  """A float RGB image in [0, 255] with a disc, and its trimap (1 pet, 2 background, 3 border) as on disk."""
  rng = np.random.default_rng(seed)
  rows, cols = np.mgrid[0:img_size[0], 0:img_size[1]]
  center, radius = rng.uniform(16, 48, size=2), rng.uniform(8, 16)
  distance = np.hypot(rows - center[0], cols - center[1])
  image = rng.uniform(0, 100, size=img_size + (3,))
  image[distance < radius] += rng.uniform(100, 155, size=3)
  trimap = np.where(distance < radius - 1.5, 1, np.where(distance < radius + 1.5, 3, 2)).astype("uint8")
  return image.astype("float32"), trimap


class OxfordPets(keras.utils.Sequence):
  """Helper to iterate over the data (as Numpy arrays)."""

  def __init__(self, batch_size, img_size, input_img_paths, target_img_paths):
    super().__init__()
    self.batch_size = batch_size
    self.img_size = img_size
    self.input_img_paths = input_img_paths
    self.target_img_paths = target_img_paths

  def __len__(self):
    return len(self.target_img_paths) // self.batch_size

  def __getitem__(self, idx):
    """Returns tuple (input, target) correspond to batch #idx."""
    i = idx * self.batch_size
    batch_input_img_paths = self.input_img_paths[i : i + self.batch_size]
    batch_target_img_paths = self.target_img_paths[i : i + self.batch_size]
    x = np.zeros((self.batch_size,) + self.img_size + (3,), dtype="float32")
    for j, path in enumerate(batch_input_img_paths):
      x[j] = synthetic_pet(path)[0]
    y = np.zeros((self.batch_size,) + self.img_size + (1,), dtype="uint8")
    for j, path in enumerate(batch_target_img_paths):
      y[j] = np.expand_dims(synthetic_pet(path)[1], 2)
      # Ground truth labels are 1, 2, 3. Subtract one to make them 0, 1, 2:
      y[j] -= 1
    return x, y


def get_model(img_size, num_classes):
  inputs = keras.Input(shape=img_size + (3,))

  ### [First half of the network: downsampling inputs] ###

  # Entry block
  x = layers.Conv2D(32, 3, strides=2, padding="same")(inputs)
  x = layers.BatchNormalization()(x)
  x = layers.Activation("relu")(x)

  previous_block_activation = x  # Set aside residual

  # Blocks 1, 2, 3 are identical apart from the feature depth.
  for filters in [64, 128, 256]:
    x = layers.Activation("relu")(x)
    x = layers.SeparableConv2D(filters, 3, padding="same")(x)
    x = layers.BatchNormalization()(x)

    x = layers.Activation("relu")(x)
    x = layers.SeparableConv2D(filters, 3, padding="same")(x)
    x = layers.BatchNormalization()(x)

    x = layers.MaxPooling2D(3, strides=2, padding="same")(x)

    # Project residual
    residual = layers.Conv2D(filters, 1, strides=2, padding="same")(previous_block_activation)
    x = layers.add([x, residual])  # Add back residual
    previous_block_activation = x  # Set aside next residual

  ### [Second half of the network: upsampling inputs] ###

  for filters in [256, 128, 64, 32]:
    x = layers.Activation("relu")(x)
    x = layers.Conv2DTranspose(filters, 3, padding="same")(x)
    x = layers.BatchNormalization()(x)

    x = layers.Activation("relu")(x)
    x = layers.Conv2DTranspose(filters, 3, padding="same")(x)
    x = layers.BatchNormalization()(x)

    x = layers.UpSampling2D(2)(x)

    # Project residual
    residual = layers.UpSampling2D(2)(previous_block_activation)
    residual = layers.Conv2D(filters, 1, padding="same")(residual)
    x = layers.add([x, residual])  # Add back residual
    previous_block_activation = x  # Set aside next residual

  # Add a per-pixel classification layer
  outputs = layers.Conv2D(num_classes, 3, activation="softmax", padding="same")(x)

  # Define the model
  model = keras.Model(inputs, outputs)
  return model


# Free up RAM in case the model definition cells were run multiple times
keras.backend.clear_session()

# Build model
model = get_model(img_size, num_classes)

# The "paths" are seeds of synthetic images: same split, same Sequence.
input_img_paths = list(range(288))
target_img_paths = list(range(288))
val_samples = 96
train_input_img_paths = input_img_paths[:-val_samples]
train_target_img_paths = target_img_paths[:-val_samples]
val_input_img_paths = input_img_paths[-val_samples:]
val_target_img_paths = target_img_paths[-val_samples:]

# Instantiate data Sequences for each split
train_gen = OxfordPets(batch_size, img_size, train_input_img_paths, train_target_img_paths)
val_gen = OxfordPets(batch_size, img_size, val_input_img_paths, val_target_img_paths)

# Configure the model for training.
# We use the "sparse" version of categorical_crossentropy
# because our target data is integers.
model.compile(optimizer="rmsprop", loss="sparse_categorical_crossentropy")

callbacks = [tftrt_keras.TrtExport(export_dir, precisions=("FP32", "FP16", "INT8"))]

# Train the model, doing validation at the end of each epoch.
epochs = 1
model.fit(train_gen, epochs=epochs, validation_data=val_gen, callbacks=callbacks)
