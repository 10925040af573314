"""The only module that talks to TF-TRT: build the converter's arguments, call it, translate its errors, and
read what it built.

The converter call (`TfTrtBackend.convert`) is covered by the `trt` test tier; what it built is read by pure
functions on protos and files (`conversion_summary`, `engine_op_names`, `saved_model_engine_ops`,
`read_engine_assets`), tested everywhere on synthetic SavedModels.
"""

import os
import struct

from tftrt_keras.formats.tftrt.backend import ConversionUnavailable

TRT_ENGINE_OP = "TRTEngineOp"
ENGINE_ASSET_PREFIX = "trt-serialized-engine."
NATIVE_SEGMENT_SUFFIX = "_native_segment"


def canonical_engine_name(node_name):
  """TF-TRT names an engine's cache (and its asset file) by the op name without scopes."""
  return node_name.split("/")[-1]


def _all_nodes(graph_def):
  """(function name or None, NodeDef) for the top-level nodes and every function body."""
  for node in graph_def.node:
    yield None, node
  for function in graph_def.library.function:
    for node in function.node_def:
      yield function.signature.name, node


def engine_op_names(graph_def):
  """Sorted canonical names of the TRTEngineOp nodes anywhere in `graph_def` (function library included)."""
  return sorted({canonical_engine_name(node.name) for _, node in _all_nodes(graph_def) if node.op == TRT_ENGINE_OP})


def _segment_function_name(node):
  """The native segment a TRTEngineOp falls back to (its `segment_func` attribute, else TF-TRT's naming)."""
  if "segment_func" in node.attr and node.attr["segment_func"].func.name:
    return node.attr["segment_func"].func.name
  return canonical_engine_name(node.name) + NATIVE_SEGMENT_SUFFIX


def conversion_summary(graph_def):
  """What TF-TRT converted, counted as `TrtGraphConverterV2.summary()` counts it. Pure.

  Args:
    graph_def: the converted function's GraphDef, or a saved SavedModel's graph (engines in library functions).

  Returns:
    {"trt_engine_ops", "segments", "ops_converted", "ops_in_tensorflow", "converted_op_types": {op: count}}.
  """
  segments = {f.signature.name: f for f in graph_def.library.function}
  engines, hosts = {}, set()
  for host, node in _all_nodes(graph_def):
    if node.op == TRT_ENGINE_OP:
      engines.setdefault(canonical_engine_name(node.name), node)
      hosts.add(host)
  segment_names = {_segment_function_name(node) for node in engines.values()}
  converted, op_types = 0, {}
  for name in sorted(segment_names):
    if name in segments:
      converted += len(segments[name].node_def)
      for node in segments[name].node_def:
        op_types[node.op] = op_types.get(node.op, 0) + 1
  if not hosts:  # no engine: everything outside the library is TensorFlow's (as summary() counts it)
    hosts = {None}
  in_tensorflow = 0
  for host, node in _all_nodes(graph_def):
    if host in hosts and host not in segment_names and node.op != TRT_ENGINE_OP:
      in_tensorflow += 1
  return {"trt_engine_ops": len(engines), "segments": len(segment_names & set(segments)),
          "ops_converted": converted, "ops_in_tensorflow": in_tensorflow,
          "converted_op_types": dict(sorted(op_types.items()))}


def read_saved_model_proto(saved_model_dir):
  """The `SavedModel` proto of `saved_model_dir/saved_model.pb`."""
  from tensorflow.core.protobuf import saved_model_pb2  # pylint: disable=g-import-not-at-top
  proto = saved_model_pb2.SavedModel()
  with open(os.path.join(saved_model_dir, "saved_model.pb"), "rb") as f:
    proto.ParseFromString(f.read())
  return proto


def saved_model_engine_ops(saved_model_dir):
  """Canonical names of the TRTEngineOp nodes in a saved SavedModel (every meta graph, library included)."""
  names = set()
  for meta_graph in read_saved_model_proto(saved_model_dir).meta_graphs:
    names.update(engine_op_names(meta_graph.graph_def))
  return sorted(names)


