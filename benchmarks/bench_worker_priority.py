"""How much a conversion worker slows training, polite (the default) against the old manners, and what the
manners cost the worker.

  python benchmarks/bench_worker_priority.py [--epochs=24] [--alone=2] [--keras=default]

Training: a CNN image classifier (64x64x3, three conv blocks, ~100k parameters) trained by `fit` in this process,
one timed epoch at a time. Conversion: a MobileNetV2 (96x96, weights=None) SavedModel exported to ONNX FP32 and
FP16 and verified, started through the product's own pipeline (`prepare_export`, then `ConversionWorker`, the worker
process `ExportScheduler` starts for `TrtExport`). Two workers live side by side:
  polite   the defaults: worker_threads="auto" (max(1, cores // 4)), worker_nice="auto" (19)
  old      worker_threads="all", worker_nice=0: what the worker did before (every library's own thread count,
           training's priority)
Each epoch runs under one condition, none / polite / old, in a shuffled order every three epochs: the worker of
that condition is let run (SIGCONT) and the other is held (SIGSTOP), none holds both. So load from other
processes, which moves over seconds on a shared machine, hits the three conditions alike; a worker that ends
is replaced by a new conversion. "epoch ratio" = median epoch beside that worker / median epoch without one
(and the same of the means).
"beside training" = a conversion's running time while training went on (summed over the epochs it was let run,
so up to one epoch too long; "> N s" when none finished). "alone" = a conversion's wall time with nothing else
of ours running, polite and old alternating, both at niceness 0: on an idle machine niceness costs nothing,
and on one shared with other work (as here) a worker at 19 would time the others' load, not its own cost.
One table; numbers only, no assertions.
"""

import contextlib
import io
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time

from absl import app
from absl import flags

from bench_models import keras_module  # benchmarks/ is the script directory

FLAGS = flags.FLAGS
ARMS = {"polite": {}, "old": {"worker_threads": "all", "worker_nice": 0}}


def define_flags():
  flags.DEFINE_integer("epochs", 80, "Epochs per condition.")
  flags.DEFINE_integer("alone", 2, "Conversions per arm timed alone.")
  flags.DEFINE_integer("train_samples", 320, "Training samples per epoch (batch 32).")
  flags.DEFINE_enum("keras", "default", ["default", "tf.keras", "keras3", "tf_keras"], "Keras flavour.")


def classifier(keras):
  model = keras.Sequential([
      keras.Input((64, 64, 3)),
      keras.layers.Conv2D(32, 3, activation="relu"), keras.layers.MaxPooling2D(),
      keras.layers.Conv2D(64, 3, activation="relu"), keras.layers.MaxPooling2D(),
      keras.layers.Conv2D(128, 3, activation="relu"), keras.layers.GlobalAveragePooling2D(),
      keras.layers.Dense(64, activation="relu"), keras.layers.Dense(10, activation="softmax")])
  model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
  return model


def conversion_source(keras, directory):
  """A MobileNetV2 SavedModel and samples keyed by its signature's input name."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  model = keras.applications.MobileNetV2(input_shape=(96, 96, 3), weights=None, classes=10)
  path = os.path.join(directory, "mobilenet")
  if hasattr(model, "export"):  # Keras 3
    with contextlib.redirect_stdout(io.StringIO()):  # it prints the signature
      model.export(path)
  else:
    tf.saved_model.save(model, path)
  signature = tf.saved_model.load(path).signatures["serving_default"]
  name = next(iter(signature.structured_input_signature[1]))
  rng = np.random.default_rng(0)
  batches = [{name: rng.random((32, 96, 96, 3), dtype=np.float32)} for _ in range(4)]
  return path, batches


class Conversion:
  """One export of the MobileNetV2 through the product's pipeline, in its own export root."""

  def __init__(self, source, batches, root, **limits):
    from tftrt_keras.artifacts.layout import ExportLayout  # pylint: disable=g-import-not-at-top
    from tftrt_keras.options import ConversionOptions  # pylint: disable=g-import-not-at-top
    from tftrt_keras.pipeline import prepare  # pylint: disable=g-import-not-at-top
    from tftrt_keras.pipeline.worker import ConversionWorker  # pylint: disable=g-import-not-at-top
    layout = ExportLayout(root)
    layout.ensure_root()
    options = ConversionOptions(precisions=("FP32", "FP16"), formats=("onnx",), **limits)
    request = prepare.prepare_export(layout.root, layout.next_version(), {"kind": "bench"}, options,
                                     write_native=lambda d: (os.rmdir(d), shutil.copytree(source, d)),
                                     batches=batches)
    self.started = time.monotonic()
    self.job = ConversionWorker(request)  # beside training: foreground=False, as TrtExport(blocking=False)
    self.active = 0.0  # seconds it was let run

  def hold(self, running):
    try:
      os.killpg(self.job.pid, signal.SIGCONT if running else signal.SIGSTOP)
    except ProcessLookupError:
      pass

  def wait(self):
    self.hold(True)
    manifest = self.job.wait()
    return manifest, time.monotonic() - self.started


