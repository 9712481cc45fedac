"""helm-unittest-style assertions on the adaptive chart, run by deploy/helm/test.sh.

Each rendering that a user can produce from a documented values set is validated against the
Kubernetes 1.33 schemas (kubernetes-validate --strict); the assertions check what each value must
do: per-pool StatefulSets with the pool's scheduling, GPUs and registration env, secrets that never
reach a ConfigMap, the Reloader annotation on the Deployment, scaled-to-zero pools.
"""
from __future__ import annotations

import base64
import copy
import json
import pathlib
import re
import sys

import pytest
import yaml

from chartlib import (
    CHART,
    GUIDE_VALUES,
    NAMESPACE,
    REPO,
    Rendered,
    container,
    env_map,
    helm,
    render,
    render_fails,
    validate,
)

GUIDE = yaml.safe_load(GUIDE_VALUES.read_text())
GUIDE_POOLS = {p["name"]: p for p in GUIDE["harmony"]["computePool"]}

# Distinctive inline secret values: none of them may appear outside a Secret.
INLINE_SECRETS = {
    "cookiesSecret": "COOKIE-8f1c2d4e5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d",
    "dbUsername": "dbuser-7c1e",
    "dbPassword": "dbpass-S3cr3t-9a7e",
    "dbHost": "db-host-4b2a.internal:5432",
    "dbName": "adaptive_db_5d1f",
    "modelRegistryUrl": "s3://inline-bucket-6e3c/model_registry",
    "sharedDirectoryUrl": "s3://inline-bucket-6e3c/shared",
    "redisUrl": "rediss://:redis-token-2f8b@cache-1c9d.example:6379",
    "oidcClientSecret": "oidc-client-secret-3e7a",
}
INLINE_VALUES = {
    "secrets": {
        "cookiesSecret": INLINE_SECRETS["cookiesSecret"],
        "db": {
            "username": INLINE_SECRETS["dbUsername"],
            "password": INLINE_SECRETS["dbPassword"],
            "host": INLINE_SECRETS["dbHost"],
            "database": INLINE_SECRETS["dbName"],
        },
        "modelRegistryUrl": INLINE_SECRETS["modelRegistryUrl"],
        "sharedDirectoryUrl": INLINE_SECRETS["sharedDirectoryUrl"],
        "redisUrl": INLINE_SECRETS["redisUrl"],
    },
    "redis": {"enabled": False},
    "auth": {
        "oidc": {
            "providers": [
                {
                    "name": "Cognito",
                    "key": "cognito",
                    "issuer_url": "https://cognito-idp.us-east-1.amazonaws.com/POOL",
                    "client_id": "client",
                    "client_secret": INLINE_SECRETS["oidcClientSecret"],
                    "scopes": ["email", "profile", "openid"],
                    "pkce": True,
                    "allow_sign_up": True,
                }
            ]
        }
    },
    "controlPlane": {"config": "[server]\ntimeout_seconds = 60\n"},
    "harmony": {"computePool": [{"name": "dev", "gpusPerReplica": 1, "replicaCount": 1}]},
}

CONTROL_PLANE_SECRET_KEYS = {"dbUsername", "dbPassword", "dbHost", "dbName", "cookiesSecret", "oidcProviders"}
HARMONY_SECRET_KEYS = {"modelRegistryUrl", "sharedDirectoryUrl"}
REDIS_SECRET_KEYS = {"redisUrl"}


@pytest.fixture(scope="module")
def defaults() -> Rendered:
    return render()


@pytest.fixture(scope="module")
def guide() -> Rendered:
    return render(values_files=[GUIDE_VALUES])


@pytest.fixture(scope="module")
def inline() -> Rendered:
    return render(values=INLINE_VALUES)


def sts_name(pool: str) -> str:
    return f"adaptive-harmony-{pool}"


# --------------------------------------------------------------------------- lint and schemas


