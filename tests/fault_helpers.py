"""Shared checks for the fault-injection suites, and the child "training" processes they interrupt.

The checks look at what a user (or TF Serving / Triton) would see after a fault: numbered directories that
are complete, no temps left behind, manifests closed with a reason, no export worker still running.

Run as a script, this module is the training process the tests signal (SIGINT, SIGTERM, SIGKILL):

  python -m tests.fault_helpers keras --export_dir R --epochs N --weights_out W.npz [--backup_dir B]
      trains a tiny deterministic Keras model with `TrtExport` and writes its final weights to W.npz.
"""

import argparse
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time

SAVED_MODEL_ARTIFACTS = ("native", "tftrt_fp32", "tftrt_fp16", "tftrt_int8")
# What a numbered directory of each artifact must hold to be complete.
REQUIRED_FILES = {
    "native": ("saved_model.pb", "variables/variables.index"),
    "tftrt_fp32": ("saved_model.pb", "variables/variables.index"),
    "tftrt_fp16": ("saved_model.pb", "variables/variables.index"),
    "tftrt_int8": ("saved_model.pb", "variables/variables.index"),
    "frozen": ("frozen_graph.pb", "frozen_graph.json"),
    "calibration": ("calibration.npz",),
}
WORKER_MODULE = "tftrt_keras.pipeline.worker"


# --- processes

def _proc_state(pid):
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rsplit(")", 1)[1].split()[0]
  except (FileNotFoundError, ProcessLookupError, IndexError):
    return None


def process_running(pid):
  """True while `pid` exists and is not a zombie (a zombie runs no code and writes nothing)."""
  state = _proc_state(pid)
  return state is not None and state != "Z"


def worker_processes(root):
  """Pids of live export workers whose request lies under `root` (found through /proc, so it sees workers of
  any process, orphans included)."""
  root = os.path.abspath(root)
  found = []
  for name in os.listdir("/proc"):
    if not name.isdigit():
      continue
    try:
      with open(f"/proc/{name}/cmdline", "rb") as f:
        argv = f.read().decode(errors="replace").split("\0")
    except OSError:
      continue
    if WORKER_MODULE in argv and any(a.startswith(root + os.sep) for a in argv) and process_running(int(name)):
      found.append(int(name))
  return found


def wait_until(predicate, what, timeout=120.0, process=None):
  """Polls `predicate` until it is true. Fails naming `what` after `timeout` seconds or when `process`
  (a Popen) exits first; the timeout only bounds a hang, the test never asserts on speed."""
  deadline = time.monotonic() + timeout
  while not predicate():
    if process is not None and process.poll() is not None:
      out = process.stdout.read() if process.stdout else ""
      raise AssertionError(f"process exited ({process.returncode}) before {what}:\n{out[-4000:]}")
    if time.monotonic() > deadline:
      raise AssertionError(f"gave up waiting for {what} after {timeout:g} s")
    time.sleep(0.05)


def wait_for_file(path, timeout=120.0, process=None):
  wait_until(lambda: os.path.exists(path) and os.path.getsize(path) > 0, f"{path} to appear", timeout, process)
  with open(path) as f:
    return f.read().strip()


# --- what is on disk

def artifact_bases(root):
  """{artifact name: base directory} for the normal export (the root) and every artifact directory."""
  bases = {"native": root}
  for name in sorted(os.listdir(root)):
    if name in REQUIRED_FILES and os.path.isdir(os.path.join(root, name)):
      bases[name] = os.path.join(root, name)
  return bases


def incomplete_versions(root, ignore=()):
  """Numbered directories a server would load that are not complete, as 'artifact/version: why' strings."""
  problems = []
  for artifact, base in artifact_bases(root).items():
    for name in sorted(os.listdir(base)):
      path = os.path.join(base, name)
      if not name.isdigit() or not os.path.isdir(path) or path in ignore:
        continue
      missing = [f for f in REQUIRED_FILES[artifact] if not os.path.isfile(os.path.join(path, f))]
      if missing:
        problems.append(f"{artifact}/{name}: missing {missing}")
      for _, _, files in os.walk(path):
        if "PARTIAL_WRITE_MARKER" in files:
          problems.append(f"{artifact}/{name}: holds a half-written variant")
  return problems


