"""A Triton model repository from every export: one Triton model per ONNX and TensorRT variant.

    <triton_repository>/
      <name>_onnx_fp32/              platform onnxruntime_onnx
        config.pbtxt                 inputs/outputs by the variant's names, batch dim as max_batch_size
        .tftrt_keras                 marks the model as ours (retention touches nothing else)
        3/model.onnx (+ model.json)  versions = export versions, files hard-linked (or copied) from the variant
      <name>_trt_fp16/               platform tensorrt_plan, cc_model_filenames {"8.6": "model.plan"}, and a
                                     default file that does not exist (no other GPU loads the plan)
        config.pbtxt
        3/model.plan

`publish_export(run)` is called by the export worker after verification (see `pipeline.run_export`); usable
variants are published (`ok`, and `unverified`: built and build-checked, not compared; the manifest's record of
each model says which). A variant whose signature Triton cannot express (unknown rank, a fixed batch dimension,
strings into a TensorRT plan, ...) is left out with the reason in `manifest["serving"]["triton"]`, never written
half-right. `retain_triton` applies the export's retention to the repository.

Triton polls the repository, so nothing appears half-written: a version is hard-linked into a hidden directory
inside its model directory (Triton ignores non-numeric version names) and renamed; `config.pbtxt` is replaced
with `os.replace`; a new model directory is staged in the export root and renamed into the repository. A hidden
directory in the repository itself would not do: Triton takes every directory there for a model.

`config.pbtxt` is written as text by hand (no protobuf or tritonclient dependency); the tests parse it with
Triton's own `model_config` protobuf definitions.
"""

import errno
import json
import os
import re
import shutil
import uuid

from tftrt_keras.artifacts.manifest import FAILED, OK, SKIPPED, USABLE_STATUSES

CONFIG_FILE = "config.pbtxt"
MARKER = ".tftrt_keras"
METADATA_FILE = "model.json"
# The Triton platform of each variant format and the file Triton opens in a version directory.
PLATFORMS = {"onnx": "onnxruntime_onnx", "trt": "tensorrt_plan"}
MODEL_FILES = {"onnx": "model.onnx", "trt": "model.plan"}
# Variant formats Triton cannot serve at all, with the reason recorded in `left_out` for each of their variants.
NOT_SERVABLE = {"trt_rtx": "Triton's tensorrt_plan backend cannot load TensorRT-RTX plans"}
# A variant of a split model's back takes the cut tensors; its ensemble with the TF front needs Triton's
# TensorFlow backend, which this library's Triton (Python backend only) lacks, so no ensemble is written unchecked.
AFTER_FRONT = ("it takes the cut tensors of a TF front (see the manifest's `split`): serving it needs an ensemble "
               "with the front on Triton's tensorflow_savedmodel backend, which the Triton server here (Python "
               "backend only) cannot load, so none is written; serve the normal export or the frozen graph, or "
               "the front (TF Serving) before this model")
# The newest export is the one served; older versions stay on disk (for a rollback by config) until retention.
VERSION_POLICY = "latest { num_versions: 1 }"

# Signature dtype -> Triton DataType (common/protobuf/model_config.proto).
TRITON_DTYPES = {
    "bool": "TYPE_BOOL", "uint8": "TYPE_UINT8", "uint16": "TYPE_UINT16", "uint32": "TYPE_UINT32",
    "uint64": "TYPE_UINT64", "int8": "TYPE_INT8", "int16": "TYPE_INT16", "int32": "TYPE_INT32",
    "int64": "TYPE_INT64", "float16": "TYPE_FP16", "float32": "TYPE_FP32", "float64": "TYPE_FP64",
    "string": "TYPE_STRING", "bfloat16": "TYPE_BF16",
}
# What a TensorRT engine can take or give at its boundary (TensorRT 10 I/O types).
TENSORRT_DTYPES = frozenset({"bool", "uint8", "int8", "int32", "int64", "float16", "float32", "bfloat16"})

