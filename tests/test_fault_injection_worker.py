"""Fault injection at the conversion worker: every way an export can break leaves the normal export loadable,
no partial directory where a server looks, a closed manifest that says what happened, and no process behind.

Uses the TEST DOUBLE `tests.fake_trt_backend:FakeTrtBackendForTests` (TF-TRT cannot run here); the faults
themselves are real: signals sent to real worker processes, real file-size limits and full filesystems,
real truncated files, a real second process holding the export root. The "training" here is the calling
process: after each fault it goes on and makes the next export, which must come out whole. Interrupting a
real training process (SIGINT, SIGTERM, preemption) is in test_fault_injection_training.py.
"""

import os
import resource
import shutil
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests import fault_helpers as fh
from tests.saved_models import classifier, samples
from tftrt_keras.formats.tftrt.backend import CONVERTER_VARIABLE
from tftrt_keras.pipeline import prepare
from tftrt_keras.options import ConversionOptions
from tftrt_keras.artifacts.layout import ExportLayout, ExportRootBusy
from tftrt_keras.pipeline.scheduler import ExportScheduler
from tftrt_keras.pipeline.worker import ConversionWorker

pytestmark = [pytest.mark.tf, pytest.mark.usefixtures("fake_tftrt"),
              pytest.mark.lines("2.15", "2.21", why="process-level fault handling of our worker and scheduler; 2.15 (Keras 2) and 2.21 (Keras 3) cover both Keras generations 2.17 carries")]
CONVERSIONS = ("tftrt_fp32", "tftrt_fp16")
X = samples(5, seed=3)["x"]


@pytest.fixture(scope="module")
def source(tmp_path_factory):
  """A tiny classifier SavedModel and a numpy function computing its outputs."""
  path = str(tmp_path_factory.mktemp("source") / "model")
  return path, classifier(path, seed=1)


@pytest.fixture
def root(tmp_path):
  return str(tmp_path / "exports")


@pytest.fixture
def fake_env(monkeypatch, tmp_path):
  """Sets the test double's fault knobs for workers started from now on; returns the gate files."""
  started, release = str(tmp_path / "started"), str(tmp_path / "release")

  def apply(**knobs):
    for name, value in knobs.items():
      monkeypatch.setenv(f"FAKE_TRT_{name.upper()}", str(value))
    return started, release
  monkeypatch.setenv("FAKE_TRT_STARTED_FILE", started)
  return apply


def _prepare(root, source_dir, timeout_seconds=None, precisions=("FP32", "FP16")):
  layout = ExportLayout(root)
  layout.ensure_root()
  # TF-TRT variants only: the faults are injected at its (test double) converter.
  options = ConversionOptions(precisions=precisions, formats=("tftrt",),
                              timeout_seconds=timeout_seconds)
  # One captured sample: calibration data on disk, no held-out verification step to slow the worker.
  return prepare.prepare_export(layout.root, layout.next_version(), {"kind": "fault_injection"}, options,
                                 write_native=lambda d: (os.rmdir(d), shutil.copytree(source_dir, d)),
                                 batches=[samples(1)])


def _check_after_fault(root, source, job, manifest):
  """What must hold after any worker fault, then the calling process goes on with its next export."""
  path, reference = source
  assert manifest is not None, "the job never closed its manifest"
  fh.assert_closed(manifest)
  assert fh.read_manifest(root, job.version)["artifacts"] == manifest["artifacts"], "manifest on disk differs"
  assert not fh.process_running(job.pid), f"worker {job.pid} still runs"
  assert fh.worker_processes(root) == []
  fh.assert_nothing_partial(root)
  served = fh.serve(ExportLayout(root).path("native", job.version), X)
  np.testing.assert_allclose(served["probabilities"], reference(X)["probabilities"], rtol=1e-5)
  # Training goes on: its next export, with nothing injected, comes out whole at the next version.
  for name in [n for n in os.environ if n.startswith("FAKE_TRT_")]:
    del os.environ[name]  # monkeypatch restores them after the test
  following = ConversionWorker(_prepare(root, path))
  after = following.wait(120)
  assert following.version == job.version + 1
  assert fh.statuses(after) == fh.BUILT_WITHOUT_HELD_OUT_SAMPLES
  fh.assert_nothing_partial(root)
  np.testing.assert_allclose(fh.serve(ExportLayout(root).path("tftrt_fp16", following.version), X)["logits"],
                             reference(X)["logits"], rtol=1e-5)
  return manifest


