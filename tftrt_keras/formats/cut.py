"""Where a frozen graph's string and lookup front ends: what TensorFlow must run vs what ONNX and TensorRT take.

Pure: nodes are anything with `name`, `op` and `input`. The *front* is the nodes with a string or resource
tensor or a lookup op and everything they need; the *cut* is the numeric tensors it hands on; the *back* is
the rest. Cut tensors must be batch-major (a server batches along the first dimension), so consumers of other
front tensors (sparse indices, shapes) join the front until they are.
"""

import dataclasses
import re

NUMERIC_DTYPES = frozenset({"float16", "float32", "float64", "bfloat16", "int8", "int16", "int32", "int64",
                            "uint8", "uint16", "uint32", "uint64", "bool"})
# Tensors ONNX cannot carry. Not `variant`: the TensorLists of a recurrent layer's loop convert (tf2onnx).
TF_ONLY_DTYPES = frozenset({"string", "resource"})
# Ops of lookup tables: ONNX-ML's CategoryMapper takes some, TensorRT none, so they stay with TensorFlow.
LOOKUP_OP_PREFIXES = ("LookupTable", "HashTable", "MutableHashTable", "MutableDenseHashTable", "InitializeTable",
                      "AnonymousHashTable", "AnonymousMutableHashTable", "AnonymousMutableDenseHashTable")
# Plumbing, left out of the summary of what runs in TensorFlow.
_PLUMBING = frozenset({"Const", "Identity", "Placeholder", "NoOp"})
_WRAPPERS = re.compile(r"^((StatefulPartitionedCall|PartitionedCall|Func)(_\d+)?/)+")


class CutRefused(Exception):
  """The graph has a string or lookup front, but no cut hands the rest to ONNX; the message says why."""


@dataclasses.dataclass(frozen=True)
class CutTensor:
  """One tensor handed from the front to the back: `tensor` in the graph, `name` outside it (sanitised)."""
  tensor: str
  name: str
  dtype: str
  shape: tuple

  def to_json(self):
    return {"name": self.name, "tensor": self.tensor, "dtype": self.dtype,
            "shape": None if self.shape is None else list(self.shape)}


@dataclasses.dataclass(frozen=True)
class Cut:
  """Attributes:
    front_nodes: names of the nodes TensorFlow runs (constants the back needs too are copied, not cut).
    tensors: the `CutTensor`s, in graph order.
    front_inputs: graph input tensors the front reads.
    back_inputs: numeric graph input tensors the back reads directly.
    runs_in_tf: {op: count} of the front's nodes, plumbing left out.
  """
  front_nodes: frozenset
  tensors: tuple
  front_inputs: tuple
  back_inputs: tuple
  runs_in_tf: dict


def tensor_name(ref):
  """`node:0` for an input reference `node` or `node:0`; None for a control input `^node`."""
  if ref.startswith("^"):
    return None
  return ref if ":" in ref else ref + ":0"


def node_of(tensor):
  return tensor.split(":")[0]


def _data_inputs(node):
  return [t for t in (tensor_name(ref) for ref in node.input) if t]


def _ancestors(start, nodes):
  """`start` (node names) and every node they read from, through data inputs."""
  seen, stack = set(), [n for n in start if n in nodes]
  while stack:
    name = stack.pop()
    if name in seen:
      continue
    seen.add(name)
    stack.extend(node_of(t) for t in _data_inputs(nodes[name]) if node_of(t) in nodes)
  return seen


def sanitized_name(tensor, taken):
  """A stable name for `tensor` outside the graph: wrapper scopes dropped, [A-Za-z0-9_] only, unique in `taken`."""
  node, _, index = tensor.partition(":")
  base = re.sub(r"[^A-Za-z0-9_]+", "_", _WRAPPERS.sub("", node)).strip("_") or "cut"
  if index not in ("", "0"):
    base += f"_{index}"
  name, n = base, 1
  while name in taken:
    n += 1
    name = f"{base}_{n}"
  taken.add(name)
  return name


