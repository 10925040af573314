"""Customizing what happens in fit(): a Model subclass with its own train_step and test_step, through TrtExport.

Follows https://keras.io/guides/custom_train_step_in_tensorflow/ (keras-io
guides/custom_train_step_in_tensorflow.py; guides/customizing_what_happens_in_fit.py on tf.keras 2): CustomModel
(keras.Model) overriding train_step (GradientTape, self.compute_loss, the optimizer step, the metrics from
compile()) and test_step, built functionally (keras.Input(shape=(32,)) -> Dense(1)), compile(optimizer="adam",
loss="mse", metrics=["mae"]) and fit on the guide's own float64 numpy data. Keras 2 (TF 2.15) uses that line's
names, as its guide did: optimizer.apply_gradients(zip(...)), compiled_loss, compiled_metrics.
Changed: 1000 samples kept, y made a function of x (the guide's y is unrelated noise); validation_split=0.2
added (the guide fits without validation), 2 epochs instead of 3; TrtExport added to fit's callbacks.

Usage: python custom_train_step.py <export_dir>   (or TRTEXPORT_DIR=<export_dir>)
"""
# corpus-lines: 2.15 2.17 2.21

import os
import sys

import numpy as np
import tensorflow as tf
import keras

import tftrt_keras

export_dir = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("TRTEXPORT_DIR", "/tmp/custom_train_step_export")
keras.utils.set_random_seed(1337)
KERAS2 = keras.__version__.startswith("2.")


class CustomModel(keras.Model):
  def train_step(self, data):
    # Unpack the data. Its structure depends on your model and
    # on what you pass to `fit()`.
    x, y = data

    with tf.GradientTape() as tape:
      y_pred = self(x, training=True)  # Forward pass
      # Compute the loss value
      # (the loss function is configured in `compile()`)
      if KERAS2:
        loss = self.compiled_loss(y, y_pred, regularization_losses=self.losses)
      else:
        loss = self.compute_loss(y=y, y_pred=y_pred)

    # Compute gradients
    trainable_vars = self.trainable_variables
    gradients = tape.gradient(loss, trainable_vars)

    # Update weights
    if KERAS2:
      self.optimizer.apply_gradients(zip(gradients, trainable_vars))
      self.compiled_metrics.update_state(y, y_pred)
      return {m.name: m.result() for m in self.metrics}
    self.optimizer.apply(gradients, trainable_vars)

    # Update metrics (includes the metric that tracks the loss)
    for metric in self.metrics:
      if metric.name == "loss":
        metric.update_state(loss)
      else:
        metric.update_state(y, y_pred)

    # Return a dict mapping metric names to current value
    return {m.name: m.result() for m in self.metrics}

  def test_step(self, data):
    # Unpack the data
    x, y = data
    # Compute predictions
    y_pred = self(x, training=False)
    if KERAS2:
      self.compiled_loss(y, y_pred, regularization_losses=self.losses)
      self.compiled_metrics.update_state(y, y_pred)
      return {m.name: m.result() for m in self.metrics}
    # Updates the metrics tracking the loss
    loss = self.compute_loss(y=y, y_pred=y_pred)
    # Update the metrics.
    for metric in self.metrics:
      if metric.name == "loss":
        metric.update_state(loss)
      else:
        metric.update_state(y, y_pred)
    # Return a dict mapping metric names to current value.
    # Note that it will include the loss (tracked in self.metrics).
    return {m.name: m.result() for m in self.metrics}


# Construct and compile an instance of CustomModel
inputs = keras.Input(shape=(32,))
outputs = keras.layers.Dense(1)(inputs)
model = CustomModel(inputs, outputs)
model.compile(optimizer="adam", loss="mse", metrics=["mae"])

# Just use `fit` as usual
x = np.random.random((1000, 32))
y = x[:, :4].sum(axis=1, keepdims=True) + 0.1 * np.random.random((1000, 1))
model.fit(x, y, epochs=2, validation_split=0.2,
          callbacks=[tftrt_keras.TrtExport(export_dir, precisions=("FP32", "FP16", "INT8"))])
