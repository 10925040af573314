"""How long `fit` is held up per export: `TrtExport(blocking=False)` vs Keras' own `ModelCheckpoint` saving
the same model at the same moments.

  python benchmarks/bench_keras_export_blocking.py [--epochs=11] [--keras=default] [--wait_for_worker]
      [--formats=auto]

One `fit` of a small CNN carries every arm; at each epoch end a driver callback runs the arms' `on_epoch_end`
one after another in rotating order (so load drift and the just-started worker process hit every arm alike)
and times each. Arms:
  TrtExport         blocking=False, precisions=("FP16",), calibration_batches=8: the normal SavedModel and the
                    samples are written in `fit`, the conversion runs in a background worker process
  ckpt SavedModel   ModelCheckpoint(filepath without extension): Keras 2 only (its SavedModel format)
  ckpt .keras       ModelCheckpoint("....keras")
  ckpt .weights.h5  ModelCheckpoint("....weights.h5", save_weights_only=True), for context
  model.export()    Keras 3 only, for context: a SavedModel written by Keras itself (it traces every time)
The baseline is Keras' own full-model save: SavedModel on Keras 2, .keras on Keras 3. The first export is
reported apart (TrtExport traces its serving function once, then only saves); "steady" is the median of the
later epochs. By default each epoch waits (outside the timed region) until the previous conversion worker has
finished, so every timed export starts a worker, the most expensive case for `fit`. The issue's target:
TrtExport / baseline at most 1.2 in steady state. No assertions: numbers only.
"""

import contextlib
import io
import os
import statistics
import sys
import tempfile
import time

from absl import app
from absl import flags

from bench_models import images, keras_module, small_cnn  # benchmarks/ is the script directory

FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_integer("epochs", 11, "Epochs = exports per arm (the first is reported apart).")
  flags.DEFINE_string("formats", "auto", "TrtExport's formats (e.g. onnx,trt to leave trt_rtx out): the "
                      "conversions run in the worker, so `fit` should not see the difference.")
  flags.DEFINE_integer("validation_batches", 16, "Validation batches per pass (capture keeps 8 of them).")
  flags.DEFINE_integer("batch_size", 16, "Training and validation batch size.")
  flags.DEFINE_integer("train_batches", 8, "Training batches per epoch.")
  flags.DEFINE_bool("wait_for_worker", True, "Before each epoch, wait until the previous conversion worker "
                    "finished (untimed), so each timed export starts a worker rather than queueing.")
  flags.DEFINE_enum("keras", "default", ["default", "tf.keras", "keras3", "tf_keras"],
                    "Keras flavour; default: the TF line's own (tf.keras 2 on TF 2.15, Keras 3 on TF 2.17).")


class StepClock:
  """Times named steps inside TrtExport's export by wrapping the functions it calls (nothing is changed)."""

  def __init__(self):
    self.current = {}

  def wrap(self, owner, attribute, step):
    original = getattr(owner, attribute)

    def timed(*args, **kwargs):
      started = time.perf_counter()
      try:
        return original(*args, **kwargs)
      finally:
        self.current[step] = self.current.get(step, 0.0) + time.perf_counter() - started
    setattr(owner, attribute, timed)


