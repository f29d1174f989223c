"""The container files agree with the project: the Dockerfile installs exactly the torch pins of pyproject,
the build context holds what the wheel is built from, and compose publishes the service on loopback only
with the image's volume and health check. (Building and running the image: scripts/check_container.py.)"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = (REPO / "Dockerfile").read_text(encoding="utf-8")


def pyproject() -> dict:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


@pytest.mark.skipif(shutil.which("sed") is None, reason="needs sed")
def test_dockerfile_installs_the_torch_pins_of_pyproject():
    script = re.search(r"sed -n '([^']+)' /tmp/pyproject.toml", DOCKERFILE)
    assert script, "the Dockerfile reads the torch pins from pyproject.toml with sed"
    found = subprocess.run(
        ["sed", "-n", script.group(1), str(REPO / "pyproject.toml")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    pins = [d for d in pyproject()["project"]["dependencies"] if re.match(r"torch(vision)?==", d)]
    assert found == pins and len(pins) == 2


def test_build_context_has_what_the_wheel_needs_and_no_more():
    rules = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    def included(path: str) -> bool:
        keep = True
        for rule in rules:
            negate, pattern = rule.startswith("!"), rule.lstrip("!").rstrip("/")
            if (
                fnmatch(path, pattern)
                or path.startswith(pattern + "/")
                or fnmatch(path, pattern.replace("**/", "*/"))
            ):
                keep = negate
        return keep

    project = pyproject()
    needed = [
        "pyproject.toml",
        project["project"]["readme"],
        *(p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]),
    ]
    for path in needed:
        assert included(path), f"{path} is left out of the build context"
    for path in [
        "artifacts/results/x.json",
        ".venv/bin/python",
        ".git/HEAD",
        "tests/conftest.py",
        "core/__pycache__/x.pyc",
    ]:
        assert not included(path), f"{path} is sent to the build"
    for path in re.findall(r"^COPY (?!--from)(.+) /\S*$", DOCKERFILE, flags=re.M):
        for item in path.split():
            assert (REPO / item).exists() and included(item), item


def test_compose_publishes_on_loopback_with_the_image_volume_and_health_check():
    service = yaml.safe_load((REPO / "compose.yaml").read_text())["services"]["capsearch"]
    artifacts = re.search(r"CAPSEARCH_ARTIFACTS=(\S+)", DOCKERFILE).group(1)
    assert f'VOLUME ["{artifacts}"]' in DOCKERFILE
    assert all(port.startswith("127.0.0.1:") and port.endswith(":8000") for port in service["ports"])
    assert "EXPOSE 8000" in DOCKERFILE and '"--port", "8000"' in DOCKERFILE
    assert any(volume.endswith(":" + artifacts) for volume in service["volumes"])
    assert "CAPSEARCH_TOKEN" in service["environment"]
    health = " ".join(service["healthcheck"]["test"])
    assert "http://127.0.0.1:8000/healthz" in health and "http://127.0.0.1:8000/healthz" in DOCKERFILE
    assert re.search(r"^USER (?!0|root)\S+", DOCKERFILE, flags=re.M), "the service does not run as root"
    assert "HF_HUB_OFFLINE=1" in DOCKERFILE
