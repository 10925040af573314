"""Memory held by calibration capture: it should grow with `calibration_batches`, not with the validation set.

  python benchmarks/bench_capture_memory.py [--calibration_batches=2,8,32] [--validation_batches=64,256,1024]

For every (calibration_batches, validation size) pair, and for a baseline without TrtExport (k=0) at each size,
a fresh child process runs the same `fit` (a tiny model, synthetic 32x32x3 validation batches generated on the
fly by tf.data, so the validation set itself takes no memory) and reports:
  kept MB       bytes the reservoir holds after the last pass (sum of `nbytes` of the kept arrays)
  peak held MB  the most the reservoir held at any moment: this pass's picks plus the previous pass's sample
  tracemalloc   peak of Python + numpy allocations during a validation pass, above its start (kept arrays that
                share a TF tensor's buffer, column "views", are not numpy allocations and do not show here)
  RSS delta     process peak RSS (getrusage) after `fit` minus before it, and minus the k=0 child's figure
  pulled        batches whose values capture copied out over all passes (a time cost, ~k(1 + ln(n/k)) a pass)
Children run one at a time, interleaved over sizes. No assertions: numbers only.
"""

import json
import os
import resource
import statistics
import subprocess
import sys
import time

from absl import app
from absl import flags

FLAGS = flags.FLAGS
NEVER = 10**9  # save_freq in batches: no export (and no worker) during the benchmark


def define_flags():
  flags.DEFINE_list("calibration_batches", ["2", "8", "32"], "TrtExport(calibration_batches=) values.")
  flags.DEFINE_list("validation_batches", ["64", "256", "1024"], "Validation set sizes, in batches.")
  flags.DEFINE_integer("batch_size", 32, "Validation batch size (a batch is batch_size * 12 KiB).")
  flags.DEFINE_integer("epochs", 2, "Validation passes per fit (from the second, the previous sample is held).")
  flags.DEFINE_integer("repeats", 1, "Children per configuration; the table shows medians.")
  flags.DEFINE_string("child", None, "Internal: 'k,n' runs one measurement in this process and prints JSON.")


def _rss_peak_bytes():
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def _unique_nbytes(batches):
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  arrays = {id(a): a for b in batches for a in tf.nest.flatten(b) if isinstance(a, np.ndarray)}
  return sum(a.nbytes for a in arrays.values())


def measure(k, n):
  """One `fit` with capture keeping k batches (k=0: no TrtExport) over n validation batches; returns a dict."""
  import tempfile  # pylint: disable=g-import-not-at-top
  import tracemalloc  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tftrt_keras  # pylint: disable=g-import-not-at-top
  from tftrt_keras.keras import flavor as keras_flavor  # pylint: disable=g-import-not-at-top
  keras = __import__("keras") if tf.__version__ >= "2.16" else tf.keras
  keras.utils.set_random_seed(0)
  model = keras.Sequential([keras.Input((32, 32, 3), name="image"), keras.layers.Conv2D(4, 3),
                            keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10, activation="softmax")])
  model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
  size = FLAGS.batch_size

  def batches(count, offset):
    def make(i):
      x = tf.random.stateless_uniform([size, 32, 32, 3], seed=tf.stack([i + offset, tf.constant(0, tf.int64)]))
      return x, tf.zeros([size], tf.int32)
    return tf.data.Dataset.range(count).map(make)

  train = batches(4, 10**6)
  # Warm-up: Keras traces its functions; the measured fit then reuses them.
  model.fit(train, epochs=1, verbose=0, validation_data=batches(2, 2 * 10**6))
  stats = {"peak_held": 0, "numpy_peak": 0, "pass_rss_peak": 0}
  trt = None
  callbacks = []
  with tempfile.TemporaryDirectory() as workdir:
    if k:
      trt = tftrt_keras.TrtExport(workdir, precisions=("FP16",), calibration_batches=k, save_freq=NEVER, verbose=0)
      callbacks.append(trt)

    class Observe(keras.callbacks.Callback):

      def on_train_begin(self, logs=None):
        if trt is None:
          return
        reservoir = trt._capture._reservoir  # pylint: disable=protected-access
        offer = reservoir.offer

        def observed_offer(batch):
          offer(batch)
          held = reservoir.held()
          stats["peak_held"] = max(stats["peak_held"], _unique_nbytes(held))
        reservoir.offer = observed_offer

      def on_test_begin(self, logs=None):
        tracemalloc.reset_peak()
        self._start = tracemalloc.get_traced_memory()[0]

      def on_test_end(self, logs=None):
        stats["numpy_peak"] = max(stats["numpy_peak"], tracemalloc.get_traced_memory()[1] - self._start)

    callbacks.append(Observe())
    tracemalloc.start()
    rss_before = _rss_peak_bytes()
    started = time.perf_counter()
    model.fit(train, epochs=FLAGS.epochs, verbose=0, validation_data=batches(n, 0), callbacks=callbacks)
    seconds = time.perf_counter() - started
    rss_after = _rss_peak_bytes()
    tracemalloc.stop()
  capture = getattr(trt, "_capture", None)
  reservoir = capture._reservoir if capture is not None else None  # pylint: disable=protected-access
  # Calibration and verification samples: both are what capture keeps.
  kept = list(reservoir.last_pass) + list(reservoir.last_verification) if reservoir is not None else []
  return {"k": k, "n": n, "kept": _unique_nbytes(kept), "kept_batches": len(kept),
          "peak_held": stats["peak_held"], "numpy_peak": stats["numpy_peak"], "rss_delta": rss_after - rss_before,
          "pulled": capture.pulled if capture is not None else 0, "seconds": seconds,
          # np.asarray of a CPU EagerTensor shares its buffer: such arrays are invisible to tracemalloc.
          "views": sum(not a.flags.owndata for b in kept for a in tf.nest.flatten(b)),
          "versions": f"TF {tf.__version__}, {keras_flavor.keras_version(model)}"}


