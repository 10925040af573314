"""Can TF-TRT run here, and if not, what exactly should the user do?

`check_tensorrt()` answers without ever aborting the process: TensorFlow's own
`get_loaded_tensorrt_version()` calls `abort()` ("getInferLibVersion symbol not found") when TensorRT is
not loadable, so it is only asked once `is_tensorrt_enabled()` said yes.

Run `python -m tftrt_keras.preflight` to print the report (exit status 0 when TF-TRT can convert here, 1 when
it cannot), or `python -m tftrt_keras.preflight --json` for the machine-readable answer the export worker would
get: that command makes TensorRT findable exactly as the worker does (it re-executes itself with the worker's
library path) before it asks, which is how `require_tensorrt=True` asks the worker's question from a trainer.
"""

import dataclasses
import glob
import json
import os
import re
import shutil
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
    on_loader_path: the directories the dynamic loader searches (a library found there is marked
      `on_loader_path`); None: `loader_dirs()`.
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
  # What `query_gpu_memory()` found: {"source": "nvidia-smi", "gpus": [...]} or {"source": "unknown", ...}.
  gpu_memory: dict = None

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
      # TensorFlow 2.18+ still answers the linked-version question, with 0.0.0: no TensorRT at all.
      return ".".join(map(str, parts)) if parts and any(parts) else None
    environment = {"tensorflow": self.tensorflow, "tensorrt_linked": version(self.tensorrt_linked),
                   "tensorrt_loaded": version(self.tensorrt_loaded), "gpu": [g for g in self.gpus]}
    if self.gpu_memory is not None:
      environment["gpu_memory"] = self.gpu_memory
    return environment

  def to_json(self):
    """A JSON-ready dict (what `python -m tftrt_keras.preflight --json` prints); `from_json` reads it back."""
    data = dataclasses.asdict(self)
    data["usable"], data["reason"] = self.usable, self.reason
    return data

  @classmethod
  def from_json(cls, data):
    fields = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in data.items() if k in fields}
    values["tensorrt_linked"] = tuple(values.get("tensorrt_linked") or ())
    values["tensorrt_loaded"] = tuple(values.get("tensorrt_loaded") or ())
    values["libraries"] = [TensorRTLibrary(lib["path"], tuple(lib["version"]), lib["on_loader_path"])
                           for lib in values.get("libraries") or []]
    return cls(**values)

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
    lines.append(f"GPU memory:             {describe_gpu_memory(self.gpu_memory)}")
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


