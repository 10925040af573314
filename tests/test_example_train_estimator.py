"""examples/train_estimator.py run as a user runs it: a child process with flags, on TF 2.15."""

import json
import os
import subprocess
import sys

import pytest
import tensorflow as tf

pytestmark = pytest.mark.skipif(
    not hasattr(tf, "estimator"),
    reason=f"TensorFlow {tf.__version__} has no tf.estimator (Estimator is TF 2.15 only)")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "examples", "train_estimator.py")


def _run(args, timeout=240):
  return subprocess.run([sys.executable, SCRIPT] + args, capture_output=True, text=True, timeout=timeout,
                        check=False, cwd=ROOT)


@pytest.mark.unit
def test_help_lists_the_export_flags_and_the_scripts_own():
  result = _run(["--help"], timeout=120)
  # absl's --help prints the usage and exits with status 1; a crash would leave a traceback instead.
  assert "Traceback" not in result.stderr, result.stderr[-2000:]
  for flag in ("--model_dir", "--train_steps", "--export_precisions", "--export_formats",
               "--export_calibration_batches", "--export_verification_samples", "--export_exports_to_keep",
               "--export_signature_key", "--[no]export_require_tensorrt", "--[no]export_save_best_only"):
    assert flag in result.stdout, f"{flag} missing from --help"
  assert "DNNClassifier" in result.stdout and "train_and_evaluate" in result.stdout


@pytest.mark.unit
def test_missing_model_dir_is_refused_by_name():
  result = _run(["--train_steps=5"], timeout=120)
  assert result.returncode != 0
  assert "model_dir" in result.stderr


@pytest.mark.tf
@pytest.mark.slow
def test_trains_exports_and_prints_the_summary(tmp_path):
  """Small run with the real TF-TRT backend: exits 0, the manifests beside the normal export list the frozen
  graph and evaluation samples (calibration and verification), the TF-TRT variants `ok` where TF-TRT runs and
  else skipped with the preflight's reason, and the summary table printed at the end shows the same."""
  model_dir = tmp_path / "model"
  result = _run([f"--model_dir={model_dir}", "--train_steps=20", "--evaluations=2", "--export_calibration_batches=3",
                 "--export_verification_samples=100", "--export_precisions=FP16,INT8", "--export_formats=tftrt",
                 "--export_exports_to_keep=1"])
  assert result.returncode == 0, result.stderr[-4000:]
  root = model_dir / "export" / "tftrt"
  versions = sorted(int(n) for n in os.listdir(root / "manifests") if n.isdigit())
  assert len(versions) == 1  # --exports_to_keep=1
  manifest = json.loads((root / "manifests" / str(versions[0]) / "manifest.json").read_text())
  assert (root / str(versions[0]) / "saved_model.pb").is_file()
  assert manifest["source"]["kind"] == "estimator" and manifest["source"]["step"] == 20
  statuses = {name: entry["status"] for name, entry in manifest["artifacts"].items()}
  assert set(statuses) == {"native", "frozen", "calibration", "tftrt_fp16", "tftrt_int8"}
  assert statuses["native"] == statuses["frozen"] == statuses["calibration"] == "ok"
  assert manifest["source"]["calibration"]["from"] == "evaluation"
  assert manifest["signature_key"] == "serving_default"
  calibration = manifest["artifacts"]["calibration"]
  # The evaluation keeps 3 calibration batches and 4 for 100 verification samples (batch 32); both samples are cut
  # from those 7 by sample, so calibration's samples may come from any of them.
  assert len(manifest["source"]["calibration"]["batch_indices"]) == 3 + 4 and 0 < calibration["samples"] <= 3 * 32
  assert calibration["verification_samples"] == 100
  from tftrt_keras.preflight import check_tftrt  # pylint: disable=g-import-not-at-top
  tensorrt = check_tftrt()
  for name in ("tftrt_fp16", "tftrt_int8"):
    entry = manifest["artifacts"][name]
    if tensorrt.usable:
      assert entry["status"] == "ok", entry
    else:
      assert entry["status"] == "skipped" and entry["reason"] == tensorrt.reason, entry
  table = result.stdout[result.stdout.index("Exports in"):]
  latest = table[table.index(f"version {versions[0]}"):]  # the latest export in full
  assert "\ntftrt " in latest and f"frozen/{versions[0]}" in latest
