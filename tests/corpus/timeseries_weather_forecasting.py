"""Timeseries forecasting for weather prediction (LSTM on tf.data windows), through TrtExport.

Follows https://keras.io/examples/timeseries/timeseries_weather_forecasting/ (keras-io
examples/timeseries/timeseries_weather_forecasting.py): the same normalize() over the training split, seven
selected features, train/validation windows made by timeseries_dataset_from_array(sequence_length=past/step,
sampling_rate=step) over float64 arrays, keras.layers.Input -> LSTM(32) -> Dense(1), compile(Adam(0.001),
"mse") and fit(dataset_train, validation_data=dataset_val, callbacks=[EarlyStopping, ...]).
Changed: a synthetic 14-column climate table (daily and yearly cycles plus noise, float64 as pandas reads the
CSV; columns as numpy arrays, pandas is not installed here) of 9000 rows instead of Jena's 420551; past 240 and
future 36 observations instead of 720 and 72 (step 6 kept: 40-step windows), batch 64 instead of 256;
1 epoch instead of 10; TrtExport added to fit's callbacks (in place of the weights-only ModelCheckpoint).

Usage: python timeseries_weather_forecasting.py <export_dir>   (or TRTEXPORT_DIR=<export_dir>)
"""
# corpus-lines: 2.15 2.17 2.21

import os
import sys

import numpy as np
import keras

import tftrt_keras

export_dir = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("TRTEXPORT_DIR", "/tmp/weather_export")
keras.utils.set_random_seed(1337)

rows = 9000
rng = np.random.default_rng(1337)
t = np.arange(rows, dtype="float64")
day, year = np.sin(2 * np.pi * t / 144), np.sin(2 * np.pi * t / 52560 * 40)
temperature = 9 + 8 * year + 4 * day + rng.normal(0, 1, rows)
# The 14 columns of the Jena table, in its order (p, T, Tpot, Tdew, rh, VPmax, VPact, VPdef, sh, H2OC, rho, wv,
# max. wv, wd), each a plausible function of the temperature cycle plus noise.
df = np.stack([
    989 - 3 * year + rng.normal(0, 2, rows), temperature, temperature + 273.5, temperature - 4 + rng.normal(0, 1, rows),
    76 - 10 * day + rng.normal(0, 5, rows), 13 + 0.9 * temperature, 9 + 0.5 * temperature, 4 + 0.4 * temperature,
    6 + 0.3 * temperature, 9 + 0.5 * temperature, 1216 - 4 * temperature, np.abs(rng.normal(2, 1, rows)),
    np.abs(rng.normal(3.5, 2, rows)), rng.uniform(0, 360, rows)], axis=1)

split_fraction = 0.715
train_split = int(split_fraction * int(df.shape[0]))
step = 6

past = 240
future = 36
learning_rate = 0.001
batch_size = 64
epochs = 1


def normalize(data, train_split):
  data_mean = data[:train_split].mean(axis=0)
  data_std = data[:train_split].std(axis=0)
  return (data - data_mean) / data_std


selected_features = [0, 1, 5, 7, 8, 10, 11]
features = df[:, selected_features]
features = normalize(features, train_split)

train_data = features[0:train_split]
val_data = features[train_split:]

start = past + future
end = start + train_split

x_train = train_data[:, :7]
y_train = features[start:end][:, [1]]

sequence_length = int(past / step)

dataset_train = keras.utils.timeseries_dataset_from_array(
    x_train,
    y_train,
    sequence_length=sequence_length,
    sampling_rate=step,
    batch_size=batch_size,
)

x_end = len(val_data) - past - future

label_start = train_split + past + future

x_val = val_data[:x_end][:, :7]
y_val = features[label_start:][:, [1]]

dataset_val = keras.utils.timeseries_dataset_from_array(
    x_val,
    y_val,
    sequence_length=sequence_length,
    sampling_rate=step,
    batch_size=batch_size,
)

for batch in dataset_train.take(1):
  inputs, targets = batch

print("Input shape:", inputs.numpy().shape)
print("Target shape:", targets.numpy().shape)

inputs = keras.layers.Input(shape=(inputs.shape[1], inputs.shape[2]))
lstm_out = keras.layers.LSTM(32)(inputs)
outputs = keras.layers.Dense(1)(lstm_out)

model = keras.Model(inputs=inputs, outputs=outputs)
model.compile(optimizer=keras.optimizers.Adam(learning_rate=learning_rate), loss="mse")

es_callback = keras.callbacks.EarlyStopping(monitor="val_loss", min_delta=0, patience=5)

history = model.fit(
    dataset_train,
    epochs=epochs,
    validation_data=dataset_val,
    callbacks=[es_callback, tftrt_keras.TrtExport(export_dir, precisions=("FP32", "FP16", "INT8"))],
)
