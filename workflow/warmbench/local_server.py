"""A real OpenAI-compatible server on loopback (`transformers serve`), for benchmarks and tests.

Only 127.0.0.1 is ever bound. The server's access log goes to a file, so callers can count the requests it
actually answered (e.g. to check that a rerun made no call).
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class LocalServer:
    """`transformers serve MODEL_DIR` on 127.0.0.1:port; `requests()` counts answered chat completions."""

    def __init__(self, model_dir: str | Path, port: int, log: str | Path, start_timeout_s: float = 180):
        self.log, self.port = Path(log), port
        binary = Path(sys.executable).parent / "transformers"
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        self.proc = subprocess.Popen([str(binary), "serve", str(model_dir), "--host", HOST, "--port", str(port)],
                                     stdout=open(self.log, "w"), stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        deadline = time.time() + start_timeout_s
        while time.time() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                urllib.request.urlopen(f"http://{HOST}:{port}/health", timeout=2)
                return
            except OSError:
                time.sleep(1)
        self.kill()
        raise RuntimeError(f"`transformers serve` did not start on port {port}: {self.log.read_text()[-2000:]}")

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}/v1"

    def requests(self) -> int:
        return self.log.read_text().count('"POST /v1/chat/completions HTTP/1.1" 200')

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.kill()
