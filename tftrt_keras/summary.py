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


def describe_export(manifest_path):
  """What an end-of-training script prints about one export: each artifact's status and where it is, then
  each reason once with the artifacts it applies to."""
  from tftrt_keras.manifest import read_manifest  # pylint: disable=g-import-not-at-top
  manifest = read_manifest(manifest_path)
  directory = os.path.dirname(os.path.abspath(manifest_path))
  lines = [f"Export version {manifest['version']}:"]
  reasons = {}
  for name, entry in manifest["artifacts"].items():
    where = os.path.normpath(os.path.join(directory, entry["path"])) if entry.get("path") else "-"
    lines.append(f"  {name:<12} {entry['status']:<8} {where}")
    if entry.get("reason"):
      reasons.setdefault(entry["reason"], []).append(name)
  lines += [f"  {', '.join(names)}: {reason}" for reason, names in reasons.items()]
  lines.append(f"Manifest: {manifest_path}")
  return "\n".join(lines)
