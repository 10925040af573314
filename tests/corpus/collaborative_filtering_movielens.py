"""Collaborative filtering for movie recommendations (a subclassed RecommenderNet fed int64 id pairs), through TrtExport.

Follows https://keras.io/examples/structured_data/collaborative_filtering_movielens/ (keras-io
examples/structured_data/collaborative_filtering_movielens.py): users and movies encoded to contiguous ids,
x = the (user, movie) int64 pairs, y = ratings scaled to [0, 1], a 90/10 split; RecommenderNet(keras.Model) with
user/movie Embeddings (he_normal, l2 1e-6) and bias Embeddings, call() taking inputs[:, 0] and inputs[:, 1], a
tensordot of the two vectors plus biases and a sigmoid; compile(BinaryCrossentropy, Adam(0.001)) and
fit(x=x_train, y=y_train, batch_size=64, validation_data=(x_val, y_val)). On Keras 2 (TF 2.15) tf.tensordot and
tf.nn.sigmoid stand where keras.ops are, as in the example before its Keras 3 port.
Changed: synthetic ratings (0.5-5 stars from hidden user and movie factors) for 300 users and 500 movies instead
of MovieLens (pandas is not installed here: numpy arrays); 6000 ratings instead of 100836; 2 epochs instead of
5; TrtExport added to fit's callbacks.

Usage: python collaborative_filtering_movielens.py <export_dir>   (or TRTEXPORT_DIR=<export_dir>)
"""
# corpus-lines: 2.15 2.17 2.21

import os
import sys

import numpy as np
import tensorflow as tf
import keras
from keras import layers

import tftrt_keras

export_dir = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("TRTEXPORT_DIR", "/tmp/movielens_export")
keras.utils.set_random_seed(1337)
KERAS2 = keras.__version__.startswith("2.")

rng = np.random.default_rng(1337)
num_users, num_movies, count = 300, 500, 6000
user_taste, movie_kind = rng.normal(size=(num_users, 3)), rng.normal(size=(num_movies, 3))
user_ids, movie_ids = rng.integers(0, num_users, size=count), rng.integers(0, num_movies, size=count)
stars = np.clip(np.round(2 * (2.75 + (user_taste[user_ids] * movie_kind[movie_ids]).sum(axis=1))) / 2, 0.5, 5.0)

min_rating = stars.min()
max_rating = stars.max()
x = np.stack([user_ids, movie_ids], axis=1).astype("int64")
# Normalize the targets between 0 and 1. Makes it easy to train.
y = ((stars - min_rating) / (max_rating - min_rating))
# Assuming training on 90% of the data and validating on 10%.
train_indices = int(0.9 * count)
x_train, x_val, y_train, y_val = (x[:train_indices], x[train_indices:], y[:train_indices], y[train_indices:])

EMBEDDING_SIZE = 50


class RecommenderNet(keras.Model):
  def __init__(self, num_users, num_movies, embedding_size, **kwargs):
    super().__init__(**kwargs)
    self.num_users = num_users
    self.num_movies = num_movies
    self.embedding_size = embedding_size
    self.user_embedding = layers.Embedding(
        num_users,
        embedding_size,
        embeddings_initializer="he_normal",
        embeddings_regularizer=keras.regularizers.l2(1e-6),
    )
    self.user_bias = layers.Embedding(num_users, 1)
    self.movie_embedding = layers.Embedding(
        num_movies,
        embedding_size,
        embeddings_initializer="he_normal",
        embeddings_regularizer=keras.regularizers.l2(1e-6),
    )
    self.movie_bias = layers.Embedding(num_movies, 1)

  def call(self, inputs):
    user_vector = self.user_embedding(inputs[:, 0])
    user_bias = self.user_bias(inputs[:, 0])
    movie_vector = self.movie_embedding(inputs[:, 1])
    movie_bias = self.movie_bias(inputs[:, 1])
    if KERAS2:
      dot_user_movie = tf.tensordot(user_vector, movie_vector, 2)
    else:
      dot_user_movie = keras.ops.tensordot(user_vector, movie_vector, 2)
    # Add all the components (including bias)
    x = dot_user_movie + user_bias + movie_bias
    # The sigmoid activation forces the rating to between 0 and 1
    return tf.nn.sigmoid(x) if KERAS2 else keras.ops.nn.sigmoid(x)


model = RecommenderNet(num_users, num_movies, EMBEDDING_SIZE)
model.compile(
    loss=keras.losses.BinaryCrossentropy(),
    optimizer=keras.optimizers.Adam(learning_rate=0.001),
)

history = model.fit(
    x=x_train,
    y=y_train,
    batch_size=64,
    epochs=2,
    verbose=1,
    validation_data=(x_val, y_val),
    callbacks=[tftrt_keras.TrtExport(export_dir, precisions=("FP32", "FP16", "INT8"))],
)
