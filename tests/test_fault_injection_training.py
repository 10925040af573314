"""Fault injection under real Keras training with `TrtExport`: whatever happens to an export, training ends
with the same weights as an undisturbed run, every normal export loads, no partial directory is visible, the
manifests say what failed and why, and no worker process is left.

Each run is a real child process (`python -m tests.fault_helpers keras ...`: a tiny deterministic model,
seeded, op determinism on) so that the tests can signal it. Conversions use the TEST DOUBLE
`tests.fake_trt_backend:FakeTrtBackendForTests` (TF-TRT cannot run here); its FAKE_TRT_* variables make the
worker crash, hang or stall mid-write for real.
"""

import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from tests import fault_helpers as fh
from tftrt_keras.artifacts.layout import ExportLayout

pytestmark = [pytest.mark.tf, pytest.mark.lines("2.15", "2.21", why="process-level fault handling of our worker and scheduler; 2.15 (Keras 2) and 2.21 (Keras 3) cover both Keras generations 2.17 carries")]
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EPOCHS = 3
NEVER = "/nonexistent-gate-never-opens"


def _trainer(export_dir, weights_out, env=None, *args):
  command = [sys.executable, "-m", "tests.fault_helpers", "keras", "--export_dir", export_dir, "--weights_out",
             weights_out, "--epochs", str(EPOCHS)] + [str(a) for a in args]
  clean = {k: v for k, v in os.environ.items() if not k.startswith("FAKE_TRT_")}
  return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO,
                          env=dict(clean, **(env or {})))


def _finish(trainer, timeout=240):
  try:
    output, _ = trainer.communicate(timeout=timeout)
  finally:
    if trainer.poll() is None:
      trainer.kill()
      trainer.wait()
  return output


def _weights(path):
  with np.load(path) as data:
    return [data[k] for k in sorted(data.files, key=lambda k: int(k.split("_")[1]))]


def _assert_same_weights(path, baseline):
  got = _weights(path)
  assert len(got) == len(baseline)
  for a, b in zip(got, baseline):
    np.testing.assert_array_equal(a, b)


def _manifests(root):
  directory = os.path.join(root, "manifests")
  return {int(v): fh.read_manifest(root, v) for v in os.listdir(directory)
          if v.isdigit() and os.path.isfile(os.path.join(directory, v, "manifest.json"))}


def _assert_every_normal_export_loads(root, versions):
  x = np.random.default_rng(0).normal(size=(3, 4)).astype("float32")
  for version in versions:
    outputs = fh.serve(os.path.join(root, str(version)), x)
    assert all(np.isfinite(v).all() for v in outputs.values())


def _assert_whole(manifest):
  """Every artifact made, or (background exports, one conversion at a time) dropped for a newer version."""
  for name, entry in manifest["artifacts"].items():
    assert entry["status"] == "ok" or (entry["status"] == "skipped" and "superseded" in entry["reason"]), \
        (name, entry)
  assert manifest["artifacts"]["native"]["status"] == "ok"


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
  """An undisturbed run: its final weights are what every faulted run must end with."""
  base = tmp_path_factory.mktemp("baseline")
  root, weights = str(base / "exports"), str(base / "weights.npz")
  output = _finish(_trainer(root, weights))
  assert "DONE" in output, output[-4000:]
  manifests = _manifests(root)
  assert sorted(manifests) == [1, 2, 3]
  for manifest in manifests.values():
    _assert_whole(manifest)
  return _weights(weights)


