"""``capsearch serve`` as a real uvicorn process on 127.0.0.1: same answers as ``capsearch search --json``,
concurrent requests share forward passes, SIGTERM drains a request in flight, start-up failures exit
non-zero with one line, and the search page works in a real browser (where chromium is installed)."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from serve_process import CLI, environment, free_port, serving, start

pytestmark = pytest.mark.slow
PREPARE = ("prepare", "synthetic", "--n", "60", "--seed", "0")
SERVE = ("--dataset", "synthetic", "--model", "capsearch-tiny", "--device", "cpu")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("serve") / "artifacts"
    subprocess.run([str(CLI), *PREPARE], env=environment(root), check=True, capture_output=True, timeout=300)
    return root


def _metric(text: str, name: str) -> float:
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))


def test_served_answers_equal_the_cli_and_concurrent_queries_share_passes(root: Path) -> None:
    query = "two red circles + a blue square - night"
    cli = subprocess.run(
        [str(CLI), "search", query, *SERVE, "-k", "6", "--json"],
        env=environment(root),
        capture_output=True,
        timeout=300,
    )
    expected = json.loads(cli.stdout)["hits"]
    with serving(root, *SERVE, "--batch-window-ms", "30", CAPSEARCH_TOKEN="tok") as server:
        auth = {"Authorization": "Bearer tok"}
        assert httpx.get(f"{server.url}/healthz").status_code == 200
        assert httpx.get(f"{server.url}/v1/models").status_code == 401
        hits = httpx.get(f"{server.url}/v1/search", params={"q": query, "k": 6}, headers=auth).json()["hits"]
        assert [h["id"] for h in hits] == [h["id"] for h in expected]
        assert all(abs(a["score"] - b["score"]) < 1e-5 for a, b in zip(hits, expected, strict=True))

        texts = [f"{i} green triangles at the top" for i in range(16)]
        barrier = threading.Barrier(len(texts))

        def ask(text: str) -> int:
            with httpx.Client(headers=auth) as c:
                barrier.wait()
                return c.post(f"{server.url}/v1/search", json={"text": text, "k": 3}).status_code

        def batches() -> tuple[float, float]:
            metrics = httpx.get(f"{server.url}/metrics", headers=auth).text
            return _metric(metrics, "capsearch_encode_batch_size_count"), _metric(
                metrics, "capsearch_encode_batch_size_sum"
            )

        before = batches()
        with ThreadPoolExecutor(len(texts)) as pool:
            assert set(pool.map(ask, texts)) == {200}
        passes, encoded = (a - b for a, b in zip(batches(), before, strict=True))
        # 16 concurrent queries, fewer passes (how many fewer depends on how the machine's load spreads the
        # arrivals: tests/serve/test_serve_batching.py pins the batching rule itself)
        assert encoded == len(texts) and passes < len(texts)
    log = server.log.read_text()
    assert '"endpoint": "/v1/search"' in log and "green triangles" not in log  # no query text logged


def test_sigterm_drains_a_request_in_flight(root: Path) -> None:
    server = start(root, *SERVE)
    try:
        server.wait_ready()
        body = json.dumps({"text": "a request in flight", "k": 2}).encode()
        head = (
            f"POST /v1/search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
            sock.sendall(head + body[:10])
            time.sleep(0.3)
            server.proc.send_signal(signal.SIGTERM)
            time.sleep(0.5)
            assert server.proc.poll() is None, "the server must wait for the request in flight"
            sock.sendall(body[10:])
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
        assert b'"hits"' in reply
        assert server.proc.wait(timeout=30) == 0
        with pytest.raises(httpx.TransportError):  # and it is gone
            httpx.get(f"{server.url}/healthz", timeout=2)
    finally:
        server.kill()


def test_serving_beyond_this_machine_without_a_token_warns(root: Path) -> None:
    run = lambda *args, **env: subprocess.run(  # noqa: E731
        [str(CLI), "serve", "--port", str(free_port()), "--dataset", "no-such-dataset", *args],
        env=environment(root, **env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    warned = run("--host", "0.0.0.0")
    assert warned.returncode == 2 and "warning: serving on 0.0.0.0 without a token" in warned.stderr
    for args, env in ((("--host", "127.0.0.1"), {}), (("--host", "0.0.0.0"), {"CAPSEARCH_TOKEN": "t"})):
        assert "warning" not in run(*args, **env).stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--dataset", "no-such-dataset"), "no-such-dataset"),
        (("--dataset", "synthetic", "--model", "no-such-model"), "no-such-model"),
    ],
)
def test_startup_failures_exit_non_zero_with_one_line(root: Path, args, says) -> None:
    proc = subprocess.run(
        [str(CLI), "serve", "--port", str(free_port()), *args],
        env=environment(root),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and says in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium here to run the search page in")
def test_the_search_page_searches_in_a_real_browser(root: Path) -> None:
    """Headless chromium loads the page of a real server (token and all), runs the search its link asks for
    and renders the hits the API gives, under the page's CSP (a refused script would render nothing)."""
    query = "two red circles"
    with serving(root, *SERVE, CAPSEARCH_TOKEN="tok") as server:
        expected = httpx.get(
            f"{server.url}/v1/search", params={"q": query, "k": 24}, headers=server.headers
        ).json()["hits"]

        def page(url: str) -> str:
            proc = subprocess.run(
                [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=20000"]
                + ["--dump-dom", url],
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert proc.returncode == 0, proc.stderr[-2000:]
            return proc.stdout

        locked = page(f"{server.url}/#q=two+red+circles")  # no token yet: the page asks for it
        assert 'id="token-form"' in locked and "needs its token" in locked and "<figure>" not in locked
    with serving(root, *SERVE) as server:
        dom = page(f"{server.url}/#q=two+red+circles")
    assert f"{len(expected)} hits in synthetic / test" in dom
    assert dom.count("<figure>") == len(expected) > 1
    names = [part.split("</div>")[0] for part in dom.split('<div class="name"')[1:]]
    assert [n.split(">", 1)[1] for n in names] == [h["id"] for h in expected]
