"""The table printed at the end of training and by `tftrt-export`: one row per artifact of each export."""

import os


def _shorten(text, width):
  text = " ".join(str(text).split())
  return text if len(text) <= width else text[:width - 1] + "…"


def summary_table(manifests, root=None, reason_width=100):
  """Renders manifests as a fixed-width text table (version, artifact, status, path, reason)."""
  rows = [("version", "artifact", "status", "path", "reason")]
  for manifest in manifests:
    version = manifest["version"]
    for name, entry in manifest["artifacts"].items():
      path = entry.get("path") or "-"
      if root and entry.get("path"):
        path = os.path.relpath(os.path.normpath(os.path.join(root, "manifests", str(version), entry["path"])), root)
      rows.append((str(version), name, entry["status"], path, _shorten(entry.get("reason", ""), reason_width)))
  widths = [max(len(row[i]) for row in rows) for i in range(4)]
  lines = []
  for i, row in enumerate(rows):
    lines.append("  ".join(cell.ljust(width) for cell, width in zip(row[:4], widths)) + "  " + row[4])
    if i == 0:
      lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 6)
  return "\n".join(line.rstrip() for line in lines)
