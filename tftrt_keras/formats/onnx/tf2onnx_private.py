"""Every use of tf2onnx's (and, for its loader, TensorFlow's) private internals, in one place.

Two shortcuts speed up a conversion without changing its result; each falls back to tf2onnx's own route
(recorded in `model.json`'s "conversion_routes") when an internal is missing. `missing_private_symbols` names
what moved, checked by a test per supported TF/tf2onnx line.
"""

import contextlib
import inspect

from absl import logging

# The conversion's two shortcuts through tf2onnx (each falls back to tf2onnx's own route when it cannot run).
SHORTCUTS = {"freeze": "frozen GraphDef not rewrapped into a function",
             "optimize": "optimizer passes in place, inapplicable ones skipped"}


def shortcut_taken(routes, stage):
  """Records in `routes` (a dict, or None) that `stage`'s shortcut ran."""
  if routes is not None:
    routes[stage] = f"shortcut: {SHORTCUTS[stage]}"


def shortcut_fell_back(routes, stage, err):
  """Records in `routes` (a dict, or None), and logs, that `stage`'s shortcut raised `err` and tf2onnx's own,
  slower route ran instead: the result is the same, only the time differs, but a shortcut that stopped
  working (a new TensorFlow or tf2onnx) must be visible."""
  text = f"tf2onnx's own route: the shortcut ({SHORTCUTS[stage]}) failed: {type(err).__name__}: {err}"
  logging.warning("tftrt_keras: ONNX conversion, %s: %s", stage, text)
  if routes is not None:
    routes[stage] = text


# tf2onnx optimizers that rewrite only nodes of these types (tf2onnx 1.17's optimizer sources) and whose types
# no other optimizer creates: skipped when the graph has none. tf2onnx runs its 12 optimizers until nothing
# changes (3 rounds on the zoo's CNNs), so each one skipped saves a pass over the graph.
_OPTIMIZER_NEEDS = {
    "remove_redundant_upsample": {"Upsample"}, "const_dequantize_optimizer": {"DequantizeLinear"},
    "q_dq_optimizer": {"QuantizeLinear", "DequantizeLinear"}, "loop_optimizer": {"Loop"},
    "einsum_optimizer": {"Einsum"},
}


@contextlib.contextmanager
def freezing_without_rewrap(tf_loader, routes=None):
  """tf2onnx's loader, minus wrapping the frozen GraphDef into a ConcreteFunction only to take it back out.

  The GraphDef is imported into a plain graph with shapes; nodes the wrapping would prune are removed by
  tf2onnx's grappler pass. Without TensorFlow's private freezing functions nothing changes.
  """
  try:
    from tensorflow.python.framework import convert_to_constants  # pylint: disable=g-import-not-at-top
    converter_data = convert_to_constants._FunctionConverterDataInEager  # pylint: disable=protected-access
    replace = convert_to_constants._replace_variables_by_constants  # pylint: disable=protected-access
  except (ImportError, AttributeError) as err:
    shortcut_fell_back(routes, "freeze", err)
    yield
    return

  def freeze(func, lower_control_flow=True, aggressive_inlining=False):
    graph_def, _ = replace(converter_data=converter_data(
        func=func, lower_control_flow=lower_control_flow, aggressive_inlining=aggressive_inlining))
    return _FrozenFunction(graph_def)

  original = tf_loader.convert_variables_to_constants_v2
  tf_loader.convert_variables_to_constants_v2 = freeze
  shortcut_taken(routes, "freeze")
  try:
    yield
  finally:
    tf_loader.convert_variables_to_constants_v2 = original


class _FrozenFunction:
  """What tf2onnx's `from_function` reads of a frozen ConcreteFunction: `.graph.as_graph_def(add_shapes=...)`."""

  def __init__(self, graph_def):
    self.graph = self
    self._graph_def = graph_def

  def as_graph_def(self, add_shapes=False):
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    with tf.Graph().as_default() as graph:
      tf.import_graph_def(self._graph_def, name="")
    return graph.as_graph_def(add_shapes=add_shapes)


