"""`tftrt-export`, the console script setup.py installs, run as a real child process."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests import saved_models

pytestmark = pytest.mark.tf

SCRIPT = os.path.join(os.path.dirname(sys.executable), "tftrt-export")


def _run(*args, timeout=300):
  if not os.path.isfile(SCRIPT):
    pytest.skip(f"{SCRIPT} is not installed (pip install -e . installs the console script)")
  return subprocess.run([SCRIPT, *args], capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
  base = tmp_path_factory.mktemp("cli")
  saved_models.classifier(base / "model", seed=4)
  np.savez(base / "x.npz", **saved_models.samples(12, seed=6))
  return base


def test_help_lists_the_flags_without_loading_tensorflow():
  result = _run("--help", timeout=60)
  assert result.returncode == 0, result.stderr
  for flag in ("--saved_model_dir", "--output_dir", "--precisions", "--calibration_data", "--max_batch_size"):
    assert flag in result.stdout
  # "Answers quickly" means: TensorFlow is not imported for --help (checked in-process, not by a stopwatch).
  probe = subprocess.run(
      [sys.executable, "-c", "import sys; sys.argv = ['tftrt-export', '--help']\n"
       "from export.tftrt_export import run\ncode = run()\n"
       "print(code, 'tensorflow' in sys.modules)"], capture_output=True, text=True, timeout=60, check=False)
  assert probe.stdout.split()[-2:] == ["0", "False"], probe.stdout + probe.stderr


def test_fp16_int8_export_with_calibration_data(model):
  out = model / "serving"
  result = _run(f"--saved_model_dir={model / 'model'}", f"--output_dir={out}", "--precisions=FP16,INT8",
                f"--calibration_data={model / 'x.npz'}")
  assert result.returncode == 0, result.stderr[-3000:]
  # The summary table comes first; other tables (verification) may follow after a blank line.
  summary = result.stdout.split("\n\n")[0].splitlines()
  assert summary[0].split()[:4] == ["version", "artifact", "status", "path"]
  rows = {line.split()[1]: line.split() for line in summary[2:]}
  assert set(rows) == {"native", "frozen", "calibration", "tftrt_fp16", "tftrt_int8"}  # only what was asked for
  assert rows["native"][2] == "ok" and rows["frozen"][2] == "ok" and rows["calibration"][2] == "ok"
  with open(out / "manifests" / "1" / "manifest.json") as f:
    manifest = json.load(f)
  assert manifest["artifacts"]["calibration"]["samples"] + manifest["artifacts"]["calibration"][
      "verification_samples"] == 12
  for name in ("tftrt_fp16", "tftrt_int8"):
    assert rows[name][2] == manifest["artifacts"][name]["status"]
  assert os.path.isfile(out / "1" / "saved_model.pb")


def test_unknown_precision_exits_2_naming_the_flag(model, tmp_path):
  result = _run(f"--saved_model_dir={model / 'model'}", f"--output_dir={tmp_path / 'out'}", "--precisions=FP16,FP8")
  assert result.returncode == 2
  assert "--precisions" in result.stderr and "FP8" in result.stderr and "FP32,FP16,INT8" in result.stderr
  assert not (tmp_path / "out").exists()


def test_missing_required_flag_exits_2(model):
  result = _run(f"--saved_model_dir={model / 'model'}")
  assert result.returncode == 2
  assert "--output_dir" in result.stderr


def test_int8_without_calibration_data_exits_2_and_writes_nothing(model, tmp_path):
  result = _run(f"--saved_model_dir={model / 'model'}", f"--output_dir={tmp_path / 'out'}", "--precisions=INT8")
  assert result.returncode == 2
  assert "Invalid value for argument `calibration_data`" in result.stderr
  assert "--calibration_data" in result.stderr  # the hint names the flag to pass
  assert not (tmp_path / "out").exists()


def test_missing_saved_model_exits_2(tmp_path):
  result = _run(f"--saved_model_dir={tmp_path / 'nothing'}", f"--output_dir={tmp_path / 'out'}",
                "--precisions=FP16")
  assert result.returncode == 2
  assert "`saved_model_dir`" in result.stderr and str(tmp_path / "nothing") in result.stderr
  assert not (tmp_path / "out").exists()
