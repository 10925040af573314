"""What calibration capture adds to `fit`'s validation pass: the same `fit` with and without `TrtExport`.

  python benchmarks/bench_keras_capture.py [--keras=both] [--repeats=12] [--validation_batches=400]

Times each validation pass inside `fit` (from the first callback's `on_test_begin` to the last callback's
`on_test_end`) for a small CNN on synthetic 32x32x3 images, in three arms run one after another in rotating
order (ABC, BCA, CAB, ...) on one compiled model, so drift in machine load hits every arm alike:
  off      no TrtExport (the baseline)
  k=0      TrtExport(calibration_batches=0): the callback is there, nothing is captured
  on       TrtExport(calibration_batches=8, verification_samples=500, precisions=("FP16",)): capture installed
           with its defaults (8 calibration batches and 500 verification samples, kept apart)
Exports are kept out of the measured passes (`save_freq` larger than the run), so the table shows the cost of
capture alone. Two figures per flavour: the first validation pass of each `fit` (a new TrtExport each time;
capture's step function is traced once per model, so only the very first `fit` would trace, and that one is
the untimed warm-up) and the later passes (steady state; a pass that knows its length pulls only the batches
it keeps). `--keras=both` (the default) runs every Keras flavour of this TF line in its own child process and
prints one table. The issue's target: on / off at most 1.03. No assertions: numbers only.
"""

import json
import os
import statistics
import subprocess
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
  flags.DEFINE_integer("verification_samples", 500, "TrtExport(verification_samples=) in the `on` arm.")
  flags.DEFINE_enum("keras", "both", ["both", "default", "tf.keras", "keras3", "tf_keras"],
                    "Keras flavour; both: every flavour of this TF line, each in a child process (Keras 3 and "
                    "tf_keras on TF 2.16+, tf.keras on TF 2.15); default: the TF line's own.")
  flags.DEFINE_string("summary_json", None, "Write the figures here instead of printing a table (used by both).")


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
    trt = tftrt_keras.TrtExport(export_dir, precisions=("FP16",), formats=("tftrt",), save_freq=NEVER, verbose=0,
                                calibration_batches=FLAGS.calibration_batches if arm == "on" else 0,
                                verification_samples=FLAGS.verification_samples)
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


