"""A format from another package, registered by an entry point in the `tftrt_keras.formats` group: built,
verified and offered to Triton through the same `Format` interface as the built-in formats, with no edit in
tftrt_keras. The package is a real distribution on disk (a dist-info with entry_points.txt) found by Python's
own `importlib.metadata`, in this test's child process and in the export worker it starts."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests import saved_models

pytestmark = [pytest.mark.tf, pytest.mark.slow]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

PLUGIN = '''
import shutil

from tftrt_keras.formats.base import Format, TritonServing
from tftrt_keras.formats.savedmodel import SavedModelRunner


class EchoFormat(Format):
  name = "echo"
  description = "the SavedModel, copied"
  serving = TritonServing(not_servable="echo variants are SavedModels, which this Triton cannot load")

  def build(self, job, precision, source_dir, output_dir):
    shutil.copytree(source_dir, output_dir, dirs_exist_ok=True)
    return {"copied_precision": precision}

  def open_runner(self, path, job):
    return SavedModelRunner(path, job.signature_key)


FORMAT = EchoFormat()
'''

SCRIPT = '''
import json, sys
from tftrt_keras import formats
from tftrt_keras.offline.export import export_saved_model
from tftrt_keras.options import ConversionOptions
model, root, calibration, repository = sys.argv[1:]
manifest = export_saved_model(model, root, calibration_data=calibration, options=ConversionOptions(
    formats=("echo",), precisions=("FP32",), triton_repository=repository, verify_timed_runs=2))
print("RESULT " + json.dumps({"formats": list(formats.FORMATS), "manifest": manifest}))
'''


def _install_plugin(site):
  """A distribution `echo-format` with the module `echo_format` and its entry point, as pip would lay it out."""
  (site / "echo_format.py").write_text(textwrap.dedent(PLUGIN))
  info = site / "echo_format-1.0.dist-info"
  info.mkdir(parents=True)
  (info / "METADATA").write_text("Metadata-Version: 2.1\nName: echo-format\nVersion: 1.0\n")
  (info / "entry_points.txt").write_text("[tftrt_keras.formats]\necho = echo_format\n")


def test_a_format_registered_by_entry_point_is_built_verified_and_offered_to_triton(tmp_path):
  site = tmp_path / "site"
  site.mkdir()
  _install_plugin(site)
  model = tmp_path / "classifier"
  saved_models.classifier(model, seed=1)
  np.savez(tmp_path / "calibration.npz", **saved_models.samples(16, seed=2))
  env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(site), ROOT, os.environ.get("PYTHONPATH", "")]))
  done = subprocess.run([sys.executable, "-c", SCRIPT, str(model), str(tmp_path / "exports"),
                         str(tmp_path / "calibration.npz"), str(tmp_path / "triton")],
                        env=env, capture_output=True, text=True, timeout=300, check=False)
  lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
  assert done.returncode == 0 and lines, done.stdout[-3000:] + done.stderr[-3000:]
  result = json.loads(lines[-1][len("RESULT "):])
  assert result["formats"] == ["tftrt", "onnx", "trt", "trt_rtx", "echo"]
  entry = result["manifest"]["artifacts"]["echo_fp32"]
  assert entry["status"] == "ok", entry  # built, and compared with the normal export within the thresholds
  assert entry["copied_precision"] == "FP32" and entry["built_from"] == "native"
  triton = result["manifest"]["serving"]["triton"]
  assert triton["left_out"] == {"echo_fp32": "echo variants are SavedModels, which this Triton cannot load"}


def test_without_the_plugin_the_format_is_unknown():
  from tftrt_keras import formats  # pylint: disable=g-import-not-at-top
  assert "echo" not in formats.FORMATS
  with pytest.raises(ValueError, match="Unknown: echo"):
    formats.normalize_formats(("echo",))
