"""Build the service image (scripts/build_container.sh), start it on a fresh volume and measure it.

Writes ``artifacts/results/container_image.json``: the build time, the image size, what the sandbox refused
and the workaround used, the Dockerfile linter's verdict, and, when the image has ``capsearch serve``, the
first start on an empty volume (the demo is prepared and trained into it) until ``/readyz`` answers 200, a
search through the published port (bound to 127.0.0.1 only), the image's HEALTHCHECK, a restart on the
filled volume and a graceful stop. Without ``serve`` (the service not merged yet) it runs ``capsearch demo``
in the container instead and says so.

    python scripts/check_container.py [--no-build] [--port 18000] [--hadolint PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import secrets
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from benchlib import REPO, commit, runs_log

from core.atomic import write_json

OUT = REPO / "artifacts" / "results" / "container_image.json"
WORK = Path(os.environ.get("CAPSEARCH_CONTAINER_WORK", "/var/tmp/capsearch-container"))
ENGINE = os.environ.get("ENGINE", "podman")
TAG = os.environ.get("TAG", "capsearch:latest")
BASE = os.environ.get("BASE_IMAGE", "capsearch-base:bookworm")
NAME = "capsearch-check"
VOLUME = "capsearch-check-data"
QUERY = "a red circle above a blue square"


def sh(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=check)


def engine(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    return sh(ENGINE, *args, timeout=timeout, check=check)


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        "unknown",
    )
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "load_average_1m": os.getloadavg()[0],
        "note": "a shared 2-core machine: other jobs ran at the same time",
    }


def build() -> dict[str, Any]:
    """Run the build script; its log goes to WORK/build.log."""
    WORK.mkdir(parents=True, exist_ok=True)
    log = WORK / "build.log"
    start = time.monotonic()
    with log.open("w") as out:
        rc = subprocess.run(
            [str(REPO / "scripts" / "build_container.sh")], stdout=out, stderr=subprocess.STDOUT
        ).returncode
    seconds = round(time.monotonic() - start, 1)
    lines = log.read_text(errors="replace").splitlines()
    notes = [
        line.removeprefix("[build_container] ") for line in lines if line.startswith("[build_container]")
    ]
    if rc != 0:
        sys.exit(f"build failed (exit {rc}); see {log}:\n" + "\n".join(lines[-15:]))
    return {
        "seconds": seconds,
        "load_average_1m_after": os.getloadavg()[0],
        "script_notes": notes,
        "pip_warnings": [line for line in lines if "does not provide the extra" in line],
        "steps": sum(bool(re.match(r"\[\d/\d\] STEP \d+/\d+: ", line)) for line in lines),
        "steps_from_cache": sum(line.startswith("--> Using cache") for line in lines),
    }


def sandbox() -> dict[str, Any]:
    """What podman's defaults were refused (written by the build script) and the conf used instead."""
    err, conf = WORK / "default-run.err", WORK / "containers.conf"
    refused = [line for line in err.read_text().splitlines() if line.strip()] if err.is_file() else []
    if refused and conf.is_file():
        os.environ["CONTAINERS_CONF"] = str(conf)
    return {
        "podman": engine("--version").stdout.strip(),
        "default_run_refused": refused,
        "containers_conf": conf.read_text().splitlines() if refused and conf.is_file() else None,
    }


def probe(label: str, *args: str, command: tuple[str, ...] = ("true",)) -> dict[str, Any]:
    """Run ``command`` in the base image under podman's own defaults (no containers.conf) plus ``args``."""
    env = {k: v for k, v in os.environ.items() if k != "CONTAINERS_CONF"}
    run = subprocess.run(
        [ENGINE, *args, BASE, *command], capture_output=True, text=True, timeout=180, env=env
    )
    errors = [line for line in run.stderr.splitlines() if "systemd" not in line]
    tls = re.search(
        r"\[SSL: [A-Z_]+\][^')]*", run.stdout + run.stderr
    )  # pip retries, then says only "no matching ..."
    error = tls.group(0) if tls else errors[-1] if errors else None
    return {"what": label, "exit_code": run.returncode, "error": error}


def sandbox_probes() -> list[dict[str, Any]]:
    """Each refusal on the way from podman's defaults to a container that starts, with its exact text."""
    nofile, nproc = (
        resource.getrlimit(limit)[1] for limit in (resource.RLIMIT_NOFILE, resource.RLIMIT_NPROC)
    )
    own = [f"nofile={nofile}:{nofile}"]
    limits = lambda n: ["--ulimit", own[0], "--ulimit", f"nproc={n}:{n}"]  # noqa: E731
    index = sh("python3", "-m", "pip", "config", "get", "global.index-url", check=False).stdout.strip()
    pip = "python3 -m venv /tmp/v && /tmp/v/bin/pip download --no-deps --retries 0 --timeout 20 -d /tmp/d pip"
    pip += f" --index-url {index}" if index else ""
    return [
        probe("crun, podman's default rlimits", "--runtime", "crun", "run", "--rm", "--network", "none"),
        probe(
            f"crun, rlimits = this shell's hard limits ({own[0]}, nproc={nproc})",
            "--runtime",
            "crun",
            "run",
            "--rm",
            "--network",
            "none",
            *limits(nproc),
        ),
        probe("crun, nproc=32768", "--runtime", "crun", "run", "--rm", "--network", "none", *limits(32768)),
        probe(
            f"runc, nproc={nproc}", "--runtime", "runc", "run", "--rm", "--network", "none", *limits(nproc)
        ),
        probe(
            "runc, nproc=32768 (the build script's containers.conf)",
            "--runtime",
            "runc",
            "run",
            "--rm",
            "--network",
            "none",
            *limits(32768),
        ),
        probe(
            "runc, nproc=32768, bridge network (netavark)", "--runtime", "runc", "run", "--rm", *limits(32768)
        ),
        probe(
            "pip's index over TLS from the container, without this machine's CA bundle",
            "--runtime",
            "runc",
            "run",
            "--rm",
            *limits(32768),
            command=("sh", "-c", pip),
        ),
    ]


