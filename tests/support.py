"""Helpers shared by the tests that start real processes."""

import os
import shutil
import subprocess

import pytest

from devtools.stack import free_port, redis_server_argv, wait_for_port


def require_tool(problem: str, present: bool) -> None:
    """Skip when a tool is missing (``problem`` says which) — except in CI, where no integration test may skip."""
    if present:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{problem}, and CI=true forbids skipping this test")
    pytest.skip(problem)


class RedisServer:
    """A private redis-server on a free port, which a test may stop and start again."""

    def __init__(self):
        require_tool("redis-server is not installed", shutil.which("redis-server") is not None)
        self.port = free_port()
        self.proc = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        self.proc = subprocess.Popen(redis_server_argv(self.port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port("127.0.0.1", self.port, 10, "redis-server", self.proc)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