def test_worker_sigkilled_mid_write_fails_that_variant_and_leaves_no_partial_directory(root, source, fake_env):
  started, _ = fake_env(release_file="/nonexistent-gate-never-opens")
  job = ConversionWorker(_prepare(root, source[0]))
  worker_pid = int(fh.wait_for_file(started))
  assert worker_pid == job.pid
  half_written = [d for d in os.listdir(os.path.join(root, "tftrt_fp32")) if d.startswith(".tmp-")]
  assert half_written, "the worker was not caught mid-write"
  os.kill(worker_pid, signal.SIGKILL)
  manifest = _check_after_fault(root, source, job, job.wait(120))
  fp32, fp16 = manifest["artifacts"]["tftrt_fp32"], manifest["artifacts"]["tftrt_fp16"]
  assert fp32["status"] == "failed" and fp32["reason"].startswith("export worker killed by SIGKILL while producing "
                                                                  "tftrt_fp32"), fp32
  assert "out-of-memory" in fp32["reason"]
  assert fp16["status"] == "failed" and fp16["reason"].startswith("not attempted: export worker killed by SIGKILL")
  # Built before the kill, never compared: unverified, never ok.
  assert manifest["artifacts"]["frozen"]["status"] == "unverified"
  assert manifest["artifacts"]["frozen"]["reason"] == "built and build-checked; not verified yet"
  assert not os.path.exists(os.path.join(root, "tftrt_fp32", str(job.version)))
  fh.record_row("worker SIGKILL mid-write", root, "caller went on; next export whole")


@pytest.mark.parametrize("crash, hint", [("SIGSEGV", "a crash inside TensorFlow or TensorRT"),
                                         ("SIGABRT", "aborted")])
def test_worker_crash_mid_write_is_recorded_with_the_signal(root, source, fake_env, crash, hint):
  fake_env(crash=crash)
  job = ConversionWorker(_prepare(root, source[0]))
  manifest = _check_after_fault(root, source, job, job.wait(120))
  assert job.returncode == -getattr(signal, crash)
  fp32 = manifest["artifacts"]["tftrt_fp32"]
  assert fp32["status"] == "failed" and f"killed by {crash} while producing tftrt_fp32" in fp32["reason"], fp32
  assert hint in fp32["reason"]
  assert manifest["artifacts"]["tftrt_fp16"]["reason"].startswith("not attempted:")
  fh.record_row(f"worker crash {crash} mid-write", root, "caller went on; next export whole")


def test_worker_hanging_past_timeout_is_killed_and_recorded(root, source, fake_env):
  fake_env(sleep_seconds=600)
  job = ConversionWorker(_prepare(root, source[0], timeout_seconds=12))
  manifest = _check_after_fault(root, source, job, job.wait(300))
  assert job.returncode == -signal.SIGKILL
  for name in CONVERSIONS:
    entry = manifest["artifacts"][name]
    assert entry["status"] == "failed" and "still running after timeout_seconds=12 and was killed" in entry["reason"]
    assert "raise timeout_seconds" in entry["reason"]
  fh.record_row("worker hangs past timeout_seconds", root, "caller went on; next export whole")


def test_file_size_limit_in_the_worker_fails_the_variants_not_the_export(root, source):
  """RLIMIT_FSIZE (inherited by the worker) makes every write past 8 KiB fail, as a full quota would: the small
  frozen graph fits, the ~15 KiB variant SavedModels do not."""
  request = _prepare(root, source[0])
  soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
  resource.setrlimit(resource.RLIMIT_FSIZE, (8192, hard))
  try:
    job = ConversionWorker(request)
  finally:
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
  manifest = _check_after_fault(root, source, job, job.wait(120))
  assert manifest["artifacts"]["frozen"]["status"] == "unverified"  # built; no held-out sample to compare on
  for name in CONVERSIONS:
    entry = manifest["artifacts"][name]
    assert entry["status"] == "failed", entry
    assert "too large" in entry["reason"].lower() or "no space" in entry["reason"].lower(), entry["reason"]
  fh.record_row("file-size limit (RLIMIT_FSIZE) in worker", root, "caller went on; next export whole")


@pytest.fixture
def small_filesystem(tmp_path):
  """A 4 MiB tmpfs, when this process may mount one (root in a container); skipped otherwise."""
  mount_point = str(tmp_path / "small_fs")
  why_not = fh.mount_small_tmpfs(mount_point)
  if why_not:
    pytest.skip(f"{why_not}; the RLIMIT_FSIZE test covers a full disk without it")
  yield mount_point
  fh.unmount(mount_point)


