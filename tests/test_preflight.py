"""Preflight: what `check_tftrt()` reports, for each way TensorRT can be missing, and on this machine.

The diagnosis is tested through `preflight.diagnose` (pure: facts in, report out) and through
`check_tftrt()` given real temporary directories to search (empty files named like the libraries: they are
only listed, never loaded). Nothing in the product is patched. The worker-side question
(`check_tftrt_as_worker`, what `require_tensorrt=True` asks) runs in a real child process and is compared with
what a real export worker records.
"""

import os
import shutil
import subprocess
import sys

import pytest

from tests import saved_models
from tftrt_keras.pipeline import prepare
from tftrt_keras import preflight
from tftrt_keras.options import ConversionOptions
from tftrt_keras.errors import TensorRTUnavailableError
from tftrt_keras.preflight import require_tensorrt_or_raise
from tftrt_keras.formats.tftrt import gpu_memory, libraries
from tftrt_keras.formats.tftrt.libraries import TensorRTLibrary, compatible_library, parse_libnvinfer_version
from tftrt_keras.formats.tftrt.status import diagnose
from tftrt_keras.pipeline import worker_setup

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
  dirs = libraries.loader_dirs_for(status, cache_dir=str(tmp_path / "cache"))
  link_dir = tmp_path / "cache" / "tensorrt-8.6.1"
  assert dirs == [str(link_dir), str(wheel)]
  assert os.readlink(link_dir / "libnvinfer.so.8.6.1") == str(wheel / "libnvinfer.so.8")
  assert os.readlink(link_dir / "libnvinfer_plugin.so.8.6.1") == str(wheel / "libnvinfer_plugin.so.8")
  env = libraries.worker_environment(status, base_env={"LD_LIBRARY_PATH": "/already/there"})
  assert env["LD_LIBRARY_PATH"].split(os.pathsep)[-1] == "/already/there"
  assert env["LD_LIBRARY_PATH"].split(os.pathsep)[1] == str(wheel)


@pytest.mark.unit
def test_loader_dirs_for_nothing_to_add():
  assert libraries.loader_dirs_for(diagnose("2.15.1", LINKED, (), False, A_GPU, [])) == []
  assert libraries.worker_environment(None, base_env={"A": "1"}) == {"A": "1"}


@pytest.mark.unit
def test_find_tensorrt_libraries_in_given_directories(tmp_path):
  loader, wheel = tmp_path / "loader", tmp_path / "wheel"
  for directory, names in ((loader, ("libnvinfer.so.10", "libnvinfer.so", "libnvinfer_plugin.so.10")),
                           (wheel, ("libnvinfer.so.8", "libnvinfer.so.8.6.1"))):
    directory.mkdir()
    for name in names:
      (directory / name).write_bytes(b"")
  found = libraries.find_tensorrt_libraries(search_dirs=[str(loader), str(wheel), str(tmp_path / "absent")],
                                            on_loader_path=[str(loader)])
  assert found == [TensorRTLibrary(str(loader / "libnvinfer.so.10"), (10,), True),
                   TensorRTLibrary(str(wheel / "libnvinfer.so.8"), (8,), False),
                   TensorRTLibrary(str(wheel / "libnvinfer.so.8.6.1"), (8, 6, 1), False)]


@pytest.mark.tf
def test_check_tensorrt_reads_the_libraries_it_finds(tmp_path):
  """The real probe, searching a real directory that holds TensorRT 10 only, as `pip install tensorrt` gives."""
  trt10 = tmp_path / "tensorrt_libs"
  trt10.mkdir()
  (trt10 / "libnvinfer.so.10").write_bytes(b"")
  status = preflight.check_tftrt(search_dirs=[str(trt10)], on_loader_path=[str(trt10)], nvidia_smi=None)
  if status.tftrt_enabled or not status.tensorrt_linked:
    pytest.skip(f"this TensorFlow has TensorRT loaded or no TF-TRT at all ({status.environment()})")
  assert "TensorRT 10" in status.reason and "not compatible" in status.reason and str(trt10) in status.reason
  assert status.library_dir_to_add is None


@pytest.mark.unit
def test_parse_nvidia_smi_memory():
  text = "0, NVIDIA A100-SXM4-40GB, 40960, 39012, 1948\n1, NVIDIA A100-SXM4-40GB, 40960, 3, 40957\n[N/A]\n"
  gpus = gpu_memory.parse_nvidia_smi_memory(text)
  assert gpus == [{"index": 0, "name": "NVIDIA A100-SXM4-40GB", "total_mb": 40960, "used_mb": 39012, "free_mb": 1948},
                  {"index": 1, "name": "NVIDIA A100-SXM4-40GB", "total_mb": 40960, "used_mb": 3, "free_mb": 40957}]
  assert gpu_memory.describe_gpu_memory({"source": "nvidia-smi", "gpus": gpus[:1]}) == (
      "GPU 0 (NVIDIA A100-SXM4-40GB): 1948 of 40960 MiB free")


