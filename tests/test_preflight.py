"""Preflight: what `check_tensorrt()` reports, for each way TensorRT can be missing, and on this machine.

The diagnosis is tested through `preflight.diagnose` (pure: facts in, report out) and through
`check_tensorrt()` with `find_tensorrt_libraries` replaced by `TensorRTLibrary` records: no fake `.so` files.
"""

import os
import subprocess
import sys

import pytest

from tftrt_keras import preflight
from tftrt_keras.preflight import TensorRTLibrary, compatible_library, diagnose, parse_libnvinfer_version

PIP_TRT8_DIR = "/venv/lib/python3.11/site-packages/tensorrt_libs"
PIP_TRT10_DIR = "/venv-trt10/lib/python3.11/site-packages/tensorrt_libs"
LINKED = (8, 6, 1)
A_GPU = ["/physical_device:GPU:0"]


def _lib(directory, version, on_loader_path=False):
  return TensorRTLibrary(os.path.join(directory, "libnvinfer.so." + ".".join(map(str, version))), version,
                         on_loader_path)


@pytest.mark.unit
@pytest.mark.parametrize("name, expected", [
    ("libnvinfer.so.8.6.1", (8, 6, 1)),
    ("libnvinfer.so.8", (8,)),
    ("libnvinfer.so.10", (10,)),
    ("libnvinfer.so.10.3.0", (10, 3, 0)),
    ("libnvinfer.so", None),                      # the dev symlink carries no version
    ("libnvinfer_plugin.so.8.6.1", None),         # another library
    ("libnvinfer_builder_resource.so.8.6.1", None),
    ("libnvinfer.so.8.6.1.bak", None),
])
def test_parse_libnvinfer_version(name, expected):
  assert parse_libnvinfer_version(name) == expected


@pytest.mark.unit
def test_compatible_library_accepts_same_major_and_rejects_other_versions():
  trt10 = _lib(PIP_TRT10_DIR, (10,))
  trt8 = _lib(PIP_TRT8_DIR, (8,))
  trt85 = _lib("/opt/tensorrt/lib", (8, 5, 3))
  trt861 = _lib("/opt/tensorrt/lib", (8, 6, 1))
  assert compatible_library([trt10], LINKED) is None
  assert compatible_library([trt85], LINKED) is None  # names another minor version
  assert compatible_library([trt10, trt8], LINKED) == trt8  # the pip 8.6 wheel's `libnvinfer.so.8`
  assert compatible_library([trt861], LINKED) == trt861
  assert compatible_library([trt861], ()) is None  # TensorFlow without TF-TRT: nothing can stand in


@pytest.mark.unit
def test_nothing_installed_says_which_file_tensorflow_wants_and_how_to_install_it():
  status = diagnose("2.15.1", LINKED, (), False, A_GPU, [])
  assert not status.usable
  assert "libnvinfer.so.8.6.1" in status.reason and "not found" in status.reason
  assert 'pip install "tensorrt==8.6.1"' in " ".join(status.fixes)
  assert status.library_dir_to_add is None


@pytest.mark.unit
def test_only_tensorrt_10_installed_is_called_incompatible_plainly():
  status = diagnose("2.15.1", LINKED, (), False, A_GPU, [_lib(PIP_TRT10_DIR, (10,), on_loader_path=True)])
  assert not status.usable
  assert "TensorRT 10" in status.reason
  assert "linked against TensorRT 8.6.1" in status.reason and "not compatible" in status.reason
  assert PIP_TRT10_DIR in status.reason  # where it was found
  assert 'pip install "tensorrt==8.6.1"' in " ".join(status.fixes)
  # An incompatible library must never be handed to the worker.
  assert status.library_dir_to_add is None


@pytest.mark.unit
def test_compatible_library_off_the_loader_path_is_added_by_the_worker():
  status = diagnose("2.17.1", LINKED, (), False, A_GPU, [_lib(PIP_TRT8_DIR, (8,))])
  assert status.library_dir_to_add == PIP_TRT8_DIR
  assert "not on the loader path" in status.reason
  assert f"LD_LIBRARY_PATH={PIP_TRT8_DIR}" in " ".join(status.fixes)
  assert f"Worker adds to LD_LIBRARY_PATH: {PIP_TRT8_DIR}" in str(status)


@pytest.mark.unit
def test_pip_wheel_name_on_the_loader_path_still_needs_the_full_version_name():
  """`libnvinfer.so.8` on LD_LIBRARY_PATH is not found by TensorFlow, which dlopens `libnvinfer.so.8.6.1`."""
  status = diagnose("2.15.1", LINKED, (), False, A_GPU, [_lib(PIP_TRT8_DIR, (8,), on_loader_path=True)])
  assert status.library_dir_to_add == PIP_TRT8_DIR
  assert "under another name" in status.reason and "libnvinfer.so.8.6.1" in status.reason