_TEMP = re.compile(r"^\.tmp-(\d+)-(\d+)-[0-9a-f]+$")  # .tmp-<version>-<pid>-<random>, as ExportLayout's temps
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


class Unservable(Exception):
  """Triton cannot serve this variant as it is: the message is the reason recorded in the manifest."""


def model_name_prefix(root, options):
  """The name every Triton model of this export starts with: `triton_model_name`, else the root's basename.

  Characters a model directory name should not hold become `_` (Triton model names are directory names).
  """
  name = options.triton_model_name or os.path.basename(os.path.normpath(os.fspath(root)))
  return _NAME_UNSAFE.sub("_", name.strip()) or "model"


def triton_model_name(prefix, variant):
  return f"{prefix}_{variant}"


# --- the config ------------------------------------------------------------------------------------------------

def _tensor_entry(tensor, format_name, kind):
  """(name, Triton data type, dims, reshape or None) of one tensor; raises Unservable."""
  name, dtype, shape = tensor.get("name"), tensor.get("dtype"), tensor.get("shape")
  if not name:
    raise Unservable(f"an {kind} has no name: {tensor}")
  if dtype not in TRITON_DTYPES:
    raise Unservable(f"{kind} {name!r} has dtype {dtype!r}, which Triton has no type for")
  if format_name == "trt" and dtype not in TENSORRT_DTYPES:
    raise Unservable(f"{kind} {name!r} has dtype {dtype!r}, which a TensorRT plan cannot take or give "
                     f"(TensorRT I/O types: {sorted(TENSORRT_DTYPES)})")
  if shape is None:
    raise Unservable(f"{kind} {name!r} has an unknown rank; Triton needs the rank in `dims`")
  if not shape:
    raise Unservable(f"{kind} {name!r} is a scalar: it has no batch dimension for Triton to batch on")
  if _is_known(shape[0]):
    raise Unservable(f"{kind} {name!r} has a fixed batch dimension ({shape[0]}); Triton batches only models "
                     "whose first dimension is dynamic (export with a None batch dimension)")
  dims = [int(d) if _is_known(d) else -1 for d in shape[1:]]
  if not dims:
    # A [batch] tensor: Triton wants non-empty dims, so [1] reshaped to [] (its documented idiom).
    return name, TRITON_DTYPES[dtype], [1], []
  return name, TRITON_DTYPES[dtype], dims, None


def _is_known(dim):
  return isinstance(dim, int) and not isinstance(dim, bool) and dim >= 0


def _tensors(metadata, key, format_name):
  tensors = metadata.get(key)
  if not tensors:
    raise Unservable(f"the variant's {METADATA_FILE} lists no {key}")
  kind = key[:-1]
  entries = [_tensor_entry(t, format_name, kind) for t in tensors]
  names = [e[0] for e in entries]
  if len(set(names)) != len(names):
    raise Unservable(f"duplicate {key} names: {names}")
  return entries


