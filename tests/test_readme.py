"""The README's composition snippet runs as written, and every result it cites is a committed
run whose summary gives the number the README prints."""

import json
import math
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def test_readme_composition_snippet_runs():
    text = README.read_text()
    snippet = text.split("## Composing the pieces in your own TorchRL loop")[1].split("```python")[1]
    snippet = snippet.split("```")[0]
    namespace = {}
    exec(compile(snippet, str(README), "exec"), namespace)
    assert math.isfinite(float(namespace["loss_value"]))
    assert namespace["net"].carry == "carry"
    assert float(namespace["policy"][1].eps) < 1.0  # epsilon was stepped by the frames


def test_readme_results_trace_to_committed_runs():
    text = README.read_text()
    table = text.split("## Results")[1].split("\n\n")[2]
    rows = [line for line in table.splitlines()[2:] if line.startswith("|")]
    assert len(rows) >= 4
    cited = set()
    for row in rows:
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        runs = re.findall(r"\]\((results/[^)]+)\)", cells[-1])
        assert runs, f"a results row without data: {row}"
        summaries = []
        for run in runs:
            for name in ("metrics.csv", "config.json", "summary.json"):
                assert (ROOT / run / name).is_file(), f"{run}/{name} is not committed"
            summaries.append(json.loads((ROOT / run / "summary.json").read_text()))
            config = json.loads((ROOT / run / "config.json").read_text())
            assert config["env"] == cells[0] and config["preset"] == cells[1], row
            cited.add(run)
        mean = 100 * sum(s["success_rate"] for s in summaries) / len(summaries)
        printed = float(re.match(r"([\d.]+)%", cells[3]).group(1))
        assert abs(printed - mean) <= 0.05 + 1e-9, f"{row}: the runs' mean is {mean:.2f}%"
        frames = {s["frames"] for s in summaries}
        assert cells[4].replace(",", "") in {str(f) for f in frames}, row
    # and every run the README links anywhere is committed
    for run in set(re.findall(r"\]\((results/[\w-]+)\)", text)) - cited:
        assert (ROOT / run / "summary.json").is_file(), run
