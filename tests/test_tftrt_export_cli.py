"""`tftrt-export`, the console script setup.py installs, run as a real child process."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from tests import console_table
from tests import saved_models

pytestmark = pytest.mark.tf

SCRIPT = os.path.join(os.path.dirname(sys.executable), "tftrt-export")


def command():
  """The installed console script; where it is not installed (an environment without `pip install -e .`), the
  same entry point through `python -m` (the repository is on PYTHONPATH, see conftest)."""
  return [SCRIPT] if os.path.isfile(SCRIPT) else [sys.executable, "-m", "export.tftrt_export"]


def _run(*args, timeout=300):
  return subprocess.run([*command(), *args], capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
  base = tmp_path_factory.mktemp("cli")
  saved_models.classifier(base / "model", seed=4)
  np.savez(base / "x.npz", **saved_models.samples(12, seed=6))
  return base


def test_help_lists_the_flags_in_the_words_of_an_existing_saved_model():
  result = _run("--help", timeout=60)
  assert result.returncode == 0, result.stderr
  for flag in ("--saved_model_dir", "--output_dir", "--signature_key", "--calibration_data", "--export_precisions",
               "--export_max_batch_size", "--export_formats", "--export_triton_repository", "--export_exports_to_keep"):
    assert flag in result.stdout
  text = " ".join(result.stdout.split())
  for training_words in ("largest captured", "before training", "validation batch"):
    assert training_words not in text
  assert "Exit codes: 0 when" in text
  # "Answers quickly" means: TensorFlow is not imported for --help (checked in-process, not by a stopwatch).
  probe = subprocess.run(
      [sys.executable, "-c", "import sys; sys.argv = ['tftrt-export', '--help']\n"
       "from export.tftrt_export import run\ncode = run()\n"
       "print(code, 'tensorflow' in sys.modules)"], capture_output=True, text=True, timeout=60, check=False)
  assert probe.stdout.split()[-2:] == ["0", "False"], probe.stdout + probe.stderr


def _rows(block, names):
  """{artifact: (status, its footnote or reason)} of the artifact table (one row per format)."""
  lines = block.splitlines()
  if lines[0].startswith("tftrt_keras: skipped on this machine: "):  # said before the export, then the table
    lines = lines[next(i for i, line in enumerate(lines) if line.startswith("version ")):]
  assert re.match(r"version 1 +status", lines[0]), block
  return console_table.statuses("\n".join(lines), names)


def _sections(stdout):
  """The printed blocks (separated by blank lines): artifact table, reasons, notes, verification, manifest."""
  return [block for block in stdout.strip().split("\n\n") if block]


def test_fp16_int8_export_with_calibration_data(model):
  out = model / "serving"
  result = _run(f"--saved_model_dir={model / 'model'}", f"--output_dir={out}", "--export_precisions=FP16,INT8",
                f"--calibration_data={model / 'x.npz'}", "--export_verification_samples=4")
  with open(out / "manifests" / "1" / "manifest.json") as f:
    manifest = json.load(f)
  failed = [n for n, e in manifest["artifacts"].items() if e["status"] in ("failed", "rejected")]
  assert result.returncode == (1 if failed else 0), result.stderr[-3000:]
  blocks = _sections(result.stdout)
  rows = _rows(blocks[0], manifest["artifacts"])
  assert "tftrt_fp32" not in manifest["artifacts"] and "onnx_fp32" in rows  # ONNX FP16/INT8 are built from it
  assert {n: s for n, (s, _) in rows.items()} == {n: e["status"] for n, e in manifest["artifacts"].items()}
  assert rows["native"][0] == rows["frozen"][0] == rows["calibration"][0] == "ok"
  assert rows["onnx_fp32"][0] == "ok"  # ONNX runs everywhere
  calibration = manifest["artifacts"]["calibration"]
  assert calibration["samples"] + calibration["verification_samples"] == 12
  assert f"Calibration: {calibration['split']}." in " ".join(result.stdout.split())
  for warning in calibration.get("warnings", []):
    assert f"Warning: {warning}." in " ".join(result.stdout.split())
  assert any(block.startswith("artifact  ") for block in blocks)  # the verification table
  assert blocks[-1] == f"Manifest: {out / 'manifests' / '1' / 'manifest.json'}"
  assert os.path.isfile(out / "1" / "saved_model.pb")


def test_unverified_variants_exit_0_and_the_output_says_which_and_why(model):
  """12 samples, 3 held out: the FP16 classifier is built and build-checked but cannot show its top-1 agreement
  on 3 samples. Usable: exit 0; the artifact table says `unverified` with the reason, and a line names it."""
  out = model / "unverified"
  result = _run(f"--saved_model_dir={model / 'model'}", f"--output_dir={out}", "--export_precisions=FP32,FP16",
                "--export_formats=onnx", f"--calibration_data={model / 'x.npz'}")
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  with open(out / "manifests" / "1" / "manifest.json") as f:
    manifest = json.load(f)
  fp16 = manifest["artifacts"]["onnx_fp16"]
  assert fp16["status"] == "unverified" and "too few verification samples to tell" in fp16["reason"], fp16
  assert manifest["artifacts"]["onnx_fp32"]["status"] == "ok"
  rows = _rows(_sections(result.stdout)[0], manifest["artifacts"])
  assert rows["onnx_fp16"] == ("unverified", "[1]") and "onnx_*/1" in result.stdout
  text = " ".join(result.stdout.split())
  assert text.count(" ".join(fp16["reason"].split())) == 1  # the reason in full, once (below the table: it is long)
  assert "(unverified: usable, but nothing vouches for them)" in text


def test_a_triton_publish_that_fails_exits_1_and_says_so_in_the_table_and_the_report(model, tmp_path):
  """The Triton repository path runs through a file: every artifact is usable, but nothing could be served."""
  (tmp_path / "a_file").write_text("not a directory")
  repository = tmp_path / "a_file" / "models"
  out = tmp_path / "out"
  result = _run(f"--saved_model_dir={model / 'model'}", f"--output_dir={out}", "--export_precisions=FP32",
                "--export_formats=onnx", f"--export_triton_repository={repository}")
  assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
  with open(out / "manifests" / "1" / "manifest.json") as f:
    manifest = json.load(f)
  assert not {e["status"] for e in manifest["artifacts"].values()} & {"failed", "rejected"}, manifest["artifacts"]
  triton = manifest["serving"]["triton"]
  assert triton["status"] == "failed", triton
  assert "NotADirectoryError" in triton["reason"], triton
  block = _sections(result.stdout)[0]
  assert _rows(block, ["serving:triton"])["serving:triton"][0] == "failed"
  assert re.search(rf"(?m)^serving:triton +failed \[\d+\] +{re.escape(str(repository))}$", block), block
  assert " ".join(triton["reason"].split()) in " ".join(result.stdout.split())
  report = (out / "manifests" / "1" / "report.md").read_text()
  assert f"Serving (triton): failed: {triton['reason']}" in report


def test_unknown_precision_exits_2_with_a_plain_message(model, tmp_path):
  result = _run(f"--saved_model_dir={model / 'model'}", f"--output_dir={tmp_path / 'out'}",
                "--export_precisions=FP16,FP8")
  assert result.returncode == 2
  assert "--export_precisions=FP16,FP8: expected a subset of FP32,FP16,INT8 (unknown: FP8)" in result.stderr
  assert "['" not in result.stderr  # no Python list repr
  assert not (tmp_path / "out").exists()


def test_missing_required_flag_exits_2(model):
  result = _run(f"--saved_model_dir={model / 'model'}")
  assert result.returncode == 2
  assert "--output_dir" in result.stderr


def test_int8_without_calibration_data_exits_2_and_writes_nothing(model, tmp_path):
  result = _run(f"--saved_model_dir={model / 'model'}", f"--output_dir={tmp_path / 'out'}",
                "--export_precisions=INT8")
  assert result.returncode == 2
  assert "Invalid value for argument `calibration_data`" in result.stderr
  assert "--calibration_data" in result.stderr  # the hint names the flag to pass
  assert not (tmp_path / "out").exists()


def test_missing_saved_model_exits_2(tmp_path):
  result = _run(f"--saved_model_dir={tmp_path / 'nothing'}", f"--output_dir={tmp_path / 'out'}",
                "--export_precisions=FP16")
  assert result.returncode == 2
  assert "`saved_model_dir`" in result.stderr and str(tmp_path / "nothing") in result.stderr
  assert not (tmp_path / "out").exists()


def test_bad_format_options_exit_2_naming_the_flag(model, tmp_path):
  result = _run(f"--saved_model_dir={model / 'model'}", f"--output_dir={tmp_path / 'out'}",
                "--export_format_options={onnx: 1}")
  assert result.returncode == 2
  assert "--export_format_options={onnx: 1}: expected a JSON object" in result.stderr
  assert not (tmp_path / "out").exists()


def test_string_inputs_say_why_onnx_cannot_take_them_and_the_warning_names_this_tools_flag(tmp_path):
  saved_models.lookup_table(tmp_path / "model")
  np.savez(tmp_path / "tokens.npz", token=np.array([b"a", b"b", b"c"] * 4))
  out = tmp_path / "out"
  result = _run(f"--saved_model_dir={tmp_path / 'model'}", f"--output_dir={out}", "--export_precisions=FP32,INT8",
                "--export_formats=onnx", f"--calibration_data={tmp_path / 'tokens.npz'}")
  assert result.returncode == 1, result.stderr[-3000:]  # onnx_fp32 failed
  with open(out / "manifests" / "1" / "manifest.json") as f:
    artifacts = json.load(f)["artifacts"]
  assert artifacts["native"]["status"] == "ok"
  fp32 = artifacts["onnx_fp32"]
  assert fp32["status"] == "failed" and "input `token` is string" in fp32["reason"], fp32
  assert "ONNX and TensorRT tensors are numeric" in fp32["reason"]  # why
  assert "export the numeric part" in fp32["reason"]  # what to do
  (warning,) = [w for w in artifacts["calibration"]["warnings"] if w.startswith("INT8 calibrates on")]
  assert "--calibration_data" in warning and "calibration_batches" not in warning, warning
  text = " ".join(result.stdout.split())
  assert f"Warning: {warning}." in text and "calibration_batches" not in text
