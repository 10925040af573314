"""One worker of a MultiWorkerMirroredStrategy run with TrtExport (started by test_keras_distributed.py).

Usage: python -m tests.distributed_keras_worker <export_dir> <result_json> <keras flavour>  (TF_CONFIG set)

Keras 3 (3.6) itself fails under MultiWorkerMirroredStrategy with two workers before any callback runs
(`fit` -> `_maybe_symbolic_build` -> reduce of a PerReplica batch), so on TF 2.17 the multi-worker case is
run with Keras 2 through tf_keras; pass "keras3" to see Keras 3 fail without TrtExport ("--no-callback").
"""

import json
import os
import sys
import time

import numpy as np
import tensorflow as tf


def main(export_dir, result_path, flavor, with_callback=True):
  strategy = tf.distribute.MultiWorkerMirroredStrategy()
  import tftrt_keras  # pylint: disable=g-import-not-at-top
  from tests.keras_models import classifier, keras_for, train_data  # pylint: disable=g-import-not-at-top
  keras = keras_for(flavor)
  keras.utils.set_random_seed(0)
  if hasattr(keras, "config") and hasattr(keras.config, "disable_traceback_filtering"):
    keras.config.disable_traceback_filtering()  # a failure here should show its whole traceback
  with strategy.scope():
    model = classifier(keras)
  x, y = train_data(128)
  xv, yv = train_data(64, seed=1)
  options = tf.data.Options()
  options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
  train = tf.data.Dataset.from_tensor_slices((x, y)).batch(16).with_options(options)
  val = tf.data.Dataset.from_tensor_slices((xv, yv)).batch(16).with_options(options)
  callback = tftrt_keras.TrtExport(export_dir, formats=("tftrt",), precisions=("FP16", "INT8"),
                                   calibration_batches=2, verbose=0)
  started = time.monotonic()
  model.fit(train, validation_data=val, epochs=2, callbacks=[callback] if with_callback else [], verbose=0)
  task = json.loads(os.environ["TF_CONFIG"])["task"]
  with open(result_path, "w") as f:
    json.dump({"task": task, "manifest_paths": callback.manifest_paths, "is_chief": callback._is_chief,  # pylint: disable=protected-access
               "fit_seconds": time.monotonic() - started,
               "kernel": np.asarray(model.layers[-1].get_weights()[0]).tolist()}, f)


if __name__ == "__main__":
  main(sys.argv[1], sys.argv[2], sys.argv[3], with_callback="--no-callback" not in sys.argv)
