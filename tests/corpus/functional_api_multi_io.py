"""The functional API's multi-input, multi-output model (ticket title/body/tags -> priority/department), through TrtExport.

Follows https://keras.io/guides/functional_api/ (keras-io guides/functional_api.py, "Models with multiple inputs
and outputs"): keras.Input "title" and "body" (variable-length int sequences, float Inputs as the guide declares
them) and "tags" (binary vector), Embedding + LSTM(128) / LSTM(32), concatenate, Dense "priority" and Dense
"department"; keras.Model(inputs=[title_input, body_input, tags_input], outputs=[priority_pred,
department_pred]); compile(RMSprop(1e-3), losses and loss_weights by output name) and fit fed dicts keyed by the
input and output names, on the guide's own random data (np.random.randint titles of 10 words, bodies of 100,
float32 tags).
Changed: 640 samples instead of 1280, priority and department made functions of the tags (the guide's targets
are unrelated noise); validation_split=0.2 added (the guide fits without validation), 1 epoch instead of 2;
TrtExport added to fit's callbacks.

Usage: python functional_api_multi_io.py <export_dir>   (or TRTEXPORT_DIR=<export_dir>)
"""
# corpus-lines: 2.15 2.21
# Not 2.17: Keras 3.6 pairs a dict fed to list inputs by sorted key, so the guide's own fit fails there.

import os
import sys

import numpy as np
import keras
from keras import layers

import tftrt_keras

export_dir = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("TRTEXPORT_DIR", "/tmp/functional_api_export")
keras.utils.set_random_seed(1337)

num_tags = 12  # Number of unique issue tags
num_words = 10000  # Size of vocabulary obtained when preprocessing text data
num_departments = 4  # Number of departments for predictions

title_input = keras.Input(shape=(None,), name="title")  # Variable-length sequence of ints
body_input = keras.Input(shape=(None,), name="body")  # Variable-length sequence of ints
tags_input = keras.Input(shape=(num_tags,), name="tags")  # Binary vectors of size `num_tags`

# Embed each word in the title into a 64-dimensional vector
title_features = layers.Embedding(num_words, 64)(title_input)
# Embed each word in the text into a 64-dimensional vector
body_features = layers.Embedding(num_words, 64)(body_input)

# Reduce sequence of embedded words in the title into a single 128-dimensional vector
title_features = layers.LSTM(128)(title_features)
# Reduce sequence of embedded words in the body into a single 32-dimensional vector
body_features = layers.LSTM(32)(body_features)

# Merge all available features into a single large vector via concatenation
x = layers.concatenate([title_features, body_features, tags_input])

# Stick a logistic regression for priority prediction on top of the features
priority_pred = layers.Dense(1, name="priority")(x)
# Stick a department classifier on top of the features
department_pred = layers.Dense(num_departments, name="department")(x)

# Instantiate an end-to-end model predicting both priority and department
model = keras.Model(
    inputs=[title_input, body_input, tags_input],
    outputs=[priority_pred, department_pred],
)

model.compile(
    optimizer=keras.optimizers.RMSprop(1e-3),
    loss={
        "priority": keras.losses.BinaryCrossentropy(from_logits=True),
        "department": keras.losses.CategoricalCrossentropy(from_logits=True),
    },
    loss_weights={"priority": 1.0, "department": 0.2},
)

# Dummy input data
title_data = np.random.randint(num_words, size=(640, 10))
body_data = np.random.randint(num_words, size=(640, 100))
tags_data = np.random.randint(2, size=(640, num_tags)).astype("float32")

# Dummy target data, learnable from the tags
priority_targets = tags_data[:, :3].mean(axis=1, keepdims=True)
dept_targets = keras.utils.to_categorical(tags_data[:, :2] @ np.array([1, 2]), num_departments)

model.fit(
    {"title": title_data, "body": body_data, "tags": tags_data},
    {"priority": priority_targets, "department": dept_targets},
    epochs=1,
    batch_size=32,
    validation_split=0.2,
    callbacks=[tftrt_keras.TrtExport(export_dir, precisions=("FP32", "FP16", "INT8"))],
)
