"""The README's example runs as written (protects the docs from rot)."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.slow
def test_readme_example_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    assert blocks, "README has no python example"
    monkeypatch.chdir(tmp_path)
    pretrained, example = blocks[0], blocks[1]
    assert "lopt.pretrained.optimizer(" in pretrained
    exec(compile(pretrained, "README.md", "exec"), {})
    exec(compile(example, "README.md", "exec"), {})
    assert (tmp_path / "curve.png").exists()
