"""examples/train_keras.py, the README's main job, run as a real child process (tier tf)."""

import json
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.tf
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "examples", "train_keras.py")


def _run(args, cwd):
  return subprocess.run([sys.executable, SCRIPT] + args, cwd=cwd, capture_output=True, text=True, timeout=420)


def test_help_reads_well(tmp_path):
  result = _run(["--help"], tmp_path)
  assert result.returncode == 1, result.stderr  # absl's --help exits 1 after printing the usage
  assert "digit classifier" in result.stdout
  for flag in ("--export_dir", "--precisions", "--calibration_batches", "--epochs", "--[no]require_tensorrt"):
    assert flag in result.stdout


def test_trains_and_ends_with_a_full_export(tmp_path):
  export_dir = tmp_path / "export"
  result = _run([f"--export_dir={export_dir}", "--epochs=2", "--calibration_batches=4"], tmp_path)
  assert result.returncode == 0, result.stderr[-3000:]
  out = result.stdout
  assert "Epoch 2/2" in out and "val_accuracy" in out  # per-epoch lines while it trains
  assert "tftrt_keras exports:" in out  # the summary table
  with open(export_dir / "manifests" / "2" / "manifest.json") as f:
    manifest = json.load(f)
  statuses = {k: v["status"] for k, v in manifest["artifacts"].items()}
  assert statuses["native"] == statuses["frozen"] == statuses["calibration"] == "ok"
  assert manifest["source"]["epoch"] == 2 and manifest["source"]["metrics"]["val_accuracy"] > 0.5
  for name in ("tftrt_fp32", "tftrt_fp16", "tftrt_int8"):
    # Here TF-TRT cannot run: skipped with the reason, printed on one line.
    assert statuses[name] == "skipped"
    assert manifest["artifacts"][name]["reason"] in out
  assert "tftrt_fp32, tftrt_fp16, tftrt_int8: " in out
  assert os.path.isfile(export_dir / "2" / "saved_model.pb")
  assert os.path.isfile(export_dir / "frozen" / "2" / "frozen_graph.pb")
