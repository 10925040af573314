"""The conversion worker is polite beside training: a real worker process started by the scheduler runs at the
lowest CPU priority, every thread of it, with each library's thread pools bounded; in the foreground it takes the
machine; the two options are checked and reach every entry point.

The worker converts with the TEST DOUBLE `tests.fake_trt_backend:FakeTrtBackendForTests` (TF-TRT cannot run here),
held at its gate so that the live process can be read in /proc; the process, its niceness, its environment and
its manifest are real. What the limits do to training's epoch time: benchmarks/bench_worker_priority.py.
"""

import os
import shutil
import subprocess
import sys
import time

import pytest

import tftrt_keras
from tests import fault_helpers as fh
from tests.saved_models import classifier, samples
from tftrt_keras.artifacts.layout import ExportLayout
from tftrt_keras.options import ConversionOptions
from tftrt_keras.pipeline import prepare
from tftrt_keras.pipeline.scheduler import ExportScheduler
from tftrt_keras.pipeline.worker import ConversionWorker
from tftrt_keras.pipeline.worker_setup import WorkerLimits, usable_cores, worker_limits

pytestmark = pytest.mark.usefixtures("fake_tftrt")  # every worker here converts with the TEST DOUBLE

BOUNDED = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS",
           "TF_NUM_INTEROP_THREADS", "TFTRT_KERAS_WORKER_THREADS")


# ------------------------------------------------------------------------------------------------ the options
@pytest.mark.unit
@pytest.mark.parametrize("name, value, expected", [
    ("worker_threads", 0, "a positive integer, 'all' or 'auto'"),
    ("worker_threads", -2, "a positive integer"),
    ("worker_threads", 1.5, "a positive integer"),
    ("worker_threads", True, "a positive integer"),
    ("worker_threads", "many", "'all' or 'auto'"),
    ("worker_threads", None, "a positive integer"),
    ("worker_nice", 20, "an integer from 0 to 19 or 'auto'"),
    ("worker_nice", -1, "an integer from 0 to 19"),
    ("worker_nice", "low", "an integer from 0 to 19"),
    ("worker_nice", False, "an integer from 0 to 19"),
])
def test_bad_worker_limits_are_refused_naming_the_argument(name, value, expected):
  with pytest.raises(ValueError, match=f"`{name}`") as raised:
    ConversionOptions(**{name: value})
  assert expected in str(raised.value)


@pytest.mark.unit
def test_worker_limits_by_context():
  """"auto": a quarter of the cores (at least one) at niceness 19 beside training; everything in the
  foreground. Explicit values hold in both."""
  auto = ConversionOptions()
  assert (auto.worker_threads, auto.worker_nice) == ("auto", "auto")
  assert worker_limits(auto, foreground=False, cores=2) == WorkerLimits(threads=1, nice=19)
  assert worker_limits(auto, foreground=False, cores=16) == WorkerLimits(threads=4, nice=19)
  assert worker_limits(auto, foreground=True, cores=16) == WorkerLimits(threads=None, nice=None)
  given = ConversionOptions(worker_threads=3, worker_nice=10)
  for foreground in (False, True):
    assert worker_limits(given, foreground, cores=2) == WorkerLimits(threads=3, nice=10)
  assert worker_limits(ConversionOptions(worker_threads=" ALL ", worker_nice=0), False, cores=8) == WorkerLimits(
      threads=None, nice=0)
  assert ConversionOptions.from_json(given.to_json()) == given  # the request and the manifest carry them


@pytest.mark.unit
def test_every_entry_point_takes_the_worker_limits(tmp_path):
  callback = tftrt_keras.TrtExport(tmp_path / "e", worker_threads=2, worker_nice=5, verbose=0)
  assert (callback.options.worker_threads, callback.options.worker_nice) == (2, 5)
  with pytest.raises(ValueError, match="`worker_nice`"):
    tftrt_keras.TrtExport(tmp_path / "e", worker_nice=99)
  try:
    from tftrt_keras.estimator.exporter import TrtExporter  # pylint: disable=g-import-not-at-top
  except ImportError:  # no Estimator on this TF line
    return
  exporter = TrtExporter("x", lambda: None, worker_threads="all", worker_nice=7)
  assert (exporter.options.worker_threads, exporter.options.worker_nice) == ("all", 7)


