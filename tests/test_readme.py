"""The README's composition snippet runs as written."""

import math
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_composition_snippet_runs():
    text = README.read_text()
    snippet = text.split("## Composing it in a TorchRL pipeline")[1].split("```python")[1]
    snippet = snippet.split("```")[0]
    namespace = {}
    exec(compile(snippet, str(README), "exec"), namespace)
    assert math.isfinite(float(namespace["loss_value"]))
    assert namespace["net"].carry == "carry"
