"""Reading a SavedModel's signature, and the messages for a SavedModel or signature that is not there."""

import numpy as np
import pytest

from tests import saved_models
from tftrt_keras.formats.signature import TensorInfo, check_saved_model_dir, load_signature

pytestmark = pytest.mark.tf


@pytest.fixture(scope="module")
def two_inputs_dir(tmp_path_factory):
  path = tmp_path_factory.mktemp("models") / "two_inputs"
  saved_models.two_inputs(path)
  return str(path)


def test_inputs_and_outputs_by_name_dtype_and_shape(two_inputs_dir):
  loaded, function, info = load_signature(two_inputs_dir)
  assert info.key == "serving_default"
  assert info.inputs == (TensorInfo("alpha", "int32", (None, 2)), TensorInfo("zeta", "float32", (None, 3)))
  assert info.outputs == (TensorInfo("scaled", "float32", (None, 3)), TensorInfo("summed", "float32", (None,)))
  assert info.input("zeta").to_json() == {"name": "zeta", "dtype": "float32", "shape": [None, 3]}
  # The function stays callable while `loaded` is referenced (the known trap: it dies with its object).
  out = function(zeta=np.ones((1, 3), np.float32), alpha=np.ones((1, 2), np.int32))
  np.testing.assert_allclose(out["summed"].numpy(), [5.0])
  del loaded


def test_missing_directory_names_the_argument(tmp_path):
  missing = str(tmp_path / "no_such_model")
  with pytest.raises(ValueError) as info:
    load_signature(missing)
  message = str(info.value)
  assert message.startswith("Invalid value for argument `saved_model_dir`.")
  assert f"Received: saved_model_dir='{missing}'" in message
  assert "containing saved_model.pb" in message


def test_directory_without_saved_model_pb(tmp_path):
  (tmp_path / "variables").mkdir()
  with pytest.raises(ValueError, match="Expected a SavedModel directory containing saved_model.pb"):
    check_saved_model_dir(str(tmp_path))


def test_unreadable_saved_model_says_loading_failed(tmp_path):
  """A saved_model.pb that is not a SavedModel (truncated copy, wrong file): refused with the loader's error."""
  (tmp_path / "saved_model.pb").write_bytes(b"\x00garbage, not a protobuf\xff" * 4)
  with pytest.raises(ValueError) as info:
    load_signature(str(tmp_path))
  message = str(info.value)
  assert "`saved_model_dir`" in message and "Expected a loadable SavedModel" in message
  assert "Loading failed:" in message


@pytest.mark.parametrize("bad", [None, "", 42])
def test_not_a_path(bad):
  with pytest.raises(ValueError, match="`saved_model_dir`.*Expected the path of a SavedModel directory"):
    check_saved_model_dir(bad)


def test_unknown_signature_key_lists_the_available_ones(two_inputs_dir):
  with pytest.raises(ValueError) as info:
    load_signature(two_inputs_dir, signature_key="predict")
  message = str(info.value)
  assert "Invalid value for argument `signature_key`. Received: signature_key='predict'." in message
  assert "['serving_default']" in message