def main(argv):
  del argv
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  sys.path.insert(0, root)
  if FLAGS.child:
    k, n = (int(v) for v in FLAGS.child.split(","))
    print("RESULT " + json.dumps(measure(k, n)), flush=True)
    return
  ks = [0] + [int(k) for k in FLAGS.calibration_batches]
  sizes = [int(n) for n in FLAGS.validation_batches]
  results = {}
  for _ in range(FLAGS.repeats):
    for k in ks:
      for n in sizes[::-1] if k % 2 else sizes:  # alternate size order so load drift spreads over sizes
        output = subprocess.run(
            [sys.executable, os.path.abspath(__file__), f"--child={k},{n}", f"--batch_size={FLAGS.batch_size}",
             f"--epochs={FLAGS.epochs}"], capture_output=True, text=True, check=True,
            env=dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)))
        line = [l for l in output.stdout.splitlines() if l.startswith("RESULT ")][-1]
        results.setdefault((k, n), []).append(json.loads(line[len("RESULT "):]))
  load = os.getloadavg()

  def med(k, n, key):
    return statistics.median(r[key] for r in results[(k, n)])

  mb = 2**20
  batch_mb = FLAGS.batch_size * 32 * 32 * 3 * 4 / mb
  print(f"{results[(ks[0], sizes[0])][0]['versions']}; validation batches of {FLAGS.batch_size} 32x32x3 float32 "
        f"({batch_mb:.2f} MB each), {FLAGS.epochs} passes per fit, {FLAGS.repeats} child process(es) per cell; "
        f"load average {load[0]:.2f} {load[1]:.2f} on {os.cpu_count()} cores")
  rows = [("calibration_batches", "validation batches", "kept MB", "kept batches", "peak held MB", "views", "tracemalloc MB",
           "RSS delta MB", "RSS delta - k=0 MB", "pulled", "fit s")]
  for k in ks:
    for n in sizes:
      rows.append((str(k) if k else "0 (no TrtExport)", str(n), f"{med(k, n, 'kept') / mb:.2f}",
                   str(int(med(k, n, "kept_batches"))), f"{med(k, n, 'peak_held') / mb:.2f}",
                   str(int(med(k, n, "views"))), f"{med(k, n, 'numpy_peak') / mb:.2f}", f"{med(k, n, 'rss_delta') / mb:.1f}",
                   f"{(med(k, n, 'rss_delta') - med(0, n, 'rss_delta')) / mb:+.1f}" if k else "-",
                   str(int(med(k, n, "pulled"))), f"{med(k, n, 'seconds'):.1f}"))
  widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
  for j, row in enumerate(rows):
    print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    if j == 0:
      print("  ".join("-" * w for w in widths))
  growth = [med(k, sizes[-1], "peak_held") / max(1, med(k, sizes[0], "peak_held")) for k in ks if k]
  print(f"\npeak held at {sizes[-1]} / at {sizes[0]} validation batches, per calibration_batches: "
        + ", ".join(f"k={k}: {g:.2f}x" for k, g in zip([k for k in ks if k], growth))
        + f"  (k batches = k * {batch_mb:.2f} MB; the peak holds up to 2k: this pass's picks and the last sample)")


if __name__ == "__main__":
  define_flags()
  app.run(main)
