"""Structured data with Wide, Deep, and Cross networks (StringLookup + Embedding in the model, dict features
from make_csv_dataset), through TrtExport.

Follows https://keras.io/examples/structured_data/wide_deep_cross_networks/ (keras-io
examples/structured_data/wide_deep_cross_networks.py): the same CSV pipeline (tf.data.experimental.
make_csv_dataset with the example's column_defaults, label_name, .map(process) to a dict, cache), the same
create_model_inputs (scalar float32 numeric and string categorical keras Inputs, shape=()), encode_inputs
(StringLookup(vocabulary, mask_token=None, num_oov_indices=0) then Embedding of sqrt(vocabulary) dimensions, or
one-hot), create_deep_and_cross_model, and run_experiment's compile(Adam, SparseCategoricalCrossentropy,
SparseCategoricalAccuracy) and fit. On Keras 2 (TF 2.15) tf.expand_dims stands where keras.ops.expand_dims is.
Changed: synthetic covertype rows (10 numeric columns, Soil_Type and Wilderness_Area strings, a 7-class
Cover_Type that depends on Elevation and Wilderness_Area) written to local CSV files instead of the UCI
download; 2000 training and 400 test rows instead of ~580k; batch 265 and 1 epoch kept; the test dataset passed
as validation_data to fit (the example evaluates after fit); TrtExport added to fit's callbacks.

Usage: python wide_deep_cross_networks.py <export_dir>   (or TRTEXPORT_DIR=<export_dir>)
"""
# corpus-lines: 2.15 2.17 2.21

import math
import os
import sys
import tempfile

import numpy as np
import tensorflow as tf
from tensorflow import data as tf_data
import keras
from keras import layers

import tftrt_keras

export_dir = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("TRTEXPORT_DIR", "/tmp/wide_deep_cross_export")
keras.utils.set_random_seed(1337)
expand_dims = tf.expand_dims if keras.__version__.startswith("2.") else keras.ops.expand_dims

CSV_HEADER = [
    "Elevation", "Aspect", "Slope", "Horizontal_Distance_To_Hydrology", "Vertical_Distance_To_Hydrology",
    "Horizontal_Distance_To_Roadways", "Hillshade_9am", "Hillshade_Noon", "Hillshade_3pm",
    "Horizontal_Distance_To_Fire_Points", "Wilderness_Area", "Soil_Type", "Cover_Type",
]
SOILS = [f"soil_type_{i}" for i in range(1, 41)]
AREAS = ["area_type_1", "area_type_2", "area_type_3", "area_type_4"]


