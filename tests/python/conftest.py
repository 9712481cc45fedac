"""Fixtures: an `adaptive control-plane` process per backend, and an SDK client for it.

The binary is $ADAPTIVE_BIN (run_sdk_tests.sh builds it). Each test module gets a fresh
server with its own data directory (SQLite) or its own PostgreSQL database, on free ports, with
a known bootstrap API key given through configuration (ADAPTIVE_AUTH__BOOTSTRAP_API_KEY).
"""

import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid

import pytest

BOOTSTRAP_API_KEY = "ak_sdk_test_" + uuid.uuid4().hex
POSTGRES_URL = os.environ.get("ADAPTIVE_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def psql(database: str, sql: str) -> None:
    subprocess.run(
        ["psql", f"{POSTGRES_URL}/{database}", "-v", "ON_ERROR_STOP=1", "-q", "-c", sql],
        check=True,
        capture_output=True,
    )


def wait_until_ready(url: str, process: subprocess.Popen, log_path: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"control plane exited with {process.returncode}: {open(log_path).read()}")
        try:
            with urllib.request.urlopen(f"{url}/ready", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"control plane not ready: {open(log_path).read()}")


class Server:
    def __init__(self, url: str, internal_url: str, backend: str):
        self.url = url
        self.internal_url = internal_url
        self.backend = backend


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def server(request, tmp_path_factory):
    binary = os.environ.get("ADAPTIVE_BIN")
    if not binary:
        pytest.fail("set ADAPTIVE_BIN to the adaptive binary (run tests/python/run_sdk_tests.sh)")
    data_dir = tmp_path_factory.mktemp("adaptive-data")
    public_port, internal_port = free_port(), free_port()
    env = {
        "PATH": os.environ.get("PATH", ""),
        "RUST_LOG": "warn",
        "ADAPTIVE_SERVER__BIND": f"127.0.0.1:{public_port}",
        "ADAPTIVE_SERVER__BIND_INTERNAL": f"127.0.0.1:{internal_port}",
        "ADAPTIVE_APP__DATA_DIR": str(data_dir),
        "ADAPTIVE_AUTH__BOOTSTRAP_API_KEY": BOOTSTRAP_API_KEY,
    }
    database = None
    if request.param == "postgres":
        database = "sdk_test_" + uuid.uuid4().hex
        psql("postgres", f"CREATE DATABASE {database}")
        env["ADAPTIVE_DB__URL"] = f"{POSTGRES_URL}/{database}"
    log_path = str(data_dir / "control-plane.log")
    with open(log_path, "w") as log:
        process = subprocess.Popen([binary, "control-plane"], env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{public_port}"
    try:
        wait_until_ready(url, process, log_path)
        yield Server(url, f"http://127.0.0.1:{internal_port}", request.param)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        if database:
            psql("postgres", f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


@pytest.fixture(scope="module")
def client(server):
    from adaptive_sdk import Adaptive

    return Adaptive(base_url=server.url, api_key=BOOTSTRAP_API_KEY)