def main(argv):
  del argv
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tftrt_keras  # pylint: disable=g-import-not-at-top
  from tftrt_keras.keras import snapshot as keras_snapshot  # pylint: disable=g-import-not-at-top
  from tftrt_keras.pipeline import prepare as pipeline  # pylint: disable=g-import-not-at-top
  from tftrt_keras.pipeline.scheduler import ExportScheduler  # pylint: disable=g-import-not-at-top
  keras, keras_name, keras3 = keras_module(FLAGS.keras)
  keras.utils.set_random_seed(0)
  model = small_cnn(keras)
  (x, y), validation = images(FLAGS.train_batches * FLAGS.batch_size, 1), images(
      FLAGS.validation_batches * FLAGS.batch_size, 2)

  clock = StepClock()
  clock.wrap(keras_snapshot.SavedModelSnapshotter, "__init__", "trace serving function")
  clock.wrap(keras_snapshot.SavedModelSnapshotter, "save", "tf.saved_model.save")
  clock.wrap(pipeline, "prepare_export", "prepare_export (all)")
  clock.wrap(ExportScheduler, "submit", "start worker (submit)")
  breakdown = []

  with tempfile.TemporaryDirectory() as workdir:
    trt = tftrt_keras.TrtExport(os.path.join(workdir, "trt"), precisions=("FP16",), calibration_batches=8,
                                blocking=False, verbose=0, formats=FLAGS.formats)
    arms = {"TrtExport": trt}
    if not keras3:
      arms["ckpt SavedModel"] = keras.callbacks.ModelCheckpoint(os.path.join(workdir, "sm", "ckpt-{epoch:02d}"))
    arms["ckpt .keras"] = keras.callbacks.ModelCheckpoint(os.path.join(workdir, "k", "ckpt-{epoch:02d}.keras"))
    arms["ckpt .weights.h5"] = keras.callbacks.ModelCheckpoint(
        os.path.join(workdir, "w", "ckpt-{epoch:02d}.weights.h5"), save_weights_only=True)
    if keras3:
      # What a Keras 3 user pays for a SavedModel without this library (ModelCheckpoint cannot write one).
      class ModelExport(keras.callbacks.Callback):

        def on_epoch_end(self, epoch, logs=None):
          with contextlib.redirect_stdout(io.StringIO()):  # Keras 3.6 prints its endpoints even when not verbose
            self.model.export(os.path.join(workdir, "export", str(epoch + 1)), verbose=False)
      arms["model.export()"] = ModelExport()
    baseline = "ckpt .keras" if keras3 else "ckpt SavedModel"
    timings = {name: [] for name in arms}
    originals = {name: cb.on_epoch_end for name, cb in arms.items()}
    for cb in arms.values():  # the driver calls them; Keras' CallbackList calls a no-op
      cb.on_epoch_end = lambda epoch, logs=None: None

    class Driver(keras.callbacks.Callback):

      def on_epoch_begin(self, epoch, logs=None):
        if FLAGS.wait_for_worker and trt._scheduler is not None:  # pylint: disable=protected-access
          trt._scheduler.wait_all()  # pylint: disable=protected-access

      def on_epoch_end(self, epoch, logs=None):
        names = list(arms)
        shift = epoch % len(names)
        for name in names[shift:] + names[:shift]:
          clock.current = {}
          started = time.perf_counter()
          originals[name](epoch, logs)
          timings[name].append(time.perf_counter() - started)
          if name == "TrtExport":
            breakdown.append(dict(clock.current))

    model.fit(x, y, batch_size=FLAGS.batch_size, epochs=FLAGS.epochs, verbose=0, validation_data=validation,
              validation_batch_size=FLAGS.batch_size, callbacks=list(arms.values()) + [Driver()])
    manifests = list(trt.manifest_paths)
  load = os.getloadavg()

  def steady(name):
    return statistics.median(timings[name][1:])

  print(f"TF {tf.__version__}, {keras_name}; small CNN, {FLAGS.epochs} exports per arm (epoch 1 = first), "
        f"wait_for_worker={FLAGS.wait_for_worker}; load average {load[0]:.2f} {load[1]:.2f} on {os.cpu_count()} "
        f"cores; {len(manifests)} TrtExport exports written")
  rows = [("arm", "first ms", "steady ms (median)", "steady min-max ms", "first / baseline", "steady / baseline")]
  for name in arms:
    later = timings[name][1:]
    rows.append((name + (" (baseline)" if name == baseline else ""), f"{1000 * timings[name][0]:.0f}",
                 f"{1000 * steady(name):.0f}", f"{1000 * min(later):.0f}-{1000 * max(later):.0f}",
                 f"{timings[name][0] / timings[baseline][0]:.2f}", f"{steady(name) / steady(baseline):.2f}"))
  for step in ("trace serving function", "tf.saved_model.save", "prepare_export (all)", "start worker (submit)"):
    first = breakdown[0].get(step, 0.0)
    later = statistics.median(b.get(step, 0.0) for b in breakdown[1:])
    rows.append((f"  TrtExport: {step}", f"{1000 * first:.0f}", f"{1000 * later:.0f}", "", "", ""))
  widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
  for j, row in enumerate(rows):
    print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    if j == 0:
      print("  ".join("-" * w for w in widths))
  print(f"\nTrtExport / {baseline}, time fit is blocked per export: steady {steady('TrtExport') / steady(baseline):.2f}x "
        f"(target <= 1.2), first {timings['TrtExport'][0] / timings[baseline][0]:.2f}x")


if __name__ == "__main__":
  define_flags()
  app.run(main)
