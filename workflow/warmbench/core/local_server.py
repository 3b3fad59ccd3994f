"""A real OpenAI-compatible server on loopback (`transformers serve`), for benchmarks and tests.

Only 127.0.0.1 is ever bound. The server's access log goes to a file, so callers can count the requests it
actually answered (e.g. to check that a rerun made no call). The server runs under warmbench's guardian
(children.py): it dies with the process that started it, however that process ends.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from . import children

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class LocalServer:
    """`transformers serve MODEL_DIR` on 127.0.0.1:port; `requests()` counts answered chat completions."""

    def __init__(self, model_dir: str | Path, port: int, log: str | Path, start_timeout_s: float = 180,
                 remove: tuple = ()):
        """`remove`: folders to delete once the server is gone, even if the caller was killed (its scratch files)."""
        self.log, self.port = Path(log), port
        binary = Path(sys.executable).parent / "transformers"
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        with open(self.log, "w") as log_file:
            self.proc = children.start([str(binary), "serve", str(model_dir), "--host", HOST, "--port", str(port)],
                                       stdout=log_file, stderr=subprocess.STDOUT, env=env, remove=remove)
        try:
            if self._wait_ready(start_timeout_s):
                return
        except BaseException:  # interrupted while it starts: the server goes with us
            self.kill()
            raise
        self.kill()
        raise RuntimeError(f"`transformers serve` did not start on port {port}: {self.log.read_text()[-2000:]}")

    def _wait_ready(self, timeout_s: float) -> bool:
        deadline = time.time() + timeout_s
        while time.time() < deadline and self.proc.poll() is None:
            try:
                urllib.request.urlopen(f"http://{HOST}:{self.port}/health", timeout=2)
                return True
            except OSError:
                time.sleep(1)
        return False

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}/v1"

    def requests(self) -> int:
        return self.log.read_text().count('"POST /v1/chat/completions HTTP/1.1" 200')

    def kill(self, at_once: bool = True) -> None:
        """Stop the server: at once (SIGKILL, a crash mid-request), or politely (SIGTERM, then SIGKILL)."""
        children.stop(self.proc, at_once=at_once)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.kill(at_once=False)