def check_tensorrt(search_dirs=None, on_loader_path=None, nvidia_smi="nvidia-smi"):
  """Reports whether TF-TRT can convert in this process, and the exact fix when it cannot.

  A trainer that wants the export worker's answer (its library path and device included) asks
  `check_tensorrt_as_worker()` instead.

  Args:
    search_dirs: where to look for `libnvinfer.so.*` (see `find_tensorrt_libraries`); None: the usual places.
    on_loader_path: the loader's directories; None: this process's LD_LIBRARY_PATH and the ldconfig cache.
    nvidia_smi: the `nvidia-smi` command used to read free GPU memory; None: do not ask.

  Returns:
    A `TensorRTStatus`; `str()` of it is the printable report, `.reason` a one-line summary.

  Example:
    >>> status = tftrt_keras.check_tensorrt()
    >>> print(status)
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  linked, loaded, enabled = _tftrt_probe()
  gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
  status = diagnose(tf.__version__, linked, loaded, enabled, gpus,
                    find_tensorrt_libraries(search_dirs, on_loader_path))
  status.gpu_memory = query_gpu_memory(nvidia_smi)
  return status


_NVIDIA_SMI_QUERY = ("--query-gpu=index,name,memory.total,memory.used,memory.free", "--format=csv,noheader,nounits")


def parse_nvidia_smi_memory(text):
  """`nvidia-smi --query-gpu=index,name,memory.total,memory.used,memory.free --format=csv,noheader,nounits`
  output -> [{"index", "name", "total_mb", "used_mb", "free_mb"}]. Pure; lines it cannot read are skipped."""
  gpus = []
  for line in text.splitlines():
    parts = [p.strip() for p in line.split(",")]
    if len(parts) != 5:
      continue
    try:
      index, total, used, free = int(parts[0]), int(parts[2]), int(parts[3]), int(parts[4])
    except ValueError:
      continue
    gpus.append({"index": index, "name": parts[1], "total_mb": total, "used_mb": used, "free_mb": free})
  return gpus


def query_gpu_memory(nvidia_smi="nvidia-smi", timeout=15):
  """Free and used memory of every GPU, from `nvidia-smi`; "unknown" (with why) where it cannot be asked.

  nvidia-smi lists physical GPUs whatever CUDA_VISIBLE_DEVICES says, so the indices are physical ones; the
  visible set is recorded beside them.
  """
  visible = os.environ.get("CUDA_VISIBLE_DEVICES")
  base = {"cuda_visible_devices": visible} if visible is not None else {}
  if nvidia_smi is None:
    return None
  command = shutil.which(nvidia_smi)
  if command is None:
    return dict(base, source="unknown", reason=f"{nvidia_smi} not found")
  try:
    done = subprocess.run([command, *_NVIDIA_SMI_QUERY], capture_output=True, text=True, timeout=timeout,
                          check=False)
  except (OSError, subprocess.SubprocessError) as err:
    return dict(base, source="unknown", reason=f"{nvidia_smi} failed: {type(err).__name__}: {err}")
  gpus = parse_nvidia_smi_memory(done.stdout)
  if done.returncode != 0 or not gpus:
    said = (done.stderr or done.stdout).strip().splitlines()
    return dict(base, source="unknown",
                reason=f"{nvidia_smi} exited {done.returncode}: {said[0] if said else 'no GPU listed'}")
  return dict(base, source="nvidia-smi", gpus=gpus)


def describe_gpu_memory(gpu_memory):
  """One line for the report: "GPU 0 (A100): 1200 of 40960 MiB free", or "unknown (why)"."""
  if not gpu_memory:
    return "not asked"
  if gpu_memory.get("source") != "nvidia-smi":
    return f"unknown ({gpu_memory.get('reason', 'no reason given')})"
  return "; ".join(f"GPU {g['index']} ({g['name']}): {g['free_mb']} of {g['total_mb']} MiB free"
                   for g in gpu_memory["gpus"])


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
  # TensorFlow 2.18+ answers the linked-version question with 0.0.0: built without TF-TRT.
  linked = linked if any(linked) else ()
  loaded = loaded if any(loaded) else ()
  status = TensorRTStatus(tensorflow_version, linked, loaded, enabled, list(gpus), list(libraries))
  linked_text = ".".join(map(str, linked))
  if not linked:
    status.problems.append(f"TensorFlow {tensorflow_version} has no TF-TRT (TF-TRT exists in TensorFlow 2.15-2.17)")
    status.fixes.append('use the onnx and trt formats (TensorRT engines from ONNX), or pip install '
                        '"tensorflow[and-cuda]==2.17.1" (or an NVIDIA TensorFlow container) for TF-TRT')
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


_LIBRARY_PATH_DONE = "TFTRT_KERAS_WORKER_LIBRARY_PATH_SET"
_DEVICE_DONE = "TFTRT_KERAS_WORKER_DEVICE_SET"


def visible_devices_for(conversion_device, inherited):
  """The CUDA_VISIBLE_DEVICES a worker on `conversion_device` runs with, or None to leave it as inherited.

  Pure. "gpu:<i>" counts among the GPUs the trainer sees: with CUDA_VISIBLE_DEVICES="2,3" inherited, "gpu:1"
  is physical GPU 3.

  Args:
    conversion_device: `ConversionOptions.conversion_device`: None, "cpu" or "gpu:<index>".
    inherited: the trainer's CUDA_VISIBLE_DEVICES (None when unset).

  Raises:
    ValueError: the index is not among the GPUs the trainer sees.
  """
  if conversion_device is None:
    return None
  if conversion_device == "cpu":
    return "-1"  # no GPU at all: TensorFlow runs on the CPU
  index = int(conversion_device.split(":", 1)[1])
  if inherited is None or not inherited.strip():
    return str(index)
  visible = [d.strip() for d in inherited.split(",") if d.strip()]
  if "-1" in visible[:1] or index >= len(visible):
    raise ValueError(f"conversion_device={conversion_device!r}, but the training process sees only "
                     f"{len(visible) if '-1' not in visible[:1] else 0} GPU(s) (CUDA_VISIBLE_DEVICES={inherited!r})")
  return visible[index]


def select_conversion_device(conversion_device, environ=None):
  """Sets CUDA_VISIBLE_DEVICES in `environ` (default: this process's) for `conversion_device`, once.

  Must run before TensorFlow loads. Idempotent across the worker's re-exec: the value it set is marked done in
  the environment, so a re-executed worker does not apply the index a second time to an already-narrowed list.
  Returns the CUDA_VISIBLE_DEVICES now in effect (None when unset).
  """
  environ = os.environ if environ is None else environ
  if not environ.get(_DEVICE_DONE):
    value = visible_devices_for(conversion_device, environ.get("CUDA_VISIBLE_DEVICES"))
    if value is not None:
      environ["CUDA_VISIBLE_DEVICES"] = value
    environ[_DEVICE_DONE] = "1"
  return environ.get("CUDA_VISIBLE_DEVICES")


def ensure_tensorrt_findable(argv, module):
  """Re-executes `python -m <module> argv[1:]` with TensorRT's directory on LD_LIBRARY_PATH when it is
  installed off-path (the loader reads LD_LIBRARY_PATH only at process start); returns when nothing needs
  adding or this process is already the re-executed one.

  The export worker and `python -m tftrt_keras.preflight --json` both call this before asking: the answer a
  trainer gets is the one the worker will get.
  """
  if os.environ.get(_LIBRARY_PATH_DONE):
    return
  status = check_tensorrt(nvidia_smi=None)
  if status.library_dir_to_add:
    env = worker_environment(status)
    env[_LIBRARY_PATH_DONE] = "1"
    os.execve(sys.executable, [sys.executable, "-m", module] + list(argv[1:]), env)


def _package_parent():
  return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def check_tensorrt_as_worker(conversion_device=None, timeout=300):
  """Asks the export worker's question in a child process started as the worker is: this package on
  PYTHONPATH, `conversion_device` applied to CUDA_VISIBLE_DEVICES, and an installed but off-path TensorRT
  made findable (the child re-executes itself with the worker's LD_LIBRARY_PATH) before TensorFlow is asked.

  Returns:
    The child's `TensorRTStatus`.

  Raises:
    RuntimeError: the child did not answer (it crashed or printed no report); the message holds its output.
  """
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join(p for p in (_package_parent(), env.get("PYTHONPATH")) if p)
  env.pop(_LIBRARY_PATH_DONE, None)
  env.pop(_DEVICE_DONE, None)
  env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  command = [sys.executable, "-m", "tftrt_keras.preflight", "--json"]
  if conversion_device:
    command += ["--conversion_device", conversion_device]
  done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout, check=False)
  lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
  if not lines:
    raise RuntimeError(f"the TensorRT check in a worker-like child process gave no answer (exit status "
                       f"{done.returncode}): {(done.stderr or done.stdout).strip()[-2000:]}")
  return TensorRTStatus.from_json(json.loads(lines[-1]))


def main(argv=None):
  """`python -m tftrt_keras.preflight [--json] [--conversion_device cpu|gpu:<i>]`; exit status 0 when TF-TRT
  can convert, 1 when it cannot, 2 for a bad argument."""
  argv = list(sys.argv if argv is None else argv)
  args = argv[1:]
  as_json = "--json" in args
  device = None
  if "--conversion_device" in args:
    position = args.index("--conversion_device")
    device = args[position + 1] if position + 1 < len(args) else ""
    if device != "cpu" and not (device.startswith("gpu:") and device[4:].isdigit()):
      print(f"--conversion_device: expected 'cpu' or 'gpu:<index>', got {device!r}", file=sys.stderr)
      return 2
  if as_json:
    # The worker's order: device first (before TensorFlow loads), then its library path, then the question.
    try:
      select_conversion_device(device)
    except ValueError as err:
      print(json.dumps({"usable": False, "reason": str(err), "tensorflow": None, "tensorrt_linked": [],
                        "tensorrt_loaded": [], "tftrt_enabled": False, "gpus": [], "libraries": [],
                        "problems": [str(err)], "fixes": ["pick a conversion_device the trainer can see"]}))
      return 1
    ensure_tensorrt_findable(argv, "tftrt_keras.preflight")
  status = check_tensorrt()
  if as_json:
    print(json.dumps(status.to_json()), flush=True)
    return 0 if status.usable else 1
  rows = formats_here()
  print(status, flush=True)
  print("Formats on this machine (what `formats=\"auto\"` builds):")
  for name, reason in rows.items():
    print(f"  {name:<6} {'yes' if reason is None else 'no: ' + reason}")
  # 0 when some TensorRT route (TF-TRT or native engines) works here.
  return 0 if status.usable or rows.get("trt", "") is None else 1


def formats_here(options=None):
  """{format name: None when it can build here, else the reason} for the formats "auto" selects here."""
  from tftrt_keras import formats  # pylint: disable=g-import-not-at-top
  from tftrt_keras.conversion_options import ConversionOptions  # pylint: disable=g-import-not-at-top
  options = options or ConversionOptions()
  rows = {}
  for name in formats.resolve_formats("auto"):
    try:
      rows[name] = formats.load_format(name).unavailable_reason(options)
    except Exception as err:  # pylint: disable=broad-except
      rows[name] = f"could not tell: {type(err).__name__}: {err}"
  return rows


if __name__ == "__main__":
  from tftrt_keras import quiet_console  # pylint: disable=g-import-not-at-top
  quiet_console.quiet_tensorflow()  # before TensorFlow loads: the report, not its start-up noise
  if "--json" not in sys.argv and "--conversion_device" not in sys.argv:
    # The worker's question (--json) sets its device before TensorFlow loads; the printed report may load it
    # now, with what TensorFlow 2.18+ prints before its logging starts kept off the console.
    quiet_console.import_tensorflow()
  sys.exit(main())
