"""Text classification with a Transformer block, through TrtExport.

Follows https://keras.io/examples/nlp/text_classification_with_transformer/ (keras-io
examples/nlp/text_classification_with_transformer.py): the same TransformerBlock layer (MultiHeadAttention,
feed-forward Sequential, LayerNormalization, Dropout), TokenAndPositionEmbedding layer, the same classifier on
top (GlobalAveragePooling1D, Dropout, Dense(20), Dense(2, softmax)) on `layers.Input(shape=(maxlen,))` (a float
input fed padded integer token ids, as the example does), compile(adam, sparse_categorical_crossentropy) and
fit(x_train, y_train, batch_size=32, epochs=2, validation_data=(x_val, y_val)). On Keras 2 (TF 2.15) the
embedding uses tf.shape/tf.range, as the example did before its Keras 3 port (keras.ops there).
Changed: synthetic token sequences (ids 2..vocab_size, the label given by more ids from a "positive" or a
"negative" range) padded with keras.utils.pad_sequences instead of IMDB; 1200 training and 400 validation
sequences, vocab_size 2000 instead of 20000, maxlen 64 instead of 200; 1 epoch instead of 2; TrtExport added.

Usage: python text_classification_with_transformer.py <export_dir>   (or TRTEXPORT_DIR=<export_dir>)
"""
# corpus-lines: 2.15 2.17 2.21

import os
import sys

import numpy as np
import tensorflow as tf
import keras
from keras import layers

import tftrt_keras

export_dir = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("TRTEXPORT_DIR", "/tmp/transformer_text_export")
keras.utils.set_random_seed(1337)
KERAS2 = keras.__version__.startswith("2.")


class TransformerBlock(layers.Layer):
  def __init__(self, embed_dim, num_heads, ff_dim, rate=0.1):
    super().__init__()
    self.att = layers.MultiHeadAttention(num_heads=num_heads, key_dim=embed_dim)
    self.ffn = keras.Sequential(
        [
            layers.Dense(ff_dim, activation="relu"),
            layers.Dense(embed_dim),
        ]
    )
    self.layernorm1 = layers.LayerNormalization(epsilon=1e-6)
    self.layernorm2 = layers.LayerNormalization(epsilon=1e-6)
    self.dropout1 = layers.Dropout(rate)
    self.dropout2 = layers.Dropout(rate)

  def call(self, inputs):
    attn_output = self.att(inputs, inputs)
    attn_output = self.dropout1(attn_output)
    out1 = self.layernorm1(inputs + attn_output)
    ffn_output = self.ffn(out1)
    ffn_output = self.dropout2(ffn_output)
    return self.layernorm2(out1 + ffn_output)


class TokenAndPositionEmbedding(layers.Layer):
  def __init__(self, maxlen, vocab_size, embed_dim):
    super().__init__()
    self.token_emb = layers.Embedding(input_dim=vocab_size, output_dim=embed_dim)
    self.pos_emb = layers.Embedding(input_dim=maxlen, output_dim=embed_dim)

  def call(self, x):
    if KERAS2:
      maxlen = tf.shape(x)[-1]
      positions = tf.range(start=0, limit=maxlen, delta=1)
    else:
      maxlen = keras.ops.shape(x)[-1]
      positions = keras.ops.arange(start=0, stop=maxlen, step=1)
    positions = self.pos_emb(positions)
    x = self.token_emb(x)
    return x + positions


vocab_size = 2000  # Only consider the top 2k words
maxlen = 64  # Only consider the first 64 words of each review


def synthetic_reviews(count, rng):
  """Lists of int token ids of varying length (as imdb.load_data gives them) and int labels."""
  sequences, labels = [], []
  for _ in range(count):
    label = int(rng.integers(0, 2))
    tokens = list(rng.integers(200, vocab_size, size=int(rng.integers(20, 100))))
    cue = (2, 100) if label else (100, 200)
    for _ in range(int(rng.integers(4, 10))):
      tokens[int(rng.integers(0, len(tokens)))] = int(rng.integers(*cue))
    sequences.append(tokens)
    labels.append(label)
  return sequences, np.array(labels)


rng = np.random.default_rng(1337)
(x_train, y_train), (x_val, y_val) = synthetic_reviews(1200, rng), synthetic_reviews(400, rng)
x_train = keras.utils.pad_sequences(x_train, maxlen=maxlen)
x_val = keras.utils.pad_sequences(x_val, maxlen=maxlen)

embed_dim = 32  # Embedding size for each token
num_heads = 2  # Number of attention heads
ff_dim = 32  # Hidden layer size in feed forward network inside transformer

inputs = layers.Input(shape=(maxlen,))
embedding_layer = TokenAndPositionEmbedding(maxlen, vocab_size, embed_dim)
x = embedding_layer(inputs)
transformer_block = TransformerBlock(embed_dim, num_heads, ff_dim)
x = transformer_block(x)
x = layers.GlobalAveragePooling1D()(x)
x = layers.Dropout(0.1)(x)
x = layers.Dense(20, activation="relu")(x)
x = layers.Dropout(0.1)(x)
outputs = layers.Dense(2, activation="softmax")(x)

model = keras.Model(inputs=inputs, outputs=outputs)

model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
history = model.fit(
    x_train, y_train, batch_size=32, epochs=1, validation_data=(x_val, y_val),
    callbacks=[tftrt_keras.TrtExport(export_dir, precisions=("FP32", "FP16", "INT8"))],
)