def image_facts() -> dict[str, Any]:
    info = json.loads(engine("image", "inspect", TAG).stdout)[0]
    config = info.get("Config", {})
    probe = "import sys, torch; print(sys.version.split()[0], torch.__version__)"
    versions = engine(
        "run", "--rm", "--network", "none", "--entrypoint", "python3", TAG, "-c", probe
    ).stdout.split()
    user = engine("run", "--rm", "--network", "none", "--entrypoint", "id", TAG, "-u").stdout.strip()
    site = "/opt/venv/lib/python3.11/site-packages"
    parts = [f"{site}/{name}" for name in ("nvidia", "triton", "torch", "cuda", "faiss", "scipy")]
    each = 'for d in "$@"; do du -sm "$d"; done'
    du = engine(
        "run", "--rm", "--network", "none", "--entrypoint", "sh", TAG, "-c", each, "du", "/opt/venv", *parts
    )
    return {
        "tag": TAG,
        "size_bytes": info["Size"],
        "size_gb": round(info["Size"] / 1e9, 2),
        "layers": len(info.get("RootFS", {}).get("Layers", [])),
        "base": BASE,
        "base_size_bytes": json.loads(engine("image", "inspect", BASE).stdout)[0]["Size"],
        "python": versions[0],
        "torch": versions[1],
        "uid": int(user),
        "largest_mb": {
            line.split()[1].removeprefix(site + "/"): int(line.split()[0]) for line in du.stdout.splitlines()
        },
        "env": [
            e for e in config.get("Env", []) if e.split("=")[0] in ("CAPSEARCH_ARTIFACTS", "HF_HUB_OFFLINE")
        ],
        "healthcheck": info.get("Healthcheck") or config.get("Healthcheck"),
        "entrypoint": config.get("Entrypoint"),
        "volumes": sorted(config.get("Volumes") or {}),
        "exposed_ports": sorted(config.get("ExposedPorts") or {}),
    }


def lint(hadolint: str | None) -> dict[str, Any]:
    exe = hadolint or shutil.which("hadolint")
    if not exe:
        return {"tool": None, "result": "hadolint not found"}
    run = sh(exe, "--no-color", str(REPO / "Dockerfile"), check=False)
    return {
        "tool": sh(exe, "--version").stdout.strip(),
        "exit_code": run.returncode,
        "findings": run.stdout.splitlines(),
    }


def get(url: str, token: str | None = None, timeout: float = 10) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
    except (OSError, urllib.error.URLError):
        return 0, b""


def wait_for(url: str, deadline_s: float, start: float, token: str | None = None) -> float | None:
    """Seconds from ``start`` until ``url`` answers 200, or None at the deadline or when the container exits."""
    while time.monotonic() - start < deadline_s:
        if get(url, token, timeout=2)[0] == 200:
            return round(time.monotonic() - start, 1)
        state = engine("inspect", "--format", "{{.State.Running}}", NAME, check=False).stdout.strip()
        if state != "true":
            return None
        time.sleep(0.5)
    return None


def start(port: int, token: str) -> float:
    engine("rm", "-f", NAME, check=False)
    engine(
        "run",
        "-d",
        "--name",
        NAME,
        "-p",
        f"127.0.0.1:{port}:8000",
        "-v",
        f"{VOLUME}:/data",
        "-e",
        f"CAPSEARCH_TOKEN={token}",
        "--read-only",
        "--tmpfs",
        "/tmp",
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
        TAG,
    )
    return time.monotonic()


def search(base: str, token: str) -> dict[str, Any]:
    url = f"{base}/v1/search?q={urllib.parse.quote(QUERY)}"
    unauthorised = get(url)[0]
    began = time.monotonic()
    status, body = get(url, token)
    result: dict[str, Any] = {
        "query": QUERY,
        "status": status,
        "status_without_token": unauthorised,
        "ms": round((time.monotonic() - began) * 1000, 1),
    }
    try:
        payload = json.loads(body)
    except ValueError:
        return {**result, "body": body[:300].decode(errors="replace")}
    hits = payload.get("hits") or []
    top = [{key: hit.get(key) for key in ("rank", "score", "id", "caption")} for hit in hits[:3]]
    return {
        **result,
        "hits": len(hits),
        "top": top,
        "model_id": payload.get("model_id"),
        "index": payload.get("index"),
        "timings": payload.get("timings"),
    }


