"""What calibration capture adds to `fit`'s validation pass: the same `fit` with and without `TrtExport`.

  python benchmarks/bench_keras_capture.py [--repeats=5] [--validation_batches=400] [--keras=default]

Times each validation pass inside `fit` (from the first callback's `on_test_begin` to the last callback's
`on_test_end`) for a small CNN on synthetic 32x32x3 images, in three arms run one after another in rotating
order (ABC, BCA, CAB, ...) on one compiled model, so drift in machine load hits every arm alike:
  off      no TrtExport (the baseline)
  k=0      TrtExport(calibration_batches=0): the callback is there, nothing is captured
  on       TrtExport(calibration_batches=8, precisions=("FP16",)): capture installed
Exports are kept out of the measured passes (`save_freq` larger than the run), so the table shows the cost of
capture alone; the first pass of each `fit` (where capture traces its own step function) is reported apart
from the later ones. The issue's target: on / off at most 1.03 on later passes. No assertions: numbers only.
"""

import os
import statistics
import sys
import tempfile
import time

from absl import app
from absl import flags

from bench_models import images, keras_module, small_cnn  # benchmarks/ is the script directory

FLAGS = flags.FLAGS
NEVER = 10**9  # save_freq in batches: no export happens during the benchmark


def define_flags():
  flags.DEFINE_integer("repeats", 12, "fit() calls per arm; the table shows medians.")
  flags.DEFINE_integer("epochs", 4, "Epochs (validation passes) per fit() call.")
  flags.DEFINE_integer("validation_batches", 400, "Validation batches per pass.")
  flags.DEFINE_integer("batch_size", 16, "Training and validation batch size.")
  flags.DEFINE_integer("train_batches", 4, "Training batches per epoch (kept small: validation is measured).")
  flags.DEFINE_integer("calibration_batches", 8, "TrtExport(calibration_batches=) in the `on` arm.")
  flags.DEFINE_enum("keras", "default", ["default", "tf.keras", "keras3", "tf_keras"],
                    "Keras flavour; default: the TF line's own (tf.keras 2 on TF 2.15, Keras 3 on TF 2.17).")


def pass_timer(keras):
  """Two callbacks sharing one clock: put the first before and the second after every other callback.

  Records wall time and this process's CPU time (all its threads): on a shared machine the CPU time is the
  steadier of the two, since other processes' load stretches wall time but not the work done here.
  """
  durations, cpu = [], []

  class Start(keras.callbacks.Callback):

    def on_test_begin(self, logs=None):
      durations.append(-time.perf_counter())
      cpu.append(-time.process_time())

  class Stop(keras.callbacks.Callback):

    def on_test_end(self, logs=None):
      durations[-1] += time.perf_counter()
      cpu[-1] += time.process_time()
  return Start(), Stop(), durations, cpu


def run_arm(keras, model, arm, data, export_dir):
  """One fit() call in `arm`; returns (validation pass seconds per epoch, batches capture pulled per pass)."""
  import tftrt_keras  # pylint: disable=g-import-not-at-top
  (x, y), (x_val, y_val) = data
  start, stop, durations, cpu = pass_timer(keras)
  middle = []
  trt = None
  if arm != "off":
    trt = tftrt_keras.TrtExport(export_dir, precisions=("FP16",), save_freq=NEVER, verbose=0,
                                calibration_batches=FLAGS.calibration_batches if arm == "on" else 0)
    middle.append(trt)
  pulled = []

  class CountPulled(keras.callbacks.Callback):

    def on_test_end(self, logs=None):
      capture = getattr(trt, "_capture", None)
      pulled.append(capture.pulled if capture is not None else 0)

  model.fit(x, y, batch_size=FLAGS.batch_size, epochs=FLAGS.epochs, verbose=0, shuffle=False,
            validation_data=(x_val, y_val), validation_batch_size=FLAGS.batch_size,
            callbacks=[start] + middle + [CountPulled(), stop])
  per_pass = [b - a for a, b in zip([0] + pulled, pulled)]
  return durations, per_pass, cpu


def main(argv):
  del argv
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  keras, keras_name, _ = keras_module(FLAGS.keras)
  keras.utils.set_random_seed(0)
  model = small_cnn(keras)
  data = (images(FLAGS.train_batches * FLAGS.batch_size, 1), images(FLAGS.validation_batches * FLAGS.batch_size, 2))
  arms = ("off", "k=0", "on")
  results = {arm: [] for arm in arms}
  with tempfile.TemporaryDirectory() as workdir:
    # Warm-up: Keras traces its own train and test functions once; every arm then reuses them.
    model.fit(*data[0], batch_size=FLAGS.batch_size, epochs=1, verbose=0, validation_data=data[1],
              validation_batch_size=FLAGS.batch_size)
    for i in range(FLAGS.repeats):
      for j in range(len(arms)):
        arm = arms[(i + j) % len(arms)]  # rotating order: no arm always runs first
        results[arm].append(run_arm(keras, model, arm, data, os.path.join(workdir, f"{arm}-{i}")))
  load = os.getloadavg()

  def first(arm):
    return statistics.median(run[0][0] for run in results[arm])

  def later(arm, clock=0):
    return statistics.median(d for run in results[arm] for d in run[clock][1:])

  def paired(arm, pick, clock=0):
    # Ratio within one repetition (the arms ran back to back), then the median: robust to slow drifts.
    return statistics.median(pick(results[arm][i][clock]) / pick(results["off"][i][clock])
                             for i in range(FLAGS.repeats))

  def later_of_one(durations):
    return statistics.median(durations[1:])

  rows = [("arm", "fits", "1st pass s", "later passes s", "ms/batch", "ratio vs off (later)", "paired ratio",
           "1st pass ratio", "CPU s (later)", "CPU ratio", "CPU paired", "batches pulled/pass")]
  for arm in arms:
    pulled = sorted({p for run in results[arm] for p in run[1]})
    rows.append((arm, str(len(results[arm])), f"{first(arm):.3f}", f"{later(arm):.3f}",
                 f"{1000 * later(arm) / FLAGS.validation_batches:.2f}", f"{later(arm) / later('off'):.3f}",
                 f"{paired(arm, later_of_one):.3f}", f"{first(arm) / first('off'):.3f}", f"{later(arm, 2):.3f}",
                 f"{later(arm, 2) / later('off', 2):.3f}", f"{paired(arm, later_of_one, 2):.3f}",
                 f"{min(pulled)}-{max(pulled)}" if arm == "on" else "0"))
  print(f"TF {tf.__version__}, {keras_name}; {FLAGS.validation_batches} validation batches of {FLAGS.batch_size} "
        f"32x32x3 images per pass, {FLAGS.epochs} passes per fit, {FLAGS.repeats} fits per arm, "
        f"calibration_batches={FLAGS.calibration_batches}; load average {load[0]:.2f} {load[1]:.2f} "
        f"on {os.cpu_count()} cores")
  widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
  for j, row in enumerate(rows):
    print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    if j == 0:
      print("  ".join("-" * w for w in widths))
  print(f"\ncapture on / off, later validation passes: {later('on') / later('off'):.3f}x "
        f"wall, {later('on', 2) / later('off', 2):.3f}x CPU time (paired medians {paired('on', later_of_one):.3f}x, "
        f"{paired('on', later_of_one, 2):.3f}x; target <= 1.03)")


if __name__ == "__main__":
  define_flags()
  app.run(main)
