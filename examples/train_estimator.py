r"""Trains a DNNClassifier on the sklearn digits with train_and_evaluate and exports deployment variants on the way.

The exporter writes, at every evaluation, the normal SavedModel (what `tf.estimator.LatestExporter` or, with
`--export_save_best_only`, `BestExporter` writes) to `<model_dir>/export/tftrt/<timestamp>`, and beside it the
frozen graph, calibration and verification samples taken from the evaluation pass, the variants of
`--export_formats` (TF-TRT, ONNX, TensorRT engines; FP32/FP16/INT8) and a manifest. A variant that cannot be
built is recorded with the reason: skipped where TensorRT or a GPU is missing, failed for ONNX here because a
canned classifier's signatures carry string tensors (the class names), which an ONNX model cannot. Needs
TensorFlow 2.15 (tf.estimator).

Example:
  python examples/train_estimator.py --model_dir=/tmp/digits_estimator --train_steps=300 \
      --export_precisions=FP16,INT8 --export_calibration_batches=8 --export_exports_to_keep=3
"""

import os

from absl import app
from absl import flags

FLAGS = flags.FLAGS
EXPORTER_NAME = "tftrt"


def define_flags():
  """The export flags of `tftrt_keras.flags` plus this script's own."""
  from tftrt_keras import flags as tftrt_flags  # pylint: disable=g-import-not-at-top
  # The Estimator decides where exports go (<model_dir>/export/<exporter name>): no --export_dir.
  tftrt_flags.define_export_flags(export_dir=False)
  flags.adopt_module_key_flags(tftrt_flags)  # so that --help lists the export flags, not only --helpfull
  flags.DEFINE_string("model_dir", None, "Where the Estimator writes checkpoints, evaluation events and exports.")
  flags.DEFINE_integer("train_steps", 300, "Training steps (batches of 32).", lower_bound=1)
  flags.DEFINE_integer("evaluations", 3, "How many times training stops to evaluate and export.", lower_bound=1)


def digits_input_fns(batch_size=32):
  """Train and eval input_fns over sklearn's digits (8x8 images, 10 classes), pixels scaled to [0, 1]."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
  data = load_digits()
  x, y = (data.data / 16.0).astype("float32"), data.target.astype("int64")
  train, evaluation = slice(0, 1400), slice(1400, None)

  def train_input_fn():
    dataset = tf.data.Dataset.from_tensor_slices(({"pixels": x[train]}, y[train]))
    return dataset.shuffle(1400, seed=0).repeat().batch(batch_size)

  def eval_input_fn():
    return tf.data.Dataset.from_tensor_slices(({"pixels": x[evaluation]}, y[evaluation])).batch(batch_size)
  return train_input_fn, eval_input_fn


def main(argv):
  del argv
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tftrt_keras  # pylint: disable=g-import-not-at-top
  from tftrt_keras.artifacts.manifest import read_manifest  # pylint: disable=g-import-not-at-top
  from tftrt_keras.verify.summary import summary_table  # pylint: disable=g-import-not-at-top

  columns = [tf.feature_column.numeric_column("pixels", shape=[64])]
  config = tf.estimator.RunConfig(
      model_dir=FLAGS.model_dir, tf_random_seed=0, keep_checkpoint_max=FLAGS.evaluations + 1,
      save_checkpoints_steps=max(1, FLAGS.train_steps // FLAGS.evaluations))
  estimator = tf.estimator.DNNClassifier(hidden_units=[32], feature_columns=columns, n_classes=10, config=config)
  # Served like a TF Serving classifier: serialized tf.Examples in, classes and scores out.
  serving_input_receiver_fn = tf.estimator.export.build_parsing_serving_input_receiver_fn(
      tf.feature_column.make_parse_example_spec(columns))
  exporter = tftrt_keras.TrtExporter.from_flags(FLAGS, EXPORTER_NAME, serving_input_receiver_fn)

  train_input_fn, eval_input_fn = digits_input_fns()
  tf.estimator.train_and_evaluate(
      estimator,
      tf.estimator.TrainSpec(train_input_fn, max_steps=FLAGS.train_steps),
      tf.estimator.EvalSpec(eval_input_fn, steps=None, exporters=[exporter], hooks=[exporter.calibration_hook],
                            start_delay_secs=0, throttle_secs=0))
  exporter.close()  # the final export already waited; this is for runs that ended without one

  root = os.path.join(FLAGS.model_dir, "export", EXPORTER_NAME)
  print(f"\nExports in {root}:")
  print(summary_table([read_manifest(path) for path in exporter.manifest_paths], root=root))


if __name__ == "__main__":
  define_flags()
  flags.mark_flags_as_required(["model_dir"])
  app.run(main)
