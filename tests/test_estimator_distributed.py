"""`TrtExporter` on the evaluator task of a real distributed Estimator run (TF 2.15).

Four real processes on localhost (ps, chief, worker, evaluator; TF_CONFIG each, free ports) train one
DNNClassifier; the evaluator evaluates the checkpoints and runs the exporter. Uses the TEST DOUBLE backend
(FakeTrtBackendForTests) so that a converted variant exists on disk.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from tests.saved_models import FAKE_BACKEND

pytestmark = pytest.mark.skipif(
    not hasattr(tf, "estimator"),
    reason=f"TensorFlow {tf.__version__} has no tf.estimator (Estimator is TF 2.15 only)")

MAX_STEPS = 60
TIME_LIMIT_SECONDS = 180  # a hung cluster fails the test instead of hanging the suite

TASK_SCRIPT = r'''
"""One task of a distributed Estimator run; TF_CONFIG comes from the environment."""
import json
import os
import sys

import numpy as np
import tensorflow as tf

from tftrt_keras.options import ConversionOptions
from tftrt_keras.estimator.exporter import TrtExporter

model_dir, backend, max_steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
os.environ["TFTRT_KERAS_TEST_TFTRT_CONVERTER"] = backend  # TEST DOUBLE (the TF-TRT format's test hook)
rng = np.random.default_rng(0)
x = rng.normal(size=(512, 4)).astype("float32")
y = (x[:, 0] + x[:, 1] > 0).astype("int64")
eval_x = rng.normal(size=(96, 4)).astype("float32")
eval_y = (eval_x[:, 0] + eval_x[:, 1] > 0).astype("int64")
eval_x[:, 3] = 100.0 + np.arange(len(eval_x))  # marker: only evaluation rows have x[3] >= 100


def train_input_fn():
  return tf.data.Dataset.from_tensor_slices(({"x": x}, y)).repeat().batch(16)


def eval_input_fn():
  return tf.data.Dataset.from_tensor_slices(({"x": eval_x}, eval_y)).batch(8)


columns = [tf.feature_column.numeric_column("x", shape=[4])]
config = tf.estimator.RunConfig(model_dir=model_dir, save_checkpoints_steps=10, tf_random_seed=0,
                                keep_checkpoint_max=100, log_step_count_steps=1000)
estimator = tf.estimator.DNNClassifier([8], columns, n_classes=2, config=config)
exporter = TrtExporter(
    "trt", tf.estimator.export.build_parsing_serving_input_receiver_fn(
        tf.feature_column.make_parse_example_spec(columns)),
    policy="latest", calibration_batches=4,
    options=ConversionOptions(precisions=("FP32",), formats=("tftrt",), verify=False))
tf.estimator.train_and_evaluate(
    estimator, tf.estimator.TrainSpec(train_input_fn, max_steps=max_steps),
    tf.estimator.EvalSpec(eval_input_fn, steps=None, exporters=[exporter], hooks=[exporter.calibration_hook],
                          start_delay_secs=0, throttle_secs=1))
task = json.loads(os.environ["TF_CONFIG"])["task"]["type"]
print(f"TASK_DONE {task} manifests={len(exporter.manifest_paths)}", flush=True)
'''


def _free_port():
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _kill_group(process):
  try:
    os.killpg(process.pid, signal.SIGKILL)
  except ProcessLookupError:
    pass
  process.wait()


@pytest.mark.tf
@pytest.mark.slow
def test_exporter_runs_on_the_evaluator_of_a_distributed_run(tmp_path):
  script = tmp_path / "task.py"
  script.write_text(TASK_SCRIPT)
  model_dir = tmp_path / "model"
  cluster = {"chief": [f"localhost:{_free_port()}"], "worker": [f"localhost:{_free_port()}"],
             "ps": [f"localhost:{_free_port()}"]}
  processes, logs = {}, {}
  try:
    for task in ("ps", "chief", "worker", "evaluator"):
      env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": task, "index": 0}}))
      logs[task] = tmp_path / f"{task}.log"
      with open(logs[task], "w") as log:
        processes[task] = subprocess.Popen(
            [sys.executable, str(script), str(model_dir), FAKE_BACKEND, str(MAX_STEPS)], env=env, cwd=tmp_path,
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)  # its own group: killing it takes the export workers it started too
    deadline = time.monotonic() + TIME_LIMIT_SECONDS
    codes = {}
    for task in ("chief", "worker", "evaluator"):
      try:
        codes[task] = processes[task].wait(timeout=max(1.0, deadline - time.monotonic()))
      except subprocess.TimeoutExpired:
        codes[task] = "still running"
  finally:
    for process in processes.values():
      _kill_group(process)  # the ps task serves forever; anything else still running is a failure above

  output = {task: path.read_text() for task, path in logs.items()}
  for task in ("chief", "worker", "evaluator"):
    assert codes[task] == 0, f"{task} ended with {codes[task]}:\n{output[task][-3000:]}"
  # Only the evaluator exported; chief and worker trained.
  assert "TASK_DONE chief manifests=0" in output["chief"]
  assert "TASK_DONE worker manifests=0" in output["worker"]
  assert "TASK_DONE evaluator manifests=0" not in output["evaluator"]

  from tftrt_keras.samples import calibration_data  # pylint: disable=g-import-not-at-top
  from tftrt_keras.artifacts.layout import ExportLayout  # pylint: disable=g-import-not-at-top
  root = str(model_dir / "export" / "trt")
  manifests = ExportLayout(root).manifests()
  assert manifests
  assert {m["worker"]["owner_pid"] for m in manifests} == {processes["evaluator"].pid}
  final = manifests[-1]
  assert final["source"]["step"] == MAX_STEPS
  statuses = {name: entry["status"] for name, entry in final["artifacts"].items()}
  # verify=False: the frozen graph and the variant are built and build-checked, never compared: unverified.
  assert statuses == {"native": "ok", "frozen": "unverified", "calibration": "ok", "tftrt_fp32": "unverified"}, \
      final["artifacts"]
  assert final["artifacts"]["tftrt_fp32"]["reason"] == "verification turned off (verify=False)"
  assert os.path.isfile(os.path.join(root, "tftrt_fp32", str(final["version"]), "saved_model.pb"))
  # The calibration sample is the evaluator's evaluation data, as serialized tf.Examples.
  samples = calibration_data.load_samples(os.path.join(root, "calibration", str(final["version"]),
                                                       final["artifacts"]["calibration"]["file"]))
  (examples,) = samples.values()
  parsed = tf.io.parse_example(examples, {"x": tf.io.FixedLenFeature([4], tf.float32)})
  assert len(examples) > 0 and np.all(parsed["x"].numpy()[:, 3] >= 100.0)
  assert final["source"]["calibration"]["from"] == "evaluation"
