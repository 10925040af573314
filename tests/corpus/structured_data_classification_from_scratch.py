"""Structured data classification from scratch (lookup layers inside the model, dict-fed tf.data), through TrtExport.

Follows https://keras.io/examples/structured_data/structured_data_classification_from_scratch/ in its tf.keras
form (keras-io examples/structured_data/structured_data_classification_from_scratch.py before the
backend-agnostic rewrite moved the lookups into tf.data): one keras.Input per column (int64 categoricals, a
string "thal", float numericals), encode_numerical_feature (Normalization adapted on the dataset) and
encode_categorical_feature (StringLookup / IntegerLookup with output_mode="binary", adapted on the dataset)
inside the model, concatenate, Dense(32, relu), Dropout(0.5), Dense(1, sigmoid); keras.Model(all_inputs,
output) on the list of inputs, compile("adam", "binary_crossentropy") and fit(train_ds,
validation_data=val_ds) on tf.data.Dataset.from_tensor_slices((dict(dataframe), labels)), shuffled, batch 32.
Changed: a synthetic heart-disease table of 303 rows with the CSV's columns and dtypes (int64 columns, float64
"oldpeak", string "thal"; the target depends on age, thalach, cp and thal) built as a dict of numpy columns
(pandas is not installed here) instead of the downloaded CSV; 2 epochs instead of 50; TrtExport added.

Usage: python structured_data_classification_from_scratch.py <export_dir>   (or TRTEXPORT_DIR=<export_dir>)
"""
# corpus-lines: 2.15 2.17 2.21

import os
import sys

import numpy as np
import tensorflow as tf
import keras
from keras import layers

import tftrt_keras

export_dir = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("TRTEXPORT_DIR", "/tmp/structured_data_export")
keras.utils.set_random_seed(1337)


def synthetic_heart_table(count, rng):
  """Columns with the heart.csv dtypes: the int64 ones, float64 oldpeak, string thal, int64 target."""
  table = {
      "age": rng.integers(29, 78, size=count),
      "sex": rng.integers(0, 2, size=count),
      "cp": rng.integers(0, 5, size=count),
      "trestbps": rng.integers(94, 200, size=count),
      "chol": rng.integers(126, 564, size=count),
      "fbs": rng.integers(0, 2, size=count),
      "restecg": rng.integers(0, 3, size=count),
      "thalach": rng.integers(71, 202, size=count),
      "exang": rng.integers(0, 2, size=count),
      "oldpeak": np.round(rng.uniform(0, 6.2, size=count), 1),
      "slope": rng.integers(1, 4, size=count),
      "ca": rng.integers(0, 4, size=count),
      "thal": rng.choice(np.array(["fixed", "normal", "reversible"], dtype=object), size=count),
  }
  score = ((table["age"] - 50) / 10 - (table["thalach"] - 140) / 20 + (table["cp"] == 4)
           + 1.5 * (table["thal"] == "reversible") + rng.normal(0, 0.5, size=count))
  table["target"] = (score > 0.5).astype("int64")
  return table


rng = np.random.default_rng(1337)
dataframe = synthetic_heart_table(303, rng)
val_rows = rng.random(303) < 0.2
val_dataframe = {name: column[val_rows] for name, column in dataframe.items()}
train_dataframe = {name: column[~val_rows] for name, column in dataframe.items()}
print(f"Using {(~val_rows).sum()} samples for training and {val_rows.sum()} for validation")


def dataframe_to_dataset(dataframe):
  dataframe = dict(dataframe)
  labels = dataframe.pop("target")
  ds = tf.data.Dataset.from_tensor_slices((dict(dataframe), labels))
  ds = ds.shuffle(buffer_size=len(labels))
  return ds


train_ds = dataframe_to_dataset(train_dataframe)
val_ds = dataframe_to_dataset(val_dataframe)

train_ds = train_ds.batch(32)
val_ds = val_ds.batch(32)