def test_training_survives_worker_crash_hang_and_kill(tmp_path, baseline):
  """Blocking exports, one fault per epoch: v1's worker segfaults, v2's hangs past timeout_seconds, v3's is
  SIGKILLed by the test while it writes the variant."""
  root, weights = str(tmp_path / "exports"), str(tmp_path / "weights.npz")
  trainer = _trainer(root, weights, {"FAKE_TRT_FAULT_BY_VERSION": "1:SIGSEGV,2:hang",
                                     "FAKE_TRT_RELEASE_FILE": NEVER}, "--blocking", "--timeout_seconds", 15)
  # v3 waits at the (never opened) gate once half-written; v1 and v2 fault before reaching it. The timeout
  # kills v2; it is long enough that v3 reaches its gate (and the test's SIGKILL) well before it.
  v3_temp = os.path.join(root, "tftrt_fp32")
  fh.wait_until(lambda: os.path.isdir(v3_temp) and any(n.startswith(".tmp-3-") for n in os.listdir(v3_temp)),
                "export 3 to be mid-write", timeout=240, process=trainer)
  killed = fh.worker_processes(root)
  assert len(killed) == 1
  os.kill(killed[0], signal.SIGKILL)
  output = _finish(trainer)
  assert "DONE" in output, output[-4000:]
  _assert_same_weights(weights, baseline)
  manifests = _manifests(root)
  assert sorted(manifests) == [1, 2, 3]
  expected = {1: "killed by SIGSEGV while producing tftrt_fp32",
              2: "still running after timeout_seconds=15 and was killed while producing tftrt_fp32",
              3: "killed by SIGKILL while producing tftrt_fp32"}
  for version, manifest in manifests.items():
    fh.assert_closed(manifest)
    entry = manifest["artifacts"]["tftrt_fp32"]
    assert entry["status"] == "failed" and expected[version] in entry["reason"], (version, entry)
    assert manifest["artifacts"]["native"]["status"] == "ok"
  _assert_every_normal_export_loads(root, manifests)
  fh.assert_nothing_partial(root)
  assert fh.worker_processes(root) == []
  fh.record_row("training: worker SIGSEGV / hang past timeout / SIGKILL", root,
                "fit finished, weights == baseline, 3 normal exports load")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_training_leaves_no_worker_and_the_next_run_recovers(tmp_path, baseline, sig):
  """Ctrl-C (SIGINT) or SIGTERM reaches the trainer while its first export converts in the background. On
  SIGINT Python's exit hooks stop the worker and close every manifest; SIGTERM kills at once, so
  PR_SET_PDEATHSIG takes the worker down and the next run recovers, then trains to the same weights."""
  root, weights = str(tmp_path / "exports"), str(tmp_path / "weights.npz")
  started = str(tmp_path / "started")
  trainer = _trainer(root, weights, {"FAKE_TRT_STARTED_FILE": started, "FAKE_TRT_RELEASE_FILE": NEVER})
  worker = int(fh.wait_for_file(started, timeout=240, process=trainer))
  trainer.send_signal(sig)
  output = _finish(trainer)
  assert trainer.returncode != 0 and "DONE" not in output
  fh.wait_until(lambda: not fh.process_running(worker), f"worker {worker} to end with its trainer", 60)
  assert fh.worker_processes(root) == []
  assert fh.incomplete_versions(root) == [], "a server would see a half-written version"
  interrupted = _manifests(root)
  if sig == signal.SIGINT:  # Python's exit path ran: the trainer closed its own manifests (atexit hooks)
    for manifest in interrupted.values():
      fh.assert_closed(manifest)
  else:  # SIGTERM kills at once: pending manifests are left for the next run's recovery
    assert any("pending" in fh.statuses(m).values() for m in interrupted.values())
  _assert_every_normal_export_loads(root, interrupted)
  if sig == signal.SIGINT:
    assert ExportLayout(root).recover_interrupted() == [], "the interrupted run left work for the next one"
    assert fh.leftover_temps(root) == []
    for manifest in interrupted.values():
      entry = manifest["artifacts"]["tftrt_fp32"]
      assert "interrupted" in entry["reason"] or "superseded" in entry["reason"], entry
    fh.record_row("training: SIGINT (Ctrl-C) during a background export", root,
                  "trainer stopped, manifests closed by its exit hooks, no orphan")
    return
  # The next run on the same root: recovers, exports after the old versions, trains to the same weights.
  output = _finish(_trainer(root, weights))
  assert "DONE" in output, output[-4000:]
  _assert_same_weights(weights, baseline)
  manifests = _manifests(root)
  assert sorted(manifests) == list(range(1, len(interrupted) + EPOCHS + 1))
  for version in interrupted:
    fh.assert_closed(manifests[version])
    entry = manifests[version]["artifacts"]["tftrt_fp32"]
    # Killed mid-write or never started (interrupted), or dropped from the queue by a newer one (superseded).
    assert entry["status"] in ("failed", "skipped"), (version, entry)
    assert "interrupted" in entry["reason"] or "superseded" in entry["reason"], (version, entry)
  for version in range(len(interrupted) + 1, len(interrupted) + EPOCHS + 1):
    _assert_whole(manifests[version])
  fh.assert_nothing_partial(root)
  assert fh.worker_processes(root) == []
  fh.record_row("training: SIGTERM during a background export", root,
                "trainer stopped, no orphan; rerun recovered, weights == baseline")


