"""The README's results table is the one `python -m studies.results` builds from the raw results
under studies/, every row's study and raw results exist, and the spread is the sample std."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from studies import results

REPO = Path(__file__).resolve().parent.parent


def test_readme_table_is_the_generated_one():
    readme = results.readme_table((REPO / "README.md").read_text())
    generated = results.table()
    assert readme == generated, "README.md's results table is stale or edited by hand: run python -m studies.results --write"


def test_every_row_links_its_study_and_raw_results():
    rows = [row for build in results.ROW_BUILDERS for row in build()]
    assert rows
    for row in rows:
        study = REPO / "studies" / row.study
        assert (study / "README.md").is_file(), row.study
        raw = study / row.raw
        assert raw.exists() and (raw.is_file() or any(raw.rglob("*.json"))), raw
        assert re.fullmatch(r"`[0-9a-f]{7}`.*", row.commit), row.commit  # names the commit it ran at


def test_spread_is_the_sample_std():
    assert results.mean_std([1.0, 2.0, 3.0]) == "2.0 ± 1.0"  # population std would give 0.8
    with pytest.raises(ValueError, match="2 seeds"):
        results.mean_std([1.0])


def test_write_replaces_only_the_table(tmp_path: Path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\ntext before\n\n{results.BEGIN}\n| old | table |\n{results.END}\n\ntext after\n")
    results.write_readme(readme)
    text = readme.read_text()
    assert text.startswith("# title\n\ntext before\n\n") and text.endswith("\n\ntext after\n")
    assert results.readme_table(text) == results.table()
