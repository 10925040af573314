"""Where each artifact of each export lives, how it appears atomically, and what retention may delete.

    export_dir/                 TF Serving base path of the normal export: numbered versions
      3/                        as `BestExporter` / `model.export` would write them
      tftrt_fp16/3/             each variant kind is a base path of its own
      frozen/3/frozen_graph.pb  + frozen_graph.json
      front/3/                  a split model's TF front (SavedModel + split.json)
      calibration/3/calibration.npz, verification.npz
      manifests/3/manifest.json (+ request.json, worker.log, report.md)
      .tftrt_keras              marks the root as ours; .tftrt_keras.lock is held by the writing process

Everything is written into a hidden `.tmp-...` sibling and renamed, so a polling server never sees half an
artifact. Retention deletes only paths a manifest of ours lists.
"""

import errno
import fcntl
import json
import os
import re
import shutil
import uuid

from tftrt_keras.artifacts.manifest import MANIFEST_FILE, PENDING, fail_pending, read_manifest, write_manifest

# The calibration artifact holds the samples INT8 calibrates on and, apart from them, the held-out samples
# verification judges on.
CALIBRATION_FILE = "calibration.npz"
VERIFICATION_FILE = "verification.npz"
MANIFESTS = "manifests"
MARKER = ".tftrt_keras"
LOCK = ".tftrt_keras.lock"
_TEMP = re.compile(r"^\.tmp-(\d+)-(\d+)-[0-9a-f]+$")  # .tmp-<version>-<pid>-<random>


class ExportRootBusy(RuntimeError):
  """Another process is writing exports into the same directory."""


def _is_version(name):
  return name.isdigit()


def _pid_alive(pid):
  """True while `pid` can still write. A zombie (dead, not yet reaped: killed workers of a killed trainer
  wait for init to reap them) counts as dead, or its temps would outlive it."""
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rsplit(")", 1)[1].split()[0] != "Z"
  except (OSError, IndexError):
    return True  # no /proc (macOS): trust kill(0)


