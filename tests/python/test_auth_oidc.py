"""OIDC login through a real provider (oidc-provider-mock 0.3.4), against `adaptive control-plane`.

Each test drives the browser's part of the authorization-code flow by hand: GET the login
route (which redirects to the provider and sets the encrypted login cookie), POST the user's
`sub` to the provider's authorize URL (the mock's login form), and GET the callback it redirects
to. The provider signs real ID tokens with its JWKS; the control plane verifies them.
"""

import json
import os
import subprocess
import sys
import time
import urllib.parse
import uuid

import httpx
import pytest

from conftest import free_port, wait_until_ready

COOKIES_SECRET = "cookie-secret-" + uuid.uuid4().hex + uuid.uuid4().hex
CLIENT_SECRET = "client-secret-" + uuid.uuid4().hex
BOOTSTRAP_KEY = "ak_oidc_test_" + uuid.uuid4().hex


class Env:
    def __init__(self, url, provider_url, log_path):
        self.url = url
        self.provider_url = provider_url
        self.log_path = log_path


def wait_for_provider(url: str, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"oidc-provider-mock exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/.well-known/openid-configuration", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError("oidc-provider-mock did not start")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    binary = os.environ.get("ADAPTIVE_BIN")
    if not binary:
        pytest.fail("set ADAPTIVE_BIN to the adaptive binary (run tests/python/run_sdk_tests.sh)")
    provider_port = free_port()
    provider_url = f"http://127.0.0.1:{provider_port}"
    provider = subprocess.Popen(
        [os.path.join(os.path.dirname(sys.executable), "oidc-provider-mock"), "-p", str(provider_port), "--require-nonce"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    data_dir = tmp_path_factory.mktemp("adaptive-oidc")
    public_port, internal_port = free_port(), free_port()
    url = f"http://127.0.0.1:{public_port}"
    common = {"issuer_url": provider_url, "client_id": "adaptive", "client_secret": CLIENT_SECRET,
              "scopes": ["openid", "email", "profile"], "pkce": True}
    providers = [
        {"key": "mock", "name": "Mock", "allow_sign_up": True, "allowed_domains": ["example.com"], **common},
        {"key": "closed", "name": "Closed", "allow_sign_up": False, **common},
    ]
    env = {
        "PATH": os.environ.get("PATH", ""),
        "RUST_LOG": "debug",
        "ADAPTIVE_SERVER__BIND": f"127.0.0.1:{public_port}",
        "ADAPTIVE_SERVER__BIND_INTERNAL": f"127.0.0.1:{internal_port}",
        "ADAPTIVE_SERVER__ROOT_URL": url,
        "ADAPTIVE_APP__DATA_DIR": str(data_dir),
        "ADAPTIVE_APP__SECRET": COOKIES_SECRET,
        "ADAPTIVE_AUTH__BOOTSTRAP_API_KEY": BOOTSTRAP_KEY,
        "ADAPTIVE_AUTH__OIDC__PROVIDERS": json.dumps(providers),
        "ADAPTIVE_AUTH__SESSION__SECURE": "false",
        "ADAPTIVE_AUTH__DEFAULT_ROLE": "read-only",
        "ADAPTIVE_AUTH__ADMINS": '["boss@example.com"]',
    }
    log_path = str(data_dir / "control-plane.log")
    with open(log_path, "w") as log:
        process = subprocess.Popen([binary, "control-plane"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_provider(provider_url, provider)
        wait_until_ready(url, process, log_path)
        yield Env(url, provider_url, log_path)
    finally:
        for child in (process, provider):
            child.terminate()
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()


def set_claims(env, sub, **claims):
    response = httpx.put(f"{env.provider_url}/users/{sub}", json=claims)
    assert response.status_code < 300, response.text


def start_login(env, client, provider="mock"):
    """GET the login route; returns the provider's authorize URL."""
    response = client.get(f"{env.url}/api/v1/auth/login/{provider}")
    assert response.status_code == 303, response.text
    location = response.headers["location"]
    assert location.startswith(env.provider_url), location
    query = urllib.parse.parse_qs(urllib.parse.urlparse(location).query)
    assert query["code_challenge_method"] == ["S256"] and query["nonce"] and query["state"]
    return location


def authorize(client, authorize_url, sub):
    """The user logs in at the provider; returns the callback URL it redirects to."""
    response = client.post(authorize_url, data={"sub": sub})
    assert response.status_code in (302, 303), response.text
    return response.headers["location"]


def login(env, sub, provider="mock", **claims):
    set_claims(env, sub, **claims)
    client = httpx.Client(follow_redirects=False)
    callback = authorize(client, start_login(env, client, provider), sub)
    return client, client.get(callback)


def graphql(env, client, query, csrf=True):
    headers = {}
    if csrf:
        headers["X-CSRF-Token"] = client.cookies.get("adaptive_csrf", "")
    return client.post(f"{env.url}/api/graphql", json={"query": query}, headers=headers)


ME = "{ me { email teams { team { key } role { key } } } }"


def test_meta_lists_the_providers_before_login(env):
    response = httpx.post(f"{env.url}/api/graphql",
                          json={"query": "{ meta { authProviders { providers { name key kind loginUrl } } } }"})
    assert response.status_code == 200, response.text
    providers = response.json()["data"]["meta"]["authProviders"]["providers"]
    assert {p["key"] for p in providers} == {"mock", "closed"}
    assert providers[0]["kind"] == "OIDC"
    assert providers[0]["loginUrl"] == f"{env.url}/api/v1/auth/login/{providers[0]['key']}"
    # Anything else still needs credentials.
    assert httpx.post(f"{env.url}/api/graphql", json={"query": ME}).status_code == 401


def test_a_verified_user_signs_up_with_the_default_role(env):
    client, response = login(env, "alice@example.com", email="alice@example.com", email_verified=True, name="Alice")
    assert response.status_code == 303, response.text
    set_cookie = response.headers.get_list("set-cookie")
    session = next(c for c in set_cookie if c.startswith("adaptive_session="))
    assert "HttpOnly" in session and "SameSite=Lax" in session
    assert "alice" not in session, "the session cookie is encrypted"
    me = graphql(env, client, ME).json()
    assert me["data"]["me"]["email"] == "alice@example.com", me
    assert {(m["team"]["key"], m["role"]["key"]) for m in me["data"]["me"]["teams"]} == {("default", "read-only")}
    # Read-only: may not create projects.
    created = graphql(env, client, 'mutation { createProject(input: {name: "Nope"}) { key } }').json()
    assert created["errors"][0]["extensions"]["code"] == "permission_denied", created
    # A second login finds the same user.
    client2, again = login(env, "alice@example.com", email="alice@example.com", email_verified=True)
    assert again.status_code == 303
    assert graphql(env, client2, ME).json()["data"]["me"]["email"] == "alice@example.com"


def test_cookie_mutations_need_the_csrf_token(env):
    client, response = login(env, "carol@example.com", email="carol@example.com", email_verified=True)
    assert response.status_code == 303
    # GraphQL is POST: without the token it is refused, with it it works.
    refused = graphql(env, client, ME, csrf=False)
    assert refused.status_code == 403, refused.text
    assert graphql(env, client, ME).status_code == 200


def test_an_unknown_user_is_refused_where_sign_up_is_off(env):
    _, response = login(env, "bob@example.com", provider="closed", email="bob@example.com", email_verified=True)
    assert response.status_code == 403, response.text
    assert "sign-up" in response.json()["error"]["message"]
    assert "adaptive_session" not in response.headers.get("set-cookie", "")


def test_admins_may_sign_up_anywhere_and_become_admins(env):
    client, response = login(env, "boss@example.com", provider="closed", email="boss@example.com", email_verified=True)
    assert response.status_code == 303, response.text
    teams = {(m["team"]["key"], m["role"]["key"]) for m in graphql(env, client, ME).json()["data"]["me"]["teams"]}
    assert ("admin", "admin") in teams
    created = graphql(env, client, 'mutation { createProject(input: {name: "Boss project"}) { key } }').json()
    assert "errors" not in created, created


def test_a_disallowed_domain_is_refused(env):
    _, response = login(env, "eve@evil.com", email="eve@evil.com", email_verified=True)
    assert response.status_code == 403, response.text


def test_an_unverified_email_is_refused(env):
    _, response = login(env, "dave@example.com", email="dave@example.com", email_verified=False)
    assert response.status_code == 403, response.text
    assert "not verified" in response.json()["error"]["message"]


def test_a_bad_state_fails(env):
    set_claims(env, "frank@example.com", email="frank@example.com", email_verified=True)
    client = httpx.Client(follow_redirects=False)
    callback = authorize(client, start_login(env, client), "frank@example.com")
    tampered = callback.replace("state=", "state=x")
    response = client.get(tampered)
    assert response.status_code == 401, response.text


def test_a_replayed_code_fails(env):
    set_claims(env, "gina@example.com", email="gina@example.com", email_verified=True)
    client = httpx.Client(follow_redirects=False)
    callback = authorize(client, start_login(env, client), "gina@example.com")
    login_cookie = client.cookies.get("adaptive_login")
    assert client.get(callback).status_code == 303
    # An attacker holding the callback URL and the login cookie replays them.
    replay = httpx.Client(follow_redirects=False, cookies={"adaptive_login": login_cookie})
    response = replay.get(callback)
    assert response.status_code == 401, response.text


def test_a_wrong_nonce_fails(env):
    set_claims(env, "hank@example.com", email="hank@example.com", email_verified=True)
    client = httpx.Client(follow_redirects=False)
    authorize_url = start_login(env, client)
    parts = urllib.parse.urlparse(authorize_url)
    query = urllib.parse.parse_qs(parts.query)
    query["nonce"] = ["not-the-nonce-we-sent"]
    forged = parts._replace(query=urllib.parse.urlencode(query, doseq=True)).geturl()
    callback = authorize(client, forged, "hank@example.com")
    response = client.get(callback)
    assert response.status_code == 401, response.text
    assert "nonce" in response.json()["error"]["message"].lower()


def test_a_callback_without_the_login_cookie_fails(env):
    set_claims(env, "ivy@example.com", email="ivy@example.com", email_verified=True)
    client = httpx.Client(follow_redirects=False)
    callback = authorize(client, start_login(env, client), "ivy@example.com")
    assert httpx.get(callback).status_code == 401


def test_logout_clears_the_session(env):
    client, response = login(env, "jack@example.com", email="jack@example.com", email_verified=True)
    assert response.status_code == 303
    out = client.post(f"{env.url}/api/v1/auth/logout")
    assert out.status_code == 204
    assert graphql(env, client, ME).status_code == 401


def test_secrets_never_reach_the_logs(env):
    # A whole login, then inference calls with a session and with an API key.
    client, response = login(env, "kim@example.com", email="kim@example.com", email_verified=True)
    assert response.status_code == 303
    session_cookie = client.cookies.get("adaptive_session")
    csrf = client.cookies.get("adaptive_csrf")
    body = {"model": "default", "messages": [{"role": "user", "content": "hi"}]}
    client.post(f"{env.url}/api/v1/chat/completions", json=body, headers={"X-CSRF-Token": csrf})
    httpx.post(f"{env.url}/api/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {BOOTSTRAP_KEY}"})
    httpx.post(f"{env.url}/api/graphql", json={"query": ME}, headers={"Authorization": "Bearer ak_wrong_key_0123456789"})
    time.sleep(0.5)
    logs = open(env.log_path).read()
    assert "logged in" in logs, "the login was logged"
    for secret in (COOKIES_SECRET, CLIENT_SECRET, BOOTSTRAP_KEY, session_cookie, csrf, "ak_wrong_key_0123456789"):
        assert secret and secret not in logs


def test_a_tampered_session_cookie_is_rejected(env):
    client, response = login(env, "lena@example.com", email="lena@example.com", email_verified=True)
    assert response.status_code == 303
    cookie = client.cookies.get("adaptive_session")
    middle = len(cookie) // 2
    tampered = cookie[:middle] + ("A" if cookie[middle] != "A" else "B") + cookie[middle + 1:]
    csrf = client.cookies.get("adaptive_csrf")
    forged = httpx.Client(cookies={"adaptive_session": tampered, "adaptive_csrf": csrf})
    response = forged.post(f"{env.url}/api/graphql", json={"query": ME}, headers={"X-CSRF-Token": csrf})
    assert response.status_code == 401, response.text
    # A session minted by another secret (the cookie of another deployment) is just as invalid.
    other = httpx.Client(cookies={"adaptive_session": "x" * len(cookie)})
    assert other.post(f"{env.url}/api/graphql", json={"query": ME}).status_code == 401
