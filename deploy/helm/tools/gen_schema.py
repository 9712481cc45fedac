#!/usr/bin/env python3
"""Generates deploy/helm/adaptive/values.schema.json (run after changing values.yaml's shape).

Kept as code so the schema stays readable: objects the chart owns reject unknown keys (a typo
fails `helm install` instead of being silently ignored); Kubernetes-shaped values (resources,
tolerations, affinity, probes...) are passed through as objects/arrays.
"""
import json
import pathlib

S = {"type": "string"}
B = {"type": "boolean"}
I0 = {"type": "integer", "minimum": 0}
OBJ = {"type": "object"}
ARR = {"type": "array"}
ANY_OBJ_OR_NULL = {"type": ["object", "null"]}
QTY = {"anyOf": [{"type": "string"}, {"type": "number"}]}
ENV = {
    "description": "NAME: value map (a value may be {valueFrom: ...}) or a list of EnvVar objects",
    "anyOf": [
        {"type": "object", "additionalProperties": {"anyOf": [{"type": ["string", "number", "boolean"]}, {"type": "object"}]}},
        {"type": "array", "items": {"type": "object", "required": ["name"]}},
        {"type": "null"},
    ],
}
RFC3339 = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$"


def strict(props, required=()):
    o = {"type": "object", "additionalProperties": False, "properties": props}
    if required:
        o["required"] = list(required)
    return o