def test_slow_export_supersedes_the_queued_one_and_refuses_a_second_run(tmp_path, baseline):
  """v1 converts slowly (held at a gate) while epochs 2 and 3 end: v2 waits, v3 supersedes it. A second
  training run pointed at the same root meanwhile stops at once with ExportRootBusy and writes nothing."""
  root, weights = str(tmp_path / "exports"), str(tmp_path / "weights.npz")
  started, release = str(tmp_path / "started"), str(tmp_path / "release")
  trainer = _trainer(root, weights, {"FAKE_TRT_STARTED_FILE": started, "FAKE_TRT_RELEASE_FILE": release})
  try:
    worker = int(fh.wait_for_file(started, timeout=240, process=trainer))
    second = _trainer(root, str(tmp_path / "second.npz"))
    second_output = _finish(second)
    assert second.returncode != 0 and "ExportRootBusy" in second_output, second_output[-4000:]
    assert f"in use by another process (pid {trainer.pid})" in second_output
    fh.wait_until(lambda: os.path.exists(os.path.join(root, "manifests", "3", "manifest.json")),
                  "the third epoch's export", timeout=240, process=trainer)
    assert fh.worker_processes(root) == [worker], "a second worker runs beside the slow one"
  finally:
    with open(release, "w") as f:
      f.write("go")
  output = _finish(trainer)
  assert "DONE" in output, output[-4000:]
  _assert_same_weights(weights, baseline)
  assert not os.path.exists(str(tmp_path / "second.npz"))
  manifests = _manifests(root)
  assert sorted(manifests) == [1, 2, 3], "the refused run wrote a version"
  assert fh.statuses(manifests[1])["tftrt_fp32"] == fh.statuses(manifests[3])["tftrt_fp32"] == "ok"
  entry = manifests[2]["artifacts"]["tftrt_fp32"]
  assert entry["status"] == "skipped" and "superseded: export version 3" in entry["reason"]
  _assert_every_normal_export_loads(root, manifests)
  fh.assert_nothing_partial(root)
  assert fh.worker_processes(root) == []
  fh.record_row("training: export due while previous converts + 2nd run on same root", root,
                "v2 superseded; 2nd run ExportRootBusy; weights == baseline", failed=1)


def _tree_digest(path):
  digest = {}
  for directory, _, files in os.walk(path):
    for name in files:
      with open(os.path.join(directory, name), "rb") as f:
        digest[os.path.relpath(os.path.join(directory, name), path)] = hash(f.read())
  return digest