def write_synthetic_csv(path, count, rng):
  elevation = rng.integers(1850, 3850, size=count)
  area = rng.integers(0, 4, size=count)
  cover = np.clip((elevation - 1850) // 300 + (area == 3), 0, 6)
  with open(path, "w") as f:
    f.write(",".join(CSV_HEADER) + "\n")
    for i in range(count):
      numeric = [elevation[i]] + list(rng.integers(0, 360, size=9))
      f.write(",".join(str(v) for v in numeric) + f",{AREAS[area[i]]},{rng.choice(SOILS)},{cover[i]}\n")


rng = np.random.default_rng(1337)
data_dir = tempfile.mkdtemp(prefix="covertype_")
train_data_file = os.path.join(data_dir, "train_data.csv")
test_data_file = os.path.join(data_dir, "test_data.csv")
write_synthetic_csv(train_data_file, 2000, rng)
write_synthetic_csv(test_data_file, 400, rng)

TARGET_FEATURE_NAME = "Cover_Type"
TARGET_FEATURE_LABELS = ["0", "1", "2", "3", "4", "5", "6"]
NUMERIC_FEATURE_NAMES = [
    "Aspect", "Elevation", "Hillshade_3pm", "Hillshade_9am", "Hillshade_Noon",
    "Horizontal_Distance_To_Fire_Points", "Horizontal_Distance_To_Hydrology", "Horizontal_Distance_To_Roadways",
    "Slope", "Vertical_Distance_To_Hydrology",
]
CATEGORICAL_FEATURES_WITH_VOCABULARY = {
    "Soil_Type": SOILS,
    "Wilderness_Area": AREAS,
}
CATEGORICAL_FEATURE_NAMES = list(CATEGORICAL_FEATURES_WITH_VOCABULARY.keys())
FEATURE_NAMES = NUMERIC_FEATURE_NAMES + CATEGORICAL_FEATURE_NAMES
COLUMN_DEFAULTS = [
    [0] if feature_name in NUMERIC_FEATURE_NAMES + [TARGET_FEATURE_NAME] else ["NA"]
    for feature_name in CSV_HEADER
]
NUM_CLASSES = len(TARGET_FEATURE_LABELS)


# To convert the datasets elements to from OrderedDict to Dictionary
def process(features, target):
  return dict(features), target


def get_dataset_from_csv(csv_file_path, batch_size, shuffle=False):
  dataset = tf_data.experimental.make_csv_dataset(
      csv_file_path,
      batch_size=batch_size,
      column_names=CSV_HEADER,
      column_defaults=COLUMN_DEFAULTS,
      label_name=TARGET_FEATURE_NAME,
      num_epochs=1,
      header=True,
      shuffle=shuffle,
  ).map(process)
  return dataset.cache()


learning_rate = 0.001
dropout_rate = 0.1
batch_size = 265
num_epochs = 1

hidden_units = [32, 32]


def run_experiment(model):
  model.compile(
      optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
      loss=keras.losses.SparseCategoricalCrossentropy(),
      metrics=[keras.metrics.SparseCategoricalAccuracy()],
  )

  train_dataset = get_dataset_from_csv(train_data_file, batch_size, shuffle=True)

  test_dataset = get_dataset_from_csv(test_data_file, batch_size)

  print("Start training the model...")
  history = model.fit(train_dataset, epochs=num_epochs, validation_data=test_dataset,
                      callbacks=[tftrt_keras.TrtExport(export_dir, precisions=("FP32", "FP16", "INT8"))])
  print("Model training finished")

  _, accuracy = model.evaluate(test_dataset, verbose=0)

  print(f"Test accuracy: {round(accuracy * 100, 2)}%")


def create_model_inputs():
  inputs = {}
  for feature_name in FEATURE_NAMES:
    if feature_name in NUMERIC_FEATURE_NAMES:
      inputs[feature_name] = layers.Input(name=feature_name, shape=(), dtype="float32")
    else:
      inputs[feature_name] = layers.Input(name=feature_name, shape=(), dtype="string")
  return inputs


def encode_inputs(inputs, use_embedding=False):
  encoded_features = []
  for feature_name in inputs:
    if feature_name in CATEGORICAL_FEATURE_NAMES:
      vocabulary = CATEGORICAL_FEATURES_WITH_VOCABULARY[feature_name]
      # Create a lookup to convert string values to an integer indices.
      # Since we are not using a mask token nor expecting any out of vocabulary
      # (oov) token, we set mask_token to None and  num_oov_indices to 0.
      lookup = layers.StringLookup(
          vocabulary=vocabulary,
          mask_token=None,
          num_oov_indices=0,
          output_mode="int" if use_embedding else "binary",
      )
      if use_embedding:
        # Convert the string input values into integer indices.
        encoded_feature = lookup(inputs[feature_name])
        embedding_dims = int(math.sqrt(len(vocabulary)))
        # Create an embedding layer with the specified dimensions.
        embedding = layers.Embedding(input_dim=len(vocabulary), output_dim=embedding_dims)
        # Convert the index values to embedding representations.
        encoded_feature = embedding(encoded_feature)
      else:
        # Convert the string input values into a one hot encoding.
        encoded_feature = lookup(expand_dims(inputs[feature_name], -1))
    else:
      # Use the numerical features as-is.
      encoded_feature = expand_dims(inputs[feature_name], -1)

    encoded_features.append(encoded_feature)

  all_features = layers.concatenate(encoded_features)
  return all_features


def create_deep_and_cross_model():
  inputs = create_model_inputs()
  x0 = encode_inputs(inputs, use_embedding=True)

  cross = x0
  for _ in hidden_units:
    units = cross.shape[-1]
    x = layers.Dense(units)(cross)
    cross = x0 * x + cross
  cross = layers.BatchNormalization()(cross)

  deep = x0
  for units in hidden_units:
    deep = layers.Dense(units)(deep)
    deep = layers.BatchNormalization()(deep)
    deep = layers.ReLU()(deep)
    deep = layers.Dropout(dropout_rate)(deep)

  merged = layers.concatenate([cross, deep])
  outputs = layers.Dense(units=NUM_CLASSES, activation="softmax")(merged)
  model = keras.Model(inputs=inputs, outputs=outputs)
  return model


deep_and_cross_model = create_deep_and_cross_model()
run_experiment(deep_and_cross_model)
