"""The model's own metrics as users read them: report.md lines, summary lines, TensorBoard scalars. Each reads
the manifest's `task_metrics` entry only."""


def _number(value):
  return "-" if value is None else f"{value:.4g}"


def _interval(bounds):
  return "-" if not bounds else f"[{bounds[0]:+.4g}, {bounds[1]:+.4g}]"


def _rows(manifest):
  entry = manifest.get("task_metrics") or {}
  for name, figures in sorted((entry.get("variants") or {}).items()):
    for metric, f in figures.items():
      if isinstance(f, dict) and "value" in f:
        yield name, metric, f


def markdown_lines(manifest):
  """report.md's section on the model's own metrics ([] when the export recorded none)."""
  entry = manifest.get("task_metrics")
  if not entry:
    return []
  lines = ["## The model's own metrics", ""]
  if entry.get("skipped") or entry.get("error"):
    return lines + [f"Not computed: {entry.get('skipped') or entry.get('error')}.", ""]
  lines += [f"On {entry.get('samples')} labelled verification samples; {entry.get('method')}.", ""]
  lines += ["| artifact | metric | value | normal export | difference | 95% interval | gate |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
  lines += [f"| {name} | {metric} | {_number(f['value'])} | {_number(f['normal'])} | {f['difference']:+.4g} | "
            f"{_interval(f.get('interval'))} | {f.get('verdict', '-')} |" for name, metric, f in _rows(manifest)]
  left_out = entry.get("left_out") or {}
  if left_out:
    lines += [""] + [f"- left out: {metric}: {why}" for metric, why in sorted(left_out.items())]
  return lines + [""]


def _short(value):
  return f"{value:+.2g}"


def summary_lines(manifest):
  """The end-of-training summary's table of the model's own metrics: a header, the normal export's values,
  then one row per variant with each metric's value, difference and paired 95% interval ([] when none)."""
  entry = manifest.get("task_metrics") or {}
  if entry.get("skipped"):
    return [f"Model's own metrics: {entry['skipped']}."]
  rows = {}
  for name, metric, f in _rows(manifest):
    cell = f"{_number(f['value'])} {_short(f['difference'])}"
    if f.get("interval"):
      cell += f" [{_short(f['interval'][0])}, {_short(f['interval'][1])}]"
    if f.get("verdict") not in (None, "ok"):
      cell += f" {f['verdict']}"
    rows.setdefault(name, {})[metric] = cell
  if not rows:
    return []
  metrics = sorted({m for cells in rows.values() for m in cells})
  normal = entry.get("normal") or {}
  table = [["", *metrics], ["normal export", *(_number(normal.get(m)) for m in metrics)]]
  table += [[name, *(cells.get(m, "-") for m in metrics)] for name, cells in sorted(rows.items())]
  widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
  samples = entry.get("samples")
  head = f"Model's own metrics, {samples} labelled samples: value, difference to normal [paired 95% interval]"
  return [head] + ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in table]


def tensorboard_scalars(manifest):
  """{tag: value}: `task_metrics/<artifact>/<metric>` per variant, `task_metrics/native/<metric>`."""
  entry = manifest.get("task_metrics") or {}
  scalars = {f"task_metrics/native/{metric}": value for metric, value in (entry.get("normal") or {}).items()}
  scalars.update({f"task_metrics/{name}/{metric}": f["value"] for name, metric, f in _rows(manifest)})
  return scalars