@pytest.mark.unit
def test_onnx_runtime_sessions_take_the_worker_bound(monkeypatch):
  """Every session a format opens comes from `session_options`: bounded inside a worker, the library's own
  default elsewhere."""
  from tftrt_keras.formats.onnx.runner import session_options  # pylint: disable=g-import-not-at-top
  monkeypatch.delenv("TFTRT_KERAS_WORKER_THREADS", raising=False)
  assert session_options().intra_op_num_threads == 0  # ONNX Runtime's default: every core
  monkeypatch.setenv("TFTRT_KERAS_WORKER_THREADS", "2")
  options = session_options()
  assert (options.intra_op_num_threads, options.inter_op_num_threads) == (2, 2)


# ------------------------------------------------------------------------------------------------ a real worker
def _niceness(pid):
  """{thread id: niceness} of every thread of `pid`, from /proc (field 19 of stat)."""
  found = {}
  for tid in os.listdir(f"/proc/{pid}/task"):
    try:
      with open(f"/proc/{pid}/task/{tid}/stat", encoding="utf-8") as f:
        found[int(tid)] = int(f.read().rsplit(")", 1)[1].split()[16])
    except (FileNotFoundError, ProcessLookupError):
      pass  # a thread that ended meanwhile
  return found


def _autogroups():
  try:
    with open("/proc/sys/kernel/sched_autogroup_enabled", encoding="ascii") as f:
      return f.read().strip() == "1"
  except OSError:
    return False


def _autogroup(pid, name=False):
  with open(f"/proc/{pid}/autogroup", encoding="ascii") as f:
    group = f.read().split()
  return group[0] if name else int(group[-1])


def _expected_group_nice(asked):
  """The autogroup niceness a worker records: its own session's (Python < 3.11), lowered to `asked`; else the
  trainer's, untouched."""
  if not _autogroups():
    return None
  return asked if sys.version_info < (3, 11) else _autogroup(os.getpid())


def _environment(pid):
  with open(f"/proc/{pid}/environ", "rb") as f:
    return dict(item.decode().split("=", 1) for item in f.read().split(b"\0") if b"=" in item)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("source") / "model")
  classifier(path, seed=1)
  return path


def _prepare(root, source_dir, **options):
  layout = ExportLayout(root)
  layout.ensure_root()
  options = ConversionOptions(precisions=("FP32",), formats=("tftrt",), **options)
  return prepare.prepare_export(layout.root, layout.next_version(), {"kind": "worker_manners"}, options,
                                write_native=lambda d: (os.rmdir(d), shutil.copytree(source_dir, d)),
                                batches=[samples(1)])


def _wait_for(predicate, what, timeout=120.0):
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    if predicate():
      return
    time.sleep(0.05)
  raise AssertionError(f"gave up waiting for {what} after {timeout:g} s")


def _limits(manifest_or_root, version=None):
  manifest = fh.read_manifest(manifest_or_root, version) if version is not None else manifest_or_root
  return manifest["worker"]["limits"]


