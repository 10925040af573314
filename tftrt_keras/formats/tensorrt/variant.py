"""What both engine formats (`trt`, `trt_rtx`) do around the builder call; no TensorRT import.

    <format>_<precision>/<version>/model.plan   the serialized engine, raw bytes (no header of ours)
                                  /model.json   versions, targets, profile, builder settings, source SHA-256,
                                                build time, checks, TensorRT's warnings, inputs/outputs

The source model and profile (`source_model`), the checks every plan passes before it is written
(`build_checks`), the layer count by precision where the engine loads (`inspect_layers`), and `plan_metadata`.
"""

import collections
import hashlib
import json
import numbers
import os
import re
import time

from tftrt_keras.errors import invalid_argument
from tftrt_keras.formats.base import METADATA_FILE, VariantFailed

PLAN_FILE = "model.plan"


def source_file(source):
  """The model file of the source variant `source` (`model.onnx` of `onnx_fp16`), as its format declares it."""
  from tftrt_keras import formats  # pylint: disable=g-import-not-at-top
  return formats.load_format(formats.split_variant(source)[0]).model_file


def check_integer_options(options, argument, bounds):
  """Raises `invalid_argument` for the first of `bounds` ((field, low, high or None)) whose value on the
  options dataclass `options` is neither None nor an integer in range; `argument(field)` names it."""
  for name, low, high in bounds:
    value = getattr(options, name)
    if value is None:
      continue
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low or (high and value > high):
      expected = f"None or an integer from {low} to {high}" if high else f"None or an integer >= {low}"
      raise invalid_argument(argument(name), value, expected)


def file_sha256(path):
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def model_io(source_dir, signature):
  """{"inputs": [...], "outputs": [...]} of the ONNX variant in `source_dir` (its model.json), else the
  signature's (the ONNX inputs are named after the signature's)."""
  path = os.path.join(source_dir, METADATA_FILE)
  if os.path.isfile(path):
    with open(path) as f:
      described = json.load(f)
    if described.get("inputs"):
      return {"inputs": described["inputs"], "outputs": described.get("outputs") or []}
  return {"inputs": list((signature or {}).get("inputs", [])), "outputs": list((signature or {}).get("outputs", []))}


def needs_samples(inputs):
  """Whether the profile needs the captured samples: an input of unknown rank or a dynamic non-batch dimension."""
  from tftrt_keras.formats.tensorrt.profile import is_static  # pylint: disable=g-import-not-at-top
  return any(spec.get("shape") is None or not all(is_static(d) for d in spec["shape"][1:]) for spec in inputs)


def source_model(job, source, source_dir):
  """(path of the source's model.onnx, its inputs/outputs, the optimization profile) for one build.

  Raises:
    VariantFailed: the source has no model.onnx, or no profile can be made from what the export captured.
  """
  from tftrt_keras.formats.tensorrt.profile import ProfileError, engine_profile  # pylint: disable=g-import-not-at-top
  onnx_path = os.path.join(source_dir, source_file(source))
  if not os.path.isfile(onnx_path):
    raise VariantFailed(f"{source} has no {source_file(source)} to build from")
  io = model_io(source_dir, job.signature)
  samples = job.calibration_samples() if needs_samples(io["inputs"]) else None
  try:
    profile = engine_profile(io["inputs"], job.calibration_batch_sizes, job.options.max_batch_size, samples)
  except ProfileError as err:
    raise VariantFailed(f"no optimization profile: {err}") from err
  return onnx_path, io, profile


def _describe(specs):
  return ", ".join(f"{s.name} ({s.dtype})" for s in specs)