class ExportLayout:
  """Paths and atomic publishing under one export root."""

  def __init__(self, root):
    self.root = os.path.abspath(os.fspath(root))

  # --- paths
  def base(self, artifact):
    """The directory holding numbered versions of `artifact` (the root itself for the normal export)."""
    return self.root if artifact == "native" else os.path.join(self.root, artifact)

  def path(self, artifact, version):
    return os.path.join(self.base(artifact), str(version))

  def manifest_dir(self, version):
    return os.path.join(self.root, MANIFESTS, str(version))

  def manifest_path(self, version):
    return os.path.join(self.manifest_dir(version), MANIFEST_FILE)

  def relative(self, version, path):
    """`path` relative to the manifest's directory, as the manifest stores it."""
    return os.path.relpath(path, self.manifest_dir(version))

  def resolve(self, version, relative_path):
    return os.path.normpath(os.path.join(self.manifest_dir(version), relative_path))

  # --- creation
  def ensure_root(self, argument="export_dir"):
    """Creates the root and its marker; raises ValueError naming `argument` when it is not writable."""
    try:
      os.makedirs(self.root, exist_ok=True)
      marker = os.path.join(self.root, MARKER)
      if not os.path.exists(marker):
        with open(marker, "w") as f:
          json.dump({"created_by": "tftrt_keras", "layout": 1}, f)
      probe = os.path.join(self.root, f".write-probe-{os.getpid()}-{uuid.uuid4().hex[:6]}")
      with open(probe, "w"):
        pass
      os.remove(probe)
    except OSError as err:
      from tftrt_keras.errors import invalid_argument  # pylint: disable=g-import-not-at-top
      raise invalid_argument(argument, self.root, "a directory this process can create and write",
                             hint=f"{type(err).__name__}: {err.strerror or err}") from err

  def temp_dir(self, artifact, version):
    """A fresh hidden directory beside the artifact's final place; servers ignore non-numeric names."""
    base = self.base(artifact)
    os.makedirs(base, exist_ok=True)
    path = os.path.join(base, f".tmp-{version}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    os.makedirs(path)
    return path

  def publish(self, temp_path, artifact, version):
    """Renames a finished temp directory to its numbered place. Never replaces an existing version."""
    final = self.path(artifact, version)
    try:
      # os.rename onto an existing non-empty directory fails; onto an empty one it would replace it.
      if os.path.exists(final):
        raise FileExistsError(errno.EEXIST, "version already exists", final)
      os.rename(temp_path, final)
    except OSError:
      shutil.rmtree(temp_path, ignore_errors=True)
      raise
    return final

  # --- discovery
  def versions(self):
    """Versions that have a manifest of ours, oldest first."""
    directory = os.path.join(self.root, MANIFESTS)
    if not os.path.isdir(directory):
      return []
    return sorted(int(n) for n in os.listdir(directory)
                  if _is_version(n) and os.path.isfile(os.path.join(directory, n, MANIFEST_FILE)))

  def next_version(self, minimum=1):
    """One more than any version on disk (normal exports included), so no version is ever reused."""
    taken = [0]
    for directory in [self.root, os.path.join(self.root, MANIFESTS)] + [
        os.path.join(self.root, n) for n in (os.listdir(self.root) if os.path.isdir(self.root) else [])]:
      if os.path.isdir(directory):
        taken += [int(n) for n in os.listdir(directory) if _is_version(n)]
    return max(max(taken) + 1, minimum)

  def manifests(self):
    return [read_manifest(self.manifest_path(v)) for v in self.versions()]

  # --- cleaning up
  def remove_temps(self, version=None, only_dead=False):
    """Deletes `.tmp-*` directories (of one version, or left by processes that no longer run)."""
    removed = []
    bases = [self.root] + [os.path.join(self.root, n) for n in os.listdir(self.root)] if os.path.isdir(self.root) else []
    for base in bases:
      if not os.path.isdir(base):
        continue
      for name in os.listdir(base):
        match = _TEMP.match(name)
        if not match:
          continue
        temp_version, pid = int(match.group(1)), int(match.group(2))
        if version is not None and temp_version != version:
          continue
        if only_dead and _pid_alive(pid):
          continue
        shutil.rmtree(os.path.join(base, name), ignore_errors=True)
        removed.append(os.path.join(base, name))
    return removed

  def recover_interrupted(self, reason="interrupted: the process running this export ended before it finished"):
    """On start-up: temps of dead processes go, and manifests left `pending` are closed as failed."""
    self.remove_temps(only_dead=True)
    recovered = []
    for version in self.versions():
      manifest = read_manifest(self.manifest_path(version))
      owner = manifest.get("worker", {}).get("owner_pid")
      if any(a["status"] == PENDING for a in manifest["artifacts"].values()) and not (owner and _pid_alive(owner)):
        fail_pending(manifest, reason)
        write_manifest(self.manifest_dir(version), manifest)
        recovered.append(version)
    return recovered

  def retain(self, keep):
    """Keeps the newest `keep` exports; deletes older ones, touching only paths their manifests list.

    A path is deleted only when it is a numbered directory directly inside this root or one of its artifact
    bases; a failed delete is logged, never raised, so retention cannot hurt a training run.
    """
    from absl import logging  # pylint: disable=g-import-not-at-top
    versions = self.versions()
    deleted = []
    for version in versions[:-keep] if keep else []:
      manifest = read_manifest(self.manifest_path(version))
      if any(entry["status"] == PENDING for entry in manifest["artifacts"].values()):
        continue  # its worker still runs; the next retention pass takes it
      for name, entry in manifest["artifacts"].items():
        if not entry.get("path"):
          continue
        path = self.resolve(version, entry["path"])
        if path != self.path(name, version) or not os.path.isdir(path):
          continue  # not where we would have put it: not ours to delete
        try:
          shutil.rmtree(path)
          deleted.append(path)
        except OSError as err:
          logging.warning("tftrt_keras: could not delete old export %s: %s", path, err)
      shutil.rmtree(self.manifest_dir(version), ignore_errors=True)
      deleted.append(self.manifest_dir(version))
    return deleted


class RootLock:
  """An exclusive lock on an export root for the lifetime of one training run (or offline export).

  Two runs pointed at one root would interleave versions; the second gets `ExportRootBusy` at once.
  """

  def __init__(self, layout):
    self._layout = layout
    self._file = None

  def acquire(self):
    self._layout.ensure_root()
    path = os.path.join(self._layout.root, LOCK)
    self._file = open(path, "a+")
    try:
      fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      self._file.seek(0)
      holder = self._file.read().strip() or "unknown"
      self._file.close()
      self._file = None
      if holder == str(os.getpid()):
        raise ExportRootBusy(
            f"Export directory {self._layout.root} is in use by another exporter in this process (pid {holder}), "
            "e.g. a TrtExport whose fit() raised before on_train_end released it. Call that callback's "
            "on_train_end(), or give this run its own `export_dir`.") from None
      raise ExportRootBusy(
          f"Export directory {self._layout.root} is in use by another process (pid {holder}). Two runs writing "
          "one export directory would interleave versions; give each run its own `export_dir`.") from None
    self._file.seek(0)
    self._file.truncate()
    self._file.write(str(os.getpid()))
    self._file.flush()
    return self

  def release(self):
    if self._file is not None:
      fcntl.flock(self._file, fcntl.LOCK_UN)
      self._file.close()
      self._file = None

  def __enter__(self):
    return self.acquire()

  def __exit__(self, *exc):
    self.release()