def leftover_temps(root):
  """Temp directories and half-written manifest files still on disk."""
  found = []
  for directory, dirs, files in os.walk(root):
    found += [os.path.join(directory, d) for d in dirs if d.startswith(".tmp-")]
    found += [os.path.join(directory, f) for f in files if ".tmp" in f]
  return found


def assert_nothing_partial(root, ignore=()):
  assert incomplete_versions(root, ignore) == [], "a server would load an incomplete version"
  assert leftover_temps(root) == [], "temporary files outlived the export"


def mount_small_tmpfs(mount_point, size="4m"):
  """Mounts a tmpfs of `size` at `mount_point` (a real filesystem that fills up); returns None, or why it
  cannot be done here (not root, no `mount`, a container without CAP_SYS_ADMIN)."""
  os.makedirs(mount_point, exist_ok=True)
  if os.geteuid() != 0 or not shutil.which("mount"):
    return "mounting a small tmpfs needs root"
  done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", mount_point], capture_output=True,
                        text=True, check=False)
  return None if done.returncode == 0 else f"cannot mount a tmpfs here: {done.stderr.strip()}"


def unmount(mount_point):
  subprocess.run(["umount", "-l", mount_point], check=False)


def fill_filesystem(directory, leave_bytes=0):
  """Writes a filler file until only `leave_bytes` are free on `directory`'s filesystem; returns its path.

  Written in chunks: a trainer writing into the same filesystem at the same time may take the last bytes
  first, and a disk that fills up before the filler is done is exactly the state wanted.
  """
  path = os.path.join(directory, "filler")
  chunk = b"\0" * 65536
  with open(path, "wb", buffering=0) as f:
    while True:
      stats = os.statvfs(directory)
      room = stats.f_bavail * stats.f_frsize - leave_bytes
      if room <= 0:
        break
      try:
        f.write(chunk[:min(len(chunk), room)])
      except OSError as err:
        if err.errno != errno.ENOSPC:
          raise
        break
  return path


def read_manifest(root, version):
  with open(os.path.join(root, "manifests", str(version), "manifest.json")) as f:
    return json.load(f)


# A whole export from one captured sample: built and build-checked, but with no held-out sample nothing was compared
# with the normal export, so the frozen graph and the variants are `unverified` (and say so).
BUILT_WITHOUT_HELD_OUT_SAMPLES = {"native": "ok", "frozen": "unverified", "calibration": "ok",
                                  "tftrt_fp32": "unverified", "tftrt_fp16": "unverified"}


def assert_closed(manifest):
  """No artifact is left `pending`; every one that did not succeed says why."""
  for name, entry in manifest["artifacts"].items():
    assert entry["status"] in ("ok", "unverified", "skipped", "failed", "rejected"), (name, entry)
    if entry["status"] != "ok":
      assert entry.get("reason"), f"{name} is {entry['status']} without a reason"


def statuses(manifest):
  return {name: entry["status"] for name, entry in manifest["artifacts"].items()}


