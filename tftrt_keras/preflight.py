"""Can TF-TRT run here, and if not, what exactly should the user do?

`check_tensorrt()` answers without ever aborting the process: TensorFlow's own
`get_loaded_tensorrt_version()` calls `abort()` ("getInferLibVersion symbol not found") when TensorRT is
not loadable, so it is only asked once `is_tensorrt_enabled()` said yes.

Run `python -m tftrt_keras.preflight` to print the report.
"""

import dataclasses
import glob
import os
import re
import site
import subprocess
import sys
import sysconfig

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


def _loader_dirs():
  """Directories the dynamic loader searches: LD_LIBRARY_PATH, then the ldconfig cache."""
  dirs = [d for d in os.environ.get("LD_LIBRARY_PATH", "").split(":") if d]
  try:
    cache = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, timeout=10).stdout
  except (OSError, subprocess.SubprocessError):
    cache = ""
  for line in cache.splitlines():
    if "libnvinfer.so" in line and "=>" in line:
      dirs.append(os.path.dirname(line.split("=>")[-1].strip()))
  return [os.path.realpath(d) for d in dirs]


def _candidate_dirs():
  """Where TensorRT is usually installed: pip wheels (`tensorrt_libs`, `tensorrt`), tarballs, distro packages."""
  roots = list(site.getsitepackages()) + [site.getusersitepackages(), sysconfig.get_paths()["purelib"]]
  dirs = []
  for root in roots:
    dirs += [os.path.join(root, "tensorrt_libs"), os.path.join(root, "tensorrt"),
             os.path.join(root, "tensorrt_lib")]
  dirs += ["/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/local/tensorrt/lib",
           "/opt/tensorrt/lib", "/usr/local/cuda/lib64"]
  return dirs


def find_tensorrt_libraries():
  """Every `libnvinfer.so.<version>` on the loader path or in the usual install places."""
  loader_dirs = _loader_dirs()
  found, seen = [], set()
  for directory in loader_dirs + _candidate_dirs():
    for path in sorted(glob.glob(os.path.join(directory, "libnvinfer.so.*"))):
      version = parse_libnvinfer_version(os.path.basename(path))
      real = os.path.realpath(path)
      if version is None or (real, version) in seen:
        continue
      seen.add((real, version))
      found.append(TensorRTLibrary(path, version, os.path.realpath(directory) in loader_dirs))
  return found


def compatible_library(libraries, linked):
  """The library that can stand in for the linked version, or None.

  TensorFlow dlopens `libnvinfer.so.<linked major>` first and `libnvinfer.so.<major.minor.patch>` on some
  builds; a library is usable when its major version equals the linked one and it does not name a
  different minor version.
  """
  if not linked:
    return None
  for library in libraries:
    same_major = library.version[0] == linked[0]
    same_minor = len(library.version) < 2 or library.version[1] == linked[1]
    if same_major and same_minor:
      return library
  return None


@dataclasses.dataclass
class TensorRTStatus:
  """What `check_tensorrt()` found. `usable` is the one thing most callers need."""
  tensorflow: str
  tensorrt_linked: tuple
  tensorrt_loaded: tuple
  tftrt_enabled: bool
  gpus: list
  libraries: list
  library_dir_to_add: str = None
  problems: list = dataclasses.field(default_factory=list)
  fixes: list = dataclasses.field(default_factory=list)

  @property
  def usable(self):
    return self.tftrt_enabled and bool(self.gpus)

  @property
  def reason(self):
    """One line saying why TF-TRT cannot run here (empty when it can)."""
    return "; ".join(self.problems)

  def environment(self):
    """The manifest's `environment` entry."""
    def version(parts):
      return ".".join(map(str, parts)) if parts else None
    return {"tensorflow": self.tensorflow, "tensorrt_linked": version(self.tensorrt_linked),
            "tensorrt_loaded": version(self.tensorrt_loaded), "gpu": [g for g in self.gpus]}

  def __str__(self):
    env = self.environment()
    lines = [
        f"TensorFlow:             {env['tensorflow']}",
        f"TensorRT linked:        {env['tensorrt_linked'] or 'none (TensorFlow built without TF-TRT)'}",
        f"TensorRT loaded:        {env['tensorrt_loaded'] or 'no'}",
        f"TF-TRT usable:          {'yes' if self.usable else 'no'}",
        f"GPU:                    {', '.join(self.gpus) or 'none visible'}",
        "TensorRT libraries:     " + (", ".join(
            f"{lib.path} ({'.'.join(map(str, lib.version))}{'' if lib.on_loader_path else ', not on the loader path'})"
            for lib in self.libraries) or "none found"),
    ]
    if self.library_dir_to_add:
      lines.append(f"Worker adds to LD_LIBRARY_PATH: {self.library_dir_to_add}")
    lines += [f"Problem: {p}" for p in self.problems]
    lines += [f"Fix:     {f}" for f in self.fixes]
    return "\n".join(lines)


def _tftrt_probe():
  """(linked, loaded, enabled) from TensorFlow's TF-TRT bindings, never calling what could abort."""
  try:
    from tensorflow.compiler.tf2tensorrt import _pywrap_py_utils  # pylint: disable=g-import-not-at-top
  except ImportError:
    return (), (), False
  linked = tuple(_pywrap_py_utils.get_linked_tensorrt_version())
  enabled = bool(_pywrap_py_utils.is_tensorrt_enabled())
  loaded = tuple(_pywrap_py_utils.get_loaded_tensorrt_version()) if enabled else ()
  return linked, loaded, enabled