def encode_numerical_feature(feature, name, dataset):
  # Create a Normalization layer for our feature
  normalizer = layers.Normalization()

  # Prepare a Dataset that only yields our feature
  feature_ds = dataset.map(lambda x, y: x[name])
  feature_ds = feature_ds.map(lambda x: tf.expand_dims(x, -1))

  # Learn the statistics of the data
  normalizer.adapt(feature_ds)

  # Normalize the input feature
  encoded_feature = normalizer(feature)
  return encoded_feature


def encode_categorical_feature(feature, name, dataset, is_string):
  lookup_class = layers.StringLookup if is_string else layers.IntegerLookup
  # Create a lookup layer which will turn strings into integer indices
  lookup = lookup_class(output_mode="binary")

  # Prepare a Dataset that only yields our feature
  feature_ds = dataset.map(lambda x, y: x[name])
  feature_ds = feature_ds.map(lambda x: tf.expand_dims(x, -1))

  # Learn the set of possible string values and assign them a fixed integer index
  lookup.adapt(feature_ds)

  # Turn the string input into integer indices
  encoded_feature = lookup(feature)
  return encoded_feature


# Categorical features encoded as integers
sex = keras.Input(shape=(1,), name="sex", dtype="int64")
cp = keras.Input(shape=(1,), name="cp", dtype="int64")
fbs = keras.Input(shape=(1,), name="fbs", dtype="int64")
restecg = keras.Input(shape=(1,), name="restecg", dtype="int64")
exang = keras.Input(shape=(1,), name="exang", dtype="int64")
ca = keras.Input(shape=(1,), name="ca", dtype="int64")

# Categorical feature encoded as string
thal = keras.Input(shape=(1,), name="thal", dtype="string")

# Numerical features
age = keras.Input(shape=(1,), name="age")
trestbps = keras.Input(shape=(1,), name="trestbps")
chol = keras.Input(shape=(1,), name="chol")
thalach = keras.Input(shape=(1,), name="thalach")
oldpeak = keras.Input(shape=(1,), name="oldpeak")
slope = keras.Input(shape=(1,), name="slope")

all_inputs = [sex, cp, fbs, restecg, exang, ca, thal, age, trestbps, chol, thalach, oldpeak, slope]

# Integer categorical features
sex_encoded = encode_categorical_feature(sex, "sex", train_ds, False)
cp_encoded = encode_categorical_feature(cp, "cp", train_ds, False)
fbs_encoded = encode_categorical_feature(fbs, "fbs", train_ds, False)
restecg_encoded = encode_categorical_feature(restecg, "restecg", train_ds, False)
exang_encoded = encode_categorical_feature(exang, "exang", train_ds, False)
ca_encoded = encode_categorical_feature(ca, "ca", train_ds, False)

# String categorical features
thal_encoded = encode_categorical_feature(thal, "thal", train_ds, True)

# Numerical features
age_encoded = encode_numerical_feature(age, "age", train_ds)
trestbps_encoded = encode_numerical_feature(trestbps, "trestbps", train_ds)
chol_encoded = encode_numerical_feature(chol, "chol", train_ds)
thalach_encoded = encode_numerical_feature(thalach, "thalach", train_ds)
oldpeak_encoded = encode_numerical_feature(oldpeak, "oldpeak", train_ds)
slope_encoded = encode_numerical_feature(slope, "slope", train_ds)

all_features = layers.concatenate(
    [
        sex_encoded,
        cp_encoded,
        fbs_encoded,
        restecg_encoded,
        exang_encoded,
        slope_encoded,
        ca_encoded,
        thal_encoded,
        age_encoded,
        trestbps_encoded,
        chol_encoded,
        thalach_encoded,
        oldpeak_encoded,
    ]
)
x = layers.Dense(32, activation="relu")(all_features)
x = layers.Dropout(0.5)(x)
output = layers.Dense(1, activation="sigmoid")(x)
model = keras.Model(all_inputs, output)
model.compile("adam", "binary_crossentropy", metrics=["accuracy"])

model.fit(train_ds, epochs=2, validation_data=val_ds,
          callbacks=[tftrt_keras.TrtExport(export_dir, precisions=("FP32", "FP16", "INT8"))])
