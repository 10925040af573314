"""`manifest.json`: what one export produced, skipped or failed, and why.

Statuses: `ok` (built, checked, outputs within thresholds; the normal export and samples when written);
`unverified` (built and checked, but no comparison vouches for it: `reason` says why; usable, and every build
starts so until verification decides); `rejected` (a verification figure outside thresholds); `skipped` (not
attempted: cannot build here, or superseded); `failed` (attempted and broke); `pending` (worker still running).
"""

import datetime
import json
import os

MANIFEST_FILE = "manifest.json"
MANIFEST_VERSION = 1
OK, UNVERIFIED, SKIPPED, FAILED, REJECTED, PENDING = "ok", "unverified", "skipped", "failed", "rejected", "pending"
FINAL_STATUSES = (OK, UNVERIFIED, SKIPPED, FAILED, REJECTED)
# Statuses of an artifact a user can deploy: `unverified` is usable, and says that no comparison ran on it.
USABLE_STATUSES = (OK, UNVERIFIED)
# The reason a built artifact carries until verification gives its verdict.
NOT_VERIFIED_YET = "built and build-checked; not verified yet"


def utc_now_iso(clock=None):
  now = clock() if clock else datetime.datetime.now(datetime.timezone.utc)
  return now.isoformat(timespec="seconds")


def new_manifest(version, source, artifact_names, created=None):
  """A manifest with every requested artifact `pending`."""
  return {
      "manifest_version": MANIFEST_VERSION,
      "version": int(version),
      "created": created or utc_now_iso(),
      "source": dict(source),
      "environment": {},
      "artifacts": {name: {"status": PENDING, "path": None} for name in artifact_names},
  }


def set_artifact(manifest, name, status, path=None, reason=None, **details):
  entry = {"status": status, "path": path}
  if reason:
    entry["reason"] = reason
  entry.update(details)
  manifest["artifacts"][name] = entry
  return entry


def serving_results(manifest):
  """{serving target ("triton"): its record} with a `status` (`ok`, `skipped` or `failed`) and, unless `ok`, a
  `reason`; a manifest of an earlier release recorded a failed publish as {"error": ...} only."""
  results = {}
  for target, record in (manifest.get("serving") or {}).items():
    record = dict(record)
    if "status" not in record:
      record["status"] = FAILED if record.get("error") else OK
      if record.get("error"):
        record.setdefault("reason", record["error"])
    results[target] = record
  return results


def serving_failed(manifest):
  """Whether publishing any of the export's variants to a serving target failed."""
  return any(r["status"] == FAILED for r in serving_results(manifest).values())


def fail_pending(manifest, reason):
  """Marks every artifact still pending as failed with `reason` (a worker died or was stopped)."""
  for name, entry in manifest["artifacts"].items():
    if entry["status"] == PENDING:
      set_artifact(manifest, name, FAILED, reason=reason)


def write_manifest(directory, manifest):
  """Writes `directory/manifest.json` atomically: readers see the old or the new file, never half of one."""
  os.makedirs(directory, exist_ok=True)
  path = os.path.join(directory, MANIFEST_FILE)
  tmp = f"{path}.tmp-{os.getpid()}"
  try:
    with open(tmp, "w") as f:
      json.dump(manifest, f, indent=2, sort_keys=False)
      f.write("\n")
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    # A full disk (or a signal) mid-write must not leave a stray half file beside the manifest.
    try:
      os.remove(tmp)
    except OSError:
      pass
    raise
  return path


def read_manifest(path):
  """Reads a manifest from its file or its directory."""
  if os.path.isdir(path):
    path = os.path.join(path, MANIFEST_FILE)
  with open(path) as f:
    return json.load(f)
