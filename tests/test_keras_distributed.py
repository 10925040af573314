"""TrtExport under tf.distribute: only the chief writes; other workers neither write nor wait (tier tf).

The multi-worker case runs two real worker processes on localhost with TF_CONFIG.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import tftrt_keras
from tests.keras_models import classifier, train_data

pytestmark = pytest.mark.tf
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Keras 3.6 fails under two-worker MultiWorkerMirroredStrategy inside fit() before callbacks run (see
# distributed_keras_worker.py); TF 2.17 users of multi-worker training are on tf_keras, so that is tested.
_FLAVOR = "tf.keras" if tf.__version__.startswith("2.15") else "tf_keras"


def test_mirrored_strategy_exports_with_capture(primary_keras, tmp_path):
  strategy = tf.distribute.MirroredStrategy()
  with strategy.scope():
    model = classifier(primary_keras)
  callback = tftrt_keras.TrtExport(tmp_path / "e", formats=("tftrt",), precisions=("FP16", "INT8"),
                                   calibration_batches=2, verbose=0)
  x, y = train_data()
  model.fit(x, y, validation_data=train_data(64, seed=1), batch_size=16, epochs=1, callbacks=[callback], verbose=0)
  with open(callback.manifest_paths[0]) as f:
    manifest = json.load(f)
  assert manifest["artifacts"]["native"]["status"] == "ok"
  assert manifest["artifacts"]["calibration"]["status"] == "ok"
  assert manifest["artifacts"]["calibration"]["samples"] > 0


def _free_ports(n):
  sockets = [socket.socket() for _ in range(n)]
  for s in sockets:
    s.bind(("localhost", 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


def test_multi_worker_only_the_chief_writes(tmp_path):
  export_dir = tmp_path / "shared_export"
  ports = _free_ports(2)
  cluster = {"worker": [f"localhost:{p}" for p in ports]}
  processes, results = [], []
  for index in range(2):
    env = dict(os.environ, TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
               PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p),
               CUDA_VISIBLE_DEVICES="")
    results.append(tmp_path / f"result{index}.json")
    processes.append(subprocess.Popen(
        [sys.executable, "-m", "tests.distributed_keras_worker", str(export_dir), str(results[-1]), _FLAVOR],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
  outputs = []
  try:
    for process in processes:
      outputs.append(process.communicate(timeout=300)[0])
  finally:
    for process in processes:
      if process.poll() is None:
        process.kill()
  for process, output in zip(processes, outputs):
    assert process.returncode == 0, output[-3000:]
  chief, other = (json.loads(r.read_text()) for r in results)
  assert chief["is_chief"] and not other["is_chief"]
  assert [os.path.basename(os.path.dirname(p)) for p in chief["manifest_paths"]] == ["1", "2"]
  assert other["manifest_paths"] == []
  # Only the chief's versions exist: the other worker wrote no export, no temp directory, nothing.
  assert sorted(n for n in os.listdir(export_dir) if not n.startswith(".")) == [
      "1", "2", "calibration", "frozen", "manifests"]
  assert not [n for n in os.listdir(export_dir) if n.startswith(".tmp")]
  # Both workers trained the same replicated model.
  np.testing.assert_allclose(chief["kernel"], other["kernel"], rtol=1e-6)
  with open(chief["manifest_paths"][-1]) as f:
    manifest = json.load(f)
  assert manifest["artifacts"]["native"]["status"] == "ok" and manifest["artifacts"]["calibration"]["status"] == "ok"
  loaded = tf.saved_model.load(str(export_dir / "2"))
  assert "serving_default" in loaded.signatures
