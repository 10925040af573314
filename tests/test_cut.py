"""`formats.cut`: where the string/lookup front of a graph ends, on hand-built graphs (no TensorFlow)."""

import collections

import pytest

from tftrt_keras.formats.cut import CutRefused, find_cut, sanitized_name

pytestmark = pytest.mark.unit

Node = collections.namedtuple("Node", "name op input")


def graph(*specs):
  """(nodes, tensor_types) from (name, op, inputs, dtype[, shape]) rows; each node has one output `name:0`."""
  nodes = [Node(s[0], s[1], list(s[2])) for s in specs]
  types = {f"{s[0]}:0": (s[3], s[4] if len(s) > 4 else (None,)) for s in specs}
  return nodes, types


def lookup_then_dense():
  """color (string) -> table lookup (int64 ids) -> one-hot -> concat with x -> matmul -> softmax."""
  return graph(
      ("color", "Placeholder", [], "string", (None,)),
      ("x", "Placeholder", [], "float32", (None, 2)),
      ("table", "HashTableV2", [], "resource", ()),
      ("default", "Const", [], "int64", ()),
      ("table_id", "Identity", ["table"], "resource", ()),
      ("lookup", "LookupTableFindV2", ["table_id", "color", "default"], "int64", (None,)),
      ("depth", "Const", [], "int32", ()),
      ("onehot", "OneHot", ["lookup", "depth"], "float32", (None, 4)),
      ("concat", "ConcatV2", ["onehot", "x:0", "axis"], "float32", (None, 6)),
      ("axis", "Const", [], "int32", ()),
      ("w", "Const", [], "float32", (6, 3)),
      ("matmul", "MatMul", ["concat", "w", "^lookup"], "float32", (None, 3)),
      ("probs", "Softmax", ["matmul"], "float32", (None, 3)),
      ("label", "AsString", ["probs"], "string", (None, 3)),
  )


def test_the_cut_is_where_the_lookup_ends():
  nodes, types = lookup_then_dense()
  cut = find_cut(nodes, types, ["color:0", "x:0"], ["probs:0"])
  assert [t.tensor for t in cut.tensors] == ["lookup:0"]
  assert cut.tensors[0].dtype == "int64" and cut.tensors[0].name == "lookup"
  assert cut.front_nodes == {"color", "table", "table_id", "default", "lookup"}
  assert cut.front_inputs == ("color:0",) and cut.back_inputs == ("x:0",)
  assert cut.runs_in_tf == {"HashTableV2": 1, "LookupTableFindV2": 1}


def test_a_numeric_graph_has_no_cut():
  nodes, types = graph(("x", "Placeholder", [], "float32", (None, 2)), ("y", "Relu", ["x"], "float32", (None, 2)))
  assert find_cut(nodes, types, ["x:0"], ["y:0"]) is None


def test_a_recurrent_layers_tensor_lists_do_not_make_a_cut():
  """A Keras LSTM's loop passes `variant` TensorLists, which tf2onnx converts: no TensorFlow front for them."""
  nodes, types = graph(("x", "Placeholder", [], "int32", (None, 12)),
                       ("list", "TensorListFromTensor", ["x"], "variant", ()),
                       ("item", "TensorListGetItem", ["list"], "float32", (None, 8)),
                       ("y", "Relu", ["item"], "float32", (None, 8)))
  assert find_cut(nodes, types, ["x:0"], ["y:0"]) is None


def test_a_string_output_not_asked_for_does_not_make_a_cut():
  """The string `label` (a canned classifier's `classes`) is left out of the back, not a reason to cut."""
  nodes, types = graph(("x", "Placeholder", [], "float32", (None, 2)), ("y", "Relu", ["x"], "float32", (None, 2)),
                       ("label", "AsString", ["y"], "string", (None, 2)))
  assert find_cut(nodes, types, ["x:0"], ["y:0"]) is None


def test_a_tensor_without_the_batch_first_pulls_its_consumers_into_the_front():
  """A feature column: sparse indices and values (counted in ids, not rows) end at `SparseToDense`."""
  nodes, types = graph(
      ("color", "Placeholder", [], "string", (None, 1)),
      ("empty", "Const", [], "string", ()),
      ("present", "NotEqual", ["color", "empty"], "bool", (None, 1)),
      ("indices", "Where", ["present"], "int64", (None, 2)),
      ("values", "GatherNd", ["color", "indices"], "string", (None,)),
      ("shape", "Shape", ["color"], "int64", (2,)),
      ("table", "HashTableV2", [], "resource", ()),
      ("default", "Const", [], "int64", ()),
      ("ids", "LookupTableFindV2", ["table", "values", "default"], "int64", (None,)),
      ("dense", "SparseToDense", ["indices", "shape", "ids", "default"], "int64", (None, None)),
      ("onehot", "OneHot", ["dense"], "float32", (None, None, 3)),
      ("logits", "Sum", ["onehot"], "float32", (None, 3)),
  )
  not_batch_major = {"indices:0", "shape:0", "ids:0"}
  cut = find_cut(nodes, types, ["color:0"], ["logits:0"], is_batch_major=lambda t: t not in not_batch_major)
  assert [t.tensor for t in cut.tensors] == ["dense:0"]
  assert "dense" in cut.front_nodes and "onehot" not in cut.front_nodes
  # The same graph judged batch-major everywhere would hand three ragged tensors to a batching server.
  assert len(find_cut(nodes, types, ["color:0"], ["logits:0"]).tensors) == 3


def test_a_constant_both_sides_read_is_copied_not_cut():
  nodes, types = lookup_then_dense()
  nodes.append(Node("bias", "Add", ["probs", "default"]))
  types["bias:0"] = ("float32", (None, 3))
  cut = find_cut(nodes, types, ["color:0", "x:0"], ["bias:0"])
  assert [t.tensor for t in cut.tensors] == ["lookup:0"]


def test_an_output_computed_by_the_lookup_itself_is_refused_with_the_op():
  nodes, types = lookup_then_dense()
  with pytest.raises(CutRefused, match=r"lookup:0 are computed by the string/lookup part itself "
                                       r"\(LookupTableFindV2\)"):
    find_cut(nodes, types, ["color:0", "x:0"], ["lookup:0", "probs:0"])


def test_a_lookup_followed_by_pass_throughs_only_is_refused():
  nodes, types = lookup_then_dense()
  nodes.append(Node("out", "Identity", ["lookup"]))
  types["out:0"] = ("int64", (None,))
  with pytest.raises(CutRefused, match=r"only pass-throughs follow the string/lookup part \(HashTableV2, "
                                       r"LookupTableFindV2\) to out:0"):
    find_cut(nodes, types, ["color:0"], ["out:0"])


def test_sanitized_names_are_stable_unique_and_plain():
  taken = {"a"}
  assert sanitized_name("StatefulPartitionedCall/model/lookup/LookupTableFindV2:0", taken) == \
      "model_lookup_LookupTableFindV2"
  assert sanitized_name("StatefulPartitionedCall_1/model/lookup/LookupTableFindV2:0", taken) == \
      "model_lookup_LookupTableFindV2_2"
  assert sanitized_name("a:1", taken) == "a_1"
  assert sanitized_name("a:0", taken) == "a_2"