def build_checks(built, io, profile, source, max_batch_size):
  """The checks a plan passes where nothing can load it: {check: "passed: ..."}.

  Args:
    built: the `build.BuiltEngine`.
    io: the source model's {"inputs", "outputs"} (`model_io`).
    profile: the profile asked for; TensorRT's read-back (`built.profile`) is checked where there is one.
    source: the source artifact's name (for the sentences).
    max_batch_size: the largest batch the engine must serve.

  Raises:
    VariantFailed: a check failed; the message says which and what was found.
  """
  from tftrt_keras.formats.tensorrt.binding import BindingError, match_outputs  # pylint: disable=g-import-not-at-top
  from tftrt_keras.formats.tensorrt.profile import is_static  # pylint: disable=g-import-not-at-top
  checks = {}
  if not built.plan:
    raise VariantFailed("the builder returned an empty plan")
  checks["plan"] = (f"passed: the builder returned a {len(built.plan)}-byte plan for the network parsed from "
                    f"{source}/{source_file(source)}")
  wanted = {spec["name"]: spec.get("dtype") for spec in io["inputs"]}
  got = {spec.name: spec.dtype for spec in built.inputs}
  wrong = sorted(n for n in set(wanted) | set(got) if n not in got or n not in wanted or
                 (wanted[n] and got[n] != wanted[n]))
  if wrong:
    raise VariantFailed(f"the parsed network's inputs ({_describe(built.inputs)}) are not the signature's "
                        f"({', '.join(f'{n} ({d})' for n, d in wanted.items())}); they differ in {wrong}")
  checks["inputs"] = f"passed: the parsed network's inputs are the signature's: {_describe(built.inputs)}"
  try:
    match_outputs(built.outputs, io["outputs"] or None)
  except BindingError as err:
    raise VariantFailed(f"the parsed network's outputs do not match: {err}") from err
  checks["outputs"] = f"passed: the parsed network's outputs are the signature's: {_describe(built.outputs)}"
  held = built.profile or profile
  short = []
  for spec in io["inputs"]:
    shape = spec.get("shape")
    if shape is not None and shape and is_static(shape[0]):
      continue  # a fixed batch dimension: the engine serves exactly that batch
    shapes = held.get(spec["name"])
    if not shapes or shapes["min"][0] != 1 or shapes["max"][0] != max_batch_size:
      short.append(f"{spec['name']}: {shapes}")
  if short:
    raise VariantFailed(f"the optimization profile does not cover batch 1..{max_batch_size}: {'; '.join(short)}")
  checks["profile"] = (f"passed: every input's profile covers batch 1..{max_batch_size}"
                       + (" (read back from TensorRT)" if built.profile else ""))
  return checks


# Datatype words of the inspector's "Format/Datatype" ("Row major linear Int8 format", "Thirty-two wide channel
# vectorized row major Int8 format", TensorRT 10.9+: "Int8", "Half", "Float"), matched as whole words: "UInt8" is
# not "Int8".
_PRECISION_WORDS = (("int8", r"int8"), ("uint8", r"uint8"), ("fp8", r"fp8|e4m3|e5m2"), ("int4", r"int4"),
                    ("fp4", r"fp4|e2m1"), ("bf16", r"bf16|bfloat16?"), ("fp16", r"fp16|half"),
                    ("fp32", r"fp32|float"), ("int32", r"int32"), ("int64", r"int64"), ("bool", r"bool"))
_PRECISION_RES = [(word, re.compile(rf"(?<![a-z0-9])(?:{pattern})(?![a-z0-9])", re.IGNORECASE))
                  for word, pattern in _PRECISION_WORDS]
# Layers that only move or convert data: a Quantize or Dequantize on its own runs no INT8 arithmetic.
_CONVERSION_LAYER_TYPES = {"Reformat", "NoOp", "Shuffle", "Quantize", "Dequantize", "Identity"}
_QDQ_NODE = re.compile(r"(Quantize|Dequantize)Linear|/(input|weight)_quantizer|_(De)?QuantizeLinear", re.IGNORECASE)


def _precision_word(datatype):
  for word, pattern in _PRECISION_RES:
    if pattern.search(datatype):
      return word
  return "unknown" if "n/a" in datatype.lower() else "other"


def _tensor_words(tensors):
  return [_precision_word(str(t.get("Format/Datatype") or t.get("DataType") or t.get("Format") or ""))
          for t in tensors if isinstance(t, dict)]


def _fused_nodes(layer):
  """The ONNX nodes a layer fuses, from its name ("a + b", Myelin's "{ForeignNode[first...last]}") and metadata."""
  text = str(layer.get("Name", "")) + "\x1f" + str(layer.get("Metadata", ""))
  return [part.strip(" {}[]") for part in re.split(r" \+ |\.\.\.|\x1f|ForeignNode\[", text) if part.strip(" {}[]")]


def _is_int8_layer(layer):
  """A layer runs INT8 arithmetic if it reads an INT8 tensor, holds INT8 weights, or fuses a QuantizeLinear into
  the computation it feeds (Myelin's Q+GEMM reads the float activation and quantizes inside the kernel)."""
  if layer.get("LayerType") in _CONVERSION_LAYER_TYPES:
    return False
  nodes = _fused_nodes(layer)
  if nodes and all(_QDQ_NODE.search(node) for node in nodes):
    return False  # Q/DQ nodes alone, under whatever layer type
  weights = [layer.get(key) for key in ("Weights", "Bias") if isinstance(layer.get(key), dict)]
  if "int8" in _tensor_words(layer.get("Inputs") or []) or any(
      _precision_word(str(w.get("Type", ""))) == "int8" for w in weights[:1]):
    return True
  return any(_QDQ_NODE.search(node) and "Quantize" in node and "Dequantize" not in node for node in nodes) and any(
      not _QDQ_NODE.search(node) for node in nodes)


