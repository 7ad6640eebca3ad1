"""The README's Python examples must really run (the server one against a real server)."""

import re
from pathlib import Path

import pytest

BLOCKS = re.findall(r"```python\n(.*?)```", (Path(__file__).parents[1] / "README.md").read_text(), re.S)


def test_readme_python_api_example_runs(capsys):
    code = next(b for b in BLOCKS if "from slmkit import" in b)
    exec(compile(code, "README.md", "exec"), {})
    assert " Paris." in capsys.readouterr().out


@pytest.mark.slow
def test_readme_server_example_runs(capsys, server):
    code = next(b for b in BLOCKS if "base_url=" in b)
    exec(compile(code.replace("http://127.0.0.1:8000", server.base), "README.md", "exec"), {})
    assert "4" in capsys.readouterr().out
