"""What a worker process sets up before TensorFlow loads: its device (CUDA_VISIBLE_DEVICES) and its library path
(an installed but off-path TensorRT made findable, by re-executing itself)."""

import os
import sys

from tftrt_keras.formats.tftrt.libraries import worker_environment
from tftrt_keras.formats.tftrt.status import check_tensorrt


LIBRARY_PATH_DONE = "TFTRT_KERAS_WORKER_LIBRARY_PATH_SET"


DEVICE_DONE = "TFTRT_KERAS_WORKER_DEVICE_SET"


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
  if not environ.get(DEVICE_DONE):
    value = visible_devices_for(conversion_device, environ.get("CUDA_VISIBLE_DEVICES"))
    if value is not None:
      environ["CUDA_VISIBLE_DEVICES"] = value
    environ[DEVICE_DONE] = "1"
  return environ.get("CUDA_VISIBLE_DEVICES")


def ensure_tensorrt_findable(argv, module):
  """Re-executes `python -m <module> argv[1:]` with TensorRT's directory on LD_LIBRARY_PATH when it is
  installed off-path (the loader reads LD_LIBRARY_PATH only at process start); returns when nothing needs
  adding or this process is already the re-executed one.

  The export worker and `python -m tftrt_keras.preflight --json` both call this before asking: the answer a
  trainer gets is the one the worker will get.
  """
  if os.environ.get(LIBRARY_PATH_DONE):
    return
  status = check_tensorrt(nvidia_smi=None)
  if status.library_dir_to_add:
    env = worker_environment(status)
    env[LIBRARY_PATH_DONE] = "1"
    os.execve(sys.executable, [sys.executable, "-m", module] + list(argv[1:]), env)
