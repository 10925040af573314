"""At most one conversion worker per export root at a time, with a bounded queue.

A due export's normal SavedModel and samples are written at once; its worker waits in the queue, and every
queued export gets its frozen graph and verification. Under `conversion_policy="latest"` (default), when more
than `max_queued` exports wait, the oldest one's variants are `skipped` ("superseded by version N"); under
"every" all are converted. When training exits with work outstanding, an exit hook kills the worker and closes
queued exports as `skipped`; a process killed outright takes its worker with it (PR_SET_PDEATHSIG) and
`ExportLayout.recover_interrupted` closes what it left on the next run.
"""

import atexit
import threading
import weakref

from absl import logging

from tftrt_keras.options import ConversionOptions
from tftrt_keras.artifacts.layout import ExportLayout
from tftrt_keras.pipeline.worker import ConversionWorker
from tftrt_keras.formats import is_variant
from tftrt_keras.artifacts.manifest import PENDING, SKIPPED, read_manifest, set_artifact, write_manifest
from tftrt_keras.pipeline.retention import retain_exports

_LIVE_SCHEDULERS = weakref.WeakSet()


class ExportScheduler:
  """Runs prepared exports one after another in worker processes.

  Args:
    exports_to_keep: after each finished export, keep only this many (None: keep all).
    max_queued: exports whose variants may wait behind the running worker under the "latest" policy.
    on_done: optional callable(manifest) for each finished export.
  """

  def __init__(self, exports_to_keep=None, max_queued=1, on_done=None):
    self._keep = exports_to_keep
    self._max_queued = max_queued
    self._on_done = on_done
    self._running = None
    self._queue = []
    self._superseded = set()  # versions in the queue whose variants were superseded (freeze and verify only)
    self._foreground = set()  # versions submitted with blocking=True: their caller waits, nothing competes
    self._lock = threading.Lock()
    self.finished = []  # closed manifests, in the order their workers ended
    _LIVE_SCHEDULERS.add(self)

  def submit(self, request, blocking=False):
    """Starts `request`'s worker now, or queues it behind the running one. `blocking`: wait for it (its
    worker then runs in the foreground: see `ConversionOptions.worker_threads`)."""
    with self._lock:
      if blocking:
        self._foreground.add(request.version)
      self._start_next_locked()
      if self._running is None:
        self._running = self._job(request)
      else:
        if request.options.conversion_policy == "latest":
          converting = [r for r in self._queue if r.version not in self._superseded]
          for older in converting[:max(0, len(converting) + 1 - self._max_queued)]:
            _mark_superseded(older, request.version)
            self._superseded.add(older.version)
        self._queue.append(request)
    if blocking:
      self.wait_all()

  def poll(self):
    """Collects a finished worker and starts the next queued one; cheap, call it often."""
    with self._lock:
      self._start_next_locked()

  def busy(self):
    with self._lock:
      return self._running is not None or bool(self._queue)

  def wait_all(self, timeout=None):
    """Waits for the running and all queued exports. Returns the manifests finished so far. The queued ones
    start in the foreground: their caller waits for them now."""
    while True:
      with self._lock:
        self._foreground.update(request.version for request in self._queue)
        self._start_next_locked()
        job = self._running
      if job is None:
        return list(self.finished)
      job.wait(timeout)
      if not job.done():
        return list(self.finished)

  def stop(self, reason):
    """Kills the running worker and drops the queue, recording `reason` in their manifests.

    Runs at interpreter exit too, where Ctrl-C may have struck while the lock was being taken: the lock is
    waited for a bounded time only, so exiting never hangs (the worker still dies with this process).
    """
    if not self._lock.acquire(timeout=10):
      logging.warning("tftrt_keras: export scheduler busy at exit; its worker ends with this process")
      return
    try:
      job, self._running = self._running, None
      queued, self._queue = self._queue, []
    finally:
      self._lock.release()
    if job is not None:
      self._finish(job.kill(reason), job.request.root)
    for request in queued:
      _mark_dropped(request, reason)

  def _start_next_locked(self):
    if self._running is not None and self._running.done():
      self._finish(self._running.wait(), self._running.request.root)
      self._running = None
    if self._running is None and self._queue:
      self._running = self._job(self._queue.pop(0))

  def _job(self, request):
    foreground = request.version in self._foreground
    self._foreground.discard(request.version)
    return ConversionWorker(request, foreground=foreground)

  def _finish(self, manifest, root):
    if manifest is None:  # the job could not close it (logged there); the next run's recovery does
      return
    self.finished.append(manifest)
    if self._on_done is not None:
      try:
        self._on_done(manifest)
      except Exception:  # pylint: disable=broad-except
        logging.exception("tftrt_keras: on_done callback failed")
    if self._keep:
      try:
        # The finished export's own options say where its Triton versions live.
        options = ConversionOptions.from_json(manifest["options"])
      except Exception:  # pylint: disable=broad-except
        logging.exception("tftrt_keras: the options of export %s are unreadable", manifest.get("version"))
        options = ConversionOptions(formats=())
      retain_exports(root, self._keep, options)


@atexit.register
def _stop_live_schedulers():
  """The training process is exiting (Ctrl-C, an exception) with exports running or queued: the running one
  is stopped and the queued ones are closed, so no manifest stays `pending`. Registered after
  `pipeline.worker`'s own hook, so it runs first (atexit is last-in, first-out)."""
  for scheduler in list(_LIVE_SCHEDULERS):
    scheduler.stop("interrupted: the training process exited before this export finished")


def _mark_dropped(request, reason, only=lambda name: True):
  """Records the pending artifacts of a queued export (those `only` accepts) as skipped. Runs inside training
  (`submit`) and at exit, so a failure (a full disk) is logged, never raised; the manifest then stays
  `pending` for the next run's recovery."""
  layout = ExportLayout(request.root)
  try:
    manifest = read_manifest(layout.manifest_dir(request.version))
    for name, entry in manifest["artifacts"].items():
      if entry["status"] == PENDING and only(name):
        set_artifact(manifest, name, SKIPPED, reason=reason)
    write_manifest(layout.manifest_dir(request.version), manifest)
  except (OSError, ValueError) as err:
    logging.error("tftrt_keras: could not record that export %s was dropped (%s): %s", request.version, reason,
                  err)


def _mark_superseded(request, newer_version):
  """The variants of a waiting export give way to a newer one; its frozen graph and verification still run."""
  _mark_dropped(request, f"superseded: export version {newer_version} was due before this export's conversion "
                         "started (conversion_policy='latest' converts the newest export; 'every' converts all)",
                only=is_variant)
