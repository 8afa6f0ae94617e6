"""benchmarks/RESULTS.md is generated from the results_*.json files, never typed."""

import json

from benchmarks import results_md


def test_results_md_is_the_rendered_one():
    """A hand edit of RESULTS.md, or a new results JSON without a re-render, fails here."""
    assert results_md.RESULTS_MD.read_text() == results_md.render(), (
        "benchmarks/RESULTS.md is stale or was edited by hand: run python -m benchmarks.results_md"
    )


def test_a_section_per_results_file_and_a_generic_one_for_an_unknown_file(tmp_path):
    """Every results_*.json gets a section in SECTIONS' order; a file no renderer knows (e.g. a
    future results_client_count.json) gets its rows as a table, its command and its notes."""
    rows = [{"N": 100, "startup_s": 1.5, "mode": "lazy"}, {"N": 1000, "startup_s": 2.25, "mode": "lazy"}]
    unknown = {"command": "python -m benchmarks.client_count", "rows": rows, "notes": ["A note."]}
    (tmp_path / "results_client_count.json").write_text(json.dumps(unknown))
    probe = {"train": 10, "test": 5, "types": {"shape": {"majority": 0.25, "common": 0.5}}}
    (tmp_path / "results_probe.json").write_text(json.dumps(probe))
    text = results_md.render(tmp_path)
    probe_at, unknown_at = text.index("`results_probe.json`"), text.index("`results_client_count.json`")
    assert probe_at < unknown_at  # known sections first, in SECTIONS' order
    assert "| shape | 25.0 | 50.0 | – | – |" in text
    assert "`python -m benchmarks.client_count`" in text and "A note." in text
    assert "| N | startup_s | mode |" in text and "| 1000 | 2.25 | lazy |" in text