def model_config(variant, metadata, *, model_name, max_batch_size=None, batch_sizes=()):
  """The Triton model config of one variant, as a plain dict; raises Unservable with the reason.

  Args:
    variant: the variant's name (`onnx_fp16`, `trt_int8`).
    metadata: the variant's `model.json`: {"inputs", "outputs"} each [{"name", "dtype", "shape"}] (batch first,
      None where dynamic); a TensorRT variant adds "profiles" {input: {"min", "opt", "max"}} and
      "compute_capability" ("8.6").
    model_name: the Triton model's name.
    max_batch_size: the largest batch an ONNX variant serves (the export's). A TensorRT plan's comes from its
      optimization profile.
    batch_sizes: the captured batch sizes; an ONNX model prefers the largest of them.

  Returns:
    {"name", "platform", "max_batch_size", "inputs", "outputs", "preferred_batch_sizes", "cc_model_filenames",
    "default_model_filename", "notes"},
    inputs/outputs as [(name, data type, dims, reshape or None)].
  """
  format_name = variant.rpartition("_")[0]
  if format_name not in PLATFORMS:
    raise Unservable(f"{variant} is not a format Triton serves here (only {sorted(PLATFORMS)})")
  inputs = _tensors(metadata, "inputs", format_name)
  outputs = _tensors(metadata, "outputs", format_name)
  cc_model_filenames, default_model_filename, notes = {}, None, []
  if format_name == "trt":
    max_batch, preferred = _engine_batch_sizes(metadata, [i[0] for i in inputs])
    capability = metadata.get("compute_capability")
    if not capability or not re.fullmatch(r"\d+\.\d+", str(capability)):
      raise Unservable(f"the plan's compute capability is unknown ({capability!r}); Triton would load it on any "
                       "GPU and fail there")
    compatibility = metadata.get("compatibility") or {}
    if compatibility.get("hardware_compatibility") != "ampere_plus":  # an ampere_plus plan loads on any 8.0+
      # Only GPUs of this compute capability open model.plan; on any other Triton's fallback, the default model
      # file, names a file that is not there, so the model fails to load there instead of loading a foreign plan.
      cc_model_filenames[str(capability)] = MODEL_FILES["trt"]
      default_model_filename = f"no-plan-for-this-gpu-built-for-cc-{capability}.plan"
    if compatibility.get("version_compatible"):
      notes.append("a version-compatible plan: start tritonserver with --backend-config=tensorrt,"
                   "version-compatible=true to load it with a later TensorRT")
  else:
    if not max_batch_size or max_batch_size < 1:
      raise Unservable(f"no max batch size for {variant} (got {max_batch_size!r})")
    max_batch = int(max_batch_size)
    captured = [int(b) for b in batch_sizes if 0 < int(b) <= max_batch]
    preferred = [max(captured)] if captured else []
  return {"name": model_name, "platform": PLATFORMS[format_name], "max_batch_size": max_batch,
          "inputs": inputs, "outputs": outputs, "preferred_batch_sizes": preferred,
          "cc_model_filenames": cc_model_filenames, "default_model_filename": default_model_filename,
          "notes": notes}


def _engine_batch_sizes(metadata, input_names):
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


def _quote(text):
  return '"' + str(text).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _dims_text(dims):
  return "[ " + ", ".join(str(d) for d in dims) + " ]" if dims else "[ ]"


def _tensor_text(entry):
  name, data_type, dims, reshape = entry
  lines = ["  {", f"    name: {_quote(name)}", f"    data_type: {data_type}", f"    dims: {_dims_text(dims)}"]
  if reshape is not None:
    lines.append(f"    reshape: {{ shape: {_dims_text(reshape)} }}")
  lines.append("  }")
  return lines


def config_text(config, comment=None):
  """`config.pbtxt` (protobuf text format of Triton's ModelConfig) for a `model_config` dict."""
  lines = [f"# {line}" for line in (comment or "").splitlines() + config.get("notes", [])]
  lines += [f"name: {_quote(config['name'])}", f"platform: {_quote(config['platform'])}",
            f"max_batch_size: {config['max_batch_size']}", f"version_policy: {{ {VERSION_POLICY} }}"]
  for key, entries in (("input", config["inputs"]), ("output", config["outputs"])):
    lines.append(f"{key} [")
    for i, entry in enumerate(entries):
      block = _tensor_text(entry)
      if i < len(entries) - 1:
        block[-1] += ","
      lines += block
    lines.append("]")
  lines.append("dynamic_batching {")
  if config["preferred_batch_sizes"]:
    lines.append(f"  preferred_batch_size: {_dims_text(config['preferred_batch_sizes'])}")
  lines.append("}")
  for capability, file_name in sorted(config["cc_model_filenames"].items()):
    lines.append(f"cc_model_filenames {{ key: {_quote(capability)} value: {_quote(file_name)} }}")
  if config.get("default_model_filename"):
    lines.append(f"default_model_filename: {_quote(config['default_model_filename'])}")
  return "\n".join(lines) + "\n"


