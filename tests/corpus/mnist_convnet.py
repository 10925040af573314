"""Simple MNIST convnet, through TrtExport.

Follows https://keras.io/examples/vision/mnist_convnet/ (keras-io examples/vision/mnist_convnet.py): the same
Sequential convnet, compile() and fit(validation_split=0.1).
Changed: synthetic 28x28 digits (a bright stroke whose position is the class) instead of MNIST; 1500 training
samples instead of 60000, 2 epochs instead of 15; TrtExport added to fit's callbacks.

Usage: python mnist_convnet.py <export_dir>   (or TRTEXPORT_DIR=<export_dir>)
"""
# corpus-lines: 2.15 2.17 2.21

import os
import sys

import numpy as np
import keras
from keras import layers

import tftrt_keras

export_dir = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("TRTEXPORT_DIR", "/tmp/mnist_convnet_export")
keras.utils.set_random_seed(1337)

"""## Prepare the data"""

# Model / data parameters
num_classes = 10
input_shape = (28, 28, 1)


def synthetic_digits(count, rng):
  """uint8 images in [0, 255] with a bar at a row band that depends on the label (MNIST's dtype and range)."""
  labels = rng.integers(0, num_classes, size=count)
  images = rng.integers(0, 60, size=(count, 28, 28)).astype("uint8")
  for image, label in zip(images, labels):
    top = 2 + 2 * label
    image[top:top + 3, 4:24] = 255
  return images, labels


rng = np.random.default_rng(1337)
(x_train, y_train), (x_test, y_test) = synthetic_digits(1500, rng), synthetic_digits(300, rng)

# Scale images to the [0, 1] range
x_train = x_train.astype("float32") / 255
x_test = x_test.astype("float32") / 255
# Make sure images have shape (28, 28, 1)
x_train = np.expand_dims(x_train, -1)
x_test = np.expand_dims(x_test, -1)
print("x_train shape:", x_train.shape)

# convert class vectors to binary class matrices
y_train = keras.utils.to_categorical(y_train, num_classes)
y_test = keras.utils.to_categorical(y_test, num_classes)

"""## Build the model"""

model = keras.Sequential(
    [
        keras.Input(shape=input_shape),
        layers.Conv2D(32, kernel_size=(3, 3), activation="relu"),
        layers.MaxPooling2D(pool_size=(2, 2)),
        layers.Conv2D(64, kernel_size=(3, 3), activation="relu"),
        layers.MaxPooling2D(pool_size=(2, 2)),
        layers.Flatten(),
        layers.Dropout(0.5),
        layers.Dense(num_classes, activation="softmax"),
    ]
)

"""## Train the model"""

batch_size = 128
epochs = 2

model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])

model.fit(x_train, y_train, batch_size=batch_size, epochs=epochs, validation_split=0.1,
          callbacks=[tftrt_keras.TrtExport(export_dir, precisions=("FP32", "FP16", "INT8"))])

score = model.evaluate(x_test, y_test, verbose=0)
print("Test loss:", score[0])
print("Test accuracy:", score[1])