def _tfrecords(data):
  """Records of a TFRecord file's bytes: [uint64 length][uint32 crc][data][uint32 crc] each (CRCs not checked:
  a truncated file shows as a short read)."""
  records, offset = [], 0
  while offset < len(data):
    if offset + 12 > len(data):
      raise ValueError(f"truncated TFRecord header at byte {offset}")
    (length,) = struct.unpack_from("<Q", data, offset)
    start = offset + 12
    if start + length + 4 > len(data):
      raise ValueError(f"truncated TFRecord of {length} bytes at byte {offset}")
    records.append(data[start:start + length])
    offset = start + length + 4
  return records


def _varint(data, offset):
  value, shift = 0, 0
  while True:
    byte = data[offset]
    offset += 1
    value |= (byte & 0x7F) << shift
    if not byte & 0x80:
      return value, offset
    shift += 7


def _engine_instance(record):
  """`TRTEngineInstance` (tf2tensorrt/utils/trt_engine_instance.proto: 1 repeated TensorShapeProto
  input_shapes, 2 bytes serialized_engine) -> ([shape, ...], engine size in bytes). Decoded by wire format:
  the generated module is not part of the pip wheel."""
  from tensorflow.core.framework import tensor_shape_pb2  # pylint: disable=g-import-not-at-top
  shapes, engine_bytes, offset = [], 0, 0
  while offset < len(record):
    key, offset = _varint(record, offset)
    field, wire_type = key >> 3, key & 7
    if wire_type == 2:
      length, offset = _varint(record, offset)
      payload = record[offset:offset + length]
      offset += length
      if field == 1:
        shape = tensor_shape_pb2.TensorShapeProto.FromString(payload)
        shapes.append([d.size for d in shape.dim])
      elif field == 2:
        engine_bytes = length
    elif wire_type == 0:
      _, offset = _varint(record, offset)
    elif wire_type in (1, 5):
      offset += 8 if wire_type == 1 else 4
    else:
      raise ValueError(f"unexpected protobuf wire type {wire_type} in a TRTEngineInstance")
  return shapes, engine_bytes


def read_engine_assets(saved_model_dir):
  """The TensorRT engines serialized in a TF-TRT SavedModel's assets (`assets/trt-serialized-engine.<op name>`).

  Returns:
    [{"engine", "file", "bytes", "instances": [{"input_shapes", "engine_bytes"}]}] sorted by name; a file
    without a record (a failed build) has no instances, an unreadable one has "error" instead.
  """
  assets = os.path.join(saved_model_dir, "assets")
  found = []
  if not os.path.isdir(assets):
    return found
  for name in sorted(os.listdir(assets)):
    if not name.startswith(ENGINE_ASSET_PREFIX):
      continue
    path = os.path.join(assets, name)
    entry = {"engine": name[len(ENGINE_ASSET_PREFIX):], "file": f"assets/{name}", "bytes": os.path.getsize(path)}
    try:
      with open(path, "rb") as f:
        records = _tfrecords(f.read())
      entry["instances"] = []
      for record in records:
        shapes, engine_bytes = _engine_instance(record)
        entry["instances"].append({"input_shapes": shapes, "engine_bytes": engine_bytes})
    except (ValueError, IndexError) as err:
      entry["error"] = f"{type(err).__name__}: {err}"
    found.append(entry)
  return found


