"""How much verification adds to one export: the same offline export with `verify=True` and `verify=False`.

  python -m benchmarks.bench_verification [--repeats=3] [--backend=tests.fake_trt_backend:FakeTrtBackendForTests]

Prints one table (wall time per export including the worker process, the worker's own total, the verification
step) and the overhead ratio on/off. With the product's TF-TRT backend on a machine without TensorRT only the
frozen graph and the normal export are verified; `--backend` with the test double adds three SavedModel
"variants" so the cost of verifying variants shows too. No assertions: numbers only.
"""

import os
import statistics
import sys
import tempfile
import time

from absl import app
from absl import flags

FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_integer("repeats", 3, "Exports per mode; the table shows medians.")
  flags.DEFINE_integer("samples", 64, "Captured samples (a quarter are held out for verification).")
  flags.DEFINE_integer("batch_size", 8, "Calibration / largest verification batch size.")
  flags.DEFINE_integer("timed_runs", 20, "ConversionOptions.verify_timed_runs.")
  flags.DEFINE_integer("warmup_runs", 3, "ConversionOptions.verify_warmup_runs.")
  flags.DEFINE_string("backend", None, "Conversion backend (default: the product's TF-TRT backend).")


def _export_once(model_dir, root, samples, verify):
  from tftrt_keras.options import DEFAULT_BACKEND, ConversionOptions  # pylint: disable=g-import-not-at-top
  from tftrt_keras.offline.export import export_saved_model  # pylint: disable=g-import-not-at-top
  options = ConversionOptions(backend=FLAGS.backend or DEFAULT_BACKEND, verify=verify,
                              verify_timed_runs=FLAGS.timed_runs, verify_warmup_runs=FLAGS.warmup_runs)
  started = time.monotonic()
  manifest = export_saved_model(model_dir, root, calibration_data=samples, calibration_batch_size=FLAGS.batch_size,
                                options=options)
  wall = time.monotonic() - started
  verified = [n for n, e in manifest["artifacts"].items() if "verification" in e]
  return wall, manifest["timings"].get("total_seconds"), manifest["timings"].get("verify_seconds", 0.0), verified


def main(argv):
  del argv
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  # The worker child must find `tests.*` when the test double is the backend.
  os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (sys.path[0], os.environ.get("PYTHONPATH")) if p)
  from tests import saved_models  # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory() as workdir:
    model_dir = os.path.join(workdir, "model")
    saved_models.classifier(model_dir, seed=1)
    samples = saved_models.samples(FLAGS.samples)
    results = {True: [], False: []}
    for i in range(FLAGS.repeats):
      for verify in (False, True):  # interleaved, so drift in machine load hits both modes alike
        results[verify].append(_export_once(model_dir, os.path.join(workdir, f"out-{verify}-{i}"), samples, verify))
  rows = [("verify", "exports", "wall s (median)", "worker total s", "verify step s", "artifacts verified")]
  medians, worker = {}, {}
  for verify in (False, True):
    runs = results[verify]
    medians[verify] = statistics.median(r[0] for r in runs)
    worker[verify] = statistics.median(r[1] or 0.0 for r in runs)
    rows.append((str(verify), str(len(runs)), f"{medians[verify]:.2f}",
                 f"{statistics.median(r[1] or 0.0 for r in runs):.2f}",
                 f"{statistics.median(r[2] or 0.0 for r in runs):.2f}", ",".join(runs[-1][3]) or "-"))
  widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
  for j, row in enumerate(rows):
    print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    if j == 0:
      print("  ".join("-" * w for w in widths))
  print(f"\noverhead ratio, verify on / off: wall {medians[True] / medians[False]:.2f}x, worker pipeline "
        f"{worker[True] / worker[False]:.2f}x (wall includes starting the worker process)  "
        f"[backend={FLAGS.backend or 'TF-TRT (product)'}, timed_runs={FLAGS.timed_runs}, "
        f"warmup_runs={FLAGS.warmup_runs}, samples={FLAGS.samples}]")


if __name__ == "__main__":
  define_flags()
  app.run(main)