def test_preempted_run_resumes_without_overwriting_and_retention_spares_foreign_dirs(tmp_path, baseline):
  """BackupAndRestore + TrtExport(exports_to_keep=2). A user's own numbered directory sits in the root. The
  machine is preempted (SIGTERM) after epoch 2 while an export is held mid-write; the rerun resumes at epoch
  3. No version is reused or overwritten, retention keeps the newest two of ours and never the user's."""
  root, weights = str(tmp_path / "exports"), str(tmp_path / "weights.npz")
  backup, stop = str(tmp_path / "backup"), str(tmp_path / "stop")
  users_own = os.path.join(root, "7")
  os.makedirs(users_own)
  with open(os.path.join(users_own, "README"), "w") as f:
    f.write("a directory the user made; no manifest of ours lists it")
  common = ["--backup_dir", backup, "--exports_to_keep", 2]
  trainer = _trainer(root, weights, {"FAKE_TRT_RELEASE_FILE": NEVER}, "--stop_epoch", 2, "--stop_file", stop,
                     *common)
  fh.wait_for_file(stop, timeout=240, process=trainer)
  fh.wait_until(lambda: os.path.isfile(os.path.join(root, "manifests", "9", "manifest.json")),
                "epoch 2's export", timeout=60, process=trainer)
  before = _tree_digest(os.path.join(root, "9"))
  trainer.send_signal(signal.SIGTERM)
  _finish(trainer)
  assert trainer.returncode == -signal.SIGTERM
  fh.wait_until(lambda: fh.worker_processes(root) == [], "the preempted run's worker to end", 60)
  first_run = _manifests(root)
  assert sorted(first_run) == [8, 9]
  assert [first_run[v]["source"]["epoch"] for v in (8, 9)] == [1, 2]

  output = _finish(_trainer(root, weights, None, *common))
  assert "DONE" in output, output[-4000:]
  _assert_same_weights(weights, baseline)
  manifests = _manifests(root)
  assert sorted(manifests) == [9, 10], "retention kept the wrong versions"
  assert manifests[10]["source"]["epoch"] == 3 and set(fh.statuses(manifests[10]).values()) == {"ok"}, \
      manifests[10]["artifacts"]
  fh.assert_closed(manifests[9])
  assert "interrupted" in manifests[9]["artifacts"]["tftrt_fp32"]["reason"]
  assert _tree_digest(os.path.join(root, "9")) == before, "version 9 was overwritten"
  assert not os.path.exists(os.path.join(root, "8")) and not os.path.exists(os.path.join(root, "frozen", "8"))
  assert os.listdir(users_own) == ["README"], "retention touched a directory it did not make"
  _assert_every_normal_export_loads(root, [9, 10])
  fh.assert_nothing_partial(root, ignore=(users_own,))
  assert fh.worker_processes(root) == []
  fh.record_row("training: preemption (SIGTERM) + BackupAndRestore resume, exports_to_keep=2", root,
                "resumed at epoch 3, weights == baseline, no version reused, user dir 7 kept", ignore=(users_own,))


@pytest.fixture
def small_filesystem(tmp_path):
  mount_point = str(tmp_path / "small_fs")
  why_not = fh.mount_small_tmpfs(mount_point, size="8m")
  if why_not:
    pytest.skip(f"{why_not}; test_fault_injection_worker's RLIMIT_FSIZE test covers a full disk without it")
  yield mount_point
  fh.unmount(mount_point)


def test_disk_filling_up_mid_training_does_not_stop_training(small_filesystem, tmp_path, baseline):
  """The export root's filesystem fills up completely after the first export: the later snapshots cannot be
  written, the held conversion cannot finish. Training must still end with the undisturbed weights, and no
  numbered directory may be half there."""
  root, weights = os.path.join(small_filesystem, "exports"), str(tmp_path / "weights.npz")
  release = str(tmp_path / "release")
  trainer = _trainer(root, weights, {"FAKE_TRT_RELEASE_FILE": release})
  try:
    fh.wait_until(lambda: os.path.isfile(os.path.join(root, "manifests", "1", "manifest.json")),
                  "the first export", timeout=240, process=trainer)
    filler = fh.fill_filesystem(small_filesystem)
    seen = []
    for line in trainer.stdout:  # until training is over (or the trainer died)
      seen.append(line)
      if line.startswith(f"EPOCH_END {EPOCHS}"):
        break
  finally:
    with open(release, "w") as f:
      f.write("go")
  output = "".join(seen) + _finish(trainer)
  assert "DONE" in output, output[-3000:]
  _assert_same_weights(weights, baseline)
  assert fh.incomplete_versions(root) == [], "a server would load a half-written version"
  assert fh.worker_processes(root) == []
  os.remove(filler)  # the user frees space; the next run closes what could not be recorded
  ExportLayout(root).recover_interrupted()
  for manifest in _manifests(root).values():
    fh.assert_closed(manifest)
  _assert_every_normal_export_loads(root, [1])
  assert fh.leftover_temps(root) == []
  fh.record_row("training: disk full (ENOSPC) after the first export", root,
                "fit finished, weights == baseline")
