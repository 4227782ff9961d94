"""The codec generator refuses what it does not support, instead of writing untested code."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

protoc = pytest.importorskip("grpc_tools.protoc", reason="grpcio-tools is not installed")

GENERATOR = Path(__file__).resolve().parents[3] / "scripts" / "codec_generator.py"


@pytest.fixture(scope="module")
def generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("codec_generator_checked", GENERATOR)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def descriptors(tmp_path: Path, source: str) -> bytes:
    (tmp_path / "sample.proto").write_text(source)
    out = tmp_path / "set.binpb"
    code = protoc.main(
        [
            "protoc",
            f"-I{tmp_path}",
            "--include_imports",
            f"--descriptor_set_out={out}",
            "sample.proto",
        ]
    )
    assert code == 0
    return out.read_bytes()


@pytest.mark.parametrize(
    ("body", "complaint"),
    [
        ("repeated int32 numbers = 1;", r"repeated int32 \(packed\) fields are not supported"),
        ("map<int32, string> names = 1;", "only string map keys are supported"),
        ("double ratio = 1;", "double is supported in oneofs only"),
        ("fixed32 word = 1;", "is not supported"),
        ("string _private = 1;", "cannot be a Python name here"),
    ],
)
def test_unsupported_fields_stop_generation(
    generator: ModuleType, tmp_path: Path, body: str, complaint: str
) -> None:
    data = descriptors(tmp_path, f'syntax = "proto3";\npackage p;\nmessage M {{ {body} }}\n')
    with pytest.raises(generator.CodecGenerationError, match=complaint):
        generator.generate_codecs(data, ["p.M"])


def test_proto2_messages_are_refused(generator: ModuleType, tmp_path: Path) -> None:
    data = descriptors(
        tmp_path, 'syntax = "proto2";\npackage p;\nmessage M { optional int32 a = 1; }\n'
    )
    with pytest.raises(generator.CodecGenerationError, match="only proto3"):
        generator.generate_codecs(data, ["p.M"])


def test_an_unknown_root_is_refused(generator: ModuleType, tmp_path: Path) -> None:
    data = descriptors(tmp_path, 'syntax = "proto3";\npackage p;\nmessage M { string a = 1; }\n')
    with pytest.raises(
        generator.CodecGenerationError, match=r"p\.Missing is not in the descriptor set"
    ):
        generator.generate_codecs(data, ["p.Missing"])


def test_generated_modules_hold_the_closure_of_the_roots(
    generator: ModuleType, tmp_path: Path
) -> None:
    data = descriptors(
        tmp_path,
        'syntax = "proto3";\npackage p.q;\n'
        "message Outer { message Inner { string s = 1; } Inner inner = 1; Leaf leaf = 2; }\n"
        "message Leaf { bytes b = 1; }\nmessage Unused { string u = 1; }\n",
    )
    modules = generator.generate_codecs(data, ["p.q.Outer"])
    assert set(modules) == {"__init__.py", "p_q.py"}
    source = modules["p_q.py"]
    assert "class Outer_Inner:" in source
    assert "class Leaf:" in source
    assert "Unused" not in source
    assert generator.generate_codecs(data, ["p.q.Outer"]) == modules
