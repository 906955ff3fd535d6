"""Every Python block of README.md runs as written, in order, on the embedded models (one
script: later blocks use earlier blocks' names, as a reader would).  Blocks that need the
network are marked in README with ``<!-- readme-test: skip (reason) -->``."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"(?:<!-- readme-test: skip \((?P<why>[^)]*)\) -->\n)?```python\n(?P<code>.*?)```", re.S)


def blocks():
    return [(m.group("why"), m.group("code")) for m in BLOCK.finditer(README.read_text())]


def test_skipped_blocks_say_why_and_are_few():
    skipped = [why for why, _ in blocks() if why is not None]
    assert all(why.strip() for why in skipped) and len(skipped) <= 2, skipped


@pytest.mark.smollm2
@pytest.mark.gemma3
def test_readme_python_blocks_run(tmp_path):
    parts = []
    for i, (why, code) in enumerate(blocks()):
        if why is None:
            parts.append(f"print('README block {i}', flush=True)\n{code}")
    script = tmp_path / "readme_blocks.py"
    script.write_text("\n".join(parts))  # a file: nnsight reads trace bodies from source
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=900)
    ran = re.findall(r"README block (\d+)", proc.stdout)
    assert proc.returncode == 0, (f"README block {ran[-1] if ran else '?'} failed:\n"
                                  f"{proc.stderr[-4000:]}")
    assert len(ran) == len(parts)


def test_every_picture_the_readme_shows_exists():
    text = README.read_text()
    shown = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", text)
    assert len(shown) >= 10
    missing = [p for p in shown if not (README.parent / p).is_file()]
    assert not missing, missing
