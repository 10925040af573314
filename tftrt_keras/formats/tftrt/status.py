"""Can TF-TRT run here, and if not, what exactly should the user do?

`check_tftrt()` answers without ever aborting the process: TensorFlow's own
`get_loaded_tensorrt_version()` calls `abort()` ("getInferLibVersion symbol not found") when TensorRT is
not loadable, so it is only asked once `is_tensorrt_enabled()` said yes.
"""

import dataclasses
import os
import sys

from tftrt_keras.formats.tftrt.gpu_memory import describe_gpu_memory, query_gpu_memory
from tftrt_keras.formats.tftrt.libraries import (TensorRTLibrary, compatible_library, find_tensorrt_libraries,
                                                 LIBRARY_PATH_DONE, linked_file_name, worker_environment)


@dataclasses.dataclass
class TfTrtStatus:
  """What `check_tftrt()` found. `usable` is the one thing most callers need."""
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


def check_tftrt(search_dirs=None, on_loader_path=None, nvidia_smi="nvidia-smi"):
  """Reports whether TF-TRT can convert in this process, and the exact fix when it cannot.

  `check_tftrt_as_worker()` gives the export worker's answer instead.

  Args:
    search_dirs: where to look for `libnvinfer.so.*` (see `find_tensorrt_libraries`); None: the usual places.
    on_loader_path: the loader's directories; None: this process's LD_LIBRARY_PATH and the ldconfig cache.
    nvidia_smi: the `nvidia-smi` command used to read free GPU memory; None: do not ask.

  Returns:
    A `TfTrtStatus`; `str()` of it is the printable report, `.reason` a one-line summary.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  linked, loaded, enabled = _tftrt_probe()
  gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
  status = diagnose(tf.__version__, linked, loaded, enabled, gpus,
                    find_tensorrt_libraries(search_dirs, on_loader_path))
  status.gpu_memory = query_gpu_memory(nvidia_smi)
  return status


def diagnose(tensorflow_version, linked, loaded, enabled, gpus, libraries):
  """The report for these facts: what is wrong and the exact fix. Pure: no TensorFlow, no file system.

  Args:
    tensorflow_version: `tf.__version__`.
    linked, loaded: TensorRT versions TensorFlow was built against and actually loaded, e.g. (8, 6, 1); ().
    enabled: whether TensorFlow could load TensorRT (`is_tensorrt_enabled()`).
    gpus: names of the GPUs TensorFlow sees.
    libraries: `TensorRTLibrary` records found on disk.
  """
  linked, loaded = tuple(linked or ()), tuple(loaded or ())
  # TensorFlow 2.18+ answers the linked-version question with 0.0.0: built without TF-TRT.
  linked = linked if any(linked) else ()
  loaded = loaded if any(loaded) else ()
  status = TfTrtStatus(tensorflow_version, linked, loaded, enabled, list(gpus), list(libraries))
  linked_text = ".".join(map(str, linked))
  if not linked:
    status.problems.append(f"TensorFlow {tensorflow_version} has no TF-TRT (TF-TRT exists in TensorFlow 2.15-2.17)")
    status.fixes.append('use the onnx and trt formats (TensorRT engines from ONNX), or pip install '
                        '"tensorflow[and-cuda]==2.17.1" (or an NVIDIA TensorFlow container) for TF-TRT')
  elif not enabled:
    match = compatible_library(libraries, linked)
    wanted = linked_file_name("libnvinfer", linked)
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


def ensure_tensorrt_findable(argv, module):
  """Re-executes `python -m <module> argv[1:]` with an off-path TensorRT's directory on LD_LIBRARY_PATH.

  The loader reads LD_LIBRARY_PATH only at process start. Returns when nothing needs adding or this process is
  the re-executed one. The worker and `python -m tftrt_keras.preflight --json` both call it, so they agree.
  """
  if os.environ.get(LIBRARY_PATH_DONE):
    return
  status = check_tftrt(nvidia_smi=None)
  if status.library_dir_to_add:
    env = worker_environment(status)
    env[LIBRARY_PATH_DONE] = "1"
    os.execve(sys.executable, [sys.executable, "-m", module] + list(argv[1:]), env)
