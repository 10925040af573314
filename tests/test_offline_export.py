"""`export_saved_model`: the offline exporter's Python API, on real SavedModels with real worker processes.

Every bad argument fails at once, names the argument, what was received and what is expected, and leaves the
output directory absent (or unchanged when it existed).
"""

import filecmp
import os

import numpy as np
import pytest

from tests import saved_models
from tftrt_keras.options import ConversionOptions
from tftrt_keras.errors import TensorRTUnavailableError
from tftrt_keras.formats import load_format
from tftrt_keras.offline.export import export_saved_model
from tftrt_keras.preflight import check_tftrt

pytestmark = pytest.mark.tf

NO_INT8 = ConversionOptions(precisions=("FP32", "FP16"))


@pytest.fixture(scope="module")
def models(tmp_path_factory):
  base = tmp_path_factory.mktemp("offline")
  saved_models.classifier(base / "classifier", seed=1)
  saved_models.two_inputs(base / "two_inputs")
  np.savez(base / "calibration.npz", **saved_models.samples(20, seed=2))
  return base


@pytest.fixture(scope="module")
def exported(models):
  """Two exports into one root: FP16+INT8 with calibration data, then FP32 without."""
  root = models / "exports"
  first = export_saved_model(str(models / "classifier"), str(root), calibration_data=str(models / "calibration.npz"),
                             options=ConversionOptions(precisions=("FP16", "INT8"), formats=("tftrt",)))
  second = export_saved_model(str(models / "classifier"), str(root),
                              options=ConversionOptions(precisions=("FP32",), formats=("tftrt",)))
  return root, first, second


def _tree(path):
  """Every file under `path` with its size and mtime: equal trees mean nothing was touched."""
  if not os.path.exists(path):
    return None
  return sorted((os.path.relpath(os.path.join(d, f), path), os.stat(os.path.join(d, f)).st_size,
                 os.stat(os.path.join(d, f)).st_mtime_ns) for d, _, files in os.walk(path) for f in files)


def _same_files(a, b):
  comparison = filecmp.dircmp(a, b)
  if comparison.left_only or comparison.right_only or comparison.funny_files:
    return False
  _, mismatch, errors = filecmp.cmpfiles(a, b, comparison.common_files, shallow=False)
  return not mismatch and not errors and all(_same_files(os.path.join(a, d), os.path.join(b, d))
                                             for d in comparison.common_dirs)


def test_normal_export_is_a_byte_identical_copy(models, exported):
  root, _, _ = exported
  assert _same_files(str(models / "classifier"), str(root / "1"))
  assert _same_files(str(models / "classifier"), str(root / "2"))


def test_versions_are_numbered_and_manifests_list_only_requested_artifacts(exported):
  root, first, second = exported
  assert (first["version"], second["version"]) == (1, 2)
  assert list(first["artifacts"]) == ["native", "frozen", "calibration", "tftrt_fp16", "tftrt_int8"]
  assert list(second["artifacts"]) == ["native", "frozen", "calibration", "tftrt_fp32"]
  assert sorted(os.listdir(root / "manifests")) == ["1", "2"]
  assert first["source"]["kind"] == "saved_model"
  assert first["artifacts"]["calibration"]["status"] == "ok"
  assert second["artifacts"]["calibration"]["status"] == "skipped"  # no calibration data given
  for manifest in (first, second):
    assert manifest["artifacts"]["native"]["status"] == "ok"
    assert manifest["worker"].get("exit", 0) == 0
  assert first["artifacts"]["frozen"]["status"] == "ok"  # compared with the normal export on 5 held-out samples
  # Without samples nothing is compared: built and build-checked, and said so.
  assert second["artifacts"]["frozen"]["status"] == "unverified"
  assert second["artifacts"]["frozen"]["reason"].startswith("no held-out samples")


def test_tftrt_variants_skipped_with_the_formats_reason_or_built(exported):
  _, first, second = exported
  reason = load_format("tftrt").unavailable_reason(ConversionOptions())
  for manifest, names in ((first, ("tftrt_fp16", "tftrt_int8")), (second, ("tftrt_fp32",))):
    for name in names:
      if reason is None:  # TF-TRT runs here (the trt tier's machines): built, its engines counted by the format
        # (FP16/INT8 on 5 held-out samples, and anything without samples, cannot be shown right: unverified)
        assert manifest["artifacts"][name]["status"] in ("ok", "unverified"), manifest["artifacts"][name]
      else:
        assert manifest["artifacts"][name]["status"] == "skipped"
        assert manifest["artifacts"][name]["reason"] == reason


def test_require_tensorrt_raises_before_any_work(models):
  if check_tftrt().usable:
    pytest.skip("TF-TRT is usable here: require_tensorrt=True does not raise")
  out = models / "required"
  with pytest.raises(TensorRTUnavailableError) as info:
    export_saved_model(str(models / "classifier"), str(out), options=ConversionOptions(
        precisions=("FP16",), require_tensorrt=True))
  assert "require_tensorrt=True" in str(info.value) and "TensorRT" in str(info.value) and "Fix:" in str(info.value)
  assert not out.exists()