def test_disk_filling_up_during_the_export_fails_the_variants_not_the_export(small_filesystem, source):
  """A real ENOSPC: after the normal export is written the filesystem is filled to 10 pages short of full (the manifest and worker.log need room to close), so
  the frozen graph still fits and the variants do not."""
  root = os.path.join(small_filesystem, "exports")
  request = _prepare(root, source[0])
  filler = fh.fill_filesystem(small_filesystem, leave_bytes=10 * 4096)
  job = ConversionWorker(request)
  manifest = job.wait(120)
  fh.assert_closed(manifest)
  assert fh.read_manifest(root, job.version)["artifacts"] == manifest["artifacts"]
  failed = [n for n in CONVERSIONS if manifest["artifacts"][n]["status"] == "failed"]
  assert failed, manifest["artifacts"]
  for name in failed:
    assert "space" in manifest["artifacts"][name]["reason"].lower(), manifest["artifacts"][name]["reason"]
  assert not fh.process_running(job.pid) and fh.worker_processes(root) == []
  fh.assert_nothing_partial(root)
  os.remove(filler)  # the user frees space; the run goes on
  _check_after_fault(root, source, job, manifest)
  fh.record_row("disk full (ENOSPC, tmpfs) in worker", root, "caller went on; next export whole once space was freed")


def test_export_due_while_previous_converts_supersedes_the_queued_ones_variants(root, source, fake_env):
  """Queue of one: v1 converts (held mid-write), v2 waits, v3 arrives and supersedes v2's variants. One worker
  at a time, never two on one version; v2 still gets its worker for the frozen graph, and its normal export is
  there and loadable."""
  started, release = fake_env(release_file=os.path.join(os.path.dirname(root), "release"))
  scheduler = ExportScheduler()
  first = _prepare(root, source[0])
  scheduler.submit(first)
  first_pid = int(fh.wait_for_file(started))
  second = _prepare(root, source[0])
  scheduler.submit(second)
  third = _prepare(root, source[0])
  scheduler.submit(third)
  assert fh.worker_processes(root) == [first_pid], "a second worker started while the first converts"
  superseded = fh.read_manifest(root, second.version)
  for name in CONVERSIONS:
    entry = superseded["artifacts"][name]
    assert entry["status"] == "skipped" and f"superseded: export version {third.version}" in entry["reason"]
  assert superseded["artifacts"]["frozen"]["status"] == "pending"  # only the variants gave way
  with open(release, "w") as f:
    f.write("go")
  finished = {m["version"]: m for m in scheduler.wait_all(timeout=180)}
  assert sorted(finished) == [first.version, second.version, third.version]
  for version in (first.version, third.version):
    assert fh.statuses(finished[version]) == fh.BUILT_WITHOUT_HELD_OUT_SAMPLES, finished[version]["artifacts"]
  assert finished[second.version]["artifacts"]["frozen"]["status"] == "unverified"
  assert [finished[second.version]["artifacts"][n]["status"] for n in CONVERSIONS] == ["skipped", "skipped"]
  fh.assert_closed(finished[second.version])
  assert fh.worker_processes(root) == []
  fh.assert_nothing_partial(root)
  assert sorted(int(d) for d in os.listdir(os.path.join(root, "tftrt_fp32"))) == [first.version, third.version]
  fh.serve(ExportLayout(root).path("native", second.version), X)
  fh.record_row("export due while previous converts", root, "v2's variants skipped 'superseded', its frozen graph "
                "made; v1 and v3 whole")