def layer_precisions(information):
  """{precision: layer count} of an engine, from the inspector's JSON (`LoadedEngine.layer_information`).

  "int8" counts layers running INT8 arithmetic; others count under their first input's datatype (first output's
  for a Dequantize), "unknown" without DETAILED verbosity. Reformat layers are not counted.
  """
  counts = collections.Counter()
  for layer in (information or {}).get("Layers", []):
    if not isinstance(layer, dict):
      counts["unknown"] += 1
      continue
    if layer.get("LayerType") == "Reformat":
      continue
    if _is_int8_layer(layer):
      counts["int8"] += 1
      continue
    words = _tensor_words((layer.get("Inputs") or [])[:1])
    if words == ["int8"]:  # reads INT8 but computes nothing in it (a Dequantize): counted by what it writes
      words = _tensor_words((layer.get("Outputs") or [])[:1]) or ["other"]
    counts[words[0] if words else "other"] += 1
  return dict(sorted(counts.items()))


def inspect_layers(plan, edition, precision, source, host_code_allowed=False):
  """Loads `plan` (here: a GPU that can run it is present) and counts its layers by precision.

  Raises:
    VariantFailed: the plan does not deserialize, the inspector's answer cannot be read, or an INT8 engine runs
      no layer in INT8.
  """
  from tftrt_keras.formats.tensorrt.build import LoadedEngine  # pylint: disable=g-import-not-at-top
  engine = None
  try:
    engine = LoadedEngine(plan, edition, host_code_allowed=host_code_allowed)
    layers = layer_precisions(engine.layer_information())
  except Exception as err:  # pylint: disable=broad-except
    # Not only RuntimeError: TensorRT's bindings raise TypeError/ValueError too, and the JSON may not parse.
    raise VariantFailed(str(err) if isinstance(err, RuntimeError) else
                        f"the engine could not be inspected ({type(err).__name__}: {err})") from err
  finally:
    if engine is not None:
      engine.close()
  if precision == "INT8" and not layers.get("int8"):
    raise VariantFailed(f"the INT8 engine runs no layer in INT8 (layers by input precision: {layers}); "
                        f"{source} should carry Q/DQ pairs TensorRT can fuse")
  return layers


def plan_metadata(*, format_name, precision, source_artifact, source_sha256, built, profile, builder, checks,
                  created=None, **extra):
  """The part of `model.json` both engine formats write; `extra` adds the format's own keys.

  Args:
    format_name: "trt" or "trt_rtx".
    precision: FP32/FP16/INT8.
    source_artifact, source_sha256: the ONNX variant it was built from and its model.onnx's SHA-256.
    built: the `build.BuiltEngine`.
    profile: {input name: {"min", "opt", "max"}}.
    builder: the builder settings used (dict).
    checks: what was checked (`build_checks`, plus loading where it ran).
    created: seconds since the epoch (injectable); now by default.
  """
  metadata = {
      "format": format_name,
      "file": PLAN_FILE,
      "precision": precision,
      "tensorrt_version": built.tensorrt_version,
      "profiles": profile,
      "builder": dict(builder, strongly_typed=built.strongly_typed, builder_flags=list(built.builder_flags)),
      "source": {"artifact": source_artifact, "file": source_file(source_artifact), "sha256": source_sha256},
      "build_seconds": round(built.seconds, 3),
      "engine_bytes": len(built.plan),
      "engine_sha256": hashlib.sha256(built.plan).hexdigest(),
      "checks": checks,
      "inputs": [spec.to_json() for spec in built.inputs],
      "outputs": [spec.to_json() for spec in built.outputs],
      "builder_warnings": list(built.warnings),
      "created": round(time.time() if created is None else created, 3),
  }
  metadata.update(extra)
  return metadata


def write_variant(output_dir, plan, metadata):
  """Writes `model.plan` and `model.json` into the (empty, temporary) variant directory."""
  with open(os.path.join(output_dir, PLAN_FILE), "wb") as f:
    f.write(plan)
  with open(os.path.join(output_dir, METADATA_FILE), "w") as f:
    json.dump(metadata, f, indent=2)
    f.write("\n")
