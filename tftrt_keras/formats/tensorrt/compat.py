"""Whether a `trt` plan can run on this GPU and TensorRT, told from its `model.json` before deserializing. Pure.

A plan runs only where it was built unless built for more (`hardware_compatibility`, `version_compatible`).
TensorRT has no preflight API and the plan header is undocumented, so the facts come from `model.json`; what it
lacks, or a level the installed TensorRT does not know, is noted and left to TensorRT, never guessed.
"""

import re

# The option's values and the `HardwareCompatibilityLevel` members they set.
HARDWARE_LEVELS = {"none": "NONE", "ampere_plus": "AMPERE_PLUS", "same_compute_capability": "SAME_COMPUTE_CAPABILITY"}
# Major versions whose runtime takes a version-compatible plan of another major, as documented: TensorRT 10's
# "Version Compatibility" (TensorRT 8 plans run on 9 and 10) and TensorRT 11.4's support matrix (10 on 11).
# "No other combination across major versions is supported" (11.4), which says nothing of majors after it.
CROSS_MAJOR = {8: (9, 10), 10: (11,)}
LATEST_DOCUMENTED_MAJOR = 11
_OPTION = "format_options['trt']"


def _version(text):
  parts = re.findall(r"\d+", str(text))
  return tuple(int(p) for p in parts) if parts else None


def _major(capability):
  try:
    return int(str(capability).split(".", 1)[0])
  except ValueError:
    return None


def runs_on(metadata):
  """What a plan's `model.json` says it runs on, in a phrase ("GPUs of compute capability 8.6 with TensorRT
  10.8.0.43 only")."""
  compatibility = metadata.get("compatibility") or {}
  level = compatibility.get("hardware_compatibility", "none")
  capability = metadata.get("compute_capability")
  gpus = ("GPUs of compute capability 8.0 and later" if level == "ampere_plus"
          else f"GPUs of compute capability {capability}")
  version = metadata.get("tensorrt_version")
  if compatibility.get("version_compatible"):
    later = ", ".join(f"{m}.x" for m in CROSS_MAJOR.get(_major(version) or 0, ()))
    versions = f"TensorRT {version} and later {str(version).split('.')[0]}.x" + (f", {later}" if later else "")
    if compatibility.get("exclude_lean_runtime"):
      versions += f" (another version only with TensorRT {version}'s lean runtime loaded)"
  else:
    versions = f"TensorRT {version} only"
  return f"{gpus} with {versions}"


def plan_refusal(metadata, installed_version, gpu, known_levels=None):
  """(reason or None, notes): why the plan cannot run on `gpu` with TensorRT `installed_version`, and what was unknown.

  Args:
    metadata: the plan's `model.json` (`format.engine_metadata`).
    installed_version: the installed TensorRT's version.
    gpu: the `cuda_devices.Gpu` it would run on.
    known_levels: the installed TensorRT's `HardwareCompatibilityLevel` member names (None: not asked).
  """
  notes = []
  compatibility = metadata.get("compatibility") or {}
  level = compatibility.get("hardware_compatibility", "none")  # plans built before the option: no compatibility
  built_on, capability = metadata.get("gpu_name"), metadata.get("compute_capability")
  here = f"GPU {gpu.index}: {gpu.name} (compute capability {gpu.compute_capability})"
  if level not in HARDWARE_LEVELS:
    notes.append(f"the plan's hardware compatibility level {level!r} is unknown to this tftrt_keras")
  elif level != "none" and known_levels is not None and HARDWARE_LEVELS[level] not in known_levels:
    notes.append(f"hardware compatibility level {HARDWARE_LEVELS[level]} is unknown to the installed TensorRT "
                 f"{installed_version} (it knows {sorted(known_levels)}): whether it loads the plan is TensorRT's call")
  if not capability:
    notes.append("model.json records no compute capability: which GPUs the plan runs on is unknown")
  elif level == "ampere_plus":
    if (_major(gpu.compute_capability) or 0) < 8:
      return (f"the plan was built for Ampere and later GPUs ({_OPTION}.hardware_compatibility='ampere_plus': "
              f"compute capability 8.0 and later); {here} is older"), notes
  elif gpu.compute_capability != capability:
    how = ("with hardware_compatibility='same_compute_capability'" if level == "same_compute_capability"
           else "without hardware compatibility")
    return (f"the plan was built on {built_on} (compute capability {capability}) {how}: it runs only on GPUs of "
            f"compute capability {capability}, and {here} is not one (TensorRT would fail with \"engine plan file "
            f"is generated on an incompatible device\"); rebuild on this GPU, or build with "
            f"{_OPTION}.hardware_compatibility='ampere_plus'"), notes
  elif level == "none" and built_on and built_on != gpu.name:
    notes.append(f"the plan was built on {built_on} and runs on {gpu.name} of the same compute capability: TensorRT "
                 "allows it but warns that performance may suffer")
  reason = _version_refusal(metadata, compatibility, installed_version, notes)
  return reason, notes


def _version_refusal(metadata, compatibility, installed_version, notes):
  built_version = metadata.get("tensorrt_version")
  built, installed = _version(built_version), _version(installed_version)
  if built is None or installed is None:
    notes.append(f"the TensorRT version that built the plan ({built_version!r}) or the installed one "
                 f"({installed_version!r}) is unknown: the version is TensorRT's call")
    return None
  if not compatibility.get("version_compatible"):
    if built != installed:
      return (f"the plan was built with TensorRT {built_version} and this is TensorRT {installed_version}: a plan "
              f"that is not version-compatible runs only with the TensorRT that built it (TensorRT would fail with "
              f"\"Version tag does not match\"); rebuild with this TensorRT, or build with "
              f"{_OPTION}.version_compatible=True")
    return None
  if installed < built:
    return (f"the plan is version-compatible from TensorRT {built_version} on, and this is the older TensorRT "
            f"{installed_version}: version compatibility runs plans on later TensorRT versions only")
  if installed[0] != built[0]:
    allowed = CROSS_MAJOR.get(built[0], ())
    if installed[0] > LATEST_DOCUMENTED_MAJOR:
      notes.append(f"whether TensorRT {installed[0]} runs version-compatible plans of TensorRT {built[0]} is "
                   f"unknown here (documented: {', '.join(f'{b} on {a}' for b, a in sorted(CROSS_MAJOR.items()))})")
    elif installed[0] not in allowed:
      return (f"a version-compatible plan of TensorRT {built[0]} runs on TensorRT "
              f"{', '.join(map(str, (built[0],) + allowed))} (documented), not on TensorRT {installed_version}")
  if compatibility.get("exclude_lean_runtime") and built != installed:
    return (f"the plan was built without its lean runtime ({_OPTION}.exclude_lean_runtime=True): on TensorRT "
            f"{installed_version} it needs the lean runtime library of TensorRT {built_version} loaded "
            "(IRuntime.load_runtime), which this runner does not do; run it with TensorRT "
            f"{built_version}, or build with the lean runtime in the plan")
  return None


def host_code_allowed(metadata, plan_sha256):
  """Whether the runtime may run the lean runtime a version-compatible plan carries: only for a plan whose bytes
  are the ones its `model.json` describes (the export that wrote both is trusted, not any file named model.plan)."""
  compatibility = metadata.get("compatibility") or {}
  return bool(compatibility.get("version_compatible") and not compatibility.get("exclude_lean_runtime")
              and plan_sha256 == metadata.get("engine_sha256"))
