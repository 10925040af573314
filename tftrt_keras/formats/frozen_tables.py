"""Lookup tables in a frozen graph: their contents become constants and an init op fills them, as a TF1 graph does.

Freezing folds variables but not tables, so the frozen graph would hold empty ones. Each table's contents are
read from the loaded SavedModel (`LookupTableExportV2`) and written in as a `HashTableV2` under its own name plus
an `InitializeTableV2` from constants, grouped under `INIT_OP`, run once before serving.
"""

INIT_OP = "tftrt_keras_init_tables"
# Ops that change a table while serving: a frozen copy of its contents would not follow them.
_MUTATING_OPS = frozenset({"LookupTableInsert", "LookupTableInsertV2", "LookupTableRemoveV2", "LookupTableImport",
                           "LookupTableImportV2", "InitializeTable", "InitializeTableV2",
                           "InitializeTableFromTextFile", "InitializeTableFromTextFileV2"})
_TABLE_OPS = frozenset({"HashTable", "HashTableV2"})
_FIND_OPS = frozenset({"LookupTableFind", "LookupTableFindV2"})


class TableUnreadable(Exception):
  """A table's contents cannot be read or written into the graph; the message names the table and why."""


def _graph_ops(graph_def):
  for node in graph_def.node:
    yield node
  for function in graph_def.library.function:
    yield from function.node_def


def _dtype_candidates(graph_def):
  """(key dtype, value dtype) of every lookup in the graph: what a captured table handle may hold."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  found = []
  for node in _graph_ops(graph_def):
    if node.op in _FIND_OPS:
      pair = (tf.dtypes.as_dtype(node.attr["Tin"].type), tf.dtypes.as_dtype(node.attr["Tout"].type))
      if pair not in found:
        found.append(pair)
  return found


def _dtypes_of_handle(graph_def, placeholder, candidates):
  """The (key, value) dtypes the graph's lookups read `placeholder`'s table with; `candidates` when none says.

  A lookup kernel given the wrong dtypes aborts the process (a CHECK, not an error), so the dtypes come from the
  lookups that consume this very handle (through Identity), never from trying.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  names, found = {placeholder}, []
  for node in _graph_ops(graph_def):  # nodes come in graph order, after their inputs
    sources = {i.split(":")[0].lstrip("^") for i in node.input}
    if not sources & names:
      continue
    if node.op == "Identity":
      names.add(node.name)
    elif node.op in _FIND_OPS:
      pair = (tf.dtypes.as_dtype(node.attr["Tin"].type), tf.dtypes.as_dtype(node.attr["Tout"].type))
      if pair not in found:
        found.append(pair)
  return found[:1] if len(found) == 1 else candidates


