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


def tensorrt_skip_reason():
  """Why the `trt` tier cannot run here, or None when TF-TRT and a GPU are usable."""
  from tftrt_keras.preflight import check_tensorrt  # pylint: disable=g-import-not-at-top
  status = check_tensorrt()
  return None if status.usable else f"TF-TRT cannot run on this machine: {status.reason}"


@pytest.fixture(scope="session")
def require_tensorrt_here():
  reason = tensorrt_skip_reason()
  if reason:
    pytest.skip(reason)
