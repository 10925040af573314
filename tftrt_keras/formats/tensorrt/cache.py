"""TensorRT's timing cache, kept in the export root and reused by every later export on the same GPU.

A cache holds only for the GPU model, compute capability and TensorRT version that measured it, so a key file
beside it says which, with its SHA-256; a cache whose key is missing, different or mismatched is ignored (the
reason logged) and the build starts fresh.

    <export root>/.trt_timing_cache/<GPU>-sm<cc>-trt<version>.cache   TensorRT's serialized ITimingCache
                                   /<GPU>-sm<cc>-trt<version>.json    the key: GPU, cc, version, sha256, bytes

Hidden, so servers polling the root never see it and retention never touches it.
"""

import dataclasses
import hashlib
import json
import os
import re
import tempfile

from absl import logging

CACHE_DIR = ".trt_timing_cache"
SCHEMA = "tftrt_keras.trt_timing_cache/1"


@dataclasses.dataclass(frozen=True)
class CacheKey:
  """What a timing cache is valid for."""
  gpu_name: str
  compute_capability: str  # "8.6"
  tensorrt_version: str

  def to_json(self):
    return dataclasses.asdict(self)

  def file_stem(self):
    """A readable file name; the key file, not the name, is what is trusted."""
    text = f"{self.gpu_name}-sm{self.compute_capability}-trt{self.tensorrt_version}"
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-")

  def describe(self):
    return f"{self.gpu_name} (compute capability {self.compute_capability}) with TensorRT {self.tensorrt_version}"


@dataclasses.dataclass(frozen=True)
class LoadedCache:
  """`data` is the cache to build with (None: start empty); `status` says which and why, for the manifest."""
  data: bytes
  status: str


def _sha256(data):
  return hashlib.sha256(data).hexdigest()


class TimingCacheStore:
  """The timing caches of one export root."""

  def __init__(self, root):
    self.directory = os.path.join(os.fspath(root), CACHE_DIR)

  def paths(self, key):
    """(cache file, key file) for `key`."""
    stem = os.path.join(self.directory, key.file_stem())
    return stem + ".cache", stem + ".json"

  def load(self, key):
    """The cache for `key` if it can be trusted; otherwise no data and the reason (logged as a warning)."""
    cache_path, key_path = self.paths(key)
    if not os.path.exists(cache_path):
      return LoadedCache(None, f"new: no timing cache yet for {key.describe()}")
    reason = self._distrust(key, cache_path, key_path)
    if reason:
      logging.warning("tftrt_keras: TensorRT timing cache %s ignored: %s", cache_path, reason)
      return LoadedCache(None, f"ignored: {reason}")
    with open(cache_path, "rb") as f:
      data = f.read()
    # Checked again on the bytes read: the file may have been replaced since `_distrust` looked.
    if _sha256(data) != self._read_key(key_path).get("sha256"):
      reason = "it changed while being read"
      logging.warning("tftrt_keras: TensorRT timing cache %s ignored: %s", cache_path, reason)
      return LoadedCache(None, f"ignored: {reason}")
    return LoadedCache(data, f"reused: {os.path.basename(cache_path)} ({len(data)} bytes)")

  @staticmethod
  def _read_key(key_path):
    with open(key_path) as f:
      return json.load(f)

  def _distrust(self, key, cache_path, key_path):
    """Why the cache at `cache_path` must not be used for `key`, or None."""
    if not os.path.exists(key_path):
      return f"its key file {os.path.basename(key_path)} is missing, so nothing says which GPU and TensorRT made it"
    try:
      recorded = self._read_key(key_path)
    except (OSError, ValueError) as err:
      return f"its key file is unreadable ({type(err).__name__}: {err})"
    if not isinstance(recorded, dict) or recorded.get("schema") != SCHEMA:
      return f"its key file is not a {SCHEMA} key"
    made_for = CacheKey(str(recorded.get("gpu_name")), str(recorded.get("compute_capability")),
                        str(recorded.get("tensorrt_version")))
    if made_for != key:
      return f"it was made on {made_for.describe()}; this build runs on {key.describe()}"
    with open(cache_path, "rb") as f:
      data = f.read()
    if len(data) != recorded.get("bytes") or _sha256(data) != recorded.get("sha256"):
      return "its bytes do not match the size and SHA-256 in its key file (corrupt or partly written)"
    return None

  def save(self, key, data):
    """Stores `data` as the cache for `key`: cache first, then its key, each replaced atomically.

    A crash between the two leaves a cache whose hash its key does not match: ignored next time, never used.
    Returns the cache file's path.
    """
    os.makedirs(self.directory, exist_ok=True)
    cache_path, key_path = self.paths(key)
    record = dict(schema=SCHEMA, **key.to_json(), sha256=_sha256(data), bytes=len(data))
    _write_atomically(cache_path, data)
    _write_atomically(key_path, (json.dumps(record, indent=2, sort_keys=True) + "\n").encode())
    return cache_path


def _write_atomically(path, data):
  handle, temp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
  try:
    with os.fdopen(handle, "wb") as f:
      f.write(data)
    os.replace(temp, path)
  except BaseException:
    if os.path.exists(temp):
      os.remove(temp)
    raise
