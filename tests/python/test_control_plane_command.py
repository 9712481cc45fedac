"""`adaptive control-plane` as a process: bad configuration exits with EX_USAGE (64) and a
message naming the key; the first start prints the admin API key once and never again."""

import os
import subprocess
import urllib.request

import pytest

from conftest import free_port, wait_until_ready

EX_USAGE = 64


def binary() -> str:
    path = os.environ.get("ADAPTIVE_BIN")
    if not path:
        pytest.fail("set ADAPTIVE_BIN to the adaptive binary (run tests/python/run_sdk_tests.sh)")
    return path


def base_env(data_dir) -> dict:
    return {
        "PATH": os.environ.get("PATH", ""),
        "RUST_LOG": "warn",
        "ADAPTIVE_SERVER__BIND": f"127.0.0.1:{free_port()}",
        "ADAPTIVE_SERVER__BIND_INTERNAL": f"127.0.0.1:{free_port()}",
        "ADAPTIVE_APP__DATA_DIR": str(data_dir),
    }


@pytest.mark.parametrize(
    "name, value, key",
    [
        ("ADAPTIVE_DB__PASWORD", "x", "db.pasword"),
        ("ADAPTIVE_DB__RUN_MIGRATIONS", "sometimes", "db.run_migrations"),
        ("ADAPTIVE_SERVER__BIND", "not-an-address", "server.bind"),
    ],
)
def test_bad_configuration_exits_with_ex_usage_naming_the_key(tmp_path, name, value, key):
    env = base_env(tmp_path) | {name: value}
    result = subprocess.run([binary(), "control-plane"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == EX_USAGE, result.stderr
    assert key in result.stderr


def test_unknown_key_in_the_config_file_exits_with_ex_usage(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text('[server]\nbnd = "0.0.0.0:9000"\n')
    result = subprocess.run(
        [binary(), "control-plane", "--config", str(config)],
        env=base_env(tmp_path), capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == EX_USAGE, result.stderr
    assert "server.bnd" in result.stderr


def run_until_ready_then_stop(env) -> str:
    log_path = env["ADAPTIVE_APP__DATA_DIR"] + "/out.log"
    with open(log_path, "w") as log:
        process = subprocess.Popen([binary(), "control-plane"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until_ready("http://" + env["ADAPTIVE_SERVER__BIND"], process, log_path)
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0, open(log_path).read()
    return open(log_path).read()


def test_first_start_prints_the_admin_key_once_and_it_works(tmp_path):
    env = base_env(tmp_path)
    first = run_until_ready_then_stop(env)
    key_lines = [line for line in first.splitlines() if "admin API key" in line]
    assert len(key_lines) == 1, first
    api_key = key_lines[0].rsplit(" ", 1)[1]
    assert api_key.startswith("ak_")
    second = run_until_ready_then_stop(base_env(tmp_path))
    assert "admin API key" not in second and api_key not in second

    env = base_env(tmp_path)
    log_path = str(tmp_path / "third.log")
    with open(log_path, "w") as log:
        process = subprocess.Popen([binary(), "control-plane"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = "http://" + env["ADAPTIVE_SERVER__BIND"]
        wait_until_ready(url, process, log_path)
        request = urllib.request.Request(
            f"{url}/api/graphql",
            data=b'{"query": "{ me { email } }"}',
            headers={"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert b"admin@localhost" in response.read()
    finally:
        process.terminate()
        process.wait(timeout=30)
