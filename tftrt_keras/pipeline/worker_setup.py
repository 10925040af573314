"""What a worker process sets up before TensorFlow loads: its device (CUDA_VISIBLE_DEVICES), its library path
(an installed but off-path TensorRT made findable, by re-executing itself), and its manners: a low CPU priority
and a bounded thread count for every library it runs, so that conversion beside training does not slow it."""

import dataclasses
import errno
import os
import sys
import time

from tftrt_keras.formats.base import THREADS_VARIABLE
from tftrt_keras.options import ALL_THREADS, AUTO_WORKER, LOWEST_PRIORITY


DEVICE_DONE = "TFTRT_KERAS_WORKER_DEVICE_SET"
NICE_VARIABLE = "TFTRT_KERAS_WORKER_NICE"
# Thread pools sized from the environment when their library loads: OpenMP, OpenBLAS, MKL (numpy's BLAS) and
# TensorFlow's intra/inter-op pools (read whenever a session or context config leaves them at 0, as tf2onnx's
# grappler session does).
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "TF_NUM_INTRAOP_THREADS",
                    "TF_NUM_INTEROP_THREADS", THREADS_VARIABLE)


def usable_cores():
  try:
    return len(os.sched_getaffinity(0))
  except (AttributeError, OSError):
    return os.cpu_count() or 1


@dataclasses.dataclass(frozen=True)
class WorkerLimits:
  """What one worker runs with. threads: per library pool, None = each library's default (every core);
  nice: the niceness it asks for, None = the caller's own."""
  threads: int = None
  nice: int = None

  def environment(self):
    """The variables that carry these limits into the worker (set before any library loads there)."""
    env = {NICE_VARIABLE: "" if self.nice is None else str(self.nice)}
    if self.threads is not None:
      env.update(dict.fromkeys(THREAD_VARIABLES, str(self.threads)))
    return env


def worker_limits(options, foreground, cores=None):
  """The `WorkerLimits` of a worker for `options` (`worker_threads`, `worker_nice`); pure.

  Args:
    options: `ConversionOptions`.
    foreground: nothing else runs meanwhile: "auto" takes every core at the caller's priority; beside training
      it takes max(1, cores // 4) at the lowest priority.
    cores: the cores this process may use (default: its CPU affinity).
  """
  cores = usable_cores() if cores is None else cores
  threads = options.worker_threads
  if threads == AUTO_WORKER:
    threads = ALL_THREADS if foreground else max(1, cores // 4)
  nice = options.worker_nice
  if nice == AUTO_WORKER:
    nice = None if foreground else LOWEST_PRIORITY
  return WorkerLimits(threads=None if threads == ALL_THREADS else threads, nice=nice)


def apply_worker_nice(environ=None):
  """Lowers this process's CPU priority to the niceness its parent asked for (never raises it).

  Every running thread gets it (Linux keeps niceness per thread). With sched_autogroup a process alone in its
  session also lowers its group's niceness, or it would still take half the CPU from training.

  Returns:
    {"nice": the niceness now in effect, "autogroup_nice": its autogroup's, None without one}.
  """
  environ = os.environ if environ is None else environ
  wanted = environ.get(NICE_VARIABLE, "")
  if wanted.isdigit() and int(wanted) > os.getpriority(os.PRIO_PROCESS, 0):
    for tid in os.listdir("/proc/self/task") if os.path.isdir("/proc/self/task") else [0]:
      try:
        os.setpriority(os.PRIO_PROCESS, int(tid), int(wanted))
      except (ProcessLookupError, PermissionError):
        pass  # a thread that ended meanwhile
  group = _autogroup_nice()
  alone = os.getsid(0) == os.getpid()  # never lower the group of a session it shares (the trainer's)
  if wanted.isdigit() and group is not None and alone and int(wanted) > group:
    group = _set_autogroup_nice(int(wanted))
  return {"nice": os.getpriority(os.PRIO_PROCESS, 0), "autogroup_nice": group}


_AUTOGROUP = "/proc/self/autogroup"


def _autogroup_nice():
  """This process's autogroup niceness, or None where the kernel does not group by session."""
  try:
    with open("/proc/sys/kernel/sched_autogroup_enabled", encoding="ascii") as f:
      if f.read().strip() != "1":
        return None
    with open(_AUTOGROUP, encoding="ascii") as f:
      return int(f.read().split("nice")[1])
  except (OSError, IndexError, ValueError):
    return None


def _set_autogroup_nice(nice):
  """Sets this process's autogroup niceness; the kernel allows an unprivileged change every 100 ms across the
  whole machine (EAGAIN meanwhile), so it is retried for a second."""
  for _ in range(20):
    try:
      with open(_AUTOGROUP, "w", encoding="ascii") as f:
        f.write(str(nice))
      break
    except OSError as err:
      if err.errno != errno.EAGAIN:
        break
      time.sleep(0.05)
  return _autogroup_nice()


def configure_tensorflow_threads(tf, environ=None):
  """Sizes TensorFlow's eager pools to the worker's bound; must run before TensorFlow's first op. Returns
  {"intra_op", "inter_op"} as TensorFlow now reports them (0: its default, every core)."""
  environ = os.environ if environ is None else environ
  value = environ.get(THREADS_VARIABLE, "")
  if value.isdigit() and int(value) > 0:
    try:
      tf.config.threading.set_intra_op_parallelism_threads(int(value))
      tf.config.threading.set_inter_op_parallelism_threads(int(value))
    except RuntimeError:
      pass  # TensorFlow already started: its pools were sized from TF_NUM_*_THREADS; the manifest says which
  return {"intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
          "inter_op": tf.config.threading.get_inter_op_parallelism_threads()}


def visible_devices_for(conversion_device, inherited):
  """The CUDA_VISIBLE_DEVICES a worker on `conversion_device` runs with, or None to leave it as inherited. Pure.

  "gpu:<i>" counts among the GPUs the trainer sees ("gpu:1" under "2,3" is physical GPU 3).

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
  """Sets CUDA_VISIBLE_DEVICES in `environ` for `conversion_device` once; returns the value in effect (or None).

  Must run before TensorFlow loads. Marked done in the environment, so a re-executed worker does not narrow twice.
  """
  environ = os.environ if environ is None else environ
  if not environ.get(DEVICE_DONE):
    value = visible_devices_for(conversion_device, environ.get("CUDA_VISIBLE_DEVICES"))
    if value is not None:
      environ["CUDA_VISIBLE_DEVICES"] = value
    environ[DEVICE_DONE] = "1"
  return environ.get("CUDA_VISIBLE_DEVICES")