# --- writing the repository -------------------------------------------------------------------------------------

def _link_tree(source, destination):
  """Mirrors `source` into the new directory `destination`: hard links where the filesystem allows, else copies.

  A hard link keeps the served file alive when the export's own retention deletes the variant directory.
  """
  os.makedirs(destination)
  for dirpath, dirnames, filenames in os.walk(source):
    relative = os.path.relpath(dirpath, source)
    target_dir = os.path.normpath(os.path.join(destination, relative))
    for dirname in dirnames:
      os.makedirs(os.path.join(target_dir, dirname), exist_ok=True)
    for filename in filenames:
      src, dst = os.path.join(dirpath, filename), os.path.join(target_dir, filename)
      try:
        os.link(src, dst)
      except OSError:
        shutil.copy2(src, dst)


def _write_file_atomically(path, text):
  temp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
  with open(temp, "w") as f:
    f.write(text)
  os.replace(temp, path)


def _pid_alive(pid):
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def _remove_dead_temps(model_dir):
  """Hidden version temps that a killed process left in one of our model directories."""
  for name in os.listdir(model_dir):
    match = _TEMP.match(name)
    if match and not _pid_alive(int(match.group(2))):
      shutil.rmtree(os.path.join(model_dir, name), ignore_errors=True)


def _read_marker(model_dir):
  try:
    with open(os.path.join(model_dir, MARKER)) as f:
      return json.load(f)
  except (OSError, ValueError):
    return None


def _marker_text(export_root, variant):
  return json.dumps({"created_by": "tftrt_keras", "export_root": export_root, "variant": variant})


