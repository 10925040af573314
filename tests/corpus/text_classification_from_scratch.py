"""Text classification from scratch, with TextVectorization inside the model (raw strings in), through TrtExport.

Follows https://keras.io/examples/nlp/text_classification_from_scratch/ (keras-io
examples/nlp/text_classification_from_scratch.py): the same custom_standardization, TextVectorization(
output_mode="int", output_sequence_length=...) adapted on a text-only dataset, and the same 1D convnet
(Embedding, Dropout, two strided Conv1D, GlobalMaxPooling1D, Dense, sigmoid "predictions"), built as the
example's "option 1" / end-to-end model: keras.Input(shape=(1,), dtype="string") -> vectorize_layer -> ... , the
model the example says to ship. compile(binary_crossentropy, adam) and fit(train_ds, validation_data=val_ds) on
batched, cached, prefetched tf.data of raw strings.
Changed: synthetic reviews (random words from a small vocabulary with "<br />" tags, the label given by more
"good" or "bad" words) instead of IMDB from disk; 640 training and 320 validation reviews, max_features 2000
instead of 20000, embedding_dim 32 and 32 filters instead of 128, sequence_length 64 instead of 500; 1 epoch
instead of 3; the model trained end to end instead of on pre-vectorized data; TrtExport added to fit.

Usage: python text_classification_from_scratch.py <export_dir>   (or TRTEXPORT_DIR=<export_dir>)
"""
# corpus-lines: 2.15 2.17 2.21

import os
import re
import string
import sys

import numpy as np
import tensorflow as tf
import keras
from keras import layers

import tftrt_keras

export_dir = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("TRTEXPORT_DIR", "/tmp/text_classification_export")
keras.utils.set_random_seed(1337)

batch_size = 32
WORDS = [f"word{i}" for i in range(300)]


def synthetic_reviews(count, rng):
  """Raw review strings (bytes, as text_dataset_from_directory yields them) and int32 labels."""
  texts, labels = [], []
  for _ in range(count):
    label = int(rng.integers(0, 2))
    words = list(rng.choice(WORDS, size=int(rng.integers(20, 80))))
    for _ in range(int(rng.integers(3, 8))):
      words.insert(int(rng.integers(0, len(words))), "Good!" if label else "bad,")
    words.insert(int(rng.integers(0, len(words))), "<br />")
    texts.append(" ".join(words))
    labels.append(label)
  return np.array(texts), np.array(labels, dtype="int32")


rng = np.random.default_rng(1337)
raw_train_ds = tf.data.Dataset.from_tensor_slices(synthetic_reviews(640, rng)).batch(batch_size)
raw_val_ds = tf.data.Dataset.from_tensor_slices(synthetic_reviews(320, rng)).batch(batch_size)


def custom_standardization(input_data):
  lowercase = tf.strings.lower(input_data)
  stripped_html = tf.strings.regex_replace(lowercase, "<br />", " ")
  return tf.strings.regex_replace(stripped_html, f"[{re.escape(string.punctuation)}]", "")


# Model constants.
max_features = 2000
embedding_dim = 32
sequence_length = 64

vectorize_layer = keras.layers.TextVectorization(
    standardize=custom_standardization,
    max_tokens=max_features,
    output_mode="int",
    output_sequence_length=sequence_length,
)

# Let's make a text-only dataset (no labels):
text_ds = raw_train_ds.map(lambda x, y: x)
# Let's call `adapt`:
vectorize_layer.adapt(text_ds)


def add_text_axis(text, label):
  return tf.expand_dims(text, -1), label


train_ds = raw_train_ds.map(add_text_axis).cache().prefetch(buffer_size=10)
val_ds = raw_val_ds.map(add_text_axis).cache().prefetch(buffer_size=10)

# A string input (the example's end-to-end model: "option 1")
text_input = keras.Input(shape=(1,), dtype="string", name="text")
x = vectorize_layer(text_input)
x = layers.Embedding(max_features + 1, embedding_dim)(x)
x = layers.Dropout(0.5)(x)

# Conv1D + global max pooling
x = layers.Conv1D(32, 7, padding="valid", activation="relu", strides=3)(x)
x = layers.Conv1D(32, 7, padding="valid", activation="relu", strides=3)(x)
x = layers.GlobalMaxPooling1D()(x)

# We add a vanilla hidden layer:
x = layers.Dense(32, activation="relu")(x)
x = layers.Dropout(0.5)(x)

# We project onto a single unit output layer, and squash it with a sigmoid:
predictions = layers.Dense(1, activation="sigmoid", name="predictions")(x)

model = keras.Model(text_input, predictions)

# Compile the model with binary crossentropy loss and an adam optimizer.
model.compile(loss="binary_crossentropy", optimizer="adam", metrics=["accuracy"])

epochs = 1

# Fit the model using the train and test datasets.
model.fit(train_ds, validation_data=val_ds, epochs=epochs,
          callbacks=[tftrt_keras.TrtExport(export_dir, precisions=("FP32", "FP16", "INT8"))])