@pytest.mark.unit
def test_exact_library_on_the_path_but_not_loadable_points_at_missing_dependencies():
  status = diagnose("2.15.1", LINKED, (), False, A_GPU, [_lib("/usr/lib/x86_64-linux-gnu", LINKED, True)])
  assert status.library_dir_to_add is None
  assert "could not load it" in status.reason
  assert "LD_DEBUG=libs" in " ".join(status.fixes)


@pytest.mark.unit
def test_tensorflow_without_tftrt_and_without_gpu():
  status = diagnose("2.18.0", (), (), False, [], [])
  assert "has no TF-TRT" in status.reason and "2.15-2.17" in status.reason
  assert "no GPU visible" in status.reason
  assert len(status.fixes) == 2


@pytest.mark.unit
def test_usable_when_tensorrt_loads_and_a_gpu_is_visible():
  status = diagnose("2.15.1", LINKED, LINKED, True, A_GPU, [_lib("/usr/lib/x86_64-linux-gnu", LINKED, True)])
  assert status.usable and status.reason == "" and status.fixes == []
  assert status.environment() == {"tensorflow": "2.15.1", "tensorrt_linked": "8.6.1", "tensorrt_loaded": "8.6.1",
                                  "gpu": A_GPU}
  assert "TF-TRT usable:          yes" in str(status)


@pytest.mark.unit
def test_loader_dirs_for_links_the_pip_wheel_under_the_name_tensorflow_opens(tmp_path):
  """The worker's symlink directory: `libnvinfer.so.8.6.1` -> the wheel's `libnvinfer.so.8` (real files, no .so
  content needed: the loader is not involved here)."""
  wheel = tmp_path / "tensorrt_libs"
  wheel.mkdir()
  for name in ("libnvinfer.so.8", "libnvinfer_plugin.so.8", "libnvinfer_builder_resource.so.8.6.1"):
    (wheel / name).write_bytes(b"")
  status = diagnose("2.15.1", LINKED, (), False, A_GPU, [_lib(str(wheel), (8,))])
  dirs = preflight.loader_dirs_for(status, cache_dir=str(tmp_path / "cache"))
  link_dir = tmp_path / "cache" / "tensorrt-8.6.1"
  assert dirs == [str(link_dir), str(wheel)]
  assert os.readlink(link_dir / "libnvinfer.so.8.6.1") == str(wheel / "libnvinfer.so.8")
  assert os.readlink(link_dir / "libnvinfer_plugin.so.8.6.1") == str(wheel / "libnvinfer_plugin.so.8")
  env = preflight.worker_environment(status, base_env={"LD_LIBRARY_PATH": "/already/there"})
  assert env["LD_LIBRARY_PATH"].split(os.pathsep)[-1] == "/already/there"
  assert env["LD_LIBRARY_PATH"].split(os.pathsep)[1] == str(wheel)


@pytest.mark.unit
def test_loader_dirs_for_nothing_to_add():
  assert preflight.loader_dirs_for(diagnose("2.15.1", LINKED, (), False, A_GPU, [])) == []
  assert preflight.worker_environment(None, base_env={"A": "1"}) == {"A": "1"}


@pytest.mark.tf
def test_check_tensorrt_reads_the_libraries_it_finds(monkeypatch):
  """The real probe, with the library search replaced by records: TensorRT 10 only, as `pip install tensorrt` gives."""
  monkeypatch.setattr(preflight, "find_tensorrt_libraries", lambda: [_lib(PIP_TRT10_DIR, (10,), True)])
  status = preflight.check_tensorrt()
  if status.tftrt_enabled or not status.tensorrt_linked:
    pytest.skip(f"this TensorFlow has TensorRT loaded or no TF-TRT at all ({status.environment()})")
  assert "TensorRT 10" in status.reason and "not compatible" in status.reason


@pytest.mark.tf
def test_check_tensorrt_on_this_machine():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  status = preflight.check_tensorrt()
  if status.usable:
    pytest.skip("TF-TRT is usable here; the not-usable report is what this test checks")
  assert status.tensorflow == tf.__version__
  assert "TensorRT" in status.reason
  if not tf.config.list_physical_devices("GPU"):
    assert "GPU" in status.reason
  report = str(status)
  assert f"TensorFlow:             {tf.__version__}" in report
  assert "TF-TRT usable:          no" in report and "Fix:" in report


@pytest.mark.tf
def test_preflight_module_prints_the_report_and_exits_1_when_not_usable():
  result = subprocess.run([sys.executable, "-m", "tftrt_keras.preflight"], capture_output=True, text=True,
                          timeout=120, check=False)
  if result.returncode == 0:
    pytest.skip("TF-TRT is usable here: the command exits 0")
  assert result.returncode == 1, result.stderr
  assert "TF-TRT usable:          no" in result.stdout
  assert "Problem:" in result.stdout and "Fix:" in result.stdout
