"""examples/train_keras.py, the README's main job, run as a real child process (tier tf)."""

import json
import os
import subprocess
import sys

import pytest

from tests import test_console_quiet

pytestmark = pytest.mark.tf
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "examples", "train_keras.py")


def _run(args, cwd):
  return subprocess.run([sys.executable, SCRIPT] + args, cwd=cwd, capture_output=True, text=True, timeout=600)


def test_help_reads_well(tmp_path):
  result = _run(["--help"], tmp_path)
  assert result.returncode == 1, result.stderr  # absl's --help exits 1 after printing the usage
  assert "digit classifier" in result.stdout and "ONNX" in result.stdout
  for flag in ("--export_dir", "--export_precisions", "--export_calibration_batches", "--epochs",
               "--[no]export_require_tensorrt", "--export_formats", "--export_triton_repository"):
    assert flag in result.stdout
  assert "default: '0.6'" in result.stdout  # validation share: room for 500 verification samples


@pytest.mark.slow
def test_trains_and_ends_with_verified_onnx_variants_and_a_triton_repository(tmp_path):
  """Defaults of the main job except three epochs, in the user's environment (TensorFlow's start-up lines not
  silenced by the test session): >= 500 verification samples, ONNX variants verified here, and the console a
  person reads (tests/test_console_quiet.py says what it holds)."""
  export_dir = tmp_path / "export"
  result = subprocess.run([sys.executable, SCRIPT, f"--export_dir={export_dir}", "--epochs=3"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=600, env=test_console_quiet.user_environment())
  assert result.returncode == 0, result.stderr[-3000:]
  out = result.stdout
  assert "Epoch 3/3" in out and "val_accuracy" in out  # per-epoch lines while it trains
  test_console_quiet.check_main_job_console(result, export_dir, epochs=3)
  with open(export_dir / "manifests" / "3" / "manifest.json") as f:
    manifest = json.load(f)
  artifacts = manifest["artifacts"]
  statuses = {k: v["status"] for k, v in artifacts.items()}
  assert statuses["native"] == statuses["frozen"] == statuses["calibration"] == "ok"
  assert manifest["source"]["epoch"] == 3 and manifest["source"]["metrics"]["val_accuracy"] > 0.5
  assert manifest["verification"]["samples"] >= 500
  assert f"Verification judged on {manifest['verification']['samples']} held-out samples" in out
  for name in ("onnx_fp32", "onnx_fp16", "onnx_int8"):
    assert statuses[name] == "ok", artifacts[name]
    assert artifacts[name]["verification"]["passed"] is True
  from tftrt_keras.preflight import check_tftrt  # pylint: disable=g-import-not-at-top
  tensorrt_here = check_tftrt().usable
  for name in [n for n in artifacts if n.startswith(("tftrt_", "trt_")) and not n.startswith("trt_rtx_")]:
    if tensorrt_here:
      assert statuses[name] == "ok", artifacts[name]
    else:
      # Skipped with the reason; its first clause said once before the first export, the preflight named.
      assert statuses[name] == "skipped" and artifacts[name]["reason"]
      from tftrt_keras.verify.summary import _first_clause  # pylint: disable=g-import-not-at-top,protected-access
      assert " ".join(out.split()).count(_first_clause(" ".join(artifacts[name]["reason"].split()))) == 1
      assert "python -m tftrt_keras.preflight" in out
  _assert_trt_rtx_engines(manifest, export_dir, out)
  # The Triton repository beside the export (runs/train_keras/triton, relative to the working directory).
  triton = tmp_path / "runs" / "train_keras" / "triton"
  assert os.path.realpath(manifest["serving"]["triton"]["repository"]) == os.path.realpath(triton)
  assert (triton / "digits_onnx_fp32" / "config.pbtxt").is_file()
  assert os.path.isfile(export_dir / "3" / "saved_model.pb")
  assert os.path.isfile(export_dir / "frozen" / "3" / "frozen_graph.pb")


def _assert_trt_rtx_engines(manifest, export_dir, out):
  """The main job's CNN through all three TensorRT-RTX variants, built by the real builder on every machine (INT8
  from its Q/DQ onnx_int8, biases left FP32). Without a GPU that can run them nothing compared their outputs:
  `unverified` with the compute capabilities that can run them (this needs the `unverified` recording of branch
  `verdict`); on such a GPU, verified like every variant."""
  from tftrt_keras.formats.tensorrt import build, rtx  # pylint: disable=g-import-not-at-top
  from tftrt_keras.formats.tensorrt.format import probe  # pylint: disable=g-import-not-at-top
  status = probe(edition=build.TENSORRT_RTX)
  runnable = [g for g in status.gpus if g.compute_capability in rtx.PORTABLE_TARGETS]
  for name in ("trt_rtx_fp32", "trt_rtx_fp16", "trt_rtx_int8"):
    entry = manifest["artifacts"][name]
    assert entry["built_from"] == "onnx_" + name.rsplit("_", 1)[1], entry
    assert os.path.getsize(export_dir / name / str(manifest["version"]) / "model.plan") == entry["engine_bytes"] > 100_000
    assert "\ntrt_rtx " in out  # a row of the table at the end of training
    if runnable:
      assert entry["status"] == "ok" and entry["verification"]["passed"], entry
    else:
      assert entry["status"] == "unverified", entry
      assert "compute capability 8.6, 8.9, 12.0" in entry["reason"], entry
    assert manifest["serving"]["triton"]["left_out"][name] == ("Triton's tensorrt_plan backend cannot load "
                                                               "TensorRT-RTX plans")
