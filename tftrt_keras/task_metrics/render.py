"""The model's own metrics as users read them: report.md lines, summary lines, TensorBoard scalars. Each reads
the manifest's `task_metrics` entry only."""

from tftrt_keras.task_metrics import interval


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
  """The end-of-training summary of the model's own metrics ([] when none): a head line, then per metric the
  normal export's value and the variant that fares worst, with its difference and paired 95% interval, and any
  variant the `max_metric_drop` gate did not pass. Every variant's figures are in report.md."""
  entry = manifest.get("task_metrics") or {}
  if entry.get("skipped"):
    return [f"Model's own metrics: {entry['skipped']}."]
  by_metric = {}
  for name, metric, f in _rows(manifest):
    by_metric.setdefault(metric, []).append((name, f))
  if not by_metric:
    return []
  normal = entry.get("normal") or {}
  table = []
  for metric, figures in sorted(by_metric.items()):
    cells = {name: _difference(f) for name, f in figures}
    if len(set(cells.values())) == 1 and len(cells) > 1:
      worst = f"every variant {cells.popitem()[1]}"
    else:
      name, _ = max(figures, key=lambda named: _harm(metric, named[1]))
      worst = f"worst {name} {cells[name]}"
    gated = {}
    for name, f in figures:
      if f.get("verdict") not in (None, "ok"):
        gated.setdefault(f["verdict"], []).append(name)
    worst += "".join(f"; {verdict} by max_metric_drop: {', '.join(names)}" for verdict, names in sorted(gated.items()))
    table.append([metric, _number(normal.get(metric)), worst])
  widths = [max(len(r[i]) for r in table) for i in range(2)]
  head = (f"Model's own metrics, {entry.get('samples')} labelled samples: normal export; worst variant's "
          "difference [95% interval]")
  return [head] + ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths + [0])).rstrip() for r in table]


def _difference(figure):
  text = _short(figure["difference"])
  if figure.get("interval"):
    text += f" [{_short(figure['interval'][0])}, {_short(figure['interval'][1])}]"
  return text


def _harm(metric, figure):
  """How far the variant may be worse than the normal export: the interval's bound on the bad side."""
  low, high = figure.get("interval") or (figure["difference"], figure["difference"])
  return high if figure.get("lower_is_better", interval.lower_is_better(metric)) else -low


def tensorboard_scalars(manifest):
  """{tag: value}: `task_metrics/<artifact>/<metric>` per variant, `task_metrics/native/<metric>`."""
  entry = manifest.get("task_metrics") or {}
  scalars = {f"task_metrics/native/{metric}": value for metric, value in (entry.get("normal") or {}).items()}
  scalars.update({f"task_metrics/{name}/{metric}": f["value"] for name, metric, f in _rows(manifest)})
  return scalars