@pytest.mark.parametrize("values", [[], [GUIDE_VALUES]], ids=["defaults", "eks-guide"])
def test_helm_lint(values):
    args = ["lint", str(CHART), "--strict"]
    for v in values:
        args += ["-f", str(v)]
    proc = helm(*args, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_defaults_validate(defaults):
    validate(defaults)


def test_eks_guide_values_validate(guide):
    validate(guide)


def test_inline_secrets_validate(inline):
    validate(inline)


VARIANTS = {
    "postgresql-in-chart": {"postgresql": {"enabled": True, "auth": {"password": "pg-pass-1"}}, "secrets": {"cookiesSecret": "c" * 64}},
    "redis-persistent": {"redis": {"persistence": {"enabled": True}}},
    "cache-pvc-and-pdbs": {
        "harmony": {
            "cloudCache": {"type": "persistentVolumeClaim", "storageClassName": "gp3", "size": "1Ti"},
            "podDisruptionBudget": {"enabled": True},
            "computePools": [{"name": "Pool One", "gpusPerReplica": 4, "replicas": 2}],
        },
        "controlPlane": {"podDisruptionBudget": {"enabled": True, "maxUnavailable": 1}},
    },
    "cache-hostpath-cpu-pool": {
        "harmony": {"cloudCache": {"type": "hostPath"}, "computePool": [{"name": "cpu", "gpusPerReplica": 0, "tolerations": []}]},
    },
    "otel-off-ingress-tls-secret": {
        "otelCollector": {"enabled": False},
        "ingress": {"enabled": True, "className": "nginx", "hostname": "adaptive.example.com", "tls": {"enabled": True, "secretName": "adaptive-tls"}},
        "imagePullSecrets": ["regcred", {"name": "other"}],
        "controlPlane": {"serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/adaptive"}}},
    },
    "extra-env-lists-and-valuefrom": {
        "controlPlane": {"extraEnvVars": [{"name": "A", "value": "1"}, {"name": "B", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]},
        "harmony": {
            "extraEnvVars": {"C": {"valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}, "D": 2},
            "computePool": [{"name": "p", "extraEnvVars": [{"name": "D", "value": "3"}]}],
        },
    },
}


def test_dev_values_file_validates():
    r = render(values_files=[CHART / "ci" / "dev-values.yaml"])
    validate(r)
    sts = r.get("StatefulSet", sts_name("cpu"))
    assert "nvidia.com/gpu" not in json.dumps(container(sts)["resources"])
    assert sorted(s["metadata"]["name"] for s in r.kinds("Secret")) == ["adaptive-controlplane-inline", "adaptive-harmony-inline", "adaptive-postgresql"]
    helm_lint = helm("lint", str(CHART), "--strict", "-f", str(CHART / "ci" / "dev-values.yaml"), check=False)
    assert helm_lint.returncode == 0, helm_lint.stdout + helm_lint.stderr


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_variant_validates(name):
    validate(render(values=VARIANTS[name]))


# --------------------------------------------------------------------------- secrets


@pytest.mark.parametrize(
    "sets,needle",
    [
        (["secrets.existingControlPlaneSecret=adaptive-controlplane", "secrets.db.password=x"], "existingControlPlaneSecret"),
        (["secrets.existingControlPlaneSecret=adaptive-controlplane", "secrets.cookiesSecret=" + "x" * 64], "existingControlPlaneSecret"),
        (["secrets.existingHarmonySecret=adaptive-harmony", "secrets.modelRegistryUrl=s3://b/m", "secrets.sharedDirectoryUrl=s3://b/s"], "existingHarmonySecret"),
        (["redis.enabled=false", "secrets.existingRedisSecret=adaptive-redis", "secrets.redisUrl=redis://h:6379"], "existingRedisSecret"),
    ],
    ids=["controlplane-db", "controlplane-cookies", "harmony", "redis"],
)
def test_existing_secret_and_inline_values_fail(sets, needle):
    err = render_fails(sets=sets)
    assert needle in err and "not both" in err, err


def test_existing_and_inline_fail_even_with_guide_values():
    err = render_fails(values_files=[GUIDE_VALUES], sets=["secrets.existingControlPlaneSecret=adaptive-controlplane", "secrets.cookiesSecret=" + "a" * 64])
    assert "not both" in err


@pytest.mark.parametrize(
    "sets,needle",
    [
        (["secrets.cookiesSecret=" + "c" * 64], "secrets.db.username"),
        (["secrets.db.password=x"], "secrets.cookiesSecret"),
        (["secrets.modelRegistryUrl=s3://b/m"], "sharedDirectoryUrl"),
        (["secrets.redisUrl=redis://h:6379"], "redis.enabled"),
        (["postgresql.enabled=true"], "postgresql.auth.password"),
        (["ingress.enabled=true"], "ingress.hostname"),
        (["harmony.computePool[0].name=a", "harmony.computePools[0].name=A"], "unique"),
    ],
    ids=["db-missing", "cookies-missing", "shared-dir-missing", "redis-in-chart-and-url", "pg-no-password", "ingress-no-host", "duplicate-pool"],
)
def test_incomplete_or_contradictory_values_fail_clearly(sets, needle):
    err = render_fails(sets=sets)
    assert needle in err, err


def _non_secret_text(r: Rendered) -> str:
    return "\n".join(yaml.safe_dump(d) for d in r.docs if d["kind"] != "Secret")


def test_no_inline_secret_value_in_configmaps_or_other_objects(inline):
    cms = inline.kinds("ConfigMap")
    assert {c["metadata"]["name"] for c in cms} >= {"adaptive-control-plane", "adaptive-otel-collector"}
    cm_text = "\n".join(yaml.safe_dump(c) for c in cms)
    rest = _non_secret_text(inline)
    for key, value in INLINE_SECRETS.items():
        assert value not in cm_text, f"{key} rendered into a ConfigMap"
        assert value not in rest, f"{key} rendered into a non-Secret object"
        b64 = base64.b64encode(value.encode()).decode()
        assert b64 not in rest, f"{key} (base64) rendered into a non-Secret object"


def test_inline_secrets_are_chart_secrets_with_the_guide_keys(inline):
    cp = inline.get("Secret", "adaptive-controlplane-inline")
    assert set(cp["data"]) == CONTROL_PLANE_SECRET_KEYS
    decoded = {k: base64.b64decode(v).decode() for k, v in cp["data"].items()}
    assert decoded["dbPassword"] == INLINE_SECRETS["dbPassword"]
    assert json.loads(decoded["oidcProviders"])[0]["client_secret"] == INLINE_SECRETS["oidcClientSecret"]
    assert set(inline.get("Secret", "adaptive-harmony-inline")["data"]) == HARMONY_SECRET_KEYS
    redis = inline.get("Secret", "adaptive-redis-inline")
    assert base64.b64decode(redis["data"]["redisUrl"]).decode().startswith("rediss://")
    # The pods are rolled when inline secrets change.
    ann = inline.get("Deployment", "adaptive-control-plane")["spec"]["template"]["metadata"]["annotations"]
    assert "checksum/secret-controlplane" in ann


def test_existing_secrets_are_referenced_not_rendered(guide):
    assert guide.kinds("Secret") == [], "production values must not render any Secret"
    dep = guide.get("Deployment", "adaptive-control-plane")
    vols = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    assert vols["controlplane-secret"]["secret"]["secretName"] == "adaptive-controlplane"
    assert vols["redis-secret"]["secret"]["secretName"] == "adaptive-redis"


# Secret keys the control plane reads from mounted files (ADAPTIVE_<KEY>_FILE); the others come
# as env from secretKeyRef (the control plane accepts _FILE for its secret keys only).
FILE_VARS = {
    ("controlplane-secret", "dbPassword"): "ADAPTIVE_DB__PASSWORD_FILE",
    ("controlplane-secret", "cookiesSecret"): "ADAPTIVE_APP__SECRET_FILE",
    ("controlplane-secret", "oidcProviders"): "ADAPTIVE_AUTH__OIDC__PROVIDERS_FILE",
    ("redis-secret", "redisUrl"): "ADAPTIVE_REDIS__URL_FILE",
}
SECRET_REF_VARS = {
    ("adaptive-controlplane", "dbHost"): "ADAPTIVE_DB__HOST",
    ("adaptive-controlplane", "dbUsername"): "ADAPTIVE_DB__USERNAME",
    ("adaptive-controlplane", "dbName"): "ADAPTIVE_DB__DATABASE",
    ("adaptive-harmony", "modelRegistryUrl"): "ADAPTIVE_MODEL_REGISTRY",
    ("adaptive-harmony", "sharedDirectoryUrl"): "ADAPTIVE_HARMONY__SHARED_DIRECTORY__URL",
}


def test_control_plane_reads_every_guide_secret_key(guide):
    dep = guide.get("Deployment", "adaptive-control-plane")
    pod = dep["spec"]["template"]["spec"]
    c = container(dep)
    mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
    vol_secret = {v["name"]: v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    env = env_map(c)
    read = {}  # secret name -> {key: env var}
    for var, value in env.items():
        if var.endswith("_FILE") and isinstance(value, str):
            d, key = value.rsplit("/", 1)
            vol = next(n for n, p in mounts.items() if p == d)
            assert FILE_VARS[(vol, key)] == var
            read.setdefault(vol_secret[vol], {})[key] = var
        elif isinstance(value, dict) and "secretKeyRef" in (value["valueFrom"] or {}):
            ref = value["valueFrom"]["secretKeyRef"]
            assert SECRET_REF_VARS[(ref["name"], ref["key"])] == var
            read.setdefault(ref["name"], {})[ref["key"]] = var
    assert set(read["adaptive-controlplane"]) == CONTROL_PLANE_SECRET_KEYS
    assert set(read["adaptive-harmony"]) == HARMONY_SECRET_KEYS
    assert set(read["adaptive-redis"]) == REDIS_SECRET_KEYS
    # Whole-secret mounts (no subPath) so that rotated values appear in the files.
    assert all("subPath" not in m for m in c["volumeMounts"])


def _control_plane_config_keys():
    """(key path, secret?) from crates/control-plane/src/config/keys.rs, if that file exists."""
    path = REPO / "crates" / "control-plane" / "src" / "config" / "keys.rs"
    if not path.is_file():
        return None
    text = path.read_text()
    keys = {m.group(2): m.group(1) == "secret" for m in re.finditer(r'\b(key|secret)\(\s*"([a-z0-9_.]+)"', text)}
    return keys or None


@pytest.mark.parametrize("values", ["defaults", "guide", "inline", "postgresql"])
def test_control_plane_env_names_are_configuration_keys(values, defaults, guide, inline):
    """The control plane refuses to start on an unknown ADAPTIVE_<SECTION>__<KEY> variable, and
    accepts _FILE only for secret keys: every such variable the chart sets must be in its key table."""
    keys = _control_plane_config_keys()
    if keys is None:
        pytest.skip("crates/control-plane/src/config/keys.rs not found")
    rendered = {"defaults": defaults, "guide": guide, "inline": inline}.get(values) or render(values=VARIANTS["postgresql-in-chart"])
    env = env_map(container(rendered.get("Deployment", "adaptive-control-plane")))
    for var in env:
        if not var.startswith("ADAPTIVE_") or var == "ADAPTIVE_CONFIG_FILE":
            continue
        rest = var[len("ADAPTIVE_"):]
        if "__" not in rest and rest not in ("MODEL_REGISTRY", "MODEL_REGISTRY_FILE"):
            continue
        path = rest.lower().replace("__", ".")
        if path in keys:
            continue
        assert path.endswith("_file") and keys.get(path[: -len("_file")]) is True, f"{var}: not a control plane configuration key"


def test_external_secret_examples_produce_what_the_chart_reads():
    d = REPO / "deploy" / "external-secrets"
    docs = {}
    for f in sorted(d.glob("*.yaml")):
        for doc in yaml.safe_load_all(f.read_text()):
            docs[(doc["kind"], doc["metadata"]["name"])] = doc
    store = docs[("ClusterSecretStore", "aws-secrets-manager")]
    assert store["spec"]["provider"]["aws"]["service"] == "SecretsManager"
    expected = {
        "adaptive-controlplane": ("3m", CONTROL_PLANE_SECRET_KEYS),
        "adaptive-harmony": ("1h", HARMONY_SECRET_KEYS),
        "adaptive-redis": ("1h", REDIS_SECRET_KEYS),
    }
    for name, (interval, keys) in expected.items():
        es = docs[("ExternalSecret", name)]
        assert es["spec"]["refreshInterval"] == interval, name
        assert es["spec"]["target"]["name"] == name
        assert es["spec"]["secretStoreRef"] == {"name": "aws-secrets-manager", "kind": "ClusterSecretStore"}
        assert {x["secretKey"] for x in es["spec"]["data"]} == keys, name


# --------------------------------------------------------------------------- control plane


def test_reloader_annotation_reaches_the_deployment(guide):
    dep = guide.get("Deployment", "adaptive-control-plane")
    assert dep["metadata"]["annotations"]["reloader.stakater.com/auto"] == "true"


def test_control_plane_follows_the_guide(guide):
    dep = guide.get("Deployment", "adaptive-control-plane")
    spec = dep["spec"]
    assert spec["replicas"] == 3
    c = container(dep)
    assert c["image"] == "ACCOUNT_ID.dkr.ecr.REGION.amazonaws.com/adaptive/control-plane:vX.Y.Z"
    assert c["imagePullPolicy"] == "Always"
    assert c["args"] == ["control-plane"]
    assert c["resources"] == {"requests": {"cpu": 2, "memory": "8Gi"}, "limits": {"memory": "8Gi"}}
    env = env_map(c)
    assert env["NO_COLOR"] == "1"
    assert env["ADAPTIVE_SERVER__ROOT_URL"] == "https://MY_HOSTNAME"
    assert env["ADAPTIVE_SERVER__BIND"] == "0.0.0.0:9000"
    assert env["ADAPTIVE_SERVER__BIND_INTERNAL"] == "0.0.0.0:9009"
    assert env["ADAPTIVE_AUTH__DEFAULT_ROLE"] == "read-only"
    assert env["ADAPTIVE_AUTH__SESSION__SECURE"] == "true"
    assert env["ADAPTIVE_AUTH__SESSION__EXPIRATION_SECONDS"] == "86400"
    assert json.loads(env["ADAPTIVE_AUTH__ADMINS"]) == ["admin@example.com"]
    assert env["ADAPTIVE_DB__RUN_MIGRATIONS"] == "true"
    assert env["ADAPTIVE_SERVER__CLUSTER_ROOT_URL"] == "http://adaptive-control-plane.adaptive.svc.cluster.local:80"
    assert "ADAPTIVE_REDIS__URL" not in env  # from the adaptive-redis secret file instead
    assert {p["containerPort"] for p in c["ports"]} == {9000, 9009}
    assert c["livenessProbe"]["httpGet"]["path"] == "/health"
    assert c["startupProbe"]["httpGet"]["path"] == "/health"
    assert c["readinessProbe"]["httpGet"]["path"] == "/ready"
    pdb = guide.get("PodDisruptionBudget", "adaptive-control-plane")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == spec["selector"]["matchLabels"]
    tsc = spec["template"]["spec"]["topologySpreadConstraints"]
    assert {t["topologyKey"] for t in tsc} == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}


def test_control_plane_services(guide):
    pub = guide.get("Service", "adaptive-control-plane")
    assert [(p["port"], p["targetPort"]) for p in pub["spec"]["ports"]] == [(80, "http")]
    internal = guide.get("Service", "adaptive-control-plane-internal")
    assert [(p["port"], p["targetPort"]) for p in internal["spec"]["ports"]] == [(9009, "internal")]


def test_read_only_root_and_tmpfs_tmp(guide):
    workloads = [guide.get("Deployment", "adaptive-control-plane")] + guide.kinds("StatefulSet")
    for w in workloads:
        pod = w["spec"]["template"]["spec"]
        c = container(w)
        assert c["securityContext"]["readOnlyRootFilesystem"] is True, w["metadata"]["name"]
        assert c["securityContext"]["allowPrivilegeEscalation"] is False
        assert pod["securityContext"]["runAsNonRoot"] is True
        tmp = next(v for v in pod["volumes"] if v["name"] == "tmp")
        assert tmp["emptyDir"]["medium"] == "Memory"
        assert any(m["mountPath"] == "/tmp" for m in c["volumeMounts"])


def test_control_plane_scheduling_and_annotations_pass_through():
    r = render(
        values={
            "controlPlane": {
                "podAnnotations": {"a": "b"},
                "nodeSelector": {"role": "system"},
                "tolerations": [{"key": "k", "operator": "Exists", "effect": "NoSchedule"}],
                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "x", "operator": "Exists"}]}]}}},
                "topologySpreadConstraints": [{"maxSkew": 2, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"a": "b"}}}],
                "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/cp"}},
            },
            "harmony": {"serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/h"}}},
        }
    )
    validate(r)
    pod = r.get("Deployment", "adaptive-control-plane")["spec"]["template"]
    assert pod["metadata"]["annotations"]["a"] == "b"
    assert pod["metadata"]["annotations"]["prometheus.io/scrape"] == "adaptive"
    assert pod["spec"]["nodeSelector"] == {"role": "system"}
    assert pod["spec"]["tolerations"][0]["key"] == "k"
    assert "nodeAffinity" in pod["spec"]["affinity"]
    assert pod["spec"]["topologySpreadConstraints"][0]["maxSkew"] == 2
    assert r.get("ServiceAccount", "adaptive-control-plane")["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].endswith("role/cp")
    assert r.get("ServiceAccount", "adaptive-harmony")["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].endswith("role/h")


# --------------------------------------------------------------------------- harmony pools


def test_one_statefulset_and_headless_service_per_pool(guide):
    assert sorted(guide.names("StatefulSet")) == sorted(sts_name(p) for p in GUIDE_POOLS)
    for pool in GUIDE_POOLS:
        sts = guide.get("StatefulSet", sts_name(pool))
        svc = guide.get("Service", sts_name(pool))
        assert sts["spec"]["serviceName"] == svc["metadata"]["name"]
        assert svc["spec"]["clusterIP"] == "None"
        assert svc["spec"]["publishNotReadyAddresses"] is True
        assert any(p["port"] == 50053 for p in svc["spec"]["ports"])
        labels = sts["spec"]["template"]["metadata"]["labels"]
        assert all(labels[k] == v for k, v in svc["spec"]["selector"].items())
        assert all(labels[k] == v for k, v in sts["spec"]["selector"]["matchLabels"].items())
    # Selectors of different pools never overlap.
    selectors = [tuple(sorted(guide.get("Service", sts_name(p))["spec"]["selector"].items())) for p in GUIDE_POOLS]
    assert len(set(selectors)) == len(selectors)


@pytest.mark.parametrize("pool", sorted(GUIDE_POOLS))
def test_pool_scheduling_resources_and_gpus(guide, pool):
    want = GUIDE_POOLS[pool]
    sts = guide.get("StatefulSet", sts_name(pool))
    pod = sts["spec"]["template"]["spec"]
    assert sts["spec"]["replicas"] == want["replicaCount"]
    assert pod["nodeSelector"] == want["nodeSelector"]
    assert pod["tolerations"] == want["tolerations"]
    res = container(sts)["resources"]
    assert res["limits"]["nvidia.com/gpu"] == want["gpusPerReplica"]
    for kind in ("requests", "limits"):
        for k, v in want["resources"][kind].items():
            assert res[kind][k] == v, (kind, k)
    assert pod["terminationGracePeriodSeconds"] >= 300


@pytest.mark.parametrize("pool", sorted(GUIDE_POOLS))
def test_pool_registration_env(guide, pool):
    want = GUIDE_POOLS[pool]
    name = sts_name(pool)
    sts = guide.get("StatefulSet", name)
    env = env_map(container(sts))
    assert env["GROUP"] == pool
    assert env["PARTITION_KEY"] == pool
    assert env["GPU_COUNT"] == str(want["gpusPerReplica"])
    assert env["GROUP_CAPABILITIES"] == "INFERENCE,JOB"
    assert env["ORDINAL"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['apps.kubernetes.io/pod-index']"
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    # $(POD_NAME) is expanded by the kubelet: POD_NAME must be defined before ADVERTISED_URL.
    names = [e["name"] for e in container(sts)["env"]]
    assert names.index("POD_NAME") < names.index("ADVERTISED_URL")
    assert env["ADVERTISED_URL"] == f"http://$(POD_NAME).{name}.{NAMESPACE}.svc.cluster.local:50053"
    assert env["CONTROL_PLANE_URL"] == "http://adaptive-control-plane-internal:9009"
    guide.get("Service", "adaptive-control-plane-internal")
    assert env["REDIS_URL"]["valueFrom"]["secretKeyRef"] == {"name": "adaptive-redis", "key": "redisUrl"}
    assert env["ADAPTIVE_MODEL_REGISTRY"]["valueFrom"]["secretKeyRef"] == {"name": "adaptive-harmony", "key": "modelRegistryUrl"}
    assert env["ADAPTIVE_HARMONY__SHARED_DIRECTORY__URL"]["valueFrom"]["secretKeyRef"] == {"name": "adaptive-harmony", "key": "sharedDirectoryUrl"}
    assert env["HARMONY_SETTING_MODEL_CACHE_DIR"] == "/opt/adaptive/cloud_cache"
    assert env["HARMONY_SETTING_ALLOW_NCCL_TP"] == "1"
    assert env["NCCL_IGNORE_DISABLED_P2P"] == "1"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://adaptive-otel-collector:4318"
    assert container(sts)["args"] == ["harmony"]
    # Harmony drains within the pod's grace period.
    grace = sts["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert 0 < int(env["HARMONY_DRAIN_GRACE_SECONDS"]) < grace


def test_pool_volumes_shm_cache_and_probes(guide):
    for pool in GUIDE_POOLS:
        sts = guide.get("StatefulSet", sts_name(pool))
        c = container(sts)
        vols = {v["name"]: v for v in sts["spec"]["template"]["spec"]["volumes"]}
        mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
        assert vols["dshm"]["emptyDir"]["medium"] == "Memory" and mounts["dshm"] == "/dev/shm"
        assert "cloud-cache" in vols and mounts["cloud-cache"] == "/opt/adaptive/cloud_cache"
        for probe in ("startupProbe", "readinessProbe"):
            assert c[probe]["httpGet"]["path"] == "/health"
        # /health is 503 while draining: liveness must not depend on it.
        assert c["livenessProbe"] == {"tcpSocket": {"port": "http"}, "periodSeconds": 15, "timeoutSeconds": 5, "failureThreshold": 4}
        assert c["ports"][0]["containerPort"] == 50053
        ann = sts["spec"]["template"]["metadata"]["annotations"]
        assert ann["prometheus.io/scrape"] == "adaptive" and ann["prometheus.io/port"] == "50053"


GiB = 2**30


@pytest.mark.parametrize(
    "cache, volume_bytes, budget",
    [
        ({}, None, None),  # the default: an emptyDir without sizeLimit
        ({"type": "persistentVolumeClaim", "size": "500Gi"}, 500 * GiB, 500 * GiB * 90 // 100),
        ({"type": "persistentVolumeClaim", "size": "2T", "modelCacheBudgetPercent": 80}, 2 * 10**12, 2 * 10**12 * 80 // 100),
        ({"type": "emptyDir", "sizeLimit": "100Gi"}, 100 * GiB, 100 * GiB * 90 // 100),
        ({"type": "emptyDir", "sizeLimit": 1000000}, 10**6, 900000),
        ({"type": "hostPath"}, None, None),
    ],
    ids=["default", "pvc", "pvc-percent", "emptydir", "bytes", "hostpath"],
)
def test_model_cache_budget_is_a_fraction_of_the_cache_volume(cache, volume_bytes, budget):
    r = render(values={"harmony": {"cloudCache": cache, "computePool": [{"name": "dev", "gpusPerReplica": 1}]}})
    validate(r)
    env = env_map(container(r.get("StatefulSet", sts_name("dev"))))
    if budget is None:
        assert "HARMONY_SETTING_MODEL_CACHE_BUDGET" not in env
        return
    assert env["HARMONY_SETTING_MODEL_CACHE_BUDGET"] == str(budget)
    assert int(env["HARMONY_SETTING_MODEL_CACHE_BUDGET"]) < volume_bytes


def test_model_cache_budget_set_explicitly_or_by_the_pool():
    r = render(
        values={
            "harmony": {
                "cloudCache": {"type": "persistentVolumeClaim", "size": "1Ti", "modelCacheBudget": "700Gi"},
                "computePool": [{"name": "a"}, {"name": "b", "extraEnvVars": {"HARMONY_SETTING_MODEL_CACHE_BUDGET": "300Gi"}}],
            }
        }
    )
    validate(r)
    assert env_map(container(r.get("StatefulSet", sts_name("a"))))["HARMONY_SETTING_MODEL_CACHE_BUDGET"] == "700Gi"
    b = container(r.get("StatefulSet", sts_name("b")))
    assert [e.get("value") for e in b["env"] if e["name"] == "HARMONY_SETTING_MODEL_CACHE_BUDGET"] == ["300Gi"]


@pytest.mark.parametrize("size", ["1.5Ti", "10Gb", "500m"])
def test_model_cache_budget_refuses_sizes_it_cannot_read(size):
    err = render_fails(values={"harmony": {"cloudCache": {"type": "persistentVolumeClaim", "size": size}, "computePool": [{"name": "dev"}]}})
    assert "model cache budget" in err and size in err


def test_efa_pool_image_and_devices(guide):
    sts = guide.get("StatefulSet", sts_name("efa-training-pool"))
    c = container(sts)
    assert c["image"] == "ACCOUNT_ID.dkr.ecr.REGION.amazonaws.com/adaptive/harmony-efa:vX.Y.Z"
    assert c["imagePullPolicy"] == "Always"  # inherited from harmony.image
    assert c["resources"]["requests"]["vpc.amazonaws.com/efa"] == 32
    assert c["resources"]["limits"]["vpc.amazonaws.com/efa"] == 32
    assert env_map(c)["NCCL_PROTO"] == "LL,LL128,Simple"
    other = container(guide.get("StatefulSet", sts_name("training-pool")))
    assert other["image"] == "ACCOUNT_ID.dkr.ecr.REGION.amazonaws.com/adaptive/harmony:vX.Y.Z"


def test_replica_count_zero_pool_is_rendered(guide):
    sts = guide.get("StatefulSet", sts_name("inference-on-demand"))
    assert sts["spec"]["replicas"] == 0
    guide.get("Service", sts_name("inference-on-demand"))
    tol = {t["key"] for t in sts["spec"]["template"]["spec"]["tolerations"]}
    assert "adaptive.com/on-demand" in tol


def test_replica_count_zero_via_set_and_computepools_spelling():
    r = render(sets=["harmony.computePools[0].name=fallback", "harmony.computePools[0].replicaCount=0", "harmony.computePools[0].gpusPerReplica=2"])
    sts = r.get("StatefulSet", sts_name("fallback"))
    assert sts["spec"]["replicas"] == 0
    assert container(sts)["resources"]["limits"]["nvidia.com/gpu"] == 2


def test_harmony_replica_count_zero_scales_pools_without_their_own_count():
    r = render(values={"harmony": {"replicaCount": 0, "computePool": [{"name": "a"}, {"name": "b", "replicaCount": 2}]}})
    assert r.get("StatefulSet", sts_name("a"))["spec"]["replicas"] == 0
    assert r.get("StatefulSet", sts_name("b"))["spec"]["replicas"] == 2


def test_pool_defaults_and_overrides():
    r = render(
        values={
            "harmony": {
                "gpusPerReplica": 4,
                "nodeSelector": {"gpu": "yes"},
                "computePool": [
                    {"name": "Inference Pool B"},
                    {"name": "cpu", "gpusPerReplica": 0, "tolerations": [], "capabilities": "INFERENCE", "shmSize": "1Gi", "terminationGracePeriodSeconds": 120},
                    {"name": "req", "gpusPerReplica": 2, "resources": {"requests": {"nvidia.com/gpu": 1}}},
                ],
            }
        }
    )
    validate(r)
    b = r.get("StatefulSet", sts_name("inference-pool-b"))
    env = env_map(container(b))
    assert env["GROUP"] == "Inference Pool B" and env["PARTITION_KEY"] == "inference-pool-b"
    assert b["spec"]["replicas"] == 1
    assert container(b)["resources"]["limits"]["nvidia.com/gpu"] == 4
    assert b["spec"]["template"]["spec"]["nodeSelector"] == {"gpu": "yes"}
    cpu = r.get("StatefulSet", sts_name("cpu"))
    assert "nvidia.com/gpu" not in json.dumps(container(cpu).get("resources", {}))
    assert "tolerations" not in cpu["spec"]["template"]["spec"]
    assert env_map(container(cpu))["GPU_COUNT"] == "0"
    assert env_map(container(cpu))["GROUP_CAPABILITIES"] == "INFERENCE"
    assert cpu["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 120
    dshm = next(v for v in cpu["spec"]["template"]["spec"]["volumes"] if v["name"] == "dshm")
    assert dshm["emptyDir"]["sizeLimit"] == "1Gi"
    req = container(r.get("StatefulSet", sts_name("req")))["resources"]
    assert req["requests"]["nvidia.com/gpu"] == 2 == req["limits"]["nvidia.com/gpu"]


def test_capacity_reservation_end_reaches_the_pods():
    end = "2026-12-24T11:30:00Z"
    r = render(values={"harmony": {"computePool": [{"name": "cb", "capacityReservation": {"id": "cr-0123456789abcdef0", "endTime": end}}]}})
    validate(r)
    sts = r.get("StatefulSet", sts_name("cb"))
    env = env_map(container(sts))
    assert env["CAPACITY_RESERVATION_END"] == end
    assert env["CAPACITY_RESERVATION_ID"] == "cr-0123456789abcdef0"
    assert sts["spec"]["template"]["metadata"]["annotations"]["adaptive.ml/capacity-reservation-end"] == end


def test_pool_without_reservation_has_no_end_env(guide):
    env = env_map(container(guide.get("StatefulSet", sts_name("training-pool"))))
    assert "CAPACITY_RESERVATION_END" not in env


@pytest.mark.parametrize(
    "values,needle",
    [
        ({"harmony": {"computePool": [{"name": "cb", "capacityReservation": {"endTime": "next tuesday"}}]}}, "endTime"),
        ({"harmony": {"computePool": [{"name": "x", "gpusPerRepica": 2}]}}, "gpusPerRepica"),
        ({"harmony": {"computePool": [{"gpusPerReplica": 2}]}}, "name"),
        ({"harmony": {"computePool": [{"name": "x", "replicaCount": -1}]}}, "replicaCount"),
        ({"controlPlane": {"replicas": 3}}, "replicas"),
        ({"secrets": {"redisUrl": "http://nope"}}, "redisUrl"),
        ({"secrets": {"cookiesSecret": "too-short"}}, "cookiesSecret"),
    ],
    ids=["bad-end-time", "typo-in-pool", "pool-without-name", "negative-replicas", "unknown-control-plane-key", "bad-redis-scheme", "short-cookies-secret"],
)
def test_schema_rejects_bad_values(values, needle):
    err = render_fails(values=values)
    assert needle in err, err


# --------------------------------------------------------------------------- redis, postgres


def test_in_chart_redis_by_default(defaults):
    defaults.get("StatefulSet", "adaptive-redis")
    defaults.get("Service", "adaptive-redis")
    env = env_map(container(defaults.get("Deployment", "adaptive-control-plane")))
    assert env["ADAPTIVE_REDIS__URL"] == "redis://adaptive-redis:6379/0"
    assert "ADAPTIVE_REDIS__URL_FILE" not in env
    assert "adaptive-postgresql" not in defaults.names("StatefulSet"), "in-chart PostgreSQL must be off by default"


def test_redis_disabled_uses_the_existing_secret(guide):
    assert "adaptive-redis" not in guide.names("StatefulSet")


def test_in_chart_postgresql():
    r = render(values=VARIANTS["postgresql-in-chart"])
    r.get("StatefulSet", "adaptive-postgresql")
    pg = r.get("Secret", "adaptive-postgresql")
    assert base64.b64decode(pg["data"]["password"]).decode() == "pg-pass-1"
    env = env_map(container(r.get("Deployment", "adaptive-control-plane")))
    assert env["ADAPTIVE_DB__HOST"] == "adaptive-postgresql:5432"
    assert env["ADAPTIVE_DB__USERNAME"] == "adaptive"
    assert env["ADAPTIVE_DB__PASSWORD_FILE"].endswith("/postgresql/password")
    assert "pg-pass-1" not in _non_secret_text(r)


# --------------------------------------------------------------------------- otel, ingress


def test_otel_collector_exports_logs_to_cloudwatch(guide):
    cm = guide.get("ConfigMap", "adaptive-otel-collector")
    cfg = yaml.safe_load(cm["data"]["config.yaml"])
    assert cfg["exporters"]["otlphttp/cw"] == {"endpoint": "CLOUDWATCH_OTLP_ENDPOINT"}
    assert cfg["service"]["pipelines"]["logs"]["exporters"] == ["otlphttp/cw"]
    assert cfg["service"]["pipelines"]["logs"]["receivers"] == ["otlp"]
    assert "prometheus" in cfg["service"]["pipelines"]["metrics"]["receivers"]
    assert cfg["receivers"]["otlp"]["protocols"]["http"]["endpoint"] == "0.0.0.0:4318"
    keep = cfg["receivers"]["prometheus"]["config"]["scrape_configs"][0]["relabel_configs"][0]
    assert keep["action"] == "keep" and keep["regex"] == "adaptive"
    for pipeline in cfg["service"]["pipelines"].values():
        for exporter in pipeline["exporters"]:
            assert exporter in cfg["exporters"]
        for proc in pipeline["processors"]:
            assert proc in cfg["processors"]
    dep = guide.get("Deployment", "adaptive-otel-collector")
    assert {p["containerPort"] for p in container(dep)["ports"]} >= {4318}
    assert guide.get("Service", "adaptive-otel-collector")["spec"]["ports"][0]["port"] == 4318
    role = guide.get("Role", "adaptive-otel-collector")
    assert role["rules"][0]["resources"] == ["pods"]


def test_otel_pipelines_and_exporters_as_yaml_strings():
    r = render(values={"otelCollector": {"exporters": "otlphttp/x:\n  endpoint: http://x:4318\n", "pipelines": "traces:\n  exporters: [otlphttp/x]\n"}})
    cfg = yaml.safe_load(r.get("ConfigMap", "adaptive-otel-collector")["data"]["config.yaml"])
    assert cfg["service"]["pipelines"]["traces"]["exporters"] == ["otlphttp/x"]
    assert cfg["service"]["pipelines"]["logs"]["exporters"] == ["debug"]


def test_otel_disabled_removes_collector_and_env():
    r = render(values={"otelCollector": {"enabled": False}})
    assert "adaptive-otel-collector" not in r.names("Deployment")
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in env_map(container(r.get("Deployment", "adaptive-control-plane")))


def test_alb_ingress(guide):
    ing = guide.get("Ingress", "adaptive-control-plane")
    spec = ing["spec"]
    assert spec["ingressClassName"] == "alb"
    assert spec["rules"][0]["host"] == "MY_HOSTNAME"
    backend = spec["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "adaptive-control-plane", "port": {"name": "http"}}
    assert spec["tls"] == [{"hosts": ["MY_HOSTNAME"]}]  # ACM certificate: no secret
    for k, v in GUIDE["ingress"]["annotations"].items():
        assert ing["metadata"]["annotations"][k] == v
    # The control plane Service is ClusterIP: an ALB must target pod IPs (the controller rejects
    # target-type instance with a ClusterIP Service), and check /health.
    assert ing["metadata"]["annotations"]["alb.ingress.kubernetes.io/target-type"] == "ip"
    assert ing["metadata"]["annotations"]["alb.ingress.kubernetes.io/healthcheck-path"] == "/health"


def test_alb_defaults_do_not_override_user_annotations():
    r = render(values_files=[GUIDE_VALUES], values={"ingress": {"annotations": {"alb.ingress.kubernetes.io/target-type": "instance"}}})
    ann = r.get("Ingress", "adaptive-control-plane")["metadata"]["annotations"]
    assert ann["alb.ingress.kubernetes.io/target-type"] == "instance"


# --------------------------------------------------------------------------- the guide itself


def _guide_path():
    import os

    for p in [os.environ.get("ADAPTIVE_EKS_GUIDE", ""), REPO.parent / "shared" / "reference" / "seed-eks-capacity-blocks.md", pathlib.Path("/work/shared/reference/seed-eks-capacity-blocks.md")]:
        if p and pathlib.Path(p).is_file():
            return pathlib.Path(p)
    return None


CHART_TOP_KEYS = {"containerRegistry", "controlPlane", "harmony", "redis", "otelCollector", "ingress", "auth"}


def _guide_helm_snippets():
    path = _guide_path()
    if path is None:
        return []
    text = path.read_text()
    out = []
    for block in re.findall(r"```yaml[^\n]*\n(.*?)```", text, flags=re.S):
        try:
            doc = yaml.safe_load(_dedent(block))
        except yaml.YAMLError:
            continue
        if isinstance(doc, dict) and "apiVersion" not in doc and set(doc) <= CHART_TOP_KEYS:
            out.append(doc)
    return out


def _dedent(block: str) -> str:
    lines = block.splitlines()
    indents = [len(line) - len(line.lstrip()) for line in lines if line.strip()]
    cut = min(indents) if indents else 0
    return "\n".join(line[cut:] for line in lines)


def _merge(a, b):
    out = copy.deepcopy(a)
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def test_every_helm_snippet_of_the_guide_renders_and_is_in_the_ci_values():
    snippets = _guide_helm_snippets()
    if not snippets:
        pytest.skip("the EKS guide (shared/reference/seed-eks-capacity-blocks.md) is not beside this checkout")
    assert len(snippets) >= 8, f"expected the guide's 8+ Helm snippets, found {len(snippets)}"
    for snippet in snippets:
        r = render(values=snippet)
        validate(r)
    # Every scalar the guide writes is in ci/eks-guide-values.yaml with the same value (lists of
    # pools are matched by name).
    for snippet in snippets:
        _assert_contained(snippet, GUIDE, path="")


def _assert_contained(want, have, path):
    if isinstance(want, dict):
        assert isinstance(have, dict), path
        for k, v in want.items():
            assert k in have, f"{path}.{k} missing from ci/eks-guide-values.yaml"
            _assert_contained(v, have[k], f"{path}.{k}")
    elif isinstance(want, list) and want and isinstance(want[0], dict) and "name" in want[0]:
        by_name = {x["name"]: x for x in have}
        for item in want:
            assert item["name"] in by_name, f"{path}: pool {item['name']} missing"
            _assert_contained(item, by_name[item["name"]], f"{path}[{item['name']}]")
    else:
        assert want == have, f"{path}: guide has {want!r}, ci values have {have!r}"


# --------------------------------------------------------------------------- repo consistency


def test_values_schema_is_generated_from_the_tool():
    sys.path.insert(0, str(REPO / "deploy" / "helm" / "tools"))
    import gen_schema

    assert (CHART / "values.schema.json").read_text() == gen_schema.render(), "run python3 deploy/helm/tools/gen_schema.py"


def test_template_files_are_named_kind_component():
    kinds = {
        "configmap", "deployment", "statefulset", "service", "secret", "ingress", "serviceaccount",
        "poddisruptionbudget", "role", "rolebinding",
    }
    for f in (CHART / "templates").iterdir():
        if f.name.startswith("_") or f.name == "NOTES.txt":
            continue
        kind, _, component = f.stem.partition("-")
        assert kind in kinds and component, f.name
        text = f.read_text()
        for k in re.findall(r"^kind: (\w+)", text, flags=re.M):
            assert k.lower() == kind, f"{f.name} renders a {k}"


def test_karpenter_node_pools_match_the_pools_tolerations():
    root = REPO / "deploy" / "karpenter"
    for flavour, node_class_kind, group in [("karpenter", "EC2NodeClass", "karpenter.k8s.aws"), ("eks-auto-mode", "NodeClass", "eks.amazonaws.com")]:
        docs = [doc for f in sorted((root / flavour).glob("*.yaml")) for doc in yaml.safe_load_all(f.read_text())]
        classes = {d["metadata"]["name"]: d for d in docs if d["kind"] == node_class_kind}
        pools = {d["metadata"]["name"]: d for d in docs if d["kind"] == "NodePool"}
        assert set(pools) == {"gpu-capacity-block", "gpu-on-demand"}, flavour
        assert classes["gpu-capacity-block"]["spec"]["capacityReservationSelectorTerms"] == [{"tags": {"deployment": "MY_DEPLOYMENT"}}]
        assert "capacityReservationSelectorTerms" not in classes["gpu-default"]["spec"]
        for name, np in pools.items():
            ref = np["spec"]["template"]["spec"]["nodeClassRef"]
            assert ref["group"] == group and ref["kind"] == node_class_kind and ref["name"] in classes, (flavour, name)
            assert np["apiVersion"] == "karpenter.sh/v1"
        reqs = {r["key"]: r["values"] for r in pools["gpu-capacity-block"]["spec"]["template"]["spec"]["requirements"]}
        assert reqs["karpenter.sh/capacity-type"] == ["reserved"]
        reqs = {r["key"]: r["values"] for r in pools["gpu-on-demand"]["spec"]["template"]["spec"]["requirements"]}
        assert reqs["karpenter.sh/capacity-type"] == ["on-demand"]
        if flavour == "karpenter":
            for c in classes.values():
                assert c["spec"]["amiSelectorTerms"], "EC2NodeClass v1 requires amiSelectorTerms"
        # Every taint of a node pool is tolerated by the guide's pools that target it.
        cb_taints = {t["key"] for t in pools["gpu-capacity-block"]["spec"]["template"]["spec"]["taints"]}
        od_taints = {t["key"] for t in pools["gpu-on-demand"]["spec"]["template"]["spec"]["taints"]}
        for pool in GUIDE_POOLS.values():
            tol = {t["key"] for t in pool["tolerations"]}
            target = od_taints if pool["replicaCount"] == 0 else cb_taints
            assert target <= tol, (flavour, pool["name"])


def test_dockerfiles_are_multi_stage_non_root_and_build_the_cli():
    d = REPO / "deploy" / "docker"
    files = {f.name: f.read_text() for f in d.glob("*.Dockerfile")}
    assert set(files) >= {"control-plane.Dockerfile", "harmony.Dockerfile", "harmony-cuda.Dockerfile"}
    for name, text in files.items():
        froms = re.findall(r"^FROM\s+\S+(?:\s+AS\s+(\S+))?", text, flags=re.M | re.I)
        assert len(froms) >= 2, f"{name} is not multi-stage"
        assert "cargo build --release" in text and "-p adaptive-cli" in text, name
        users = re.findall(r"^USER\s+(\S+)", text, flags=re.M)
        assert users and users[-1] not in ("root", "0", "0:0"), f"{name} must end as a non-root user"
        assert re.search(r'^ENTRYPOINT \["/usr/local/bin/adaptive"\]', text, flags=re.M), name
        assert (d / f"{name}.dockerignore").is_file(), f"{name}.dockerignore missing"
    assert "--features cuda" in files["harmony-cuda.Dockerfile"]
    assert re.search(r'^CMD \["control-plane"\]', files["control-plane.Dockerfile"], flags=re.M)
    assert re.search(r'^CMD \["harmony"\]', files["harmony.Dockerfile"], flags=re.M)