def test_second_process_on_the_same_export_root_is_refused(root, source, fake_tftrt):
  holder = subprocess.Popen(
      [sys.executable, "-c", textwrap.dedent(f"""
          import sys
          from tftrt_keras.artifacts.layout import ExportLayout, RootLock
          with RootLock(ExportLayout({root!r})):
            print("LOCKED", flush=True)
            sys.stdin.read()
          """)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "LOCKED"
    from tftrt_keras.offline.export import export_saved_model  # pylint: disable=g-import-not-at-top
    options = ConversionOptions(precisions=("FP32",), formats=("tftrt",))
    with pytest.raises(ExportRootBusy) as caught:
      export_saved_model(source[0], root, options=options)
    assert f"in use by another process (pid {holder.pid})" in str(caught.value)
    assert "give each run its own `export_dir`" in str(caught.value)
    assert ExportLayout(root).next_version() == 1, "the refused run wrote a version"
  finally:
    holder.stdin.close()
    holder.wait(60)
  manifest = export_saved_model(source[0], root, options=options)  # the first run is gone: the root is free
  assert manifest["version"] == 1 and manifest["artifacts"]["tftrt_fp32"]["status"] == "unverified"  # no samples
  fh.record_row("second process on the same export root", root, "ExportRootBusy naming the holder's pid; nothing "
                "written; whole once the holder left", attempted=2, failed=1)


def test_truncated_calibration_file_fails_with_the_file_named(root, source):
  request = _prepare(root, source[0])
  npz = os.path.join(ExportLayout(root).path("calibration", request.version), "calibration.npz")
  with open(npz, "r+b") as f:
    f.truncate(os.path.getsize(npz) // 2)
  job = ConversionWorker(request)
  manifest = job.wait(120)
  fh.assert_closed(manifest)
  for name in CONVERSIONS:
    reason = manifest["artifacts"][name]["reason"]
    assert manifest["artifacts"][name]["status"] == "failed"
    assert "calibration_data" in reason and "calibration.npz" in reason and "readable .npz" in reason, reason
  assert not fh.process_running(job.pid) and fh.worker_processes(root) == []
  assert fh.leftover_temps(root) == []
  fh.record_row("truncated calibration .npz", root, "conversions failed naming the file")


def test_backend_that_cannot_load_in_the_worker_is_named_in_the_manifest(root, source, monkeypatch):
  """The configured backend's module is missing in the worker: the TF-TRT variant says so in the manifest (not
  only in worker.log), and the steps that do not need the backend (the frozen graph) still run."""
  layout = ExportLayout(root)
  layout.ensure_root()
  monkeypatch.setenv(CONVERTER_VARIABLE, "tests.no_such_backend_module:Backend")
  options = ConversionOptions(precisions=("FP32",), formats=("tftrt",))
  request = prepare.prepare_export(layout.root, 1, {"kind": "fault_injection"}, options,
                                    write_native=lambda d: (os.rmdir(d), shutil.copytree(source[0], d)))
  job = ConversionWorker(request)
  manifest = job.wait(120)
  fh.assert_closed(manifest)
  assert job.returncode == 0
  assert manifest["artifacts"]["frozen"]["status"] == "unverified"  # built; no samples to compare on
  entry = manifest["artifacts"]["tftrt_fp32"]
  assert entry["status"] in ("skipped", "failed"), entry  # the pipeline's call (see the report to the lead)
  assert "No module named 'tests.no_such_backend_module'" in entry["reason"], entry
  assert "No module named 'tests.no_such_backend_module'" in manifest["environment"]["formats"]["tftrt"]["error"]
  assert manifest["artifacts"]["native"]["status"] == "ok"
  assert fh.worker_processes(root) == [] and fh.leftover_temps(root) == []
  fh.record_row("backend module missing in the worker", root, "failed naming the module")


def test_normal_export_missing_its_variables_fails_every_step_with_a_reason(root, source):
  request = _prepare(root, source[0])
  native = ExportLayout(root).path("native", request.version)
  shutil.rmtree(os.path.join(native, "variables"))  # the normal export got damaged after it was written
  job = ConversionWorker(request)
  manifest = job.wait(120)
  fh.assert_closed(manifest)
  for name in ("frozen",) + CONVERSIONS:
    entry = manifest["artifacts"][name]
    assert entry["status"] == "failed" and "variables" in entry["reason"].lower(), (name, entry)
  assert not fh.process_running(job.pid) and fh.worker_processes(root) == []
  assert fh.leftover_temps(root) == []
  assert fh.incomplete_versions(root, ignore=(native,)) == []
  assert not os.path.exists(os.path.join(root, "tftrt_fp32", str(request.version)))
  fh.record_row("normal export missing variables/", root, "every step failed naming the variables",
                ignore=(native,))


def test_offline_export_of_a_saved_model_without_variables_is_refused_before_writing(root, source, tmp_path, fake_tftrt):
  broken = str(tmp_path / "broken")
  shutil.copytree(source[0], broken)
  shutil.rmtree(os.path.join(broken, "variables"))
  from tftrt_keras.offline.export import export_saved_model  # pylint: disable=g-import-not-at-top
  with pytest.raises(ValueError) as caught:
    export_saved_model(broken, root, options=ConversionOptions(precisions=("FP32",), formats=("tftrt",)))
  assert "saved_model_dir" in str(caught.value) and broken in str(caught.value)
  assert not os.path.exists(root) or ExportLayout(root).next_version() == 1
  fh.record_row("offline source SavedModel missing variables/", root, "ValueError naming saved_model_dir, nothing "
                "written", attempted=1, failed=1)
