"""Train a small digit classifier with Keras and get its deployment variants, verified, as a by-product.

The data ships with scikit-learn (8x8 digits), so this runs without any download:

  python examples/train_keras.py --export_dir=/tmp/digits --epochs=5

This is the main job (`scripts/run_main_job.sh`). Each epoch writes a new numbered export under --export_dir:
the normal SavedModel, its frozen graph, the samples captured from the validation pass (some for INT8
calibration, others held out for verification: 45% of the digits are validation data, so verification can
judge on 500 samples beside the calibration batches), and the deployment variants:
  - ONNX FP32, FP16 and INT8 (explicit Q/DQ) models, produced and verified with ONNX Runtime on any machine;
  - TF-TRT FP32/FP16/INT8 SavedModels (TensorFlow 2.15-2.17) and TensorRT engines, built where TensorRT and an
    NVIDIA GPU are available, otherwise recorded as skipped with the reason;
  - TensorRT-RTX engines (trt_rtx_fp32/fp16/int8), built on any machine by TensorRT-RTX's builder; they run on
    RTX-class GPUs (compute capability 8.6, 8.9, 12.0), and where none is present no check compares them.
The servable ONNX (and TensorRT) variants are published into a Triton model repository next to the export
(--export_triton_repository, default runs/train_keras/triton; pass an empty value to skip it).

The console shows what this machine cannot build (once), Keras' per-epoch lines, one line per export and, at
the end, each earlier export in one line, the latest one's artifacts with the reasons for what was not made,
how the samples were split and where the manifest is. TensorFlow's start-up messages stay hidden (set
TF_CPP_MIN_LOG_LEVEL or --verbosity yourself to see them); the export worker's own log is
`manifests/<version>/worker.log`.
"""

import os
import sys

from absl import app
from absl import flags

# Runnable from a checkout without installing the package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from examples.digits import load_digits  # pylint: disable=g-import-not-at-top,wrong-import-position
from tftrt_keras import flags as tftrt_flags  # pylint: disable=g-import-not-at-top,wrong-import-position
from tftrt_keras import quiet_console  # pylint: disable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS


def define_flags():
  tftrt_flags.define_export_flags()
  flags.adopt_module_key_flags(tftrt_flags)  # so that --help lists the export flags too
  flags.DEFINE_integer("epochs", 5, "Training epochs (one export per epoch).")
  flags.DEFINE_integer("batch_size", 32, "Training and validation batch size.")
  # 60% of 1797 digits: 1078 validation samples, enough for the 512 calibration samples (16 batches of 32, past
  # the 300 below which INT8 calibration is warned about) and 500 verification samples beside them.
  flags.DEFINE_float("validation_fraction", 0.6, "Share of the digits held out for validation.")
  flags.DEFINE_string("tensorboard_dir", None, "TensorBoard log directory (training curves and verification scalars).")
  flags.DEFINE_boolean("use_tf_keras", False, "On TF 2.17, train with Keras 2 (tf_keras) instead of Keras 3.")
  flags.DEFINE_integer("seed", 0, "Random seed.")
  FLAGS.set_default("export_dir", os.path.join("runs", "train_keras", "export"))
  FLAGS.set_default("export_triton_repository", os.path.join("runs", "train_keras", "triton"))
  FLAGS.set_default("export_triton_model_name", "digits")  # Triton models digits_onnx_fp32, ...


def build_model(keras):
  model = keras.Sequential([
      keras.Input((8, 8, 1), name="image"),
      keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
      keras.layers.MaxPooling2D(),
      keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
      keras.layers.Flatten(),
      keras.layers.Dense(64, activation="relu"),
      keras.layers.Dense(10, activation="softmax", name="probabilities"),
  ])
  model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
  return model


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  quiet_console.quiet_absl()  # app.run has just applied --verbosity (or its default)
  quiet_console.import_tensorflow()  # its start-up messages stay off the console
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tftrt_keras  # pylint: disable=g-import-not-at-top
  from tftrt_keras.verify.summary import describe_export  # pylint: disable=g-import-not-at-top
  if FLAGS.use_tf_keras:
    import tf_keras as keras  # pylint: disable=g-import-not-at-top
  else:
    keras = tf.keras
  keras.utils.set_random_seed(FLAGS.seed)
  (x, y), (x_val, y_val) = load_digits(FLAGS.validation_fraction, FLAGS.seed)
  model = build_model(keras)
  export = tftrt_keras.TrtExport.from_flags(FLAGS, log_dir=FLAGS.tensorboard_dir, seed=FLAGS.seed)
  callbacks = [export]
  if FLAGS.tensorboard_dir:
    callbacks.append(keras.callbacks.TensorBoard(FLAGS.tensorboard_dir))
  model.fit(x, y, validation_data=(x_val, y_val), epochs=FLAGS.epochs, batch_size=FLAGS.batch_size,
            callbacks=callbacks, verbose=2)

  if not export.manifest_paths:
    print("No export was written (save_best_only saw no improvement).")
    return 0
  # The callback has printed the latest export's artifacts; what it does not say about that export:
  print(describe_export(export.manifest_paths[-1], list_artifacts=False))
  return 0


if __name__ == "__main__":
  quiet_console.quiet_tensorflow()  # before TensorFlow loads (the callback's import of it, in main)
  define_flags()
  app.run(main)
