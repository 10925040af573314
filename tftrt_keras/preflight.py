"""What can run here, asked as the export worker would ask it.

`check_tftrt()` says whether TF-TRT can convert in this process; `check_tftrt_as_worker()` asks in a child
started as the worker is; `require_tensorrt_or_raise()` is what `require_tensorrt=True` calls before training:
at least one requested TensorRT format must build engines here that something here can run.
`python -m tftrt_keras.preflight` prints the report (exit status 1 when TF-TRT cannot convert here); with
`--json` it first makes TensorRT findable as the worker does, and prints the worker's answer.
"""

import json
import os
import subprocess
import sys

from tftrt_keras.errors import TensorRTUnavailableError
from tftrt_keras.formats.tftrt.libraries import LIBRARY_PATH_DONE
from tftrt_keras.formats.tftrt.status import TfTrtStatus, check_tftrt, ensure_tensorrt_findable
from tftrt_keras.pipeline.worker_setup import DEVICE_DONE, select_conversion_device

__all__ = ["TfTrtStatus", "check_tftrt", "check_tftrt_as_worker", "engine_builders_text", "formats_here",
           "main", "require_tensorrt_or_raise", "tensorrt_formats_here", "variants_skipped_here"]

# The formats whose engines are TensorRT's: `require_tensorrt=True` asks that one of those requested works here.
TENSORRT_FORMATS = ("tftrt", "trt", "trt_rtx")


# Old names: they said "TensorRT" for a check of TF-TRT alone (`require_tensorrt_or_raise` asks every format).
_DEPRECATED = {"check_tensorrt": "check_tftrt", "check_tensorrt_as_worker": "check_tftrt_as_worker",
               "TensorRTStatus": "TfTrtStatus"}


def __getattr__(name):
  if name in _DEPRECATED:
    import warnings  # pylint: disable=g-import-not-at-top
    warnings.warn(f"tftrt_keras.preflight.{name} is deprecated: use {_DEPRECATED[name]}", DeprecationWarning,
                  stacklevel=2)
    return globals()[_DEPRECATED[name]]
  raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _package_parent():
  return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def check_tftrt_as_worker(conversion_device=None, timeout=300):
  """Asks the export worker's question in a child started as the worker is (PYTHONPATH, device, library path).

  Returns:
    The child's `TfTrtStatus`.

  Raises:
    RuntimeError: the child did not answer (it crashed or printed no report); the message holds its output.
  """
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join(p for p in (_package_parent(), env.get("PYTHONPATH")) if p)
  env.pop(LIBRARY_PATH_DONE, None)
  env.pop(DEVICE_DONE, None)
  env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  command = [sys.executable, "-m", "tftrt_keras.preflight", "--json"]
  if conversion_device:
    command += ["--conversion_device", conversion_device]
  done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout, check=False)
  lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
  if not lines:
    raise RuntimeError(f"the TensorRT check in a worker-like child process gave no answer (exit status "
                       f"{done.returncode}): {(done.stderr or done.stdout).strip()[-2000:]}")
  return TfTrtStatus.from_json(json.loads(lines[-1]))


def tensorrt_formats_here(options=None):
  """{requested TensorRT format: None when it builds engines here that can run here, else why not}.

  TF-TRT is asked in a worker-like child; the others through their format. `formats="auto"` requests all three.
  """
  from tftrt_keras import formats as formats_lib  # pylint: disable=g-import-not-at-top
  from tftrt_keras.formats.tftrt.backend import DEFAULT_BACKEND, converter_spec  # pylint: disable=g-import-not-at-top
  from tftrt_keras.options import ConversionOptions  # pylint: disable=g-import-not-at-top
  options = options or ConversionOptions()
  requested = formats_lib.FORMATS if options.formats == formats_lib.AUTO else options.formats
  reasons = {}
  for name in [f for f in requested if f in TENSORRT_FORMATS]:
    try:
      if name == "tftrt" and converter_spec() == DEFAULT_BACKEND:
        status = check_tftrt_as_worker(options.conversion_device)
        reasons[name] = None if status.usable else (f"TF-TRT cannot run in the export worker: {status.reason}. "
                                                    f"Fix: {'; '.join(status.fixes)}")
      else:
        reasons[name] = formats_lib.load_format(name).unavailable_reason(options) or _cannot_run_here(name)
    except Exception as err:  # pylint: disable=broad-except
      reasons[name] = f"the check could not run: {type(err).__name__}: {err}"
  return reasons


def _cannot_run_here(format_name):
  """Why engines this format builds here cannot run here (TensorRT-RTX builds without a GPU), or None."""
  if format_name != "trt_rtx":
    return None
  from tftrt_keras.formats.tensorrt import rtx  # pylint: disable=g-import-not-at-top
  from tftrt_keras.formats.tensorrt.format import probe  # pylint: disable=g-import-not-at-top
  status = probe(edition=rtx.EDITION)
  return None if status.gpus else f"TensorRT-RTX builds engines here, but nothing here runs them: {rtx.gpus_here(status)}"


