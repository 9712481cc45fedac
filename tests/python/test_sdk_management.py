"""The management API through the real adaptive-sdk 0.14.2 client, on SQLite and PostgreSQL.

Each test module gets its own server per backend (see conftest.py); tests in this module share
it and use distinct keys.
"""

import json
import urllib.request
import uuid

import pytest


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def register_replica(server, pool: str, partition: str, models=()):
    body = {
        "group": pool,
        "partition_key": partition,
        "ordinal": 0,
        "gpu_count": 1,
        "gpu_types": ["NVIDIA L4"],
        "advertised_url": f"http://{partition}-0:50053",
        "status": "ONLINE",
        "online_models": [{"key": key, "path": f"model_registry://{key}", "max_seq_len": 4096} for key in models],
    }
    request = urllib.request.Request(
        f"{server.internal_url}/internal/harmony/register",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def test_me_is_the_bootstrap_admin(client):
    me = client.users.me()
    assert me.email == "admin@localhost"
    memberships = {(membership.team.key, membership.role.key) for membership in me.teams}
    assert memberships == {("admin", "admin"), ("default", "admin")}
    assert "admin@localhost" in [user.email for user in client.users.list()]


def test_permissions_roles_and_teams(client):
    permissions = client.permissions.list()
    assert {"project:read", "model:use", "admin:manage_users"} <= set(permissions)
    roles = {role.key: role for role in client.roles.list()}
    assert {"admin", "platform_admin", "power_user", "read-only", "inference", "annotator"} <= set(roles)
    assert set(roles["admin"].permissions) == set(permissions)
    key = unique("role")
    role = client.roles.create(key=key, permissions=["project:read", "model:use"], name="Custom")
    assert (role.key, sorted(role.permissions)) == (key, ["model:use", "project:read"])
    team = client.teams.create(key=unique("team"), name="ML team")
    assert team.key in [t.key for t in client.teams.list()]


def test_users_and_service_accounts(client, server):
    from adaptive_sdk import Adaptive

    team = client.teams.create(key=unique("team"))
    email = unique("person") + "@example.com"
    person = client.users.create(email=email, name="Person", teams_with_role=[(team.key, "read-only")])
    assert {(m.team.key, m.role.key) for m in person.teams} == {(team.key, "read-only")}
    moved = client.users.add_to_team(email=email, team="default", role="inference")
    assert moved.role.key == "inference"
    after = client.users.remove_from_team(email=email, team=team.key)
    assert {m.team.key for m in after.teams} == {"default"}

    name = unique("bot").replace("-", "_")
    account = client.users.create_service_account(name=name, teams_with_role=[("default", "read-only")])
    assert account.api_key.startswith("ak_") and account.email == f"{name}@system.adaptive.local"
    bot = Adaptive(base_url=server.url, api_key=account.api_key)
    assert bot.users.me().email == account.email
    # read-only may look, not create.
    with pytest.raises(Exception, match="permission"):
        bot.projects.create(key=unique("nope"), name="Nope")

    client.users.delete(email)
    assert email not in [user.email for user in client.users.list()]


def test_projects_create_list_get(client):
    key = unique("proj")
    created = client.projects.create(key=key, name="SDK project", description="made by the SDK")
    assert (created.key, created.name, created.description) == (key, "SDK project", "made by the SDK")
    assert created.model_services == [] and created.metrics == []
    assert key in [project.key for project in client.projects.list()]
    fetched = client.projects.get(project=key)
    assert fetched.id == created.id
    assert client.projects.get(project=unique("missing")) is None


def test_project_share_with_a_team(client):
    key = unique("shared")
    client.projects.create(key=key)
    shared = client.projects.share(project=key, team="default", role="admin", is_owner=True)
    assert [(share.team.key, share.role.key, share.is_owner) for share in shared.shares] == [("default", "admin", True)]


def test_register_deploy_and_list_compute_pools(client, server):
    pool = unique("pool")
    first = register_replica(server, pool, f"{pool}-part")
    assert first["desired_models"] == []

    project = unique("deploy")
    model_key = unique("model")
    client.projects.create(key=project)
    added = client._gql_client.add_model(
        {"path": f"model_registry://{model_key}", "name": "Registry model", "key": model_key}
    ).add_model
    assert (added.key, added.online.value, added.provider_name.value) == (model_key, "OFFLINE", "HARMONY")
    assert client.models.get(model_key).compute_config.tp == 1

    service = client.models.deploy(model=model_key, project=project, placement={"computePools": [pool]})
    assert service.key == model_key and service.desired_online and service.is_default
    described = client.projects.get(project=project)
    assert [s.model.key for s in described.model_services] == [model_key]

    heartbeat = register_replica(server, pool, f"{pool}-part", models=[model_key])
    assert [model["key"] for model in heartbeat["desired_models"]] == [model_key]

    pools = {p.key: p for p in client.compute_pools.list()}
    assert pool in pools
    groups = pools[pool].harmony_groups
    assert [(g.key, g.status.value, g.world_size, g.gpu_types) for g in groups] == [(f"{pool}-part", "ONLINE", 1, "NVIDIA L4")]
    assert [m.key for m in groups[0].online_models] == [model_key]
    listed = {m.key: m for m in client.models.list()}
    assert listed[model_key].online.value == "ONLINE"
    assert [p.key for p in listed[model_key].projects] == [project]

    with pytest.raises(Exception, match="not supported on pool"):
        client.compute_pools.resize_inference_partition(compute_pool_key=pool, size=2)


def test_model_lifecycle_update_detach_terminate(client):
    project = unique("life")
    model_key = unique("m")
    client.projects.create(key=project)
    client._gql_client.add_model({"path": "/models/local.gguf", "name": "Local", "key": model_key})
    assert client.models.add_to_project(model=model_key, project=project) is True
    updated = client.models.update_compute_config(model=model_key, compute_config={"tp": 2, "kvCacheLen": 4096, "maxSeqLen": 2048})
    assert (updated.compute_config.tp, updated.compute_config.kv_cache_len, updated.compute_config.max_seq_len) == (2, 4096, 2048)
    attached = client.models.attach(model=model_key, project=project)
    assert attached.desired_online
    turned_off = client.models.update(model=model_key, project=project, desired_online=False)
    assert turned_off.desired_online is False
    assert "terminated" in client.models.terminate(model=model_key)
    assert client.models.detach(model=model_key, project=project) is True
    assert client.projects.get(project=project).model_services == []


def test_metrics_create_list_get(client):
    project = unique("metrics")
    client.projects.create(key=project)
    key = unique("accuracy")
    metric = client.feedback.register_key(project=project, key=key, kind="scalar", scoring_type="higher_is_better", description="how right")
    assert (metric.key, metric.kind.value, metric.scoring_type.value) == (key, "SCALAR", "HIGHER_IS_BETTER")
    assert metric.has_direct_scores is False
    listed = {m.key: m for m in client.feedback.list_keys()}
    assert [p.key for p in listed[key].projects] == [project]
    fetched = client.feedback.get_key(project=project, feedback_key=key)
    assert fetched.id == metric.id and fetched.description == "how right"
    described = client.projects.get(project=project)
    assert [m.key for m in described.metrics] == [key]


def test_interactions_list_grouped_and_get_on_an_empty_project(client):
    project = unique("inter")
    client.projects.create(key=project)
    page = client.interactions.list(project=project, filters={"labels": [{"key": "env", "value": ["prod"]}]}, page={"first": 10})
    assert page.total_count == 0 and page.nodes == [] and page.page_info.has_next_page is False
    grouped = client.interactions.list(project=project, group_by="model")
    assert grouped.total_count == 0 and grouped.group_by.value == "MODEL"
    assert client.interactions.get(completion_id=str(uuid.uuid4()), project=project) is None


def test_errors_are_reported_with_their_message(client):
    with pytest.raises(Exception, match="already exists"):
        key = unique("dup")
        client.projects.create(key=key)
        client.projects.create(key=key)
    with pytest.raises(Exception, match="not found"):
        client.models.deploy(model=unique("nomodel"), project=unique("noproject"))