def optimize(graph, optimizer, routes=None):
  """tf2onnx's graph optimizers, minus the inapplicable ones, the deep copy per pass and `update_proto` per pass.

  One copy is kept and passes run in place; if one raises, they rerun tf2onnx's careful way on the copy.
  `update_proto` is skipped between passes (no optimizer reads the protos; `make_graph` writes them once) except
  for graphs with Loop/Scan/If bodies, where it also prunes and sorts each body.
  """
  import copy  # pylint: disable=g-import-not-at-top
  present = _tf2onnx_op_types(graph)
  chosen = optimizer._get_optimizers() if hasattr(optimizer, "_get_optimizers") else None  # pylint: disable=protected-access
  if chosen is not None:  # tf2onnx's own ordered list; absent, its default is used
    chosen = type(chosen)((name, factory) for name, factory in chosen.items()
                          if name not in _OPTIMIZER_NEEDS or _OPTIMIZER_NEEDS[name] & present)
    if not _has_subgraphs(graph):
      chosen = type(chosen)((name, _without_proto_writes(factory)) for name, factory in chosen.items())
  backup = copy.deepcopy(graph)
  try:
    optimized = optimizer.optimize_graph(graph, catch_errors=False, optimizers=chosen)
  except Exception as err:  # pylint: disable=broad-except
    shortcut_fell_back(routes, "optimize", err)
    return optimizer.optimize_graph(backup, catch_errors=True, optimizers=chosen)
  shortcut_taken(routes, "optimize")
  return optimized


def _has_subgraphs(graph):
  return any(node.get_body_graphs() for node in graph.get_nodes())


def _skip_proto_write(*args, **kwargs):
  del args, kwargs


def _without_proto_writes(factory):
  """`factory` whose optimizer runs tf2onnx's own `optimize` with the graph's `update_proto` a no-op."""
  def make():
    instance = factory()
    run = instance.optimize

    def optimize(graph, iteration):
      graph.update_proto = _skip_proto_write  # shadows the method on this graph object only
      try:
        return run(graph, iteration)
      finally:
        del graph.update_proto
    instance.optimize = optimize
    return instance
  return make


def _tf2onnx_op_types(graph):
  """Op types of a tf2onnx `Graph` and of the graphs in its nodes' bodies."""
  types = set()
  for node in graph.get_nodes():
    types.add(node.type)
    for body in node.get_body_graphs().values() if node.get_body_graphs() else ():
      types |= _tf2onnx_op_types(body)
  return types


# (module, attribute path) of every private symbol used above, and why.
PRIVATE_SYMBOLS = (
    ("tf2onnx.tf_loader", "convert_variables_to_constants_v2"),  # replaced during `from_saved_model`
    ("tensorflow.python.framework.convert_to_constants", "_FunctionConverterDataInEager"),
    ("tensorflow.python.framework.convert_to_constants", "_replace_variables_by_constants"),
    ("tf2onnx.optimizer", "_get_optimizers"),  # the ordered optimizer list, filtered by `optimize`
    ("tf2onnx.graph", "Graph.update_proto"),  # shadowed per graph while the passes run
    ("tf2onnx.graph", "Node.get_body_graphs"),
)


def missing_private_symbols(symbols=PRIVATE_SYMBOLS):
  """The private symbols (as "module.attribute") of `symbols` that this tf2onnx/TensorFlow lacks, and the uses
  of them that changed."""
  import importlib  # pylint: disable=g-import-not-at-top
  missing = []
  for module_name, path in symbols:
    try:
      value = importlib.import_module(module_name)
      for part in path.split("."):
        value = getattr(value, part)
    except (ImportError, AttributeError):
      missing.append(f"{module_name}.{path}")
  from tf2onnx import optimizer, tf_loader  # pylint: disable=g-import-not-at-top
  # The replacement only takes effect while the loader still calls the module-level name.
  if "convert_variables_to_constants_v2(" not in inspect.getsource(tf_loader.from_function):
    missing.append("tf2onnx.tf_loader.from_function calling convert_variables_to_constants_v2")
  if not {"catch_errors", "optimizers"} <= set(inspect.signature(optimizer.optimize_graph).parameters):
    missing.append("tf2onnx.optimizer.optimize_graph(catch_errors=, optimizers=)")
  return missing
