"""The conversion worker: a child process per export, so a TensorRT crash or an OOM kill cannot take training down.

Parent side: `ConversionWorker` starts `python -m tftrt_keras.pipeline.worker <request.json>`, watches it, and
closes the manifest however it ends (the artifact in progress `failed` with the cause, the rest "not
attempted", temp directories removed). Child side: `main()` applies its limits and device, makes TensorRT
findable, sets the GPU memory budget and runs `pipeline.run.run_export`.
"""

import atexit
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
import weakref

from absl import logging

from tftrt_keras.artifacts.layout import ExportLayout
from tftrt_keras.pipeline.request import REQUEST_FILE, ExportRequest
from tftrt_keras.artifacts.manifest import FAILED, PENDING, fail_pending, read_manifest, set_artifact, write_manifest

WORKER_LOG = "worker.log"
# The worker gets its own process group, so that Ctrl-C in the terminal reaches only the trainer, which stops it
# in order. In the trainer's session where Python can (3.11): where the kernel shares CPU between sessions first
# (autogroups), the worker's low niceness then yields to its trainer, not to every other session on the machine.
_OWN_PROCESS_GROUP = {"process_group": 0} if sys.version_info >= (3, 11) else {"start_new_session": True}
_PR_SET_PDEATHSIG = 1
_LIVE_JOBS = weakref.WeakSet()
_PARENT_PID = "TFTRT_KERAS_TRAINER_PID"


def _die_with_parent():
  """Runs first in the worker: the kernel SIGKILLs it when the training process dies, however it dies.

  Not a `preexec_fn`: that makes Python fork the whole trainer instead of vfork. The kernel ties this to the
  *thread* that started the worker, so start workers from the long-lived training thread only.
  """
  try:
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
  except OSError:
    pass
  expected = os.environ.get(_PARENT_PID)
  if expected and os.getppid() != int(expected):
    sys.exit(f"tftrt_keras worker: the training process (pid {expected}) ended before this worker started")


def _restore_user_log_level(env):
  """worker.log gets TensorFlow's full C++ log: a trainer that quieted its own console (`quiet_console`) hands
  the worker the level the user had, not the quiet one."""
  from tftrt_keras.quiet_console import CPP_LOG_LEVEL_VARIABLE, ORIGINAL_CPP_LOG_LEVEL_VARIABLE  # pylint: disable=g-import-not-at-top
  if ORIGINAL_CPP_LOG_LEVEL_VARIABLE not in env:
    return
  original = env.pop(ORIGINAL_CPP_LOG_LEVEL_VARIABLE)
  if original:
    env[CPP_LOG_LEVEL_VARIABLE] = original
  else:
    env.pop(CPP_LOG_LEVEL_VARIABLE, None)


def _package_parent():
  """The directory holding `tftrt_keras/` (never the package itself: its `keras/` would shadow Keras)."""
  return os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _describe_exit(returncode):
  if returncode < 0:
    name = signal.Signals(-returncode).name
    hint = {"SIGKILL": " (the out-of-memory killer sends this: lower max_workspace_size_bytes or "
                       "gpu_memory_limit_mb, or give the machine more memory)",
            "SIGSEGV": " (a crash inside TensorFlow or TensorRT)",
            "SIGABRT": " (TensorFlow or TensorRT aborted; see worker.log)"}.get(name, "")
    return f"export worker killed by {name}", hint
  return f"export worker exited with status {returncode}", "; see worker.log"


def _close_pending(manifest, cause, hint, in_progress):
  """Fails every pending artifact: the one being written when the worker ended says so; the ones it never
  reached say they were not attempted, so a user knows which step to look at."""
  pending = [n for n, e in manifest["artifacts"].items() if e["status"] == PENDING]
  producing = [n for n in pending if n in in_progress]
  what = f" while producing {', '.join(producing)}" if producing else ""
  for name in pending:
    prefix = "not attempted: " if producing and name not in producing else ""
    set_artifact(manifest, name, FAILED, reason=f"{prefix}{cause}{what}{hint}")


