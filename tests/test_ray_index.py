"""`python -m ilre.index --context DIR --out INDEX_DIR --ray` on a local Ray cluster: one index per
entry, equal to the serial command's, resumed and updated by running it again."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

pytest.importorskip("ray")

from ilre.index import read  # noqa: E402
from ilre.index.__main__ import main as make_index  # noqa: E402

ENCODING = ["--window", "32", "--chunk-size", "40", "--no-progress"]


def _collection(root: Path) -> Path:
    (root / "proj").mkdir(parents=True)
    (root / "proj" / "app.py").write_text("".join(f"def f{i}(x):\n    return x * {i}\n\n" for i in range(40)))
    (root / "proj" / "util.py").write_text("LIMIT = 8192\n\n\ndef clamp(v):\n    return min(v, LIMIT)\n")
    (root / "notes.txt").write_text("The gate code is 4412. " * 30)
    (root / "guide.md").write_text("Read the guide before you start. " * 40)
    return root


def test_a_collection_on_ray_equals_the_serial_indexes_and_resumes(tiny_model_dir, tmp_path, capsys):
    root = _collection(tmp_path / "library")
    out = tmp_path / "indexes"
    model = ["--model", str(tiny_model_dir), "--threads", "1"]
    assert make_index(["--context", str(root), "--out", str(out), "--ray", "--worker-cpus", "1", *model,
                       *ENCODING]) == 0
    assert "3 of 3 entries indexed" in capsys.readouterr().out
    for name in ("proj", "notes.txt", "guide.md"):
        serial = tmp_path / "serial" / f"{name}.ilre"
        serial.parent.mkdir(exist_ok=True)
        assert make_index(["--context", str(root / name), "--out", str(serial), *model, *ENCODING]) == 0
        ours, theirs = read(out / f"{name}.ilre")[0], read(serial)[0]
        assert ours.keys() == theirs.keys()
        assert all(torch.equal(ours[k], theirs[k]) for k in ours), name
    capsys.readouterr()
    (root / "proj" / "util.py").write_text("LIMIT = 4096\n")
    assert make_index(["--context", str(root), "--out", str(out), "--ray", *model, *ENCODING]) == 0
    said = capsys.readouterr().out
    assert "notes.txt: up to date" in said and "guide.md: up to date" in said
    assert "proj: 1 changed, 0 added, 0 removed" in said