def _export(handle, candidates, what):
  """(keys, values, key dtype, value dtype) of the table behind `handle`."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  errors = []
  for key_dtype, value_dtype in candidates:
    try:
      keys, values = tf.raw_ops.LookupTableExportV2(table_handle=handle, Tkeys=key_dtype, Tvalues=value_dtype)
    except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError, tf.errors.UnimplementedError) as err:
      errors.append(err.message.split("\n")[0])
      continue
    return keys.numpy(), values.numpy(), key_dtype, value_dtype
  raise TableUnreadable(f"{what} is not a lookup table whose contents can be read "
                        f"({'; '.join(errors) or 'no lookup in the graph says its key and value types'})")


def read_tables(graph_def, frozen_inputs, function):
  """{node name: (keys, values, key dtype, value dtype)} of every table the frozen graph reads.

  Args:
    graph_def: the frozen GraphDef.
    frozen_inputs: the frozen function's inputs (resource placeholders are captured tables).
    function: the signature's ConcreteFunction (its captured inputs hold the live tables).

  Raises:
    TableUnreadable: a table is changed by the signature, is not a table, or cannot be read.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  mutating = sorted({node.op for node in _graph_ops(graph_def) if node.op in _MUTATING_OPS})
  if mutating:
    raise TableUnreadable(f"the signature changes a table while serving ({', '.join(mutating)}); a frozen copy "
                          "of its contents would not follow")
  candidates = _dtype_candidates(graph_def)
  offset = len(function.inputs) - len(function.captured_inputs)
  position = {t.name: i for i, t in enumerate(function.inputs)}
  tables = {}
  for tensor in frozen_inputs:
    if tensor.dtype != tf.resource:
      continue
    captured = function.captured_inputs[position[tensor.name] - offset]
    placeholder = tensor.name.split(":")[0]
    tables[placeholder] = _export(captured, _dtypes_of_handle(graph_def, placeholder, candidates),
                                  f"captured resource {tensor.name}")
  for node in graph_def.node:
    if node.op.startswith(("MutableHashTable", "MutableDenseHashTable", "AnonymousHashTable", "AnonymousMutable")):
      raise TableUnreadable(f"table {node.name} is a {node.op}, which a frozen graph cannot hold")
    if node.op not in _TABLE_OPS:
      continue
    # A TF1 SavedModel's table op: the loader filled the table under this shared name when it ran the init op.
    attrs = {key: node.attr[key] for key in ("key_dtype", "value_dtype")}
    key_dtype, value_dtype = (tf.dtypes.as_dtype(attrs[k].type) for k in ("key_dtype", "value_dtype"))
    handle = tf.raw_ops.HashTableV2(key_dtype=key_dtype, value_dtype=value_dtype,
                                    shared_name=node.attr["shared_name"].s, container=node.attr["container"].s,
                                    use_node_name_sharing=node.attr["use_node_name_sharing"].b)
    contents = _export(handle, [(key_dtype, value_dtype)], f"table {node.name}")
    if not len(contents[0]):
      raise TableUnreadable(f"table {node.name} ({node.op}, shared name {node.attr['shared_name'].s.decode()!r}) "
                            "is empty in the loaded SavedModel: its contents could not be read to freeze them")
    tables[node.name] = contents
  return tables


def write_tables(graph_def, tables):
  """A copy of `graph_def` where each of `tables` is a `HashTableV2` filled by `INIT_OP` from constants.

  Returns:
    (graph_def, init op name or None when there are no tables).
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if not tables:
    return graph_def, None
  result = tf.compat.v1.GraphDef()
  result.CopyFrom(graph_def)
  by_name = {node.name: node for node in result.node}
  init_inputs = []
  for name, (keys, values, key_dtype, value_dtype) in sorted(tables.items()):
    node = by_name[name]
    node.Clear()
    node.name, node.op = name, "HashTableV2"
    node.attr["key_dtype"].type = key_dtype.as_datatype_enum
    node.attr["value_dtype"].type = value_dtype.as_datatype_enum
    node.attr["shared_name"].s = b""
    node.attr["use_node_name_sharing"].b = True  # the loaders give each load its own table from the node name
    node.attr["container"].s = b""
    for suffix, array, dtype in (("keys", keys, key_dtype), ("values", values, value_dtype)):
      const = result.node.add(name=f"{INIT_OP}/{name}/{suffix}", op="Const")
      const.attr["dtype"].type = dtype.as_datatype_enum
      const.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(array, dtype=dtype))
    init = result.node.add(name=f"{INIT_OP}/{name}/init", op="InitializeTableV2",
                           input=[name, f"{INIT_OP}/{name}/keys", f"{INIT_OP}/{name}/values"])
    init.attr["Tkey"].type = key_dtype.as_datatype_enum
    init.attr["Tval"].type = value_dtype.as_datatype_enum
    init_inputs.append("^" + init.name)
  result.node.add(name=INIT_OP, op="NoOp", input=init_inputs)
  return result, INIT_OP


def table_ops(graph_def):
  """Names of the init op's nodes (what a pruned graph must keep to fill its tables)."""
  return {node.name for node in graph_def.node if node.name == INIT_OP or node.name.startswith(INIT_OP + "/")}

