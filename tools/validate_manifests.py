"""Validate Comfyline's Kubernetes manifests offline.

Builds every kustomize overlay under deploy/k8s/overlays with ``kubectl kustomize``, validates the
Kubernetes resources against the Kubernetes API schemas (``kubernetes-validate --strict``), and
validates custom resources (KEDA's ScaledObject) against the CRD schemas kept in deploy/k8s/crds.
Also checks that every Deployment's terminationGracePeriodSeconds covers its service's drain
(``*_SHUTDOWN_GRACE_S``) and that each has probes, resource requests and a PodDisruptionBudget.

    uv run python tools/validate_manifests.py
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
#: Kinds that kubernetes-validate knows (the rest need a CRD schema from deploy/k8s/crds).
CORE_GROUPS = {"v1", "apps/v1", "policy/v1", "batch/v1", "networking.k8s.io/v1"}


def crd_schemas() -> dict[tuple[str, str], dict[str, Any]]:
    """``(apiVersion, kind) -> openAPIV3Schema`` of every CRD kept in the repository."""
    schemas: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted((K8S / "crds").glob("*.yaml")):
        crd = yaml.safe_load(path.read_text())
        group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
        for version in crd["spec"]["versions"]:
            schemas[(f"{group}/{version['name']}", kind)] = version["schema"]["openAPIV3Schema"]
    return schemas


def build(overlay: Path) -> str:
    """The overlay's resources as one YAML stream."""
    done = subprocess.run(
        ["kubectl", "kustomize", str(overlay)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"kustomize build of {overlay} failed:\n{done.stderr}")
    return done.stdout


def check_resources(name: str, docs: list[dict[str, Any]]) -> list[str]:
    """Comfyline's own rules: probes, requests, PDBs, grace covering the drain."""
    problems: list[str] = []
    pdbs = {
        d["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]
        for d in docs
        if d["kind"] == "PodDisruptionBudget"
    }
    for d in docs:
        if d["kind"] not in {"Deployment", "StatefulSet"}:
            continue
        label = d["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"]
        pod = d["spec"]["template"]["spec"]
        where = f"{name}: {d['kind']} {d['metadata']['name']}"
        for c in pod["containers"]:
            for probe in ("readinessProbe", "livenessProbe"):
                if probe not in c and label != "comfyui-sim":
                    problems.append(f"{where}: container {c['name']} has no {probe}")
            if "requests" not in c.get("resources", {}):
                problems.append(f"{where}: container {c['name']} has no resource requests")
            for env in c.get("env", []):
                if env["name"].endswith("_SHUTDOWN_GRACE_S"):
                    grace = pod.get("terminationGracePeriodSeconds", 30)
                    if grace < float(env["value"]) + 5:
                        problems.append(
                            f"{where}: terminationGracePeriodSeconds {grace} does not cover "
                            f"the drain of {env['value']} s"
                        )
        if d["metadata"]["labels"].get("app.kubernetes.io/part-of") == "comfyline" and (
            label not in pdbs and label not in {"minio", "comfyui-sim"}
        ):
            problems.append(f"{where}: no PodDisruptionBudget")
    return problems


def validate(overlay: Path, schemas: dict[tuple[str, str], dict[str, Any]]) -> list[str]:
    """Every problem found in one overlay (empty when it is valid)."""
    text = build(overlay)
    docs = [d for d in yaml.safe_load_all(text) if d]
    problems = check_resources(overlay.name, docs)
    core = [d for d in docs if d["apiVersion"] in CORE_GROUPS]
    for d in docs:
        if d["apiVersion"] in CORE_GROUPS:
            continue
        schema = schemas.get((d["apiVersion"], d["kind"]))
        if schema is None:
            problems.append(f"{overlay.name}: no schema for {d['apiVersion']} {d['kind']}")
            continue
        for error in jsonschema.Draft7Validator(schema).iter_errors(d):
            path = "/".join(str(p) for p in error.absolute_path)
            problems.append(
                f"{overlay.name}: {d['kind']} {d['metadata']['name']}: {path}: {error.message}"
            )
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        yaml.safe_dump_all(core, f)
        f.flush()
        done = subprocess.run(
            ["kubernetes-validate", "--strict", "--quiet", f.name],
            capture_output=True,
            text=True,
            check=False,
        )
    if done.returncode != 0:
        problems.append(f"{overlay.name}: kubernetes-validate:\n{done.stdout}{done.stderr}")
    return problems


def main() -> int:
    schemas = crd_schemas()
    yaml.safe_load((K8S / "nats" / "values.yaml").read_text())
    overlays = sorted(p for p in (K8S / "overlays").iterdir() if p.is_dir())
    problems = [p for overlay in overlays for p in validate(overlay, schemas)]
    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems:
        print(f"manifests valid: {', '.join(o.name for o in overlays)}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