def serve(path, x):
  """Loads a SavedModel as TF Serving would and runs its default signature on `x`."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  loaded = tf.saved_model.load(path)
  outputs = loaded.signatures["serving_default"](tf.constant(x))
  return {k: v.numpy() for k, v in outputs.items()}


def record_row(fault, root, outcome, attempted=None, failed=None, ignore=()):
  """Appends one row of the fault table to $FAULT_INJECTION_REPORT (a JSON-lines file) when it is set.

  Exports attempted and failed are counted from the manifests under `root` unless given."""
  path = os.environ.get("FAULT_INJECTION_REPORT")
  if not path:
    return
  manifests = []
  directory = os.path.join(root, "manifests")
  if os.path.isdir(directory):
    manifests = [read_manifest(root, v) for v in sorted(os.listdir(directory), key=int) if v.isdigit()]
  if attempted is None:
    attempted = len(manifests)
  if failed is None:
    failed = sum(any(e["status"] in ("failed", "skipped") and "calibration" != n for n, e in m["artifacts"].items())
                 for m in manifests)
  row = {"fault": fault, "attempted": attempted, "failed": failed,
         "partial": len(incomplete_versions(root, ignore)) + len(leftover_temps(root)) if os.path.isdir(root) else 0,
         "orphans": len(worker_processes(root)), "outcome": outcome}
  with open(path, "a") as f:
    f.write(json.dumps(row) + "\n")


# --- child training processes

def _keras_main(args):
  """Trains a tiny deterministic model with `TrtExport`; writes the final weights to --weights_out."""
  # A trainer in a terminal turns Ctrl-C into KeyboardInterrupt. A test run started as a background job of a
  # non-interactive shell (CI) inherits SIGINT *ignored*, and Python then keeps ignoring it: restore it.
  signal.signal(signal.SIGINT, signal.default_int_handler)
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tests.saved_models import FAKE_BACKEND  # pylint: disable=g-import-not-at-top
  from tftrt_keras import TrtExport  # pylint: disable=g-import-not-at-top
  from tftrt_keras.formats.tftrt.backend import CONVERTER_VARIABLE  # pylint: disable=g-import-not-at-top
  os.environ[CONVERTER_VARIABLE] = FAKE_BACKEND  # TEST DOUBLE: its export workers inherit it

  keras = tf.keras
  keras.utils.set_random_seed(args.seed)
  tf.config.experimental.enable_op_determinism()
  rng = np.random.default_rng(args.seed)
  x = rng.normal(size=(64, 4)).astype("float32")
  y = (x @ rng.normal(size=(4, 1)) > 0).astype("float32")
  model = keras.Sequential([keras.Input(shape=(4,), name="x"), keras.layers.Dense(8, activation="relu"),
                            keras.layers.Dense(1, activation="sigmoid")])
  model.compile(optimizer=keras.optimizers.SGD(0.1), loss="binary_crossentropy")
  callbacks = []
  if args.backup_dir:
    callbacks.append(keras.callbacks.BackupAndRestore(args.backup_dir))
  export = TrtExport(args.export_dir, precisions=tuple(args.precisions.split(",")), calibration_batches=2,
                     exports_to_keep=args.exports_to_keep, blocking=args.blocking,
                     timeout_seconds=args.timeout_seconds, formats=("tftrt",), verbose=0)
  callbacks.append(export)
  callbacks.append(keras.callbacks.LambdaCallback(
      on_epoch_end=lambda epoch, logs: print(f"EPOCH_END {epoch + 1}", flush=True)))
  if args.stop_file:
    callbacks.append(_stop_at_epoch(keras, args.stop_epoch, args.stop_file))
  model.fit(x, y, validation_data=(x[:16], y[:16]), batch_size=16, epochs=args.epochs, shuffle=False,
            verbose=0, callbacks=callbacks)
  np.savez(args.weights_out, *[w for w in model.get_weights()])
  print("MANIFESTS " + json.dumps(list(getattr(export, "manifest_paths", []))), flush=True)
  print("DONE", flush=True)


def _stop_at_epoch(keras, epoch, path):
  """A callback that announces the end of epoch `epoch` through `path`, then waits to be preempted (the test
  sends SIGTERM or SIGKILL here)."""

  class StopAtEpoch(keras.callbacks.Callback):

    def on_epoch_end(self, current, logs=None):
      if current + 1 == epoch:
        with open(path, "w") as f:
          f.write(str(os.getpid()))
        while True:
          time.sleep(0.1)
  return StopAtEpoch()


def main(argv):
  parser = argparse.ArgumentParser()
  sub = parser.add_subparsers(dest="command", required=True)
  keras_run = sub.add_parser("keras")
  keras_run.add_argument("--export_dir", required=True)
  keras_run.add_argument("--weights_out", required=True)
  keras_run.add_argument("--epochs", type=int, default=3)
  keras_run.add_argument("--seed", type=int, default=7)
  keras_run.add_argument("--precisions", default="FP32")
  keras_run.add_argument("--exports_to_keep", type=int, default=None)
  keras_run.add_argument("--blocking", action="store_true")
  keras_run.add_argument("--timeout_seconds", type=float, default=None)
  keras_run.add_argument("--backup_dir", default=None)
  keras_run.add_argument("--stop_epoch", type=int, default=0)
  keras_run.add_argument("--stop_file", default=None)
  args = parser.parse_args(argv[1:])
  {"keras": _keras_main}[args.command](args)


if __name__ == "__main__":
  main(sys.argv)
