"""Calibration samples on disk (.npz, no pickle) and their check against a signature."""

import os
import zipfile

import numpy as np
import pytest

from tftrt_keras.samples import calibration_data
from tftrt_keras.formats.signature import SignatureInfo, TensorInfo

pytestmark = pytest.mark.unit

TWO_INPUTS = SignatureInfo("serving_default",
                           (TensorInfo("alpha", "int32", (None, 2)), TensorInfo("zeta", "float32", (None, 3))),
                           (TensorInfo("scaled", "float32", (None, 3)),))


def _good(n=5):
  return {"zeta": np.ones((n, 3), np.float32), "alpha": np.zeros((n, 2), np.int32)}


def test_save_and_load_round_trip_one_array_per_input_without_pickle(tmp_path):
  path = str(tmp_path / "calibration.npz")
  calibration_data.save_samples(path, _good(4))
  assert os.listdir(tmp_path) == ["calibration.npz"]  # the temp file was renamed away
  with zipfile.ZipFile(path) as archive:
    assert sorted(archive.namelist()) == ["alpha.npy", "zeta.npy"]
  loaded = calibration_data.load_samples(path)
  assert sorted(loaded) == ["alpha", "zeta"]
  assert loaded["zeta"].shape == (4, 3) and loaded["alpha"].dtype == np.int32
  calibration_data.check_against_signature(loaded, TWO_INPUTS)


def test_pickled_object_arrays_are_refused(tmp_path):
  path = str(tmp_path / "objects.npz")
  np.savez(path, zeta=np.array([{"a": 1}, None], dtype=object))
  with pytest.raises(ValueError, match=r"Invalid value for argument `calibration_data`.*readable \.npz"):
    calibration_data.load_samples(path)


def test_not_an_npz_file_names_the_argument(tmp_path):
  path = tmp_path / "calibration.npz"
  path.write_text("not a zip")
  with pytest.raises(ValueError, match=r"`calibration_data`.*Received: calibration_data='.*calibration\.npz'"):
    calibration_data.load_samples(str(path))


@pytest.mark.parametrize("arrays, received, expected", [
    ({"zeta": np.ones((5, 3), np.float32)}, "arrays named ['zeta']", "named ['alpha', 'zeta']"),
    (dict(_good(), beta=np.ones((5, 1))), "arrays named ['alpha', 'beta', 'zeta']", "named ['alpha', 'zeta']"),
    (dict(_good(), alpha=np.zeros((5, 2), np.float32)), "alpha: dtype float32", "alpha: dtype int32"),
    (dict(_good(), zeta=np.ones((5, 4), np.float32)), "zeta: shape (5, 4)", "zeta: shape (None, 3)"),
    (dict(_good(), zeta=np.ones((5, 3, 1), np.float32)), "zeta: shape (5, 3, 1)", "zeta: shape (None, 3)"),
    (dict(_good(), alpha=np.zeros((4, 2), np.int32)), "sample counts", "same, non-zero number of samples"),
    ({"zeta": np.ones((0, 3), np.float32), "alpha": np.zeros((0, 2), np.int32)}, "sample counts", "non-zero"),
])
def test_arrays_that_do_not_match_the_signature_are_refused(arrays, received, expected):
  with pytest.raises(ValueError) as info:
    calibration_data.check_against_signature(arrays, TWO_INPUTS)
  message = str(info.value)
  assert message.startswith("Invalid value for argument `calibration_data`.")
  assert received in message and expected in message


def test_string_inputs_accept_bytes_and_unicode_arrays():
  signature = SignatureInfo("s", (TensorInfo("token", "string", (None,)),), ())
  calibration_data.check_against_signature({"token": np.array([b"a", b"b"])}, signature)
  calibration_data.check_against_signature({"token": np.array(["a", "b"])}, signature)
  with pytest.raises(ValueError, match="token: dtype int64"):
    calibration_data.check_against_signature({"token": np.array([1, 2])}, signature)


def test_batches_split_along_axis_0_and_keep_every_sample():
  arrays = {"zeta": np.arange(30, dtype=np.float32).reshape(10, 3), "alpha": np.zeros((10, 2), np.int32)}
  batches = calibration_data.batches(arrays, 4)
  assert [calibration_data.num_samples(b) for b in batches] == [4, 4, 2]
  np.testing.assert_array_equal(np.concatenate([b["zeta"] for b in batches]), arrays["zeta"])
  assert calibration_data.num_samples({}) == 0
