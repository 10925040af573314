"""Fine-tune a TF-Hub module on 8x8 digits with Keras 2 and get TF-TRT variants of it as a by-product.

The model is `hub.KerasLayer(--hub_module)` (an image feature extractor) followed by a softmax classifier,
trained on scikit-learn's 8x8 digits, so nothing is downloaded:

  python examples/hub_finetune.py --export_dir=/tmp/hub_digits --epochs=3 --fine_tune

--hub_module is a local path to a TF2 SavedModel that hub.KerasLayer can load (a reusable SavedModel: a
callable `__call__` taking float32 images [batch, 8, 8, 1], with `variables` and `trainable_variables`).
Without it, the script first writes such a module itself (a small, randomly initialised convolutional
feature extractor standing in for a pretrained one), into `digit_features_module` beside --export_dir, and
prints where; pass that path as --hub_module to reuse it.

Keras: tensorflow_hub's KerasLayer is a Keras 2 layer, so the model is built with Keras 2: `tf.keras` on
TF 2.15, and the `tf_keras` package on TF 2.16+ (where `tf.keras` is Keras 3, which cannot hold it).

Each epoch writes a new numbered export under --export_dir: the normal SavedModel (with the hub module's
variables, fine-tuned or not, and any assets it carries), its frozen graph, the samples captured from the
validation pass (for INT8 calibration, and held out for verification), and the deployment variants: ONNX
FP32/FP16/INT8, produced and verified anywhere; TF-TRT SavedModels and TensorRT engines where TensorRT and a
GPU are available (otherwise recorded as skipped, with the reason). Ends with the table of every artifact,
how the samples were split and where the manifest is; TensorFlow's start-up messages stay hidden (set
TF_CPP_MIN_LOG_LEVEL or --verbosity yourself to see them).
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

WRITTEN_MODULE_NAME = "digit_features_module"
IMAGE_SHAPE = (8, 8, 1)


def define_flags():
  tftrt_flags.define_export_flags()
  flags.adopt_module_key_flags(tftrt_flags)  # so that --help lists the export flags too
  flags.DEFINE_string("hub_module", None, "Local path of the TF2 hub module (reusable SavedModel) to fine-tune; it "
                      "takes float32 images [batch, 8, 8, 1] and returns features [batch, n]. Default: write a "
                      f"small one into '{WRITTEN_MODULE_NAME}' beside --export_dir and use that.")
  flags.DEFINE_integer("epochs", 3, "Training epochs (one export per epoch).")
  flags.DEFINE_integer("batch_size", 32, "Training and validation batch size.")
  flags.DEFINE_boolean("fine_tune", False, "Train the hub module's variables too (hub.KerasLayer(trainable=True)); "
                       "otherwise only the classifier on top of it is trained.")
  flags.DEFINE_float("validation_fraction", 0.25, "Share of the digits held out for validation.")
  flags.DEFINE_integer("seed", 0, "Random seed (data split, module written without --hub_module, training).")
  flags.DEFINE_string("predictions_file", None, "Also write the trained model's predictions on the validation "
                      "images to this .npz (arrays 'images' and 'probabilities'), e.g. to compare with what a "
                      "server returns for the exported model.")
  FLAGS.set_default("export_dir", os.path.join("runs", "hub_finetune", "export"))
  # Checked while parsing, so a wrong path fails in a second instead of after TensorFlow has loaded.
  flags.register_validator(
      "hub_module", lambda path: path is None or os.path.isfile(os.path.join(path, "saved_model.pb")),
      message="--hub_module must be a SavedModel directory (one with a saved_model.pb in it)")


def write_digit_feature_module(path, seed=0, features=32):
  """Writes a small image feature extractor as a TF2 SavedModel that `hub.KerasLayer` can load and fine-tune.

  Conv 3x3 (8 filters) + ReLU + 2x2 max-pool + dense (`features` units) + ReLU, on float32 images
  [batch, 8, 8, 1]. Weights are random (seeded): it stands in for a pretrained module.

  Args:
    path: directory to write (created; files in it are overwritten).
    seed: seeds the weights, so the same seed writes the same module.
    features: size of the feature vector it returns.

  Returns:
    `path`.
  """
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(seed)

  def weights(*shape):
    return (rng.normal(size=shape) * np.sqrt(2.0 / np.prod(shape[:-1]))).astype("float32")

  class DigitFeatures(tf.Module):
    """A reusable SavedModel: `__call__`, `variables`, `trainable_variables` (what hub.KerasLayer looks for)."""

    # tf.Module computes these as read-only properties, which tf.saved_model.save does not store; the class
    # attributes give way to instance lists that it does store, so the loaded module still has them.
    variables = ()
    trainable_variables = ()

    def __init__(self):
      super().__init__(name="digit_features")
      self.conv_kernel = tf.Variable(weights(3, 3, 1, 8), name="conv_kernel")
      self.conv_bias = tf.Variable(np.zeros(8, "float32"), name="conv_bias")
      self.dense_kernel = tf.Variable(weights(4 * 4 * 8, features), name="dense_kernel")
      self.dense_bias = tf.Variable(np.zeros(features, "float32"), name="dense_bias")
      self.variables = [self.conv_kernel, self.conv_bias, self.dense_kernel, self.dense_bias]
      self.trainable_variables = list(self.variables)

    @tf.function(input_signature=[tf.TensorSpec([None, *IMAGE_SHAPE], tf.float32)])
    def __call__(self, images):
      x = tf.nn.relu(tf.nn.conv2d(images, self.conv_kernel, strides=1, padding="SAME") + self.conv_bias)
      x = tf.nn.max_pool2d(x, ksize=2, strides=2, padding="VALID")
      x = tf.reshape(x, [-1, 4 * 4 * 8])
      return tf.nn.relu(tf.matmul(x, self.dense_kernel) + self.dense_bias)

  tf.saved_model.save(DigitFeatures(), path)
  return path


def keras_2():
  """The Keras that hub.KerasLayer belongs to: tf.keras while it is Keras 2 (TF 2.15), else tf_keras."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  version = getattr(tf.keras, "version", None)
  if version is not None and version().startswith("3."):
    try:
      import tf_keras  # pylint: disable=g-import-not-at-top
    except ImportError as err:
      raise ImportError(f"TensorFlow {tf.__version__} ships Keras 3, and tensorflow_hub's KerasLayer needs Keras 2: "
                        "pip install tf_keras (the version matching TensorFlow)") from err
    return tf_keras
  return tf.keras


