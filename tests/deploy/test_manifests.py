"""The Kubernetes manifests build and validate, and the validator catches what it should."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))

import validate_manifests as vm  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")


def test_every_overlay_is_valid() -> None:
    schemas = vm.crd_schemas()
    assert ("keda.sh/v1alpha1", "ScaledObject") in schemas
    for overlay in sorted((vm.K8S / "overlays").iterdir()):
        assert vm.validate(overlay, schemas) == [], overlay.name


def _copy(tmp_path: Path) -> Path:
    shutil.copytree(vm.K8S, tmp_path / "k8s")
    return tmp_path / "k8s"


def test_a_misspelt_scaler_field_fails(tmp_path: Path) -> None:
    k8s = _copy(tmp_path)
    scaler = k8s / "base" / "worker-scaler.yaml"
    scaler.write_text(scaler.read_text().replace("maxReplicaCount", "maxReplicas"))
    problems = vm.validate(k8s / "overlays" / "dev", vm.crd_schemas())
    assert any("ScaledObject" in p and "maxReplicas" in p for p in problems), problems


def test_a_grace_shorter_than_the_drain_fails(tmp_path: Path) -> None:
    k8s = _copy(tmp_path)
    worker = k8s / "base" / "comfy-worker.yaml"
    worker.write_text(
        worker.read_text().replace(
            "terminationGracePeriodSeconds: 315", "terminationGracePeriodSeconds: 30"
        )
    )
    problems = vm.validate(k8s / "overlays" / "dev", vm.crd_schemas())
    assert any("comfy-worker" in p and "does not cover" in p for p in problems), problems


def test_an_invalid_core_field_fails(tmp_path: Path) -> None:
    k8s = _copy(tmp_path)
    gateway = k8s / "base" / "gateway.yaml"
    gateway.write_text(gateway.read_text().replace("periodSeconds: 5", "periodSeconds: often"))
    problems = vm.validate(k8s / "overlays" / "production", vm.crd_schemas())
    assert any("kubernetes-validate" in p for p in problems), problems
