"""What the model's own metrics cost the export worker, against its verification time.

  python benchmarks/bench_task_metrics_cost.py [--verification_samples=500] [--repeats=3]

The small CNN (compiled with its loss and accuracy) trained one epoch per export, exported with ONNX
FP32/FP16/INT8 (blocking); each export's manifest gives `task_metrics.seconds` (rebuilding the metrics, the
normal export's figures, every variant's figures and intervals) and `verification.seconds` (everything the
verification step does, those included). Prints the median ratio (target < 0.10). No assertions.
"""

import json
import os
import statistics
import tempfile

from absl import app
from absl import flags

from bench_models import images, keras_module, small_cnn  # benchmarks/ is the script directory

FLAGS = flags.FLAGS


def define_flags():
  flags.DEFINE_integer("repeats", 3, "Exports measured.")
  flags.DEFINE_integer("verification_samples", 500, "Verification samples per export.")


def main(_):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tftrt_keras  # pylint: disable=g-import-not-at-top
  keras, keras_name, _ = keras_module("default")
  keras.utils.set_random_seed(0)
  model = small_cnn(keras)
  (x, y), validation = images(256, 1), images(FLAGS.verification_samples * 2, 2)
  rows = []
  with tempfile.TemporaryDirectory() as workdir:
    for i in range(FLAGS.repeats):
      trt = tftrt_keras.TrtExport(os.path.join(workdir, str(i)), formats=("onnx",), blocking=True, verbose=0,
                                  calibration_batches=8, verification_samples=FLAGS.verification_samples)
      model.fit(x, y, batch_size=32, epochs=1, verbose=0, validation_data=validation, callbacks=[trt])
      with open(trt.manifest_paths[-1]) as f:
        manifest = json.load(f)
      rows.append((manifest["task_metrics"]["seconds"], manifest["verification"]["seconds"],
                   len(manifest["task_metrics"].get("variants", {}))))
  ratio = statistics.median(m / v for m, v, _ in rows)
  print(f"TF {tf.__version__}, {keras_name}: {FLAGS.verification_samples} verification samples, "
        f"{rows[0][2]} artifacts with figures (loss, accuracy), {len(rows)} exports")
  print("| metrics (s) | verification (s) | ratio |")
  print("| --- | --- | --- |")
  for metrics, verification, _ in rows:
    print(f"| {metrics:.3f} | {verification:.3f} | {metrics / verification:.3f} |")
  print(f"median ratio {ratio:.3f}")


if __name__ == "__main__":
  define_flags()
  app.run(main)