def build_model(keras, hub_module, fine_tune):
  """hub.KerasLayer(hub_module) + a 10-way softmax named `probabilities` (the serving output's name)."""
  import tensorflow_hub as hub  # pylint: disable=g-import-not-at-top
  model = keras.Sequential([
      keras.Input(IMAGE_SHAPE, name="image"),
      hub.KerasLayer(hub_module, trainable=fine_tune, name="hub_features"),
      keras.layers.Dense(10, activation="softmax", name="probabilities"),
  ])
  model.compile(optimizer=keras.optimizers.Adam(1e-2 if not fine_tune else 3e-3),
                loss="sparse_categorical_crossentropy", metrics=["accuracy"])
  return model


def print_latest_export(manifest_path, export_dir):
  """Prints what the callback's table does not say about the latest export: how its samples were split,
  warnings about them, what verification judged on, and where the manifest is."""
  from tftrt_keras.verify.summary import describe_export  # pylint: disable=g-import-not-at-top
  print(describe_export(manifest_path, list_artifacts=False))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  quiet_console.quiet_absl()  # app.run has just applied --verbosity (or its default)
  quiet_console.import_tensorflow()  # its start-up messages stay off the console
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tftrt_keras  # pylint: disable=g-import-not-at-top
  from tftrt_keras.keras import flavor as keras_flavor  # pylint: disable=g-import-not-at-top
  keras = keras_2()
  keras.utils.set_random_seed(FLAGS.seed)

  hub_module = FLAGS.hub_module
  if hub_module is None:
    hub_module = os.path.join(os.path.dirname(os.path.abspath(FLAGS.export_dir)), WRITTEN_MODULE_NAME)
    write_digit_feature_module(hub_module, seed=FLAGS.seed)
    print(f"No --hub_module given: wrote a digit feature extractor module to {hub_module}")

  (x, y), (x_val, y_val) = load_digits(FLAGS.validation_fraction, FLAGS.seed)
  model = build_model(keras, hub_module, FLAGS.fine_tune)
  print(f"Fine-tuning {hub_module} with {keras_flavor.keras_version(model)} "
        f"({'hub module trained too' if FLAGS.fine_tune else 'hub module frozen, classifier trained'})")
  export = tftrt_keras.TrtExport.from_flags(FLAGS, seed=FLAGS.seed)
  model.fit(x, y, validation_data=(x_val, y_val), epochs=FLAGS.epochs, batch_size=FLAGS.batch_size,
            callbacks=[export], verbose=2)

  if FLAGS.predictions_file:
    np.savez(FLAGS.predictions_file, images=x_val, probabilities=model.predict(x_val, verbose=0))
    print(f"Predictions on the validation images: {FLAGS.predictions_file}")
  if not export.manifest_paths:
    print("No export was written (save_best_only saw no improvement).")
    return 0
  print_latest_export(export.manifest_paths[-1], FLAGS.export_dir)
  return 0


if __name__ == "__main__":
  quiet_console.quiet_tensorflow()  # before TensorFlow loads (in main)
  define_flags()
  app.run(main)
