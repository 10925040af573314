"""The README stays short and every relative link in it and in docs/ leads somewhere (tier unit)."""

import os
import re

import pytest

pytestmark = pytest.mark.unit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _pages():
  docs = os.path.join(ROOT, "docs")
  return [os.path.join(ROOT, "README.md"), os.path.join(ROOT, "benchmarks", "README.md")] + sorted(
      os.path.join(docs, name) for name in os.listdir(docs) if name.endswith(".md"))


def test_the_readme_is_under_ten_thousand_characters():
  with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
    assert len(f.read()) < 10_000


@pytest.mark.parametrize("page", _pages(), ids=lambda p: os.path.relpath(p, ROOT))
def test_every_relative_link_resolves(page):
  with open(page, encoding="utf-8") as f:
    text = f.read()
  broken = []
  for target in LINK.findall(text):
    if re.match(r"[a-z]+:", target) or target.startswith("#"):
      continue  # a web address, or an anchor on the same page
    path = os.path.normpath(os.path.join(os.path.dirname(page), target.split("#")[0]))
    if not os.path.exists(path):
      broken.append(target)
  assert broken == []


def test_the_readme_keeps_the_two_set_up_commands_that_ci_runs():
  with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
    text = f.read()
  assert "bash scripts/run_main_job.sh " in text and "bash scripts/run_tests.sh " in text
  with open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8") as f:
    assert "bash scripts/run_tests.sh" in f.read()


def test_no_page_names_a_module_that_no_longer_exists():
  gone = ("export_layout", "export_worker", "engine_binding")
  for page in _pages():
    with open(page, encoding="utf-8") as f:
      text = f.read()
    assert not [name for name in gone if re.search(rf"`{name}`|{name}\.py", text)], page
