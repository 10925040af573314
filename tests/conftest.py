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
from tests import corpus_scripts  # noqa: E402
from tests import sharding  # noqa: E402


@pytest.fixture
def fake_tftrt(monkeypatch):
  """TEST DOUBLE: TF-TRT variants come from `tests.fake_trt_backend` (TF-TRT cannot run here), in this process
  and in the export workers it starts (they inherit the environment)."""
  from tftrt_keras.formats.tftrt.backend import CONVERTER_VARIABLE  # pylint: disable=g-import-not-at-top
  from tests.saved_models import FAKE_BACKEND  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv(CONVERTER_VARIABLE, FAKE_BACKEND)


def tensorrt_skip_reason():
  """Why the `trt` tier cannot run here, or None when TF-TRT and a GPU are usable.

  Asked as the export worker asks (a child process with the worker's library path), so a pip TensorRT that
  only the worker makes findable counts as usable."""
  from tftrt_keras.preflight import check_tftrt_as_worker  # pylint: disable=g-import-not-at-top
  status = check_tftrt_as_worker()
  return None if status.usable else f"TF-TRT cannot run on this machine: {status.reason}"


# --- --require-tier: a GPU run asked for a tier, so its skips are failures ---------------------------------------

def pytest_addoption(parser):
  parser.addoption("--require-tier", action="append", default=[], metavar="MARKER",
                   help="a test carrying MARKER that skips fails instead, and a run in which no test carrying it "
                        "ran fails (scripts/run_gpu_tests.sh: the tier it was asked to run must run)")
  parser.addoption("--shard", default=None, metavar="K/N",
                   help="run the K-th of N parts of the tests, whole files each (tests/sharding.py)")


def pytest_configure(config):
  if config.getoption("--shard"):
    try:
      sharding.parse(config.getoption("--shard"))
    except ValueError as err:
      raise pytest.UsageError(str(err)) from err


def pytest_collection_modifyitems(config, items):
  line = corpus_scripts.tf_line()
  for item in items:
    marker = item.get_closest_marker("lines")
    if marker and line not in marker.args:
      # Not a pass: said as a skip, with the lines that do run it.
      item.add_marker(pytest.mark.skip(reason=f"runs on TF {' and '.join(marker.args)} only (this is TF {line}): "
                                              f"{marker.kwargs.get('why', 'the machinery it checks is ours')}"))
  if not config.getoption("--shard"):
    return
  kept, dropped = sharding.select(items, config.getoption("--shard"),
                                  lambda item: os.path.relpath(str(item.path), ROOT))
  if dropped:
    config.hook.pytest_deselected(items=dropped)
    items[:] = kept


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):  # pylint: disable=unused-argument
  outcome = yield
  report = outcome.get_result()
  required = [m for m in item.config.getoption("--require-tier") if item.get_closest_marker(m)]
  if not required:
    return
  item.config.stash.setdefault(_RAN, set()).update(required)
  if report.skipped and not hasattr(report, "wasxfail"):
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = (f"the {', '.join(required)} tier is required here (--require-tier), but this test skipped: "
                       f"{reason}")


def pytest_sessionfinish(session, exitstatus):
  required = session.config.getoption("--require-tier")
  missing = sorted(set(required) - session.config.stash.get(_RAN, set()))
  if missing and exitstatus in (pytest.ExitCode.OK, pytest.ExitCode.NO_TESTS_COLLECTED):
    session.config.stash[_MISSING] = missing
    session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter):
  missing = terminalreporter.config.stash.get(_MISSING, None)
  if missing:
    terminalreporter.write_line(f"FAILED: no test of the required tier(s) {missing} ran (--require-tier)", red=True)


_RAN = pytest.StashKey()
_MISSING = pytest.StashKey()


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