# --- bad input: each fails at once and writes nothing ---------------------------------------------------------

def _refused(models, out, expected_fragments, **kwargs):
  kwargs.setdefault("saved_model_dir", str(models / "classifier"))
  kwargs.setdefault("options", NO_INT8)
  before = _tree(out)
  with pytest.raises(ValueError) as info:
    export_saved_model(output_dir=str(out), **kwargs)
  message = str(info.value)
  for fragment in expected_fragments:
    assert fragment in message, message
  assert _tree(out) == before
  return message


def test_unknown_precision(models):
  with pytest.raises(ValueError) as info:
    ConversionOptions(precisions=("FP16", "FP8"))
  assert str(info.value).startswith("Invalid value for argument `precisions`. Received: precisions=('FP16', 'FP8')")
  assert "('FP32', 'FP16', 'INT8')" in str(info.value)


def test_missing_saved_model(models, tmp_path):
  _refused(models, tmp_path / "out", ["`saved_model_dir`", "no_model", "containing saved_model.pb"],
           saved_model_dir=str(tmp_path / "no_model"))


def test_unreadable_saved_model(models, tmp_path):
  broken = tmp_path / "broken"
  broken.mkdir()
  (broken / "saved_model.pb").write_bytes(b"\x08\x01 truncated")
  _refused(models, tmp_path / "out", ["`saved_model_dir`", "a loadable SavedModel", "Loading failed"],
           saved_model_dir=str(broken))


def test_unknown_signature_key_lists_available(models, tmp_path):
  _refused(models, tmp_path / "out", ["`signature_key`", "signature_key='classify'", "['serving_default']"],
           signature_key="classify")


def test_int8_without_calibration_data(models, tmp_path):
  _refused(models, tmp_path / "out", ["`calibration_data`", "calibration_data=None", "INT8"],
           options=ConversionOptions(precisions=("INT8",)))


def test_calibration_path_that_does_not_exist(models, tmp_path):
  _refused(models, tmp_path / "out", ["`calibration_data`", "missing.npz", "existing .npz"],
           calibration_data=str(tmp_path / "missing.npz"))


@pytest.mark.parametrize("arrays, fragments", [
    ({"zeta": np.zeros((4, 3), np.float32)}, ["arrays named ['zeta']", "named ['alpha', 'zeta']"]),
    ({"zeta": np.zeros((4, 3), np.float64), "alpha": np.zeros((4, 2), np.int32)},
     ["zeta: dtype float64", "zeta: dtype float32"]),
    ({"zeta": np.zeros((4, 3), np.float32), "alpha": np.zeros((4, 5), np.int32)},
     ["alpha: shape (4, 5)", "alpha: shape (None, 2)"]),
])
def test_calibration_arrays_that_do_not_match_the_signature(models, tmp_path, arrays, fragments):
  path = tmp_path / "calibration.npz"
  np.savez(path, **arrays)
  _refused(models, tmp_path / "out", ["`calibration_data`"] + fragments,
           saved_model_dir=str(models / "two_inputs"), calibration_data=str(path),
           options=ConversionOptions(precisions=("INT8",)))


def test_existing_output_dir_is_left_unchanged_on_bad_input(models, tmp_path):
  out = tmp_path / "out"
  out.mkdir()
  (out / "keep.txt").write_text("user data")
  _refused(models, out, ["`calibration_data`"], options=ConversionOptions(precisions=("FP16", "INT8")))
  assert os.listdir(out) == ["keep.txt"]


def test_output_dir_under_a_regular_file(models, tmp_path):
  """Root ignores permission bits, so non-writable is made real with a path the kernel cannot create."""
  blocker = tmp_path / "a_file"
  blocker.write_text("not a directory")
  message = _refused(models, blocker / "sub", ["`output_dir`", "a_file/sub", "create and write", "is a file"])
  assert message.startswith("Invalid value for argument `output_dir`.")
  assert blocker.read_text() == "not a directory"


def test_output_dir_that_is_a_file(models, tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("x")
  _refused(models, blocker, ["`output_dir`", "existing file"])


def test_output_dir_the_kernel_refuses(models):
  """sysfs accepts no new directories, not even from root: the refusal comes from the file system itself."""
  out = "/sys/tftrt_keras_test_export"
  if not os.path.isdir("/sys/kernel"):
    pytest.skip("no sysfs mounted at /sys")
  with pytest.raises(ValueError) as info:
    export_saved_model(str(models / "classifier"), out, options=NO_INT8)
  assert str(info.value).startswith(f"Invalid value for argument `output_dir`. Received: output_dir='{out}'")
  assert not os.path.exists(out)


def test_bad_calibration_batch_size(models, tmp_path):
  _refused(models, tmp_path / "out", ["`calibration_batch_size`", "calibration_batch_size=0", "positive integer"],
           calibration_batch_size=0)