@pytest.mark.unit
def test_gpu_memory_is_unknown_without_nvidia_smi():
  memory = gpu_memory.query_gpu_memory("no-such-nvidia-smi-here")
  assert memory["source"] == "unknown" and memory["reason"] == "no-such-nvidia-smi-here not found"
  assert gpu_memory.describe_gpu_memory(memory) == "unknown (no-such-nvidia-smi-here not found)"
  assert gpu_memory.query_gpu_memory(None) is None


@pytest.mark.tf
def test_gpu_memory_is_recorded_in_the_status_and_the_report():
  status = preflight.check_tftrt()
  memory = status.environment()["gpu_memory"]
  if shutil.which("nvidia-smi"):
    assert memory["source"] in ("nvidia-smi", "unknown")
  else:
    assert memory == {"source": "unknown", "reason": "nvidia-smi not found", **(
        {"cuda_visible_devices": os.environ["CUDA_VISIBLE_DEVICES"]} if "CUDA_VISIBLE_DEVICES" in os.environ else {})}
    assert "GPU memory:             unknown (nvidia-smi not found)" in str(status)


@pytest.mark.unit
@pytest.mark.parametrize("device, inherited, expected", [
    (None, "0,1", None),          # leave the trainer's choice alone
    ("cpu", None, "-1"),
    ("cpu", "0", "-1"),
    ("gpu:1", None, "1"),
    ("gpu:1", "", "1"),
    ("gpu:1", "4,7", "7"),         # counted among the GPUs the trainer sees
    ("gpu:0", "GPU-8f2a-uuid", "GPU-8f2a-uuid"),
])
def test_visible_devices_for(device, inherited, expected):
  assert worker_setup.visible_devices_for(device, inherited) == expected


@pytest.mark.unit
def test_visible_devices_for_a_gpu_the_trainer_cannot_see():
  with pytest.raises(ValueError, match=r"conversion_device='gpu:2', but the training process sees only 2 GPU"):
    worker_setup.visible_devices_for("gpu:2", "0,1")
  with pytest.raises(ValueError, match="sees only 0 GPU"):
    worker_setup.visible_devices_for("gpu:0", "-1")


@pytest.mark.unit
def test_select_conversion_device_applies_once_across_a_re_exec():
  environ = {"CUDA_VISIBLE_DEVICES": "4,7"}
  assert worker_setup.select_conversion_device("gpu:1", environ) == "7"
  # The re-executed worker inherits the narrowed list and the mark: index 1 of ["7"] is not applied again.
  assert worker_setup.select_conversion_device("gpu:1", dict(environ)) == "7"


@pytest.mark.tf
@pytest.mark.slow
def test_require_tensorrt_asks_a_worker_like_child_and_gets_the_workers_answer(tmp_path):
  """The child's reason is the reason a real export worker records for its TF-TRT variants."""
  child = preflight.check_tftrt_as_worker()
  request = prepare.prepare_export(str(tmp_path / "exports"), 1, {"kind": "test"},
                                    ConversionOptions(precisions=("FP32",), formats=("tftrt",), verify=False),
                                    write_native=lambda d: saved_models.classifier(d),
                                    batches=[saved_models.samples(4)])
  from tftrt_keras.pipeline.worker import ConversionWorker  # pylint: disable=g-import-not-at-top
  entry = ConversionWorker(request).wait(timeout=300)["artifacts"]["tftrt_fp32"]
  if child.usable:
    # Built (its engines counted); verify=False: never compared, so unverified, saying so.
    assert entry["status"] == "unverified" and entry["engines_serialized"] >= 1, entry
  else:
    assert entry == {"status": "skipped", "path": None, "reason": child.reason}
    with pytest.raises(TensorRTUnavailableError) as info:
      require_tensorrt_or_raise(ConversionOptions())
    assert child.reason in str(info.value) and "in the export worker" in str(info.value)


@pytest.mark.tf
def test_require_tensorrt_names_why_each_requested_tensorrt_format_cannot_run_here():
  """The formats' own reasons, one per requested TensorRT format (ONNX is no TensorRT route and is not named)."""
  from tftrt_keras.formats import load_format  # pylint: disable=g-import-not-at-top
  options = ConversionOptions(formats=("onnx", "tftrt", "trt", "trt_rtx"), require_tensorrt=True)
  try:
    reasons = require_tensorrt_or_raise(options)
  except TensorRTUnavailableError as err:
    message = str(err)
  else:
    pytest.skip(f"a TensorRT format runs here: {reasons}")
  assert message.startswith("require_tensorrt=True, but no requested TensorRT format can build and run engines "
                            "here: tftrt: TF-TRT cannot run in the export worker: "), message
  assert "Fix:" in message
  trt_reason = load_format("trt").unavailable_reason(options)
  assert f"; trt: {trt_reason}; trt_rtx: " in message, message
  assert "onnx: " not in message


@pytest.mark.tf
def test_require_tensorrt_is_met_by_one_requested_format_that_runs(fake_tftrt):
  """TEST DOUBLE backend for TF-TRT (it can always "convert"): onnx + trt + tftrt with trt unusable here still
  satisfies require_tensorrt, and the answer says which format works."""
  options = ConversionOptions(formats=("onnx", "trt", "tftrt"), require_tensorrt=True)
  reasons = require_tensorrt_or_raise(options)
  assert set(reasons) == {"trt", "tftrt"} and reasons["tftrt"] is None, reasons


