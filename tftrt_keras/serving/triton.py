"""A Triton model repository from every export: one Triton model per ONNX and TensorRT variant.

    <triton_repository>/<name>_onnx_fp32/   config.pbtxt, .tftrt_keras (ours: retention touches nothing else),
                                            3/model.onnx (+ model.json), hard-linked or copied from the variant
    <triton_repository>/<name>_trt_fp16/    config.pbtxt (cc_model_filenames per GPU), 3/model.plan

`publish_export(run)` runs in the export worker after verification and publishes usable variants (`ok`,
`unverified`); one Triton cannot express is left out with the reason in `manifest["serving"]["triton"]`.
Triton polls the repository, so nothing appears half-written: versions are staged in a hidden directory inside
the model directory (a hidden one in the repository would be taken for a model) and renamed. `config.pbtxt` is
written by hand (no protobuf dependency); tests parse it with Triton's own definitions.
"""

import errno
import json
import os
import re
import shutil
import uuid

from tftrt_keras import formats
from tftrt_keras.artifacts.manifest import FAILED, OK, SKIPPED, USABLE_STATUSES
from tftrt_keras.formats.base import METADATA_FILE, TRITON_DTYPES, Unservable

CONFIG_FILE = "config.pbtxt"
MARKER = ".tftrt_keras"
# A variant of a split model's back takes the cut tensors; its ensemble with the TF front needs Triton's
# TensorFlow backend, which this library's Triton (Python backend only) lacks, so no ensemble is written unchecked.
AFTER_FRONT = ("it takes the cut tensors of a TF front (see the manifest's `split`): serving it needs an ensemble "
               "with the front on Triton's tensorflow_savedmodel backend, which the Triton server here (Python "
               "backend only) cannot load, so none is written; serve the normal export or the frozen graph, or "
               "the front (TF Serving) before this model")
# The newest export is the one served; older versions stay on disk (for a rollback by config) until retention.
VERSION_POLICY = "latest { num_versions: 1 }"

_TEMP = re.compile(r"^\.tmp-(\d+)-(\d+)-[0-9a-f]+$")  # .tmp-<version>-<pid>-<random>, as ExportLayout's temps
_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def model_name_prefix(root, options):
  """The name every Triton model of this export starts with: `triton_model_name`, else the root's basename.

  Characters a model directory name should not hold become `_` (Triton model names are directory names).
  """
  name = options.triton_model_name or os.path.basename(os.path.normpath(os.fspath(root)))
  return _NAME_UNSAFE.sub("_", name.strip()) or "model"


def triton_model_name(prefix, variant):
  return f"{prefix}_{variant}"


# --- the config ------------------------------------------------------------------------------------------------

def _tensor_entry(tensor, serving, kind):
  """(name, Triton data type, dims, reshape or None) of one tensor; raises Unservable."""
  name, dtype, shape = tensor.get("name"), tensor.get("dtype"), tensor.get("shape")
  if not name:
    raise Unservable(f"an {kind} has no name: {tensor}")
  if dtype not in TRITON_DTYPES:
    raise Unservable(f"{kind} {name!r} has dtype {dtype!r}, which Triton has no type for")
  if serving.dtypes is not None and dtype not in serving.dtypes:
    raise Unservable(f"{kind} {name!r} has dtype {dtype!r}, {serving.dtypes_note}")
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


def _tensors(metadata, key, serving):
  tensors = metadata.get(key)
  if not tensors:
    raise Unservable(f"the variant's {METADATA_FILE} lists no {key}")
  kind = key[:-1]
  entries = [_tensor_entry(t, serving, kind) for t in tensors]
  names = [e[0] for e in entries]
  if len(set(names)) != len(names):
    raise Unservable(f"duplicate {key} names: {names}")
  return entries


def model_config(variant, metadata, *, model_name, max_batch_size=None, batch_sizes=()):
  """The Triton model config of one variant, as a plain dict; raises Unservable with the reason.

  Args:
    variant: the variant's name (`onnx_fp16`, `trt_int8`).
    metadata: the variant's `model.json`: {"inputs", "outputs"} each [{"name", "dtype", "shape"}] (batch first,
      None where dynamic), and what the format's `triton_batching` reads (a plan's "profiles").
    model_name: the Triton model's name.
    max_batch_size: the export's largest batch (a format may serve its own instead, e.g. a plan's profile).
    batch_sizes: the captured batch sizes.

  Returns:
    {"name", "platform", "max_batch_size", "inputs", "outputs", "preferred_batch_sizes", "cc_model_filenames",
    "default_model_filename", "notes"},
    inputs/outputs as [(name, data type, dims, reshape or None)].
  """
  fmt = _format_of(variant)
  if fmt is None or fmt.serving is None or not fmt.serving.platform:
    raise Unservable(f"{variant} is not a format Triton serves here")
  inputs = _tensors(metadata, "inputs", fmt.serving)
  outputs = _tensors(metadata, "outputs", fmt.serving)
  batching = fmt.triton_batching(metadata, [i[0] for i in inputs], max_batch_size, batch_sizes)
  return dict(batching, name=model_name, platform=fmt.serving.platform, inputs=inputs, outputs=outputs)


def _format_of(variant):
  """The `Format` of a variant name, or None for an artifact that is no variant."""
  try:
    return formats.load_format(formats.split_variant(variant)[0])
  except ValueError:
    return None


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
      fmt = _format_of(variant)
      if fmt is None or fmt.serving is None:
        continue
      if entry.get("status") not in USABLE_STATUSES:  # first: why this variant is not usable at all
        reason = entry.get("reason")
        record["left_out"][variant] = f"the variant is {entry.get('status')}" + (f": {reason}" if reason else "")
        continue
      if not fmt.serving.platform:
        record["left_out"][variant] = fmt.serving.not_servable
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
        if not os.path.isfile(os.path.join(variant_dir, fmt.model_file)):
          raise Unservable(f"{variant_dir} has no {fmt.model_file}")
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
                        _nothing_published(run.manifest["artifacts"], record["left_out"]))
  return record


def _nothing_published(artifacts, left_out):
  """Why no model was written: why the usable variants were left out (the first, and how many more), else that
  no servable variant is usable."""
  usable = [(v, why) for v, why in left_out.items() if artifacts[v].get("status") in USABLE_STATUSES]
  if not usable:
    return "no variant of this export that Triton can serve is usable (see left_out)"
  variant, why = usable[0]
  more = f" (and {len(usable) - 1} more; see left_out)" if len(usable) > 1 else ""
  return f"nothing published: {variant}: {why}{more}"


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
