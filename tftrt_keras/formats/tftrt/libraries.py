"""Where TensorRT's `libnvinfer` is on disk, and how a worker's loader is made to find the one TF-TRT wants.

TensorFlow 2.15-2.17 dlopens `libnvinfer.so.8.6.1`; a pip wheel installed off the loader path, or under
another file name, reads as "Could not find TensorRT". These functions find it and make it findable.
"""

import dataclasses
import glob
import os
import re
import site
import subprocess
import sysconfig


# Set in a process re-executed with TensorRT's directory on LD_LIBRARY_PATH: it must not re-execute again.
LIBRARY_PATH_DONE = "TFTRT_KERAS_WORKER_LIBRARY_PATH_SET"
_LIBNVINFER = re.compile(r"^libnvinfer\.so\.(\d+)(?:\.(\d+))?(?:\.(\d+))?$")


@dataclasses.dataclass(frozen=True)
class TensorRTLibrary:
  """One `libnvinfer.so.*` found on disk."""
  path: str
  version: tuple  # as many parts as the file name carries: (8,), (8, 6, 1), (10, 3, 0)
  on_loader_path: bool


def parse_libnvinfer_version(file_name):
  """`libnvinfer.so.8.6.1` -> (8, 6, 1); `libnvinfer.so.10` -> (10,); anything else -> None."""
  match = _LIBNVINFER.match(file_name)
  if not match:
    return None
  return tuple(int(part) for part in match.groups() if part is not None)


def loader_dirs(environ=None):
  """Directories the dynamic loader searches: LD_LIBRARY_PATH (of `environ`, default this process's), then the
  ldconfig cache."""
  environ = os.environ if environ is None else environ
  dirs = [d for d in environ.get("LD_LIBRARY_PATH", "").split(":") if d]
  try:
    cache = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, timeout=10).stdout
  except (OSError, subprocess.SubprocessError):
    cache = ""
  for line in cache.splitlines():
    if "libnvinfer.so" in line and "=>" in line:
      dirs.append(os.path.dirname(line.split("=>")[-1].strip()))
  return [os.path.realpath(d) for d in dirs]


def candidate_dirs():
  """Where TensorRT is usually installed: pip wheels (`tensorrt_libs`, `tensorrt`), tarballs, distro packages."""
  roots = list(site.getsitepackages()) + [site.getusersitepackages(), sysconfig.get_paths()["purelib"]]
  dirs = []
  for root in roots:
    dirs += [os.path.join(root, "tensorrt_libs"), os.path.join(root, "tensorrt"),
             os.path.join(root, "tensorrt_lib")]
  dirs += ["/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/local/tensorrt/lib",
           "/opt/tensorrt/lib", "/usr/local/cuda/lib64"]
  return dirs


def find_tensorrt_libraries(search_dirs=None, on_loader_path=None):
  """Every `libnvinfer.so.<version>` on the loader path or in the usual install places.

  Args:
    search_dirs: directories to look in; None: `on_loader_path` then `candidate_dirs()`.
    on_loader_path: the dynamic loader's directories (marks what it finds there); None: `loader_dirs()`.
  """
  loader = [os.path.realpath(d) for d in (loader_dirs() if on_loader_path is None else on_loader_path)]
  directories = list(search_dirs) if search_dirs is not None else loader + candidate_dirs()
  found, seen = [], set()
  for directory in directories:
    for path in sorted(glob.glob(os.path.join(directory, "libnvinfer.so.*"))):
      version = parse_libnvinfer_version(os.path.basename(path))
      real = os.path.realpath(path)
      if version is None or (real, version) in seen:
        continue
      seen.add((real, version))
      found.append(TensorRTLibrary(path, version, os.path.realpath(directory) in loader))
  return found


def compatible_library(libraries, linked):
  """The library that can stand in for the linked version (same major, no other minor named), or None."""
  if not linked:
    return None
  for library in libraries:
    same_major = library.version[0] == linked[0]
    same_minor = len(library.version) < 2 or library.version[1] == linked[1]
    if same_major and same_minor:
      return library
  return None


def linked_file_name(base, linked):
  return f"{base}.so.{'.'.join(map(str, linked))}"


def loader_dirs_for(status, cache_dir=None):
  """Directories to put on a worker's LD_LIBRARY_PATH so that TensorFlow finds the installed TensorRT.

  TensorFlow 2.15-2.17 dlopens `libnvinfer.so.8.6.1` while the pip wheel ships `libnvinfer.so.8`, so where the
  names differ a private directory of symlinks under the full names is made.
  """
  if status is None or not status.library_dir_to_add:
    return []
  source = status.library_dir_to_add
  wanted = linked_file_name("libnvinfer", status.tensorrt_linked)
  if os.path.exists(os.path.join(source, wanted)):
    return [source]
  cache_dir = cache_dir or os.path.join(os.path.expanduser("~"), ".cache", "tftrt_keras")
  link_dir = os.path.join(cache_dir, "tensorrt-" + ".".join(map(str, status.tensorrt_linked)))
  os.makedirs(link_dir, exist_ok=True)
  for base in ("libnvinfer", "libnvinfer_plugin"):
    candidates = []
    for path in sorted(glob.glob(os.path.join(source, base + ".so.*"))):
      version = parse_libnvinfer_version(os.path.basename(path).replace(base, "libnvinfer", 1))
      # Only a library of the linked major version can stand in (never TensorRT 10 for 8.6).
      if version and version[0] == status.tensorrt_linked[0]:
        candidates.append(path)
    if not candidates:
      continue
    link = os.path.join(link_dir, linked_file_name(base, status.tensorrt_linked))
    if os.path.lexists(link):
      os.remove(link)
    os.symlink(candidates[0], link)
  return [link_dir, source]


def worker_environment(status, base_env=None):
  """The environment an export worker runs with: TensorRT made findable when it is installed off-path."""
  env = dict(os.environ if base_env is None else base_env)
  dirs = loader_dirs_for(status)
  if dirs:
    env["LD_LIBRARY_PATH"] = os.pathsep.join(dirs + [p for p in [env.get("LD_LIBRARY_PATH")] if p])
  return env