def check_tensorrt():
  """Reports whether TF-TRT can convert on this machine, and the exact fix when it cannot.

  Returns:
    A `TensorRTStatus`; `str()` of it is the printable report, `.reason` a one-line summary.

  Example:
    >>> status = tftrt_keras.check_tensorrt()
    >>> print(status)
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  linked, loaded, enabled = _tftrt_probe()
  gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
  return diagnose(tf.__version__, linked, loaded, enabled, gpus, find_tensorrt_libraries())


def diagnose(tensorflow_version, linked, loaded, enabled, gpus, libraries):
  """The report for these facts: what is wrong and the exact fix. Pure: no TensorFlow, no file system.

  Args:
    tensorflow_version: `tf.__version__`.
    linked: TensorRT version TensorFlow was built against, e.g. (8, 6, 1); () when built without TF-TRT.
    loaded: TensorRT version actually loaded; () when none.
    enabled: whether TensorFlow could load TensorRT (`is_tensorrt_enabled()`).
    gpus: names of the GPUs TensorFlow sees.
    libraries: `TensorRTLibrary` records found on disk.

  Returns:
    A `TensorRTStatus`.
  """
  linked, loaded = tuple(linked or ()), tuple(loaded or ())
  status = TensorRTStatus(tensorflow_version, linked, loaded, enabled, list(gpus), list(libraries))
  linked_text = ".".join(map(str, linked))
  if not linked:
    status.problems.append(f"TensorFlow {tensorflow_version} has no TF-TRT (TF-TRT exists in TensorFlow 2.15-2.17)")
    status.fixes.append('pip install "tensorflow[and-cuda]==2.17.1" (or use an NVIDIA TensorFlow container)')
  elif not enabled:
    match = compatible_library(libraries, linked)
    wanted = _linked_file_name("libnvinfer", linked)
    exact_on_path = any(lib.on_loader_path and os.path.basename(lib.path) == wanted for lib in libraries)
    if match and not exact_on_path:
      # Either off the loader path, or on it under another name (the pip wheel's `libnvinfer.so.8`) while
      # TensorFlow dlopens `libnvinfer.so.8.6.1`: both read "Could not find TensorRT".
      status.library_dir_to_add = os.path.dirname(match.path)
      where = ("is not on the loader path" if not match.on_loader_path else
               f"is on the loader path under another name, and TensorFlow dlopens {wanted}")
      status.problems.append(
          f"TensorRT {'.'.join(map(str, match.version))} is installed at {match.path} but {where} "
          "(\"TF-TRT Warning: Could not find TensorRT\")")
      status.fixes.append(f"the export worker makes it findable by itself (LD_LIBRARY_PATH, with a {wanted} "
                          f"link when the name differs); for your own processes: export "
                          f"LD_LIBRARY_PATH={status.library_dir_to_add}:$LD_LIBRARY_PATH")
    elif match:
      status.problems.append(
          f"TensorRT {linked_text} is installed at {match.path} and on the loader path, yet TensorFlow could not "
          "load it (a library it needs, such as libcudart, libcublas or libnvinfer_plugin, is missing)")
      status.fixes.append("run `LD_DEBUG=libs python -c \"import tensorflow\"` to see which library fails to load, "
                          "and install the CUDA version this TensorFlow was built for")
    elif libraries and not match:
      found = ", ".join(f"{'.'.join(map(str, lib.version))} ({lib.path})" for lib in libraries)
      status.problems.append(
          f"TensorRT {found} is installed, but this TensorFlow is linked against TensorRT {linked_text}; "
          "they are not compatible")
      status.fixes.append(f'pip install "tensorrt=={linked_text}" (TensorRT {linked[0]}.x), or use an NVIDIA '
                          "TensorFlow container, whose TensorFlow is linked against its TensorRT")
    else:
      status.problems.append(f"TensorRT {linked_text} not found (TensorFlow looks for libnvinfer.so.{linked_text}; "
                             "no libnvinfer is installed), so TF-TRT reports \"Tensorflow has not been built with "
                             "TensorRT support\"")
      status.fixes.append(f'pip install "tensorrt=={linked_text}" from NVIDIA\'s package index '
                          "(pip install --extra-index-url https://pypi.nvidia.com ...), or use an NVIDIA "
                          "TensorFlow container")
  if not gpus:
    status.problems.append("no GPU visible to TensorFlow; TensorRT engines need an NVIDIA GPU")
    status.fixes.append('pip install "tensorflow[and-cuda]" and check `nvidia-smi`; TF-TRT does not run on CPU')
  return status


def _linked_file_name(base, linked):
  return f"{base}.so.{'.'.join(map(str, linked))}"


def loader_dirs_for(status, cache_dir=None):
  """Directories to put on a worker's LD_LIBRARY_PATH so that TensorFlow finds the installed TensorRT.

  TensorFlow 2.15-2.17 dlopens `libnvinfer.so.8.6.1` and `libnvinfer_plugin.so.8.6.1` by their full version,
  while the pip `tensorrt` 8.6 wheel ships `libnvinfer.so.8`: the library is there but never found. Where
  the file names differ, a private directory of symlinks under the full names is made (the real library is
  loaded; nothing is copied).
  """
  if status is None or not status.library_dir_to_add:
    return []
  source = status.library_dir_to_add
  wanted = _linked_file_name("libnvinfer", status.tensorrt_linked)
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
    link = os.path.join(link_dir, _linked_file_name(base, status.tensorrt_linked))
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


def main():
  status = check_tensorrt()
  print(status)
  return 0 if status.usable else 1


if __name__ == "__main__":
  sys.exit(main())