@pytest.mark.unit
def test_require_tensorrt_without_a_tensorrt_format_is_a_bad_argument():
  with pytest.raises(ValueError, match="`require_tensorrt`"):
    require_tensorrt_or_raise(ConversionOptions(formats=("onnx",), require_tensorrt=True))


@pytest.mark.tf
def test_the_child_check_applies_the_conversion_device(monkeypatch):
  monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
  status = preflight.check_tftrt_as_worker("gpu:3")
  assert not status.usable
  assert status.reason == ("conversion_device='gpu:3', but the training process sees only 1 GPU(s) "
                           "(CUDA_VISIBLE_DEVICES='0')")


@pytest.mark.unit
def test_status_round_trips_through_json():
  status = diagnose("2.17.1", LINKED, (), False, A_GPU, [_lib(PIP_TRT8_DIR, (8,))])
  status.gpu_memory = {"source": "unknown", "reason": "nvidia-smi not found"}
  data = status.to_json()
  assert data["usable"] is False and data["reason"] == status.reason
  assert preflight.TfTrtStatus.from_json(data) == status


@pytest.mark.tf
def test_check_tensorrt_on_this_machine():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  status = preflight.check_tftrt()
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


@pytest.mark.tf
def test_preflight_lists_which_formats_run_here_and_exits_by_tensorrt():
  """The printed report names every format `auto` builds here, with the format's own reason where it cannot;
  the exit status says whether any TensorRT route (TF-TRT or native engines) works on this machine."""
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  from tftrt_keras import formats, preflight  # pylint: disable=g-import-not-at-top
  from tftrt_keras.options import ConversionOptions  # pylint: disable=g-import-not-at-top
  done = subprocess.run([sys.executable, "-m", "tftrt_keras.preflight"], capture_output=True, text=True,
                        timeout=300, check=False)
  expected = preflight.formats_here()
  assert list(expected) == list(formats.resolve_formats("auto"))
  lines = done.stdout.splitlines()
  start = lines.index('Formats on this machine (what `formats="auto"` builds):')
  for name, line in zip(expected, lines[start + 1:]):
    reason = formats.load_format(name).unavailable_reason(ConversionOptions())
    assert line == f"  {name:<8} {'yes' if reason is None else 'no: ' + reason}"
  tensorrt_route = preflight.check_tftrt().usable or expected.get("trt", "") is None
  assert done.returncode == (0 if tensorrt_route else 1), done.stderr[-2000:]
  assert preflight.engine_builders_text() in done.stdout


@pytest.mark.unit
def test_preflight_says_which_tensorrt_builders_are_here_and_what_can_run_engines():
  """TensorRT and TensorRT-RTX, each installed (version, what it builds here) or not (what to install); and the
  GPUs that could run engines, or why there are none. Spelled out for this project's machines: no `tensorrt`,
  TensorRT-RTX 1.7 installed, no driver."""
  from tftrt_keras.formats.tensorrt import build  # pylint: disable=g-import-not-at-top
  from tftrt_keras.formats.tensorrt.format import probe  # pylint: disable=g-import-not-at-top
  lines = preflight.engine_builders_text().splitlines()
  assert [line[:24] for line in lines] == ["TensorRT builder:       ", "TensorRT-RTX builder:   ",
                                           "Engines can run here:   "]
  tensorrt, tensorrt_rtx = probe(edition=build.TENSORRT), probe(edition=build.TENSORRT_RTX)
  if tensorrt.tensorrt_version is None:
    assert lines[0].endswith(f"not installed ({tensorrt.tensorrt_error}); {build.TENSORRT_INSTALL}")
  else:
    assert lines[0][24:].startswith(tensorrt.tensorrt_version + " (")
  if tensorrt_rtx.tensorrt_version is None:
    assert lines[1].endswith(f"not installed ({tensorrt_rtx.tensorrt_error}); {build.TENSORRT_RTX_INSTALL}")
  else:
    assert lines[1][24:] == (f"{tensorrt_rtx.tensorrt_version} (builds engines here, GPU or not, for compute capability "
                             "8.6, 8.9, 12.0 by default, 7.5, 8.0, 12.1 on request; running them needs an NVIDIA GPU "
                             "of a targeted compute capability and its driver)")
  if tensorrt_rtx.gpus:
    assert lines[2][24:] == "; ".join(f"GPU {g.index}: {g.name}, compute capability {g.compute_capability}"
                                      for g in tensorrt_rtx.gpus)
  elif not os.path.exists("/proc/driver/nvidia") and tensorrt_rtx.cuda_python_version:
    assert lines[2][24:] == ("no: CUDA finds no GPU here (cudaGetDeviceCount failed: cudaErrorInsufficientDriver "
                             "(no NVIDIA driver is loaded: this machine has no usable GPU))")
  else:
    assert lines[2].startswith("Engines can run here:   no: ")
