"""What capturing labels with the verification samples adds to `fit`'s validation pass.

  python benchmarks/bench_capture_labels.py [--repeats=6] [--validation_batches=200]

One compiled small CNN on synthetic 32x32x3 images, two arms in alternating order, each a `fit` with a
`TrtExport` capturing 8 calibration batches and 500 verification samples (exports kept out of the passes):
  inputs   the capture keeps inputs only (its label keying is switched off after `on_train_begin`)
  labels   the capture keeps labels with the verification samples (the default)
Times each later validation pass (wall), prints the median per arm and labels / inputs (target <= 1.03).
No assertions: numbers only.
"""

import os
import statistics
import tempfile
import time

from absl import app
from absl import flags

from bench_models import images, keras_module, small_cnn  # benchmarks/ is the script directory

FLAGS = flags.FLAGS
NEVER = 10**9


def define_flags():
  flags.DEFINE_integer("repeats", 6, "fit() calls per arm.")
  flags.DEFINE_integer("epochs", 3, "Validation passes per fit().")
  flags.DEFINE_integer("validation_batches", 200, "Validation batches per pass.")
  flags.DEFINE_integer("batch_size", 16, "Batch size.")


def run_arm(keras, model, arm, data, export_dir):
  import tftrt_keras  # pylint: disable=g-import-not-at-top
  (x, y), (x_val, y_val) = data
  trt = tftrt_keras.TrtExport(export_dir, precisions=("FP16",), formats=("tftrt",), save_freq=NEVER, verbose=0,
                              calibration_batches=8, verification_samples=500)
  durations = []

  class Timer(keras.callbacks.Callback):

    def on_train_begin(self, logs=None):
      if arm == "inputs":
        trt._capture._label_keys = None  # pylint: disable=protected-access

    def on_test_begin(self, logs=None):
      durations.append(-time.perf_counter())

    def on_test_end(self, logs=None):
      durations[-1] += time.perf_counter()

  model.fit(x, y, batch_size=FLAGS.batch_size, epochs=FLAGS.epochs, verbose=0, shuffle=False,
            validation_data=(x_val, y_val), validation_batch_size=FLAGS.batch_size, callbacks=[trt, Timer()])
  return durations[1:]


def main(_):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  keras, keras_name, _ = keras_module("default")
  keras.utils.set_random_seed(0)
  model = small_cnn(keras)
  data = (images(4 * FLAGS.batch_size, 1), images(FLAGS.validation_batches * FLAGS.batch_size, 2))
  results = {"inputs": [], "labels": []}
  with tempfile.TemporaryDirectory() as workdir:
    run_arm(keras, model, "labels", data, os.path.join(workdir, "warm-up"))
    for i in range(FLAGS.repeats):
      for arm in (("inputs", "labels") if i % 2 == 0 else ("labels", "inputs")):
        results[arm] += run_arm(keras, model, arm, data, os.path.join(workdir, f"{arm}-{i}"))
  inputs, labels = statistics.median(results["inputs"]), statistics.median(results["labels"])
  print(f"TF {tf.__version__}, {keras_name}: {FLAGS.validation_batches} validation batches of {FLAGS.batch_size}, "
        f"{len(results['inputs'])} passes per arm")
  print("| arm | validation pass (median s) | ratio |")
  print("| --- | --- | --- |")
  print(f"| inputs only | {inputs:.4f} | 1.000 |")
  print(f"| with labels | {labels:.4f} | {labels / inputs:.3f} |")


if __name__ == "__main__":
  define_flags()
  app.run(main)