def seed_volume(model_dir: Path) -> dict[str, Any]:
    """Copy a trained demo model into the empty volume: the first start then skips the training (which the
    demo's 240-step minimum makes long on a busy CPU) but still prepares the scenes, embeds and indexes."""
    engine("volume", "create", VOLUME)
    mount = Path(engine("volume", "inspect", "--format", "{{.Mountpoint}}", VOLUME).stdout.strip())
    target = mount / "models" / model_dir.name
    shutil.copytree(model_dir, target)
    sh("chown", "-R", "10001:10001", str(mount))
    return {"seeded_model": model_dir.name, "files": sorted(p.name for p in target.iterdir())}


def serve_run(port: int, seed: Path | None) -> dict[str, Any]:
    """First start on an empty volume (or one seeded with a trained demo model), a search, the HEALTHCHECK,
    a graceful stop and a restart on the filled volume."""
    token = secrets.token_hex(16)
    base = f"http://127.0.0.1:{port}"
    engine("volume", "rm", "-f", VOLUME, check=False)
    seeded = seed_volume(seed) if seed else None
    began = start(port, token)
    healthz = wait_for(f"{base}/healthz", 120, began)
    ready = wait_for(f"{base}/readyz", 2400, began, token)
    result: dict[str, Any] = {
        "first_start": {"volume": seeded or "empty", "healthz_s": healthz, "readyz_s": ready}
    }
    if ready is None:
        result["logs_tail"] = engine("logs", "--tail", "30", NAME, check=False).stdout.splitlines()
        engine("rm", "-f", NAME, check=False)
        return result
    result["search"] = search(base, token)
    result["healthcheck_exit_code"] = engine("healthcheck", "run", NAME, check=False).returncode
    stop_began = time.monotonic()
    engine("stop", "-t", "30", NAME, timeout=60)
    result["graceful_stop_s"] = round(time.monotonic() - stop_began, 1)
    result["exit_code_after_stop"] = int(engine("inspect", "--format", "{{.State.ExitCode}}", NAME).stdout)
    began = time.monotonic()
    engine("start", NAME)
    result["restart_on_filled_volume"] = {"readyz_s": wait_for(f"{base}/readyz", 600, began, token)}
    result["search_after_restart"] = search(base, token)
    engine("rm", "-f", NAME, timeout=60)
    return result


def demo_run() -> dict[str, Any]:
    """The image's capsearch runs the whole demo (prepare, train, index, recall, a search) on an empty volume."""
    engine("volume", "rm", "-f", VOLUME, check=False)
    began = time.monotonic()
    run = engine(
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        f"{VOLUME}:/data",
        "--read-only",
        "--tmpfs",
        "/tmp",
        "--cap-drop",
        "ALL",
        "--entrypoint",
        "capsearch",
        TAG,
        "demo",
        timeout=1800,
        check=False,
    )
    return {
        "command": "capsearch demo",
        "exit_code": run.returncode,
        "seconds": round(time.monotonic() - began, 1),
        "output_tail": run.stdout.splitlines()[-12:],
    }


def has_serve() -> bool:
    probe = engine(
        "run", "--rm", "--network", "none", "--entrypoint", "capsearch", TAG, "serve", "--help", check=False
    )
    return probe.returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-build", action="store_true", help="measure the image already built")
    parser.add_argument("--port", type=int, default=18000, help="host port (bound to 127.0.0.1)")
    parser.add_argument("--hadolint", help="the hadolint binary (default: on PATH)")
    parser.add_argument("--out", type=Path, default=OUT, help="the results file (default: %(default)s)")
    parser.add_argument("--seed-model", type=Path, help="a trained demo model dir to put in the volume first")
    parser.add_argument(
        "--facts-only", action="store_true", help="redo the probes, image facts and lint of the last run"
    )
    args = parser.parse_args()
    if args.facts_only:
        results = json.loads(args.out.read_text())
        latest = results["latest"]
        latest["sandbox"] = {**sandbox(), "probes": sandbox_probes()}
        latest["image"], latest["lint"] = image_facts(), lint(args.hadolint)
        results["runs"][-1] = latest
        write_json(args.out, results)
        print(json.dumps(latest, indent=2))
        return
    run: dict[str, Any] = {"commit": commit(), "machine": machine()}
    run["build"] = None if args.no_build else build()
    run["sandbox"] = {**sandbox(), "probes": sandbox_probes()}
    run["image"] = image_facts()
    run["lint"] = lint(args.hadolint)
    if has_serve():
        run["serve"] = serve_run(args.port, args.seed_model)
    else:
        run["serve"] = "not in this image: `capsearch serve` is not on this branch yet"
        run["demo"] = demo_run()
    run["machine"]["load_average_1m_end"] = os.getloadavg()[0]
    write_json(args.out, {"latest": run, "runs": runs_log(args.out, run)[-5:]})
    print(json.dumps(run, indent=2))


if __name__ == "__main__":
    main()
