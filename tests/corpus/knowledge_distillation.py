"""Knowledge distillation: a Distiller model with its own compile() and compute_loss(), through TrtExport.

Follows https://keras.io/examples/vision/knowledge_distillation/ (keras-io
examples/vision/knowledge_distillation.py, its Keras 3 form): Distiller(keras.Model) wrapping a teacher and a
student Sequential convnet, overriding compile() (student and distillation losses, alpha, temperature),
compute_loss() (softened teacher/student predictions, KLDivergence) and call() (the student); the teacher trained
first with compile()/fit(), then distiller.fit(x_train, y_train) and distiller.evaluate(x_test, y_test).
Keras 3 only: the tf.keras form of the example has no call(), so a Keras 2 Distiller has nothing to export.
Changed: synthetic 28x28 digits (a bar whose row is the class) instead of MNIST; 1200 training and 300 test
images, teacher Conv2D 64/128 instead of 256/512; teacher 1 epoch instead of 5, distillation 1 epoch instead of
3; validation_data=(x_test, y_test) added to the distiller's fit; TrtExport added to its callbacks.

Usage: python knowledge_distillation.py <export_dir>   (or TRTEXPORT_DIR=<export_dir>)
"""
# corpus-lines: 2.17 2.21

import os
import sys

import numpy as np
import keras
from keras import layers
from keras import ops

import tftrt_keras

export_dir = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("TRTEXPORT_DIR", "/tmp/distillation_export")
keras.utils.set_random_seed(1337)


class Distiller(keras.Model):
  def __init__(self, student, teacher):
    super().__init__()
    self.teacher = teacher
    self.student = student

  def compile(
      self,
      optimizer,
      metrics,
      student_loss_fn,
      distillation_loss_fn,
      alpha=0.1,
      temperature=3,
  ):
    super().compile(optimizer=optimizer, metrics=metrics)
    self.student_loss_fn = student_loss_fn
    self.distillation_loss_fn = distillation_loss_fn
    self.alpha = alpha
    self.temperature = temperature

  def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, allow_empty=False):
    teacher_pred = self.teacher(x, training=False)
    student_loss = self.student_loss_fn(y, y_pred)

    distillation_loss = self.distillation_loss_fn(
        ops.softmax(teacher_pred / self.temperature, axis=1),
        ops.softmax(y_pred / self.temperature, axis=1),
    ) * (self.temperature**2)

    loss = self.alpha * student_loss + (1 - self.alpha) * distillation_loss
    return loss

  def call(self, x):
    return self.student(x)


# Create the teacher
teacher = keras.Sequential(
    [
        keras.Input(shape=(28, 28, 1)),
        layers.Conv2D(64, (3, 3), strides=(2, 2), padding="same"),
        layers.LeakyReLU(negative_slope=0.2),
        layers.MaxPooling2D(pool_size=(2, 2), strides=(1, 1), padding="same"),
        layers.Conv2D(128, (3, 3), strides=(2, 2), padding="same"),
        layers.Flatten(),
        layers.Dense(10),
    ],
    name="teacher",
)

# Create the student
student = keras.Sequential(
    [
        keras.Input(shape=(28, 28, 1)),
        layers.Conv2D(16, (3, 3), strides=(2, 2), padding="same"),
        layers.LeakyReLU(negative_slope=0.2),
        layers.MaxPooling2D(pool_size=(2, 2), strides=(1, 1), padding="same"),
        layers.Conv2D(32, (3, 3), strides=(2, 2), padding="same"),
        layers.Flatten(),
        layers.Dense(10),
    ],
    name="student",
)


def synthetic_digits(count, rng):
  labels = rng.integers(0, 10, size=count)
  images = rng.integers(0, 60, size=(count, 28, 28)).astype("uint8")
  for image, label in zip(images, labels):
    image[2 + 2 * label:5 + 2 * label, 4:24] = 255
  return images, labels


# Prepare the train and test dataset.
batch_size = 64
rng = np.random.default_rng(1337)
(x_train, y_train), (x_test, y_test) = synthetic_digits(1200, rng), synthetic_digits(300, rng)

# Normalize data
x_train = x_train.astype("float32") / 255.0
x_train = np.reshape(x_train, (-1, 28, 28, 1))

x_test = x_test.astype("float32") / 255.0
x_test = np.reshape(x_test, (-1, 28, 28, 1))

# Train teacher as usual
teacher.compile(
    optimizer=keras.optimizers.Adam(),
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    metrics=[keras.metrics.SparseCategoricalAccuracy()],
)

# Train and evaluate teacher on data.
teacher.fit(x_train, y_train, epochs=1)
teacher.evaluate(x_test, y_test)

# Initialize and compile distiller
distiller = Distiller(student=student, teacher=teacher)
distiller.compile(
    optimizer=keras.optimizers.Adam(),
    metrics=[keras.metrics.SparseCategoricalAccuracy()],
    student_loss_fn=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    distillation_loss_fn=keras.losses.KLDivergence(),
    alpha=0.1,
    temperature=10,
)

# Distill teacher to student
distiller.fit(x_train, y_train, epochs=1, validation_data=(x_test, y_test),
              callbacks=[tftrt_keras.TrtExport(export_dir, precisions=("FP32", "FP16", "INT8"))])

# Evaluate student on test dataset
distiller.evaluate(x_test, y_test)
