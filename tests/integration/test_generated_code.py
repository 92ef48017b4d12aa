"""The committed protobuf code is exactly what `python3 dev.py gen` would produce."""

from __future__ import annotations

import filecmp
import sys
from pathlib import Path

from grpc_tools import protoc

PROTOS = Path(__file__).resolve().parents[2] / "protos"


def test_generated_code_matches_the_protos(tmp_path: Path) -> None:
    sources = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    assert sources, "no .proto files found"
    code = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTOS}",
            f"-I{Path(protoc.__file__).parent / '_proto'}",
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            *sources,
        ]
    )
    assert code == 0
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.py*"))
    assert generated
    drifted = [
        str(rel)
        for rel in generated
        if not filecmp.cmp(tmp_path / rel, PROTOS / rel, shallow=False)
    ]
    assert drifted == [], f"regenerate with `python3 dev.py gen`: {drifted} differ ({sys.version})"