def image(tag_default=True):
    return strict({"repository": S, "tag": {"type": ["string", "number"]}, "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]}, "registry": S})


SERVICE_ACCOUNT = strict({"create": B, "name": S, "annotations": OBJ})
PDB = strict({"enabled": B, "minAvailable": {"type": ["integer", "string", "null"]}, "maxUnavailable": {"type": ["integer", "string", "null"]}})
RESOURCES = {"type": ["object", "null"], "properties": {"requests": {"type": ["object", "null"], "additionalProperties": QTY}, "limits": {"type": ["object", "null"], "additionalProperties": QTY}}}

POOL = strict(
    {
        "name": {"type": "string", "minLength": 1},
        "gpusPerReplica": I0,
        "replicaCount": I0,
        "replicas": I0,
        "capabilities": S,
        "nodeSelector": {"type": ["object", "null"], "additionalProperties": S},
        "tolerations": {"type": ["array", "null"]},
        "affinity": ANY_OBJ_OR_NULL,
        "resources": RESOURCES,
        "image": image(),
        "extraEnvVars": ENV,
        "podAnnotations": OBJ,
        "podLabels": OBJ,
        "shmSize": QTY,
        "terminationGracePeriodSeconds": I0,
        "capacityReservation": strict(
            {
                "id": {"type": "string", "pattern": "^(cr-[0-9A-Za-z]+)?$"},
                "endTime": {"type": "string", "pattern": RFC3339 + "|^$", "description": "RFC 3339 end of the capacity block"},
            }
        ),
    },
    required=["name"],
)

PROBE = {"type": ["object", "null"]}

def build():
    return SCHEMA


SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema#",
    "title": "adaptive chart values",
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "global": OBJ,
        "nameOverride": S,
        "fullnameOverride": S,
        "commonLabels": OBJ,
        "clusterDomain": S,
        "containerRegistry": S,
        "imagePullSecrets": {"type": "array", "items": {"anyOf": [S, {"type": "object", "required": ["name"]}]}},
        "secrets": strict(
            {
                "existingControlPlaneSecret": S,
                "existingHarmonySecret": S,
                "existingRedisSecret": S,
                "modelRegistryUrl": S,
                "sharedDirectoryUrl": S,
                "redisUrl": {"type": "string", "pattern": "^(|rediss?://.+)$"},
                "cookiesSecret": {"type": "string", "pattern": "^(|.{64,})$", "description": "64+ characters (the control plane refuses shorter ones)"},
                "db": strict({"username": S, "password": S, "host": S, "database": S}),
            }
        ),
        "auth": strict(
            {
                "default_role": S,
                "default_team": S,
                "session": strict({"secure": B, "expiration_seconds": {"type": "integer", "minimum": 60}}),
                "admins": {"type": "array", "items": S},
                "oidc": strict({"providers": {"type": "array", "items": OBJ}}),
            }
        ),
        "controlPlane": strict(
            {
                "image": image(),
                "replicaCount": I0,
                "rootUrl": {"type": "string", "pattern": "^https?://"},
                "runDbMigrations": B,
                "servicePort": {"type": "integer", "minimum": 1, "maximum": 65535},
                "service": strict({"type": {"enum": ["ClusterIP", "NodePort", "LoadBalancer"]}, "annotations": OBJ}),
                "config": S,
                "resources": RESOURCES,
                "podDisruptionBudget": PDB,
                "extraEnvVars": ENV,
                "annotations": OBJ,
                "podAnnotations": OBJ,
                "podLabels": OBJ,
                "nodeSelector": OBJ,
                "tolerations": ARR,
                "affinity": OBJ,
                "topologySpreadConstraints": ARR,
                "defaultTopologySpread": B,
                "terminationGracePeriodSeconds": I0,
                "tmpSizeLimit": QTY,
                "serviceAccount": SERVICE_ACCOUNT,
                "podSecurityContext": OBJ,
                "securityContext": OBJ,
                "startupProbe": PROBE,
                "livenessProbe": PROBE,
                "readinessProbe": PROBE,
            }
        ),
        "harmony": strict(
            {
                "enabled": B,
                "image": image(),
                "replicaCount": I0,
                "gpusPerReplica": I0,
                "capabilities": S,
                "resources": RESOURCES,
                "nodeSelector": OBJ,
                "tolerations": ARR,
                "affinity": OBJ,
                "podAnnotations": OBJ,
                "podLabels": OBJ,
                "extraEnvVars": ENV,
                "shmSize": QTY,
                "tmpSizeLimit": QTY,
                "terminationGracePeriodSeconds": I0,
                "cloudCache": strict(
                    {
                        "type": {"enum": ["emptyDir", "hostPath", "persistentVolumeClaim"]},
                        "sizeLimit": QTY,
                        "hostPath": S,
                        "storageClassName": S,
                        "size": QTY,
                        "modelCacheBudget": QTY,
                        "modelCacheBudgetPercent": {"type": "integer", "minimum": 1, "maximum": 100},
                    }
                ),
                "serviceAccount": SERVICE_ACCOUNT,
                "podSecurityContext": OBJ,
                "securityContext": OBJ,
                "podDisruptionBudget": PDB,
                "startupProbe": PROBE,
                "livenessProbe": PROBE,
                "readinessProbe": PROBE,
                "computePool": {"type": ["array", "null"], "items": POOL},
                "computePools": {"type": ["array", "null"], "items": POOL},
            }
        ),
        "redis": strict(
            {
                "enabled": B,
                "image": image(),
                "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                "resources": RESOURCES,
                "persistence": strict({"enabled": B, "storageClassName": S, "size": QTY}),
                "nodeSelector": OBJ,
                "tolerations": ARR,
            }
        ),
        "postgresql": strict(
            {
                "enabled": B,
                "image": image(),
                "auth": strict({"username": S, "database": S, "password": S, "existingSecret": S}),
                "resources": RESOURCES,
                "persistence": strict({"enabled": B, "storageClassName": S, "size": QTY}),
                "nodeSelector": OBJ,
                "tolerations": ARR,
            }
        ),
        "otelCollector": strict(
            {
                "enabled": B,
                "image": image(),
                "replicaCount": I0,
                "resources": RESOURCES,
                "memoryLimitMiB": {"type": "integer", "minimum": 32},
                "memorySpikeLimitMiB": {"type": "integer", "minimum": 0},
                "prometheus": strict({"scrapeInterval": S}),
                "resourceAttributes": strict({"environmentName": S, "extra": OBJ}),
                "exporters": {"type": ["object", "string", "null"]},
                "pipelines": {
                    "anyOf": [
                        {"type": "string"},
                        {"type": "null"},
                        {
                            "type": "object",
                            "additionalProperties": {
                                "type": "object",
                                "additionalProperties": False,
                                "properties": {"receivers": {"type": "array", "items": S}, "processors": {"type": "array", "items": S}, "exporters": {"type": "array", "items": S}},
                            },
                        },
                    ]
                },
                "podDisruptionBudget": PDB,
                "nodeSelector": OBJ,
                "tolerations": ARR,
                "affinity": OBJ,
            }
        ),
        "ingress": strict(
            {
                "enabled": B,
                "className": S,
                "hostname": S,
                "path": S,
                "pathType": {"enum": ["Prefix", "Exact", "ImplementationSpecific"]},
                "tls": strict({"enabled": B, "secretName": S}),
                "annotations": {"type": "object", "additionalProperties": S},
            }
        ),
    },
}

OUT = pathlib.Path(__file__).resolve().parents[1] / "adaptive" / "values.schema.json"


def render():
    return json.dumps(build(), indent=2) + "\n"


if __name__ == "__main__":
    OUT.write_text(render())
    print(f"wrote {OUT}")