def epoch(model, data):
  start = time.monotonic()
  model.fit(*data, batch_size=32, epochs=1, verbose=0)
  return time.monotonic() - start


def _seconds(values, unfinished=None):
  if values:
    return f"{statistics.median(values):.0f} s (n={len(values)})"
  return f"> {unfinished:.0f} s (none finished)" if unfinished is not None else "n/a"


def _spread(values):
  quartiles = statistics.quantiles(values, n=4)
  return f"median {statistics.median(values):.2f} s (quartiles {quartiles[0]:.2f}-{quartiles[2]:.2f})"


def main(argv):
  del argv
  import numpy as np  # pylint: disable=g-import-not-at-top
  keras, keras_name, _ = keras_module(FLAGS.keras)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  work = tempfile.mkdtemp(prefix="bench_worker_priority_")
  source, batches = conversion_source(keras, work)
  rng = np.random.default_rng(1)
  data = (rng.random((FLAGS.train_samples, 64, 64, 3), dtype=np.float32), rng.integers(0, 10, FLAGS.train_samples))
  model = classifier(keras)
  epoch(model, data)  # traced and warm before anything is timed
  loads = [os.getloadavg()[0]]
  epochs = {"none": [], **{arm: [] for arm in ARMS}}
  beside = {arm: [] for arm in ARMS}
  limits = {}
  count = 0
  workers = {arm: Conversion(source, batches, os.path.join(work, arm), **ARMS[arm]) for arm in ARMS}
  for arm, worker in workers.items():
    worker.hold(False)
    limits[arm] = worker.job.limits  # what the worker was started with (`worker_setup.WorkerLimits`)
  order = random.Random(0)
  while min(len(e) for e in epochs.values()) < FLAGS.epochs:
    conditions = list(epochs)
    order.shuffle(conditions)
    for condition in conditions:
      for arm, worker in workers.items():
        if worker.job.done():  # replaced by a new conversion, held until its turn
          worker.job.wait()
          beside[arm].append(worker.active)
          count += 1
          workers[arm] = worker = Conversion(source, batches, os.path.join(work, f"{arm}{count}"), **ARMS[arm])
        worker.hold(arm == condition)
      seconds = epoch(model, data)
      epochs[condition].append(seconds)
      if condition in workers:
        workers[condition].active += seconds
    loads.append(os.getloadavg()[0])
    print(f"{len(epochs['none'])} epochs each: median none {statistics.median(epochs['none']):.2f} s, "
          + ", ".join(f"{arm} {statistics.median(epochs[arm]):.2f} s" for arm in ARMS)
          + f"; conversions done {[len(beside[a]) for a in ARMS]}; load {loads[-1]:.1f}", flush=True)
  unfinished = {arm: worker.active for arm, worker in workers.items()}
  for worker in workers.values():
    worker.job.kill("benchmark over")
  alone = {arm: [] for arm in ARMS}
  for i in range(FLAGS.alone):
    for arm in (list(ARMS) if i % 2 == 0 else list(ARMS)[::-1]):
      settings = dict(ARMS[arm], worker_nice=0)
      _, seconds = Conversion(source, batches, os.path.join(work, f"{arm}a{i}"), **settings).wait()
      alone[arm].append(seconds)
      loads.append(os.getloadavg()[0])
      print(f"{arm} alone: {seconds:.1f} s", flush=True)
  none = statistics.median(epochs["none"])
  print(f"\nTF {tf.__version__}, {keras_name}, {os.cpu_count()} cores, {len(epochs['none'])} epochs per condition, "
        f"load average (1 min) {min(loads):.1f}-{max(loads):.1f}; epochs: "
        + "; ".join(f"{condition} {_spread(values)}" for condition, values in epochs.items()))
  print("| worker | nice | threads | epoch beside it / without: median (mean) | conversion beside training | "
        "alone |")
  print("|---|---|---|---|---|---|")
  for arm in ARMS:
    mean = statistics.mean(epochs[arm]) / statistics.mean(epochs["none"])
    print(f"| {arm} | {limits[arm].nice} | {limits[arm].threads or 'every library its own'} | "
          f"{statistics.median(epochs[arm]) / none:.2f}x ({mean:.2f}x) | {_seconds(beside[arm], unfinished[arm])} | "
          f"{_seconds(alone[arm])} |")
  shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  define_flags()
  app.run(main)