class ConversionWorker:
  """A running (or finished) worker for one prepared export.

  Args:
    request: the `ExportRequest` written by `pipeline.prepare.prepare_export`.
    on_done: optional callable(manifest) run once the manifest is closed (in the watcher thread).
    foreground: the caller waits for it: "auto" limits then take every core at the caller's priority.
  """

  def __init__(self, request, on_done=None, foreground=False):
    self.request = request
    self._layout = ExportLayout(request.root)
    self._directory = self._layout.manifest_dir(request.version)
    self._on_done = on_done
    self._manifest = None
    self._finished = threading.Event()
    self.returncode = None
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (_package_parent(), env.get("PYTHONPATH")) if p)
    env[_PARENT_PID] = str(os.getpid())
    _restore_user_log_level(env)
    from tftrt_keras.pipeline.worker_setup import worker_limits  # pylint: disable=g-import-not-at-top
    self.limits = worker_limits(request.options, foreground)
    env.update(self.limits.environment())
    self._log = open(os.path.join(self._directory, WORKER_LOG), "ab")
    self._process = subprocess.Popen(
        [sys.executable, "-m", "tftrt_keras.pipeline.worker", os.path.join(self._directory, REQUEST_FILE)],
        stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, env=env, **_OWN_PROCESS_GROUP)
    self.pid = self._process.pid
    self._started = time.monotonic()
    _LIVE_JOBS.add(self)
    self._watcher = threading.Thread(target=self._watch, name=f"tftrt-export-{request.version}", daemon=True)
    self._watcher.start()

  @property
  def version(self):
    return self.request.version

  def done(self):
    return self._finished.is_set()

  def wait(self, timeout=None):
    """Blocks until the worker ended and the manifest is closed; returns the manifest (None on timeout)."""
    self._finished.wait(timeout)
    return self._manifest

  def kill(self, reason):
    """Stops the worker now; its export is recorded as failed with `reason`."""
    self._kill_reason = (reason, "")
    self._signal(signal.SIGKILL)
    # SIGKILL ends the worker at once; the bound only guards interpreter exit against a stuck watcher.
    return self.wait(timeout=60)

  def _signal(self, sig):
    try:
      os.killpg(self._process.pid, sig)
    except ProcessLookupError:
      pass

  _kill_reason = None  # (cause, hint) when this process stopped the worker

  def _watch(self):
    timeout = self.request.options.timeout_seconds
    while True:
      # A polite worker beside busy training waits for a CPU most of the time: that is not a hang.
      waited = _cpu_wait_seconds(self.pid)
      left = None if timeout is None else timeout - (time.monotonic() - self._started - waited)
      if left is not None and left <= 0:
        not_counted = f" ({waited:.0f} s waiting for a CPU not counted)" if waited >= 1 else ""
        self._kill_reason = (f"export worker still running after timeout_seconds={timeout:g} and was killed",
                             f"{not_counted}; raise timeout_seconds if this model legitimately converts more slowly")
        self._signal(signal.SIGKILL)
        self.returncode = self._process.wait()
        break
      try:
        self.returncode = self._process.wait(timeout=None if left is None else max(left, 1.0))
        break
      except subprocess.TimeoutExpired:
        continue
    self._close()

  def _artifacts_in_progress(self):
    """Artifacts the dead worker had a temp directory for, i.e. was writing when it ended."""
    found = set()
    prefix = f".tmp-{self.version}-{self.pid}-"
    for name in read_manifest(self._directory)["artifacts"]:
      base = self._layout.base(name)
      if name != "native" and os.path.isdir(base) and any(n.startswith(prefix) for n in os.listdir(base)):
        found.add(name)
    return found

  def _close(self):
    """Closes the manifest however the worker ended; never raises (it runs in the watcher thread)."""
    manifest = None
    try:
      self._log.close()
      in_progress = self._artifacts_in_progress()
      # Temps go before the manifest is rewritten: on a full disk they hold the space that write needs.
      self._layout.remove_temps(version=self.version)
      manifest = read_manifest(self._directory)
      pending = [n for n, e in manifest["artifacts"].items() if e["status"] == PENDING]
      if pending or self.returncode != 0:
        cause, hint = self._kill_reason or _describe_exit(self.returncode)
        _close_pending(manifest, cause, hint, in_progress)
        manifest.setdefault("worker", {})["exit"] = self.returncode
        try:
          write_manifest(self._directory, manifest)
        except OSError as err:
          # A full disk can refuse even this small file. The caller still gets the closed manifest, and the
          # next run's `recover_interrupted` closes the one on disk.
          manifest["worker"]["manifest_write_error"] = f"{type(err).__name__}: {err}"
          logging.error("tftrt_keras: could not record the end of export %s in %s: %s", self.version,
                        self._directory, err)
    except Exception:  # pylint: disable=broad-except
      logging.exception("tftrt_keras: closing the manifest of export %s failed", self.version)
    finally:
      self._manifest = manifest
      _LIVE_JOBS.discard(self)
      try:
        if self._on_done is not None and manifest is not None:
          self._on_done(manifest)
      except Exception:  # pylint: disable=broad-except
        logging.exception("tftrt_keras: on_done callback failed")
      self._finished.set()


