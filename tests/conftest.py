"""Shared test set-up: the repository on sys.path (for the worker's `tests.fake_trt_backend`), markers."""

import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
  sys.path.insert(0, ROOT)
# Export workers are child processes: they must find `tests.*` (the test double) too.
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


from tests import keras_models  # noqa: E402  (needs ROOT on sys.path)


def tensorrt_skip_reason():
  """Why the `trt` tier cannot run here, or None when TF-TRT and a GPU are usable.

  Asked as the export worker asks (a child process with the worker's library path), so a pip TensorRT that
  only the worker makes findable counts as usable."""
  from tftrt_keras.preflight import check_tensorrt_as_worker  # pylint: disable=g-import-not-at-top
  status = check_tensorrt_as_worker()
  return None if status.usable else f"TF-TRT cannot run on this machine: {status.reason}"


@pytest.fixture(scope="session")
def require_tensorrt_here():
  reason = tensorrt_skip_reason()
  if reason:
    pytest.skip(reason)


# Keras flavour fixtures (see tests/keras_models.py).
@pytest.fixture(params=keras_models.flavors())
def keras(request):
  """Every Keras flavour of this TF line (for the behaviours that differ between Keras 2 and 3)."""
  module = keras_models.keras_for(request.param)
  module.utils.set_random_seed(0)
  return module


@pytest.fixture
def primary_keras():
  """The TF line's default Keras (tf.keras 2 on TF 2.15, Keras 3 on TF 2.17)."""
  module = keras_models.keras_for(keras_models.flavors()[0])
  module.utils.set_random_seed(0)
  return module