def measure(keras_name_flag):
  """Runs the arms in this process; returns the figures as a dict."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  keras, keras_name, _ = keras_module(keras_name_flag)
  keras.utils.set_random_seed(0)
  model = small_cnn(keras)
  data = (images(FLAGS.train_batches * FLAGS.batch_size, 1), images(FLAGS.validation_batches * FLAGS.batch_size, 2))
  arms = ("off", "k=0", "on")
  results = {arm: [] for arm in arms}
  with tempfile.TemporaryDirectory() as workdir:
    # Warm-up: Keras traces its own train and test functions once, capture its step function once (per model);
    # every arm then reuses them.
    model.fit(*data[0], batch_size=FLAGS.batch_size, epochs=1, verbose=0, validation_data=data[1],
              validation_batch_size=FLAGS.batch_size)
    run_arm(keras, model, "on", data, os.path.join(workdir, "warm-up"))
    for i in range(FLAGS.repeats):
      for j in range(len(arms)):
        arm = arms[(i + j) % len(arms)]  # rotating order: no arm always runs first
        results[arm].append(run_arm(keras, model, arm, data, os.path.join(workdir, f"{arm}-{i}")))

  def first(arm, clock=0):
    return statistics.median(run[clock][0] for run in results[arm])

  def later(arm, clock=0):
    return statistics.median(d for run in results[arm] for d in run[clock][1:])

  def paired(arm, pick, clock=0):
    # Ratio within one repetition (the arms ran back to back), then the median: robust to slow drifts.
    return statistics.median(pick(results[arm][i][clock]) / pick(results["off"][i][clock])
                             for i in range(FLAGS.repeats))

  figures = {"tensorflow": tf.__version__, "keras": keras_name, "arms": {}}
  for arm in arms:
    figures["arms"][arm] = {
        "fits": len(results[arm]), "first_s": first(arm), "later_s": later(arm),
        "first_ratio": first(arm) / first("off"), "first_paired": paired(arm, lambda d: d[0]),
        "later_ratio": later(arm) / later("off"), "later_paired": paired(arm, lambda d: statistics.median(d[1:])),
        "later_cpu_ratio": later(arm, 2) / later("off", 2),
        "later_cpu_paired": paired(arm, lambda d: statistics.median(d[1:]), 2),
        "pulled_first": sorted({run[1][0] for run in results[arm]}),
        "pulled_later": sorted({p for run in results[arm] for p in run[1][1:]})}
  return figures


def _flavours():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if tf.__version__ < "2.16":
    return ["tf.keras"]
  import importlib.util  # pylint: disable=g-import-not-at-top
  return ["keras3"] + (["tf_keras"] if importlib.util.find_spec("tf_keras") else [])


def _in_child(flavour):
  with tempfile.TemporaryDirectory() as workdir:
    out = os.path.join(workdir, "figures.json")
    argv = [sys.executable, os.path.abspath(__file__), f"--keras={flavour}", f"--summary_json={out}"] + [
        f"--{name}={FLAGS[name].value}" for name in ("repeats", "epochs", "validation_batches", "batch_size",
                                                     "train_batches", "calibration_batches", "verification_samples")]
    subprocess.run(argv, check=True)
    with open(out) as f:
      return json.load(f)


def _range(values):
  return f"{min(values)}-{max(values)}" if min(values) != max(values) else str(values[0])


def main(argv):
  del argv
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  if FLAGS.keras != "both":
    figures = [measure(FLAGS.keras)]
    if FLAGS.summary_json:
      with open(FLAGS.summary_json, "w") as f:
        json.dump(figures[0], f)
      return
  else:
    figures = [_in_child(flavour) for flavour in _flavours()]
  load = os.getloadavg()
  rows = [("TF / Keras", "arm", "1st pass s", "later s", "1st pass ratio", "1st paired", "later ratio",
           "later paired", "later CPU ratio", "CPU paired", "pulled 1st / later")]
  for result in figures:
    for arm, f in result["arms"].items():
      rows.append((f"{result['tensorflow']} / {result['keras']}", arm, f"{f['first_s']:.3f}", f"{f['later_s']:.3f}",
                   f"{f['first_ratio']:.3f}", f"{f['first_paired']:.3f}", f"{f['later_ratio']:.3f}",
                   f"{f['later_paired']:.3f}", f"{f['later_cpu_ratio']:.3f}", f"{f['later_cpu_paired']:.3f}",
                   f"{_range(f['pulled_first'])} / {_range(f['pulled_later'])}"))
  print(f"{FLAGS.validation_batches} validation batches of {FLAGS.batch_size} 32x32x3 images per pass, "
        f"{FLAGS.epochs} passes per fit, {FLAGS.repeats} fits per arm, calibration_batches="
        f"{FLAGS.calibration_batches}, verification_samples={FLAGS.verification_samples}; load average "
        f"{load[0]:.2f} {load[1]:.2f} on {os.cpu_count()} cores")
  widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
  for j, row in enumerate(rows):
    print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    if j == 0:
      print("  ".join("-" * w for w in widths))
  for result in figures:
    on = result["arms"]["on"]
    print(f"{result['keras']}: capture on / off, first pass {on['first_ratio']:.3f}x "
          f"(paired {on['first_paired']:.3f}x), later passes {on['later_ratio']:.3f}x wall, "
          f"{on['later_cpu_ratio']:.3f}x CPU (paired {on['later_paired']:.3f}x, {on['later_cpu_paired']:.3f}x); "
          "target <= 1.03")


if __name__ == "__main__":
  define_flags()
  app.run(main)