def find_cut(nodes, tensor_types, inputs, outputs, is_batch_major=lambda tensor: True, reserved=()):
  """The cut of a frozen graph, or None when nothing in it needs TensorFlow.

  Args:
    nodes: the graph's nodes (`name`, `op`, `input`).
    tensor_types: {tensor name: (dtype name, shape tuple or None)} of every node output.
    inputs: the graph's input tensors (placeholders).
    outputs: the numeric output tensors the back must compute.
    is_batch_major: tensor name -> whether its first dimension is the batch.
    reserved: names cut tensors must not take (the signature's input names).

  Raises:
    CutRefused: an output is computed inside the front itself, or only pass-throughs are left for the back.
  """
  by_name = {node.name: node for node in nodes}
  needed = _ancestors([node_of(t) for t in outputs], by_name)
  placeholders = {node_of(t) for t in inputs}
  consumers, produced = {}, {}
  for name in needed:
    for t in _data_inputs(by_name[name]):
      consumers.setdefault(t, set()).add(name)
  for t in tensor_types:
    produced.setdefault(node_of(t), []).append(t)

  def dtype(tensor):
    return tensor_types.get(tensor, (None, None))[0]

  def needs_tf(name):
    node = by_name[name]
    if node.op.startswith(LOOKUP_OP_PREFIXES):
      return True
    return any(dtype(t) in TF_ONLY_DTYPES for t in _data_inputs(node) + produced.get(name, []))

  bad = {name for name in needed if needs_tf(name)}
  if not bad:
    return None
  constant = _constant_nodes(needed, placeholders | bad, consumers, produced)
  front = _ancestors(bad, by_name) & needed

  while True:
    crossing = sorted({t for t in consumers if node_of(t) in front and node_of(t) not in constant | placeholders
                       and consumers[t] - front})
    not_batch_major = [t for t in crossing if not is_batch_major(t)]
    if not not_batch_major:
      break
    joining = set().union(*(consumers[t] - front for t in not_batch_major))
    front |= _ancestors(joining, by_name) & needed

  in_front = [t for t in outputs if node_of(t) in front and node_of(t) not in placeholders]
  if in_front:
    ops = sorted({by_name[node_of(t)].op for t in in_front})
    raise CutRefused(f"output(s) {', '.join(in_front)} are computed by the string/lookup part itself "
                     f"({', '.join(ops)}): nothing numeric is left for ONNX to run")
  for t in crossing:
    if dtype(t) not in NUMERIC_DTYPES:  # a consumer of a string is front by construction: a bug if seen
      raise CutRefused(f"the cut would pass {t} ({dtype(t)}) to ONNX, which carries numeric tensors only")
  taken = {node_of(t) for t in inputs} | set(reserved)
  tensors = tuple(CutTensor(t, sanitized_name(t, taken), dtype(t), tensor_types[t][1]) for t in crossing)
  back_nodes = needed - front
  if all(by_name[n].op in _PLUMBING for n in back_nodes - constant):
    raise CutRefused(f"only pass-throughs follow the string/lookup part ({', '.join(sorted(cut_ops(by_name, front)))}"
                     f") to {', '.join(outputs)}: no numeric computation is left for ONNX to run")
  back_inputs = tuple(t for t in inputs if node_of(t) in {node_of(c) for n in back_nodes
                                                          for c in _data_inputs(by_name[n])})
  front_inputs = tuple(t for t in inputs if node_of(t) in front)
  runs_in_tf = {}
  for name in sorted(front - constant - placeholders):
    op = by_name[name].op
    if op not in _PLUMBING:
      runs_in_tf[op] = runs_in_tf.get(op, 0) + 1
  return Cut(frozenset(front), tensors, front_inputs, back_inputs, runs_in_tf)


def cut_ops(by_name, names):
  return {by_name[n].op for n in names if by_name[n].op not in _PLUMBING}


def _constant_nodes(needed, sources, consumers, produced):
  """Nodes of `needed` that read no graph input and no lookup (`sources`): both sides may hold a copy of them,
  and none of their tensors is cut."""
  reached, stack = set(), list(sources)
  while stack:
    name = stack.pop()
    if name in reached:
      continue
    reached.add(name)
    for t in produced.get(name, ()):
      stack.extend(consumers.get(t, ()))
  return needed - reached