class TfTrtBackend:
  """TF-TRT (`TrtGraphConverterV2`) as a conversion backend.

  Args:
    status: the `preflight.TfTrtStatus` to go by; None: ask `preflight.check_tftrt()` in this process
      (the export worker, whose library path and device are already set).
  """

  name = "tftrt"

  def __init__(self, status=None):
    if status is None:
      from tftrt_keras.formats.tftrt.status import check_tftrt  # pylint: disable=g-import-not-at-top
      status = check_tftrt()
    self.status = status

  def unavailable_reason(self):
    return None if self.status.usable else self.status.reason

  def environment(self):
    return self.status.environment()

  def convert(self, saved_model_dir, signature_key, precision, options, calibration_batches, build_batches,
              output_dir):
    """Converts, calibrates (INT8), prebuilds engines for `build_batches`' shapes, and saves to `output_dir`.

    Args:
      saved_model_dir, signature_key: the normal export and the signature to convert.
      precision: "FP32", "FP16" or "INT8".
      options: `ConversionOptions`.
      calibration_batches: list of {input name: array}, all of one shape (TF-TRT profiles from the first).
      build_batches: batches whose shapes the engines are prebuilt for; empty: engines build lazily on first use.
      output_dir: where the converted SavedModel goes.

    Returns:
      `conversion_summary` plus "trt_engine_ops_saved" and "converter_report".

    Raises:
      ConversionUnavailable: TF-TRT cannot run here (the preflight's reason, or TF-TRT's own refusal).
      ValueError: INT8 without calibration batches, or calibration batches of different shapes.
    """
    reason = self.unavailable_reason()
    if reason:
      raise ConversionUnavailable(reason)
    from tensorflow.python.compiler.tensorrt import trt_convert as trt  # pylint: disable=g-import-not-at-top
    import numpy as np  # pylint: disable=g-import-not-at-top
    import tensorflow as tf  # pylint: disable=g-import-not-at-top

    # TF-TRT calls the signature with each yielded dict as keyword arguments.
    def feeds(batches):
      def input_fn():
        for batch in batches:
          yield {name: tf.constant(value) for name, value in batch.items()}
      return input_fn

    try:
      converter = self._converter(trt, saved_model_dir, signature_key, precision, options)
    except RuntimeError as err:
      # "Tensorflow has not been built with TensorRT support" / an unloadable TensorRT: this machine, not
      # this model, is the problem.
      raise ConversionUnavailable(f"TF-TRT refused to start: {err}") from err
    if precision == "INT8":
      if not calibration_batches:
        raise ValueError("INT8 conversion needs calibration batches and none were given")
      shapes = {tuple(sorted((n, np.shape(v)) for n, v in b.items())) for b in calibration_batches}
      if len(shapes) != 1:
        raise ValueError(f"INT8 calibration batches must share one shape (TF-TRT calibrates one profile); got "
                         f"{sorted(shapes)}")
      # With dynamic shapes TF-TRT stores the calibration function and calibrates inside `build()`, so INT8
      # always builds (on the calibration shapes at least); save() refuses an uncalibrated INT8 model.
      converted = converter.convert(calibration_input_fn=feeds(calibration_batches))
      build_batches = build_batches or calibration_batches
    else:
      converted = converter.convert()
    summary = conversion_summary(converted.graph.as_graph_def())
    report = []
    try:
      converter.summary(detailed=False, print_fn=lambda line="": report.append(str(line)))
    except Exception as err:  # pylint: disable=broad-except
      report.append(f"converter.summary() failed: {type(err).__name__}: {err}")
    summary["converter_report"] = [line.strip() for line in report if line.strip().startswith("[*]")] or report[-2:]
    if build_batches:
      converter.build(input_fn=feeds(build_batches))
    converter.save(output_dir)
    summary["trt_engine_ops_saved"] = saved_model_engine_ops(output_dir)
    return summary

  @staticmethod
  def _converter(trt, saved_model_dir, signature_key, precision, options):
    """The TF-TRT converter for one precision."""
    # Several batch sizes (1 .. max_batch_size) must share engines: dynamic shapes with a "Range" profile
    # cover every size between the smallest and largest shape seen in `build()`.
    return trt.TrtGraphConverterV2(
        input_saved_model_dir=saved_model_dir,
        input_saved_model_signature_key=signature_key,
        precision_mode=precision,
        max_workspace_size_bytes=options.max_workspace_size_bytes,
        minimum_segment_size=options.options_for("tftrt").minimum_segment_size,
        maximum_cached_engines=options.options_for("tftrt").maximum_cached_engines,
        use_calibration=precision == "INT8",
        use_dynamic_shape=True,
        dynamic_shape_profile_strategy="Range",
        allow_build_at_runtime=True)
