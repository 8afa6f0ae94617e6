"""README.md's results table is the one generated from benchmarks/results_accuracy.json."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _script():
    spec = importlib.util.spec_from_file_location(
        "readme_table", ROOT / "benchmarks" / "readme_table.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_block_is_the_generated_table():
    """A hand edit of the block, or a new JSON without rerunning the script, fails here."""
    script = _script()
    readme = (ROOT / "README.md").read_text()
    results = json.loads((ROOT / "benchmarks" / "results_accuracy.json").read_text())
    assert readme == script.render(readme, results), (
        "README.md's results block is stale: run python -m benchmarks.readme_table"
    )


def test_table_has_every_family_and_a_measured_spread():
    script = _script()
    results = json.loads((ROOT / "benchmarks" / "results_accuracy.json").read_text())
    text = script.table(results)
    for family in results["families"]:
        assert f"| {family} |" in text
    feddat = results["families"]["domain"]["methods"]["feddat"]
    assert f"{feddat['mean']:.1f} ± {feddat['std']:.1f}" in text
