"""Image classification from scratch (small Xception, augmentation layers inside the model), through TrtExport.

Follows https://keras.io/examples/vision/image_classification_from_scratch/ (keras-io
examples/vision/image_classification_from_scratch.py): the same make_model() (Rescaling, separable-conv residual
blocks, BatchNormalization, Dropout, sigmoid head for two classes), with the example's "option 1": the
data_augmentation Sequential (RandomFlip, RandomRotation) is the model's first layer; compile(Adam(1e-3),
binary_crossentropy, jit_compile=True) and fit(train_ds, validation_data=val_ds) on batched, prefetched tf.data.
Changed: synthetic float32 images in [0, 255] (a bright square on the left for "dog", on the right for "cat")
instead of Cats vs Dogs from disk; 48x48 instead of 180x180, 640 training and 160 validation images, batch 32,
block sizes [32, 64, 128] and a 256-filter last block instead of [128, 256, 512, 728] and 1024; 2 epochs
instead of 25; TrtExport added to fit's callbacks (in place of the example's ModelCheckpoint).

Usage: python image_classification_from_scratch.py <export_dir>   (or TRTEXPORT_DIR=<export_dir>)
"""
# corpus-lines: 2.15 2.17 2.21

import os
import sys

import numpy as np
import tensorflow as tf
import keras
from keras import layers

import tftrt_keras

export_dir = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("TRTEXPORT_DIR", "/tmp/image_classification_export")
keras.utils.set_random_seed(1337)

image_size = (48, 48)
batch_size = 32


def synthetic_pets(count, rng):
  """float32 RGB images in [0, 255] (as image_dataset_from_directory yields them) and int32 labels."""
  labels = rng.integers(0, 2, size=count).astype("int32")
  images = rng.uniform(0, 120, size=(count,) + image_size + (3,)).astype("float32")
  for image, label in zip(images, labels):
    top, left = rng.integers(6, 30), (rng.integers(2, 12) if label else rng.integers(26, 36))
    image[top:top + 10, left:left + 10, :] = 255.0
  return images, labels


rng = np.random.default_rng(1337)
train_ds = tf.data.Dataset.from_tensor_slices(synthetic_pets(640, rng)).batch(batch_size)
val_ds = tf.data.Dataset.from_tensor_slices(synthetic_pets(160, rng)).batch(batch_size)

data_augmentation = keras.Sequential(
    [
        layers.RandomFlip("horizontal"),
        layers.RandomRotation(0.1),
    ]
)

train_ds = train_ds.prefetch(tf.data.AUTOTUNE)
val_ds = val_ds.prefetch(tf.data.AUTOTUNE)


def make_model(input_shape, num_classes):
  inputs = keras.Input(shape=input_shape)
  # Option 1 of the example: augmentation inside the model, inactive at inference.
  x = data_augmentation(inputs)

  # Entry block
  x = layers.Rescaling(1.0 / 255)(x)
  x = layers.Conv2D(32, 3, strides=2, padding="same")(x)
  x = layers.BatchNormalization()(x)
  x = layers.Activation("relu")(x)

  x = layers.Conv2D(64, 3, padding="same")(x)
  x = layers.BatchNormalization()(x)
  x = layers.Activation("relu")(x)

  previous_block_activation = x  # Set aside residual

  for size in [32, 64, 128]:
    x = layers.Activation("relu")(x)
    x = layers.SeparableConv2D(size, 3, padding="same")(x)
    x = layers.BatchNormalization()(x)

    x = layers.Activation("relu")(x)
    x = layers.SeparableConv2D(size, 3, padding="same")(x)
    x = layers.BatchNormalization()(x)

    x = layers.MaxPooling2D(3, strides=2, padding="same")(x)

    # Project residual
    residual = layers.Conv2D(size, 1, strides=2, padding="same")(previous_block_activation)
    x = layers.add([x, residual])  # Add back residual
    previous_block_activation = x  # Set aside next residual

  x = layers.SeparableConv2D(256, 3, padding="same")(x)
  x = layers.BatchNormalization()(x)
  x = layers.Activation("relu")(x)

  x = layers.GlobalAveragePooling2D()(x)
  if num_classes == 2:
    activation = "sigmoid"
    units = 1
  else:
    activation = "softmax"
    units = num_classes

  x = layers.Dropout(0.5)(x)
  outputs = layers.Dense(units, activation=activation)(x)
  return keras.Model(inputs, outputs)


model = make_model(input_shape=image_size + (3,), num_classes=2)

epochs = 2

callbacks = [
    tftrt_keras.TrtExport(export_dir, precisions=("FP32", "FP16", "INT8")),
]
model.compile(
    optimizer=keras.optimizers.Adam(1e-3),
    loss="binary_crossentropy",
    metrics=["accuracy"],
    jit_compile=True,  # Enable XLA compilation for faster execution
)
model.fit(
    train_ds,
    epochs=epochs,
    callbacks=callbacks,
    validation_data=val_ds,
)