def _cpu_wait_seconds(pid):
  """The longest time one of the worker's threads spent runnable but waiting for a CPU (Linux schedstat); 0
  elsewhere. The longest, not the sum: threads wait side by side, and a hung worker spinning more threads than
  there are cores must still time out."""
  longest = 0
  try:
    for tid in os.listdir(f"/proc/{pid}/task"):
      try:
        with open(f"/proc/{pid}/task/{tid}/schedstat", encoding="ascii") as f:
          longest = max(longest, int(f.read().split()[1]))
      except (OSError, IndexError, ValueError):
        continue  # a thread that ended meanwhile
  except OSError:
    pass
  return longest / 1e9


@atexit.register
def _stop_live_workers():
  """The training process is exiting (Ctrl-C included) with exports still running: stop them in order."""
  for job in list(_LIVE_JOBS):
    job.kill("interrupted: the training process exited and stopped its export worker")


def _configure_tensorflow(limit_mb):
  """Thread pools and GPU memory, before TensorFlow's first op; returns TensorFlow's thread settings."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tftrt_keras.pipeline.worker_setup import configure_tensorflow_threads  # pylint: disable=g-import-not-at-top
  threads = configure_tensorflow_threads(tf)
  for gpu in tf.config.list_physical_devices("GPU"):
    if limit_mb:
      tf.config.set_logical_device_configuration(gpu, [tf.config.LogicalDeviceConfiguration(memory_limit=limit_mb)])
    else:
      tf.config.experimental.set_memory_growth(gpu, True)
  return threads


def _record_limits(request, nice, tensorflow_threads):
  """The manifest and worker.log say what the worker ran with: the niceness it got (`nice`, as
  `worker_setup.apply_worker_nice` returned it) and each pool's bound."""
  from tftrt_keras.pipeline.worker_setup import THREAD_VARIABLES  # pylint: disable=g-import-not-at-top
  # "environment": the thread variables set when the libraries loaded (all equal to "threads" when bounded).
  limits = {**nice, "threads": os.environ.get(THREAD_VARIABLES[-1]) or "each library's default",
            "tensorflow": tensorflow_threads,
            "environment": sorted(name for name in THREAD_VARIABLES[:-1] if name in os.environ)}
  print(f"tftrt_keras worker: nice {nice['nice']} (autogroup {nice['autogroup_nice']}), threads "
        f"{limits['threads']}", flush=True)
  directory = ExportLayout(request.root).manifest_dir(request.version)
  manifest = read_manifest(directory)
  manifest.setdefault("worker", {})["limits"] = limits
  try:
    write_manifest(directory, manifest)
  except OSError as err:  # a full disk: the export's own steps say so in the manifest; worker.log has the limits
    print(f"tftrt_keras worker: could not record the limits in the manifest: {err}", flush=True)


def _prepare_formats(request, argv):
  """Lets each format this export builds set up the process before TensorFlow loads (`Format.prepare_worker`;
  e.g. TF-TRT re-executes the worker with TensorRT's directory on LD_LIBRARY_PATH)."""
  from tftrt_keras import formats  # pylint: disable=g-import-not-at-top
  for name in formats.resolve_formats(request.options.formats):
    formats.load_format(name).prepare_worker(request.options, argv, "tftrt_keras.pipeline.worker")


def _record_worker_error(request, err):
  directory = ExportLayout(request.root).manifest_dir(request.version)
  try:
    manifest = read_manifest(directory)
    fail_pending(manifest, f"export failed: {type(err).__name__}: {err}")
    write_manifest(directory, manifest)
  except (OSError, ValueError):
    traceback.print_exc()  # e.g. a full disk: the parent closes the manifest with the exit status instead


def main(argv):
  _die_with_parent()
  from tftrt_keras.pipeline.worker_setup import apply_worker_nice  # pylint: disable=g-import-not-at-top
  nice = apply_worker_nice()  # first: every thread a library starts from here on inherits it
  from tftrt_keras.pipeline import run as export_run  # pylint: disable=g-import-not-at-top
  from tftrt_keras.pipeline.worker_setup import select_conversion_device  # pylint: disable=g-import-not-at-top
  request = ExportRequest.read(argv[1])
  try:
    # Before anything loads TensorFlow (the library-path check below does), and once across its re-exec.
    select_conversion_device(request.options.conversion_device)
    _prepare_formats(request, argv)
    tensorflow_threads = _configure_tensorflow(request.options.gpu_memory_limit_mb)
    _record_limits(request, nice, tensorflow_threads)
    manifest = export_run.run_export(request)
  except Exception as err:  # pylint: disable=broad-except
    # Record what broke where the user looks (the manifest), not only in worker.log.
    traceback.print_exc()
    _record_worker_error(request, err)
    return 1
  failed = [n for n, e in manifest["artifacts"].items() if e["status"] == FAILED]
  print(f"tftrt_keras worker: version {request.version} done; failed: {failed or 'none'}", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv))
