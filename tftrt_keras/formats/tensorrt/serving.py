"""What Triton needs of a TensorRT plan: its platform, the types it takes, and batching from its profile."""

import re

from tftrt_keras.formats.base import TritonServing, Unservable
from tftrt_keras.formats.tensorrt.variant import PLAN_FILE

# What a TensorRT engine can take or give at its boundary (TensorRT 10 I/O types).
TENSORRT_DTYPES = frozenset({"bool", "uint8", "int8", "int32", "int64", "float16", "float32", "bfloat16"})
TRT_SERVING = TritonServing(platform="tensorrt_plan", dtypes=TENSORRT_DTYPES,
                            dtypes_note=f"which a TensorRT plan cannot take or give (TensorRT I/O types: "
                                        f"{sorted(TENSORRT_DTYPES)})")
RTX_SERVING = TritonServing(not_servable="Triton's tensorrt_plan backend cannot load TensorRT-RTX plans")


def engine_batch_sizes(metadata, input_names):
  """(max batch, preferred sizes) of a TensorRT plan from its optimization profile; raises Unservable."""
  profiles = metadata.get("profiles") or {}
  missing = [n for n in input_names if n not in profiles]
  if missing:
    raise Unservable(f"the plan's model.json has no optimization profile for inputs {missing}")
  try:
    mins = [int(profiles[n]["min"][0]) for n in input_names]
    opts = [int(profiles[n]["opt"][0]) for n in input_names]
    maxes = [int(profiles[n]["max"][0]) for n in input_names]
  except (KeyError, IndexError, TypeError, ValueError) as err:
    raise Unservable(f"the plan's optimization profile is not {{input: {{min, opt, max}}}} shapes: {err}") from err
  if max(mins) > 1:
    raise Unservable(f"the plan's profile starts at batch {max(mins)}; Triton sends batches from 1 up")
  max_batch = min(maxes)
  return max_batch, sorted({o for o in opts if 1 <= o <= max_batch})


def plan_batching(metadata, input_names):
  """`Format.triton_batching` for a `trt` plan: the profile's batches, and only GPUs it was built for load it."""
  max_batch, preferred = engine_batch_sizes(metadata, input_names)
  capability = metadata.get("compute_capability")
  if not capability or not re.fullmatch(r"\d+\.\d+", str(capability)):
    raise Unservable(f"the plan's compute capability is unknown ({capability!r}); Triton would load it on any "
                     "GPU and fail there")
  cc_model_filenames, default_model_filename, notes = {}, None, []
  compatibility = metadata.get("compatibility") or {}
  if compatibility.get("hardware_compatibility") != "ampere_plus":  # an ampere_plus plan loads on any 8.0+
    # Only GPUs of this compute capability open model.plan; on any other Triton's fallback, the default model
    # file, names a file that is not there, so the model fails to load there instead of loading a foreign plan.
    cc_model_filenames[str(capability)] = PLAN_FILE
    default_model_filename = f"no-plan-for-this-gpu-built-for-cc-{capability}.plan"
  if compatibility.get("version_compatible"):
    notes.append("a version-compatible plan: start tritonserver with --backend-config=tensorrt,"
                 "version-compatible=true to load it with a later TensorRT")
  return {"max_batch_size": max_batch, "preferred_batch_sizes": preferred, "cc_model_filenames": cc_model_filenames,
          "default_model_filename": default_model_filename, "notes": notes}