def publish_model(repository, config, variant_dir, version, *, export_root, variant, staging_dir=None,
                  comment=None):
  """Adds `version` of one variant to its Triton model (creating the model) and writes its config.

  Args:
    repository: the Triton model repository.
    config: the `model_config` dict.
    variant_dir: the variant's directory (its files become the version's files).
    version: the export's version.
    export_root: the export root the model belongs to (recorded in the model's marker).
    variant: the variant's name.
    staging_dir: an empty directory outside the repository where a new model is assembled and renamed into
      place; None (or another filesystem): assembled in place, config first.
    comment: a comment for the head of config.pbtxt.

  Returns:
    The version directory.

  Raises:
    Unservable: a model of that name exists and is not ours, or the version is already there.
  """
  model_dir = os.path.join(repository, config["name"])
  text = config_text(config, comment)
  if not os.path.isdir(model_dir):
    os.makedirs(repository, exist_ok=True)
    if staging_dir is not None:
      staged = os.path.join(staging_dir, config["name"])
      os.makedirs(staged)
      _write_file_atomically(os.path.join(staged, MARKER), _marker_text(export_root, variant))
      _write_file_atomically(os.path.join(staged, CONFIG_FILE), text)
      _link_tree(variant_dir, os.path.join(staged, str(version)))
      try:
        os.rename(staged, model_dir)
        return os.path.join(model_dir, str(version))
      except OSError as err:
        if err.errno not in (errno.EXDEV, errno.EEXIST, errno.ENOTEMPTY):
          raise
        shutil.rmtree(staged, ignore_errors=True)  # another filesystem (or a racing writer): build in place
    os.makedirs(model_dir, exist_ok=True)
    if not os.path.exists(os.path.join(model_dir, MARKER)):
      _write_file_atomically(os.path.join(model_dir, MARKER), _marker_text(export_root, variant))
  marker = _read_marker(model_dir)
  if not marker or marker.get("created_by") != "tftrt_keras":
    raise Unservable(f"{model_dir} exists and was not written by tftrt_keras; it is left as it is")
  final = os.path.join(model_dir, str(version))
  if os.path.exists(final):
    raise Unservable(f"version {version} of {config['name']} is already in the repository; it is left as it is")
  _remove_dead_temps(model_dir)
  temp = os.path.join(model_dir, f".tmp-{version}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
  try:
    # Config before version: a new version must never be loaded under the previous version's config.
    _write_file_atomically(os.path.join(model_dir, CONFIG_FILE), text)
    _link_tree(variant_dir, temp)
    os.rename(temp, final)
  except BaseException:
    shutil.rmtree(temp, ignore_errors=True)
    raise
  return final


def _read_metadata(variant_dir):
  path = os.path.join(variant_dir, METADATA_FILE)
  try:
    with open(path) as f:
      return json.load(f)
  except (OSError, ValueError) as err:
    raise Unservable(f"the variant's {METADATA_FILE} cannot be read: {type(err).__name__}: {err}") from err


def publish_export(run):
  """Publishes every usable (`ok` or `unverified`) ONNX and TensorRT variant of one export into
  `options.triton_repository`.

  Records in `run.manifest["serving"]["triton"]`: the repository, {model name: {variant, version, path, status,
  platform, max_batch_size}} under "models", {variant: why not published} under "left_out", and a `status`:
  `failed` when writing a model failed, `skipped` when nothing was servable (with `reason`), else `ok`.
  Raises only when the repository itself cannot be written.

  Args:
    run: the export's `pipeline.ExportRun`.

  Returns: the record written to the manifest.
  """
  options = run.request.options
  repository = os.path.abspath(os.fspath(options.triton_repository))
  prefix = model_name_prefix(run.layout.root, options)
  version = int(run.request.version)
  record = {"repository": repository, "model_name_prefix": prefix, "models": {}, "left_out": {}}
  run.manifest.setdefault("serving", {})["triton"] = record
  os.makedirs(repository, exist_ok=True)
  staging, failures = None, []
  try:
    for variant, entry in run.manifest["artifacts"].items():
      format_name = variant.rpartition("_")[0]
      if format_name not in PLATFORMS and format_name not in NOT_SERVABLE:
        continue
      if entry.get("status") not in USABLE_STATUSES:  # first: why this variant is not usable at all
        reason = entry.get("reason")
        record["left_out"][variant] = f"the variant is {entry.get('status')}" + (f": {reason}" if reason else "")
        continue
      if format_name in NOT_SERVABLE:
        record["left_out"][variant] = NOT_SERVABLE[format_name]
        continue
      source = entry.get("built_from")
      source_status = (run.manifest["artifacts"].get(source) or {}).get("status", "missing") if source else OK
      if source_status not in USABLE_STATUSES:  # verification settles this first; never serve it anyway
        record["left_out"][variant] = f"built from {source}, which is {source_status}"
        continue
      if entry.get("after_front"):
        record["left_out"][variant] = AFTER_FRONT
        continue
      variant_dir = run.artifact_dir(variant)
      name = triton_model_name(prefix, variant)
      try:
        if variant_dir is None or not os.path.isdir(variant_dir):
          raise Unservable(f"the variant's directory is missing ({entry.get('path')!r})")
        metadata = _read_metadata(variant_dir)
        if not os.path.isfile(os.path.join(variant_dir, MODEL_FILES[format_name])):
          raise Unservable(f"{variant_dir} has no {MODEL_FILES[format_name]}")
        config = model_config(variant, metadata, model_name=name, max_batch_size=run.job.max_batch_size,
                              batch_sizes=run.request.calibration_batch_sizes)
        if staging is None:
          staging = _staging_dir(run.layout.root, version)
        path = publish_model(repository, config, variant_dir, version, export_root=run.layout.root,
                             variant=variant, staging_dir=staging,
                             comment=f"Written by tftrt_keras from {variant} of export {version} in {run.layout.root}.")
        record["models"][name] = {"variant": variant, "version": version, "path": path, "status": entry["status"],
                                  "platform": config["platform"], "max_batch_size": config["max_batch_size"]}
      except Unservable as err:
        record["left_out"][variant] = str(err)
      except OSError as err:
        record["left_out"][variant] = f"writing the Triton model failed: {type(err).__name__}: {err}"
        failures.append(f"{variant}: {type(err).__name__}: {err}")
  finally:
    if staging is not None:
      shutil.rmtree(staging, ignore_errors=True)
  record["status"] = FAILED if failures else OK if record["models"] else SKIPPED
  if record["status"] != OK:
    record["reason"] = ("writing the Triton models failed: " + "; ".join(failures) if failures else
                        "no variant of this export can be served by Triton (see left_out)")
  return record


def _staging_dir(export_root, version):
  """A hidden temp in the export root, named like the layout's temps so a crash's leftovers are cleaned the same
  way (`ExportLayout.remove_temps`); the root is ours and writable, and usually on the repository's filesystem."""
  path = os.path.join(export_root, f".tmp-{version}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
  os.makedirs(path)
  return path


# --- retention --------------------------------------------------------------------------------------------------

def retain_triton(repository, prefix, versions_kept, export_root=None):
  """Deletes the Triton versions whose export retention deleted; returns the deleted paths.

  Only model directories named `<prefix>_<variant>` that carry our marker (and, with `export_root`, were written
  from that root) are touched, and in them only numbered version directories not in `versions_kept`. A model left
  without versions is removed whole (Triton refuses a model with none). A failed delete is logged, never raised.

  Args:
    repository: the Triton model repository.
    prefix: the export's model name prefix (`model_name_prefix(root, options)`).
    versions_kept: the export versions still on disk (`ExportLayout(root).versions()` after `retain`).
    export_root: when given, only models written from this export root are touched.
  """
  from absl import logging  # pylint: disable=g-import-not-at-top
  kept = {int(v) for v in versions_kept}
  deleted = []
  if not os.path.isdir(repository):
    return deleted
  for name in sorted(os.listdir(repository)):
    model_dir = os.path.join(repository, name)
    if not name.startswith(prefix + "_") or not os.path.isdir(model_dir):
      continue
    marker = _read_marker(model_dir) or {}
    if marker.get("created_by") != "tftrt_keras" or name != triton_model_name(prefix, marker.get("variant")):
      continue
    if export_root is not None and os.path.abspath(marker.get("export_root", "")) != os.path.abspath(export_root):
      continue
    versions = [n for n in os.listdir(model_dir) if n.isdigit() and os.path.isdir(os.path.join(model_dir, n))]
    doomed = [n for n in versions if int(n) not in kept]
    try:
      if doomed and len(doomed) == len(versions):
        shutil.rmtree(model_dir)  # Triton refuses a model without versions: the whole model goes
        deleted.append(model_dir)
        continue
      for n in doomed:
        # Renamed to a hidden name first, so Triton's poll never finds half a version.
        temp = os.path.join(model_dir, f".tmp-{n}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        os.rename(os.path.join(model_dir, n), temp)
        shutil.rmtree(temp)
        deleted.append(os.path.join(model_dir, n))
    except OSError as err:
      logging.warning("tftrt_keras: could not delete old Triton versions in %s: %s", model_dir, err)
  return deleted


def retain_for_export(root, options):
  """`retain_triton` for an export root after `ExportLayout(root).retain(...)`; no-op without a repository."""
  if not options.triton_repository:
    return []
  from tftrt_keras.artifacts.layout import ExportLayout  # pylint: disable=g-import-not-at-top
  layout = ExportLayout(root)
  return retain_triton(options.triton_repository, model_name_prefix(layout.root, options), layout.versions(),
                       export_root=layout.root)
