"""Reads back the latest export's table that `summary.summary_table` prints (one row per format, its precisions
in one cell), so that tests compare it with the manifest artifact by artifact."""

import re

_HEADER = re.compile(r"^(version \d+(?: \(latest\))?) +(status(?: \((?P<precisions>[\w /]+)\))?) +path")
_LABEL = re.compile(r"^[\w:]+(?:, [\w:]+)*$")


def table_lines(text):
  """The header and rows of the (last) artifact table in `text`."""
  lines = text.splitlines()
  start = max(i for i, line in enumerate(lines) if _HEADER.match(line))
  status_at = lines[start].index("status")
  table = [lines[start]]
  for line in lines[start + 1:]:
    if len(line) <= status_at or not _LABEL.match(line[:status_at].strip()) or line[status_at - 1] != " ":
      break
    table.append(line)
  return table


def statuses(text, names):
  """{artifact: (status, the rest of its cell: "[n]" or "")} for the artifacts `names`, from the table in `text`."""
  header, *rows = table_lines(text)
  match = _HEADER.match(header)
  precisions = match.group("precisions").split(" / ") if match.group("precisions") else []
  status_at, path_at = header.index("status"), header.index("path", header.index("status"))
  reason_at = header.find("reason", path_at)
  cells = {}
  for row in rows:
    cell = row[status_at:path_at].strip()
    reason = row[reason_at:].strip() if reason_at > 0 else ""
    parts = cell.split(" / ")
    for label in row[:status_at].strip().split(", "):
      cells[label] = (parts, reason)
  found = {}
  for name in names:
    variant = re.match(r"^(.+)_(fp32|fp16|bf16|fp8|int8)$", name)
    label, precision = (variant.group(1), variant.group(2)) if variant else (name, None)
    if label not in cells:
      continue
    parts, reason = cells[label]
    part = parts[0] if len(parts) == 1 else parts[precisions.index(precision)]
    status, _, rest = part.partition(" ")
    found[name] = (status, rest or reason)
  return found