def require_tensorrt_or_raise(options=None):
  """Raises unless a requested TensorRT format builds runnable engines here; returns {format: None or why not}.

  Args:
    options: the export's `ConversionOptions`, or None for the defaults (`formats="auto"`).

  Raises:
    TensorRTUnavailableError: no requested TensorRT format works here; the message says why for each.
    ValueError: `options.formats` names no TensorRT format.
  """
  reasons = tensorrt_formats_here(options)
  if not reasons:
    from tftrt_keras.errors import invalid_argument  # pylint: disable=g-import-not-at-top
    raise invalid_argument("require_tensorrt", True, "False when `formats` names no TensorRT format",
                           hint=f"Add one of {', '.join(TENSORRT_FORMATS)} to formats, or drop require_tensorrt.")
  if all(reasons.values()):
    raise TensorRTUnavailableError(
        "require_tensorrt=True, but no requested TensorRT format can build and run engines here: "
        + "; ".join(f"{name}: {reason}" for name, reason in reasons.items()))
  return reasons


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
  status = check_tftrt()
  if as_json:
    print(json.dumps(status.to_json()), flush=True)
    return 0 if status.usable else 1
  rows = formats_here()
  print(status, flush=True)
  print(engine_builders_text(), flush=True)
  print("Formats on this machine (what `formats=\"auto\"` builds):")
  for name, reason in rows.items():
    print(f"  {name:<8} {'yes' if reason is None else 'no: ' + reason}")
  # 0 when some TensorRT route (TF-TRT or native engines) works here.
  return 0 if status.usable or rows.get("trt", "") is None else 1


def engine_builders_text():
  """Which TensorRT builders are installed (TensorRT, TensorRT-RTX: versions, what they build here) and what can run
  engines here (GPUs and their compute capabilities), as printed by `python -m tftrt_keras.preflight`."""
  from tftrt_keras.formats.tensorrt import build, rtx  # pylint: disable=g-import-not-at-top
  from tftrt_keras.formats.tensorrt.format import probe  # pylint: disable=g-import-not-at-top
  tensorrt, tensorrt_rtx = probe(edition=build.TENSORRT), probe(edition=build.TENSORRT_RTX)
  if not tensorrt.tensorrt_version:
    trt_line = f"not installed ({tensorrt.tensorrt_error}); {build.TENSORRT_INSTALL}"
  elif tensorrt.gpus:
    trt_line = f"{tensorrt.tensorrt_version} (builds and runs engines on this machine's GPU)"
  else:
    trt_line = f"{tensorrt.tensorrt_version} (builds engines only on a GPU, and there is none here)"
  if not tensorrt_rtx.tensorrt_version:
    rtx_line = f"not installed ({tensorrt_rtx.tensorrt_error}); {build.TENSORRT_RTX_INSTALL}"
  else:
    others = [rtx.capability_number(n) for n in rtx.COMPUTE_CAPABILITIES]
    others = [c for c in others if c not in rtx.PORTABLE_TARGETS]
    rtx_line = (f"{tensorrt_rtx.tensorrt_version} (builds engines here, GPU or not, for compute capability "
                f"{', '.join(rtx.PORTABLE_TARGETS)} by default, {', '.join(others)} on request; running them needs "
                "an NVIDIA GPU of a targeted compute capability and its driver)")
  runnable = ("no: " + rtx.gpus_here(tensorrt_rtx)) if not tensorrt_rtx.gpus else "; ".join(
      f"GPU {g.index}: {g.name}, compute capability {g.compute_capability}" for g in tensorrt_rtx.gpus)
  return "\n".join([f"TensorRT builder:       {trt_line}", f"TensorRT-RTX builder:   {rtx_line}",
                    f"Engines can run here:   {runnable}"])


def formats_here(options=None):
  """{format name: None when it can build here, else the reason} for the formats "auto" selects here."""
  from tftrt_keras import formats  # pylint: disable=g-import-not-at-top
  from tftrt_keras.options import ConversionOptions  # pylint: disable=g-import-not-at-top
  options = options or ConversionOptions()
  rows = {}
  for name in formats.resolve_formats("auto"):
    try:
      rows[name] = formats.load_format(name).unavailable_reason(options)
    except Exception as err:  # pylint: disable=broad-except
      rows[name] = f"could not tell: {type(err).__name__}: {err}"
  return rows


def variants_skipped_here(options):
  """{variant: reason} for the requested variants whose format cannot build here, asked in this process.

  A format whose answer could differ in the worker (TF-TRT off the loader path) or whose check fails is left to
  the worker, which records what happened.
  """
  from tftrt_keras import formats as formats_lib  # pylint: disable=g-import-not-at-top
  from tftrt_keras.formats.tftrt.backend import DEFAULT_BACKEND, converter_spec  # pylint: disable=g-import-not-at-top
  from tftrt_keras.options import artifact_names  # pylint: disable=g-import-not-at-top
  reasons = {}
  for name in formats_lib.resolve_formats(options.formats):
    try:
      if name == "tftrt" and converter_spec() == DEFAULT_BACKEND and \
          check_tftrt().library_dir_to_add:
        continue
      reasons[name] = formats_lib.load_format(name).unavailable_reason(options)
    except Exception:  # pylint: disable=broad-except
      continue
  return {variant: reasons[fmt] for variant in artifact_names(options) if formats_lib.is_variant(variant)
          for fmt in [formats_lib.split_variant(variant)[0]] if reasons.get(fmt)}


if __name__ == "__main__":
  from tftrt_keras import quiet_console  # pylint: disable=g-import-not-at-top
  quiet_console.quiet_tensorflow()  # before TensorFlow loads: the report, not its start-up noise
  if "--json" not in sys.argv and "--conversion_device" not in sys.argv:
    # The worker's question (--json) sets its device before TensorFlow loads; the printed report may load it
    # now, with what TensorFlow 2.18+ prints before its logging starts kept off the console.
    quiet_console.import_tensorflow()
  sys.exit(main())
