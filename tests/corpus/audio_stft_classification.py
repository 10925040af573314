"""Audio classification with the STFTSpectrogram layer inside the model, through TrtExport.

Follows https://keras.io/examples/audio/stft/ (keras-io examples/audio/stft.py): the 1D model, a Sequential of
InputLayer((None, 1)) (raw float32 waveforms of any length), a non-trainable STFTSpectrogram(mode="log",
frame_length=SAMPLE_RATE * 40 // 1000, frame_step=SAMPLE_RATE * 15 // 1000), Conv1D/LayerNormalization/
MaxPooling1D blocks, GlobalMaxPooling1D and Dense layers with a softmax; compile(Adam(1e-5),
sparse_categorical_crossentropy) and fit(train_x, train_y, batch_size=BATCH_SIZE,
validation_data=(valid_x, valid_y), callbacks=[EarlyStopping(restore_best_weights=True)]).
Keras 3.7+ only (STFTSpectrogram): TF 2.21 here.
Changed: synthetic 16 kHz clips (a tone whose pitch is the class, plus noise) instead of ESC-10 from disk; 2 s
instead of 5 s, 160 training and 64 validation clips, Conv1D widths 32/64/64/64/128 instead of 64/128/128/256/512
and Dense 64 instead of 256; Adam(1e-3) instead of 1e-5 (so that one epoch learns something), 1 epoch instead of
200; TrtExport added to fit's callbacks.

Usage: python audio_stft_classification.py <export_dir>   (or TRTEXPORT_DIR=<export_dir>)
"""
# corpus-lines: 2.21

import os
import sys

import numpy as np
import keras
from keras import layers

import tftrt_keras

export_dir = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("TRTEXPORT_DIR", "/tmp/audio_stft_export")
keras.utils.set_random_seed(41)

BATCH_SIZE = 16
NUM_CLASSES = 10
EPOCHS = 1
SAMPLE_RATE = 16000


def read_dataset(count, rng):
  """float32 waves of shape (samples, time, 1) in [-1, 1] and int targets, as the example's read_dataset."""
  targets = rng.integers(0, NUM_CLASSES, size=count)
  t = np.arange(2 * SAMPLE_RATE) / SAMPLE_RATE
  waves = np.stack([0.5 * np.sin(2 * np.pi * (200 + 150 * target) * t + rng.uniform(0, 6.3))
                    + rng.normal(0, 0.1, size=t.shape) for target in targets])
  return np.clip(waves, -1, 1).astype(np.float32)[..., None], targets


rng = np.random.default_rng(41)
train_x, train_y = read_dataset(160, rng)
valid_x, valid_y = read_dataset(64, rng)

model1d = keras.Sequential(
    [
        layers.InputLayer((None, 1)),
        layers.STFTSpectrogram(
            mode="log",
            frame_length=SAMPLE_RATE * 40 // 1000,
            frame_step=SAMPLE_RATE * 15 // 1000,
            trainable=False,
        ),
        layers.Conv1D(32, 64, activation="relu"),
        layers.Conv1D(64, 16, activation="relu"),
        layers.LayerNormalization(),
        layers.MaxPooling1D(4),
        layers.Conv1D(64, 8, activation="relu"),
        layers.Conv1D(64, 4, activation="relu"),
        layers.Conv1D(128, 2, activation="relu"),
        layers.LayerNormalization(),
        layers.Dropout(0.5),
        layers.GlobalMaxPooling1D(),
        layers.Dense(64, activation="relu"),
        layers.Dense(64, activation="relu"),
        layers.Dropout(0.5),
        layers.Dense(NUM_CLASSES, activation="softmax"),
    ],
    name="model_1d_non_trainble_stft",
)
model1d.compile(
    optimizer=keras.optimizers.Adam(1e-3),
    loss="sparse_categorical_crossentropy",
    metrics=["accuracy"],
)

history_model1d = model1d.fit(
    train_x,
    train_y,
    batch_size=BATCH_SIZE,
    validation_data=(valid_x, valid_y),
    epochs=EPOCHS,
    callbacks=[
        keras.callbacks.EarlyStopping(
            monitor="val_loss",
            patience=EPOCHS,
            restore_best_weights=True,
        ),
        tftrt_keras.TrtExport(export_dir, precisions=("FP32", "FP16", "INT8")),
    ],
)
