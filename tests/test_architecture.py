"""The package's shape stays what its tree says: one folder per job, imports only downward, no circle.

Reads every import of `tftrt_keras` (those inside functions too: a lazy import is still a dependency) from the
source, without importing anything.
"""

import ast
import os

import pytest

pytestmark = pytest.mark.unit

PACKAGE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tftrt_keras")

# Top to bottom. A module may import from its own room and from rooms on lower floors, never from above.
FLOORS = (
    ("entry points", ("keras", "estimator", "offline")),
    ("front doors", ("flags", "preflight")),
    ("one export", ("pipeline",)),
    ("judging and serving", ("verify", "serving")),
    ("options", ("options",)),
    ("formats", ("formats",)),
    ("storage and samples", ("artifacts", "samples")),
    ("names and rules", ("precisions", "quiet_console", "agreement", "monitor", "checks")),
    ("ground", ("errors",)),
)
FLOOR_OF = {room: level for level, (_, rooms) in enumerate(FLOORS) for room in rooms}
# Each format's folder is complete in itself: formats share `formats/base.py` and the SavedModel helpers, not
# each other's modules.
FORMAT_FOLDERS = ("tftrt", "onnx", "tensorrt")
# About 400 lines, as the issue asked; the three longest (the two entry points' classes and the Triton
# repository writer, 460-490) are one class each whose next seam would cut a method group in two.
LONGEST_MODULE_LINES = 500


def module_files():
  for directory, _, files in os.walk(PACKAGE_DIR):
    for name in files:
      if name.endswith(".py"):
        yield os.path.join(directory, name)


def module_name(path):
  relative = os.path.relpath(path, os.path.dirname(PACKAGE_DIR))[:-len(".py")].split(os.sep)
  if relative[-1] == "__init__":
    relative = relative[:-1]
  return ".".join(relative)


def imported_modules(path, known):
  """The `tftrt_keras` modules `path` imports, resolved to the modules that exist (`from a import b` is `a.b`
  when `a.b` is a module, else `a`)."""
  with open(path, encoding="utf-8") as f:
    tree = ast.parse(f.read(), path)
  found = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in known else node.module
               for alias in node.names]
    else:
      continue
    found.update(n for n in names if n == "tftrt_keras" or n.startswith("tftrt_keras."))
  return found


def import_graph():
  paths = {module_name(p): p for p in module_files()}
  known = set(paths)
  return {name: sorted(imported_modules(path, known) - {name}) for name, path in paths.items()}


def room_of(module):
  """`tftrt_keras.formats.onnx.convert` -> "formats"; the package itself (the public facade) -> None."""
  parts = module.split(".")
  return parts[1] if len(parts) > 1 else None


def upward_imports(graph):
  upward = []
  for module, targets in graph.items():
    room = room_of(module)
    if room is None:
      continue  # tftrt_keras/__init__.py: the public names, imported by name on first use
    for target in targets:
      target_room = room_of(target)
      if target_room is None:
        upward.append((module, target))
      elif target_room != room and FLOOR_OF[target_room] <= FLOOR_OF[room]:
        upward.append((module, target))
  return upward


def cycles(graph):
  """Every import circle, each as the list of modules around it (Tarjan's strongly connected components)."""
  index, low, stack, on_stack, found = {}, {}, [], set(), []

  def visit(node):
    index[node] = low[node] = len(index)
    stack.append(node)
    on_stack.add(node)
    for target in graph.get(node, ()):
      if target not in graph:
        continue
      if target not in index:
        visit(target)
        low[node] = min(low[node], low[target])
      elif target in on_stack:
        low[node] = min(low[node], index[target])
    if low[node] == index[node]:
      component = []
      while True:
        member = stack.pop()
        on_stack.discard(member)
        component.append(member)
        if member == node:
          break
      if len(component) > 1:
        found.append(sorted(component))

  for node in sorted(graph):
    if node not in index:
      visit(node)
  return found


def test_every_room_has_a_floor():
  rooms = {room_of(m) for m in import_graph()} - {None}
  assert rooms <= set(FLOOR_OF), f"rooms without a floor in FLOORS: {sorted(rooms - set(FLOOR_OF))}"


def test_no_import_runs_up_a_floor():
  assert upward_imports(import_graph()) == []


def test_no_import_circle():
  assert cycles(import_graph()) == []


def test_formats_do_not_import_each_other():
  crossing = []
  for module, targets in import_graph().items():
    parts = module.split(".")
    if len(parts) < 4 or parts[1] != "formats" or parts[2] not in FORMAT_FOLDERS:
      continue
    for target in targets:
      target_parts = target.split(".")
      if len(target_parts) >= 3 and target_parts[1] == "formats" and target_parts[2] in FORMAT_FOLDERS and \
          target_parts[2] != parts[2]:
        crossing.append((module, target))
  assert crossing == []


def test_no_module_name_repeats_its_folder():
  """`keras/callback.py`, not `keras_callback.py`: the folder is the prefix."""
  repeated = []
  for path in module_files():
    folder, name = os.path.basename(os.path.dirname(path)), os.path.basename(path)[:-len(".py")]
    if folder != "tftrt_keras" and name.startswith(folder + "_"):
      repeated.append(os.path.relpath(path, PACKAGE_DIR))
  assert repeated == []


def test_modules_stay_small():
  long_files = {}
  for path in module_files():
    with open(path, encoding="utf-8") as f:
      lines = sum(1 for _ in f)
    if lines > LONGEST_MODULE_LINES:
      long_files[os.path.relpath(path, PACKAGE_DIR)] = lines
  assert long_files == {}


def test_the_checks_can_fail():
  """The rule checkers find what they are for, on a graph made to break them."""
  graph = {"tftrt_keras.formats.onnx.format": ["tftrt_keras.options"],
           "tftrt_keras.options": ["tftrt_keras.formats", "tftrt_keras.errors"],
           "tftrt_keras.formats": ["tftrt_keras.options"], "tftrt_keras.errors": []}
  assert ("tftrt_keras.formats.onnx.format", "tftrt_keras.options") in upward_imports(graph)
  assert cycles(graph) == [["tftrt_keras.formats", "tftrt_keras.options"]]