@pytest.mark.tf
def test_a_worker_beside_training_runs_at_the_lowest_priority_with_bounded_threads(tmp_path, source, monkeypatch):
  """The defaults, read from the live process: every thread at niceness 19 (and its session's autogroup, where
  the kernel shares CPU by session), the thread variables in its environment. Stopped there: at niceness 19
  on a machine busy with other work, the rest of its conversion would take minutes."""
  monkeypatch.setenv("OMP_NUM_THREADS", "64")  # the trainer's own setting does not leak into the worker
  own = os.getpriority(os.PRIO_PROCESS, 0)
  request = _prepare(str(tmp_path / "exports"), source)
  job = ConversionWorker(request)  # as `ExportScheduler.submit(blocking=False)` starts it
  try:
    _wait_for(lambda: set(_niceness(job.pid).values()) == {19}, "niceness 19 on every thread")
    if _autogroups() and os.getsid(job.pid) == job.pid:  # alone in its session (Python < 3.11): it yields too
      _wait_for(lambda: _autogroup(job.pid) == 19, "autogroup niceness 19")
    elif _autogroups():  # in the trainer's session: its group, untouched; inside it the worker yields
      assert _autogroup(job.pid, name=True) == _autogroup(os.getpid(), name=True)
      assert _autogroup(job.pid) == _autogroup(os.getpid())
    expected = str(max(1, usable_cores() // 4))
    environment = _environment(job.pid)
    assert {name: environment.get(name) for name in BOUNDED} == dict.fromkeys(BOUNDED, expected)
    assert os.getpriority(os.PRIO_PROCESS, 0) == own  # the trainer keeps its own
  finally:
    manifest = job.kill("test over")
  assert manifest["artifacts"]["tftrt_fp32"]["reason"].startswith("test over")


@pytest.mark.tf
def test_the_worker_records_its_limits_and_tensorflow_takes_them(tmp_path, source):
  """Explicit limits in the foreground (they hold there too); the manifest and worker.log say what it ran with."""
  root = str(tmp_path / "exports")
  scheduler = ExportScheduler()
  request = _prepare(root, source, worker_threads=1, worker_nice=3)
  scheduler.submit(request, blocking=True)
  limits = _limits(scheduler.finished[-1])
  assert limits["nice"] == max(3, os.getpriority(os.PRIO_PROCESS, 0)) and limits["threads"] == "1"
  assert limits["tensorflow"] == {"intra_op": 1, "inter_op": 1}
  assert limits["environment"] == sorted(BOUNDED[:-1])
  assert limits["autogroup_nice"] == _expected_group_nice(3)
  log = open(os.path.join(ExportLayout(root).manifest_dir(request.version), "worker.log"), encoding="utf-8").read()
  assert f"tftrt_keras worker: nice {limits['nice']} (autogroup {limits['autogroup_nice']}), threads 1" in log
  assert scheduler.finished[-1]["artifacts"]["tftrt_fp32"]["status"] != "failed"


@pytest.mark.tf
def test_in_the_foreground_the_worker_takes_the_machine(tmp_path, source, monkeypatch):
  """blocking=True, tftrt-export and the exports still queued when `fit` waits at its end: nothing competes, so
  "auto" bounds nothing."""
  monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
  started, release = str(tmp_path / "started"), str(tmp_path / "release")
  monkeypatch.setenv("FAKE_TRT_STARTED_FILE", started)
  monkeypatch.setenv("FAKE_TRT_RELEASE_FILE", release)  # the first worker waits there until the second queues
  own = os.getpriority(os.PRIO_PROCESS, 0)
  root = str(tmp_path / "exports")
  scheduler = ExportScheduler()
  first = _prepare(root, source, worker_nice=3)  # not starved by other work on a busy test machine
  scheduler.submit(first)
  fh.wait_for_file(started)
  queued = _prepare(root, source)
  scheduler.submit(queued)  # blocking=False, but queued
  with open(release, "w") as f:
    f.write("go")
  finished = {m["version"]: m for m in scheduler.wait_all(timeout=300)}  # as at the end of `fit`
  for limits in (_limits(finished[queued.version]), _limits(_blocking_export(root, source, scheduler))):
    assert limits["nice"] == own and limits["threads"] == "each library's default"
    assert limits["environment"] == [] and limits["tensorflow"] == {"intra_op": 0, "inter_op": 0}
    assert limits["autogroup_nice"] == _expected_group_nice(0)


def _blocking_export(root, source, scheduler):
  scheduler.submit(_prepare(root, source), blocking=True)
  return scheduler.finished[-1]


@pytest.mark.unit
def test_time_a_worker_waits_for_a_cpu_is_measured_so_the_timeout_can_leave_it_out():
  """`timeout_seconds` leaves out what the worker waited for a CPU: a process at niceness 19 sharing one core
  with a busy one waits nearly all the time, and that is what the watcher subtracts."""
  from tftrt_keras.pipeline.worker import _cpu_wait_seconds  # pylint: disable=g-import-not-at-top
  core = min(os.sched_getaffinity(0))
  def spin(nice):
    code = f"import os; os.sched_setaffinity(0, [{core}]); os.nice({nice}); print(flush=True)\nwhile True: pass"
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
  hog, polite = spin(0), spin(19)
  try:
    hog.stdout.readline(), polite.stdout.readline()  # both spinning on one core from here
    started = _cpu_wait_seconds(polite.pid)
    time.sleep(3)
    assert _cpu_wait_seconds(polite.pid) - started > 1.5
    assert _cpu_wait_seconds(hog.pid) < _cpu_wait_seconds(polite.pid)
  finally:
    for process in (hog, polite):
      process.kill()
      process.wait()
  assert _cpu_wait_seconds(polite.pid) == 0  # gone: nothing to subtract
