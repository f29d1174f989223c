"""Load test of ``capsearch serve`` with locust (headless, FastHttpUser, loopback only, bounded).

For each model (ViT-B-32 with random init: its text tower is where micro-batching pays; and the best
offline model, ``capsearch-lit-lite2`` trained on Flickr8k) the script starts ``capsearch serve`` on
127.0.0.1 over the Flickr8k test split (1,000 images, exact index), times the same kind of queries in
process (``Retriever.search_text``, no HTTP), then runs locust at 1, 8 and 32 users, each with
distinct queries (Flickr8k captions never asked before: no cache hit) and with repeated ones (20 queries
asked over and over: the result cache answers). Each phase is bounded by time and by requests. Reported
per phase: requests, errors, throughput, p50/p95/p99/mean latency as locust's clients saw them (locust's
float response times, not its rounded buckets), and the server's own counts of text forward passes and
encoded queries (its mean micro-batch size). The client and the server share this machine's CPUs, and the
machine may be shared with other work: the JSON records the CPU model and the load average around each
phase.

Usage (the full run, about 10 minutes on a 2-core machine, most of it the first start's embedding):
    .venv/bin/python scripts/load_test_service.py
Smoke test (seconds per phase):
    .venv/bin/python scripts/load_test_service.py --models vit --users 1 4 --duration-s 3 --max-requests 60
A photo library instead (``--library``): the 1,000 test images as library ``flickr8k-test`` (links under
artifacts/cache, half in ``a/`` and half in ``b/``, embedded by the offline model on the first run), served
with ``capsearch serve --library``; the distinct-query phases run again with the ``folder`` filter on
``a/`` (the filtered path: an ``IDSelector`` over half the ids). Writes
artifacts/results/load_test_service_library.json.
locust is in the ``load`` extra (``pip install -e '.[load]'``). The dataset is prepared from
../shared/data/flickr8k when missing. Writes artifacts/results/load_test_service.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchlib import FLICKR8K, commit, flickr8k_dataset, machine_info  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
REPEATED = 20
LIBRARY = "flickr8k-test"
PHOTOS_FOLDER = "load-test-photos"  # under the artifacts root's cache/
GOALS = {
    "http_overhead_p50_ms_at_1_user": 3.0,
    "vit_32_users_distinct_speedup_over_1_user": 3.0,
    "vit_32_users_distinct_p99_ms": 500.0,
    "repeated_rps": 500.0,
}


# -- locust phase (a child process: locust monkeypatches the interpreter with gevent) -------------------------
def run_phase(spec: dict[str, Any]) -> dict[str, Any]:
    """One headless locust run: ``users`` FastHttpUsers posting searches until the time or request bound."""
    import gevent
    from locust import FastHttpUser, constant, task
    from locust.env import Environment

    queries: list[str] = spec["queries"]
    state = {"next": 0, "sent": 0}
    times: list[float] = []
    errors: list[str] = []

    class Searcher(FastHttpUser):
        host = spec["url"]
        wait_time = constant(0)

        @task
        def search(self) -> None:
            if state["sent"] >= spec["max_requests"]:
                gevent.sleep(0.01)
                return
            state["sent"] += 1
            query = queries[state["next"] % len(queries)]
            state["next"] += 1
            body = {"text": query, "k": spec["k"], **spec["extra"]}
            with self.client.post("/v1/search", json=body, name="search", catch_response=True) as r:
                if r.status_code != 200:
                    r.failure(f"status {r.status_code}")

    def on_request(response_time: float, exception: Exception | None, **_: Any) -> None:
        times.append(response_time)
        if exception is not None:
            errors.append(str(exception)[:200])

    env = Environment(user_classes=[Searcher])
    env.events.request.add_listener(on_request)
    runner = env.create_local_runner()
    start = time.perf_counter()
    runner.start(spec["users"], spawn_rate=spec["users"])
    deadline = start + spec["duration_s"]
    while time.perf_counter() < deadline and len(times) < spec["max_requests"]:
        gevent.sleep(0.02)
    runner.quit()
    elapsed = time.perf_counter() - start
    return {"requests": len(times), "errors": len(errors), "error_examples": errors[:3], "seconds": elapsed,
            "times_ms": times}  # fmt: skip


# -- parent -------------------------------------------------------------------------------------------------
def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phase", help=argparse.SUPPRESS)
    parser.add_argument("--dataset", default="flickr8k")
    parser.add_argument("--flickr8k", type=Path, default=FLICKR8K)
    parser.add_argument("--models", nargs="+", default=["vit", "lit"], choices=("vit", "lit"))
    parser.add_argument(
        "--lit-model",
        help="the offline model's checkpoint (default: the newest model trained on the dataset)",
    )
    parser.add_argument("--users", nargs="+", type=int, default=[1, 8, 32])
    parser.add_argument("--duration-s", type=float, default=20.0, help="seconds per phase (default 20)")
    parser.add_argument("--max-requests", type=int, default=4000, help="requests per phase (default 4000)")
    parser.add_argument("--in-process-queries", type=int, default=200)
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--batch-window-ms", type=float, default=3.0)
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument(
        "--library", action="store_true", help="serve the test images as a photo library (the offline model)"
    )
    return parser.parse_args()


def photos_folder() -> Path:
    from core.paths import artifacts_root

    return artifacts_root() / "cache" / PHOTOS_FOLDER


def make_library(data: Any, model: str) -> None:
    """Library ``LIBRARY`` over links to the test split's images (half in ``a/``, half in ``b/``), made and
    embedded with ``model`` on the first run, reused afterwards."""
    from core.library.home import library_names

    if LIBRARY in library_names():
        return
    photos = photos_folder()
    for i, record in enumerate(data.split("test")):
        link = photos / ("a" if i % 2 == 0 else "b") / Path(record.image).name
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.symlink_to(data.image_path(record).resolve())
    capsearch = str(Path(sys.executable).with_name("capsearch"))
    argv = [capsearch, "library", "add", str(photos), "--name", LIBRARY, "--model", model, "--device", "cpu"]
    subprocess.run(argv, check=True)


def need_locust() -> None:
    if importlib.util.find_spec("locust") is None:
        sys.exit(
            "locust is missing: install the load extra (`pip install -e '.[load]'`, or `pip install locust`)"
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def lit_model(args: argparse.Namespace) -> str:
    from core.models.catalogue import default_model

    if args.lit_model:
        return str(args.lit_model)
    return str(default_model(args.dataset))


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except OSError as exc:
        return getattr(exc, "code", 0) or 0, ""


def start_server(args: argparse.Namespace, model: str, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    argv = [str(Path(sys.executable).with_name("capsearch")), "serve"]
    if args.library:
        argv += ["--library", LIBRARY, "--device", "cpu"]
    else:
        argv += ["--dataset", args.dataset, "--model", model, "--split", "test", "--index", "exact"]
        argv += ["--precision", args.precision, "--device", "cpu"]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--batch-window-ms", str(args.batch_window_ms)]
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("CAPSEARCH_TOKEN", None)
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=out, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 1800  # the first start embeds the test split
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"capsearch serve exited {proc.returncode}: see {log}")
        if get(f"{url}/readyz")[0] == 200:
            return proc, url
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    sys.exit(f"capsearch serve was not ready in time: see {log}")


def server_batches(url: str) -> tuple[float, float]:
    """(text forward passes, text queries encoded) so far, from the server's /metrics."""
    text = get(f"{url}/metrics")[1]

    def total(name: str) -> float:
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " "))

    return total("capsearch_encode_batch_size_count"), total("capsearch_encode_batch_size_sum")


def latency(ms: list[float]) -> dict[str, float]:
    import numpy as np

    if not ms:
        return {}
    values = np.asarray(ms, dtype=np.float64)
    out = {f"p{q}": round(float(np.percentile(values, q)), 3) for q in (50, 95, 99)}
    return {**out, "mean": round(statistics.fmean(ms), 3)}


def phase(
    url: str, users: int, queries: list[str], args: argparse.Namespace, extra: dict[str, str] | None = None
) -> dict[str, Any]:
    spec = {"url": url, "users": users, "queries": queries, "duration_s": args.duration_s,
            "max_requests": args.max_requests, "k": args.k, "extra": extra or {}}  # fmt: skip
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(spec, fh)
    before, load_before = server_batches(url), os.getloadavg()[0]
    try:
        proc = subprocess.run([sys.executable, __file__, "--phase", fh.name], capture_output=True, text=True,
                              timeout=args.duration_s + 120)  # fmt: skip
    finally:
        os.unlink(fh.name)
    if proc.returncode != 0:
        sys.exit(f"locust phase failed:\n{proc.stderr[-3000:]}")
    raw = json.loads(proc.stdout.strip().splitlines()[-1])
    passes, encoded = (a - b for a, b in zip(server_batches(url), before, strict=True))
    return {
        "users": users,
        **({"filters": extra} if extra else {}),
        "requests": raw["requests"],
        "errors": raw["errors"],
        "error_examples": raw["error_examples"],
        "seconds": round(raw["seconds"], 2),
        "rps": round(raw["requests"] / raw["seconds"], 1) if raw["seconds"] else 0.0,
        "latency_ms": latency(raw["times_ms"]),
        "server_text_forward_passes": passes,
        "server_text_queries_encoded": encoded,
        "mean_batch": round(encoded / passes, 2) if passes else None,
        "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }


def in_process_ms(data: Any, model: str, queries: list[str], args: argparse.Namespace) -> dict[str, float]:
    """``Retriever.search_text`` (a library: ``LibrarySearcher.search_text``) on the same kind of queries in
    this process (the server idles meanwhile)."""
    from core.models.loading import load_model
    from core.search.library_search import LibrarySearcher
    from core.search.retriever import Retriever

    retriever: Any
    if args.library:
        retriever = LibrarySearcher.open(LIBRARY, device="cpu")
    else:
        lm = load_model(model, device="cpu", precision=args.precision)
        retriever = Retriever.open(data, lm, split="test", index="exact")
    retriever.search_text("a warm-up query", args.k)
    times = []
    for query in queries:
        start = time.perf_counter()
        retriever.search_text(query, args.k)
        times.append(1000 * (time.perf_counter() - start))
    return latency(times)


def query_pools(data: Any, phases: int, per_phase: int, seed: int = 0) -> list[list[str]]:
    """Disjoint lists of distinct Flickr8k captions (train, then val): one per phase plus one in process."""
    captions = list(
        dict.fromkeys(c for split in ("train", "val") for rec in data.split(split) for c in rec.captions)
    )
    random.Random(seed).shuffle(captions)
    if len(captions) < phases * per_phase:
        per_phase = len(captions) // phases
    return [captions[i * per_phase : (i + 1) * per_phase] for i in range(phases)]


def measure_model(label: str, model: str, data: Any, args: argparse.Namespace) -> dict[str, Any]:
    pools = query_pools(data, 1 + len(args.users), max(args.max_requests, args.in_process_queries))
    from core.paths import results_dir

    log = results_dir() / f"load_test_service_{label}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"[{label}] starting capsearch serve --model {model} (the first start embeds the test split)")
    proc, url = start_server(args, model, log)
    try:
        ready = json.loads(get(f"{url}/readyz")[1])
        in_process = in_process_ms(data, model, pools[0][: args.in_process_queries], args)
        print(f"[{label}] in process: {in_process}")
        distinct, repeated = [], []
        for i, users in enumerate(args.users):
            distinct.append(phase(url, users, pools[1 + i], args))
            print(
                f"[{label}] distinct, {users} users: {distinct[-1]['rps']} req/s, {distinct[-1]['latency_ms']}"
            )
        hot = pools[0][-REPEATED:]
        for query in hot:  # warm the result cache
            urllib.request.urlopen(urllib.request.Request(
                f"{url}/v1/search", data=json.dumps({"text": query, "k": args.k}).encode(),
                headers={"Content-Type": "application/json"}), timeout=60).read()  # fmt: skip
        for users in args.users:
            repeated.append(phase(url, users, hot, args))
            print(
                f"[{label}] repeated, {users} users: {repeated[-1]['rps']} req/s, {repeated[-1]['latency_ms']}"
            )
        filtered = []
        if args.library:
            extra = {"folder": str(photos_folder() / "a")}
            for i, users in enumerate(args.users):
                filtered.append(phase(url, users, pools[1 + i][::-1], args, extra))
                print(f"[{label}] distinct, folder filter, {users} users: {filtered[-1]['rps']} req/s, "
                      f"{filtered[-1]['latency_ms']}")  # fmt: skip
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    one = distinct[0] if distinct and distinct[0]["users"] == 1 else None
    return {
        "model": model,
        "model_id": ready.get("model_id"),
        "in_process_search_ms": in_process,
        "http_overhead_p50_ms_at_1_user": round(one["latency_ms"]["p50"] - in_process["p50"], 3)
        if one
        else None,
        "distinct": distinct,
        "repeated": repeated,
        **({"distinct_folder_filter": filtered} if filtered else {}),
        "server_log": log.name,
    }


def goals(models: dict[str, Any]) -> dict[str, Any]:
    """Each goal of the issue with the measured value and whether it is met (ViT-B-32 rows)."""
    vit = models.get("vit")
    if not vit or not vit["distinct"]:
        return {}
    by_users = {p["users"]: p for p in vit["distinct"]}
    out: dict[str, Any] = {"http_overhead_p50_ms_at_1_user": vit["http_overhead_p50_ms_at_1_user"]}
    if 1 in by_users and 32 in by_users:
        out["vit_32_users_distinct_speedup_over_1_user"] = round(by_users[32]["rps"] / by_users[1]["rps"], 2)
        out["vit_32_users_distinct_p99_ms"] = by_users[32]["latency_ms"].get("p99")
        out["vit_32_users_distinct_errors"] = by_users[32]["errors"]
    out["repeated_rps"] = max((p["rps"] for p in vit["repeated"]), default=None)
    met = {}
    for name, value in out.items():
        if name in GOALS and value is not None:
            lower_is_better = name.endswith("_ms") or name.startswith("http_overhead")
            met[name] = value <= GOALS[name] if lower_is_better else value >= GOALS[name]
    return {"measured": out, "targets": GOALS, "met": met}


def main() -> None:
    args = arguments()
    if args.phase:
        spec = json.loads(Path(args.phase).read_text())
        print(json.dumps(run_phase(spec)))
        return
    need_locust()
    from core.atomic import write_json
    from core.paths import results_dir

    started = machine_info()
    data = flickr8k_dataset(args.dataset, args.flickr8k)
    names = {"vit": "ViT-B-32", "lit": lit_model(args)}
    if args.library:
        args.models = ["lit"]
        make_library(data, names["lit"])
    models = {label: measure_model(label, names[label], data, args) for label in args.models}
    result = {
        "benchmark": "capsearch serve under locust (FastHttpUser, headless, loopback), POST /v1/search",
        "commit": commit(),
        "dataset": data.name,
        **({"library": LIBRARY, "photos": len(data.split("test"))} if args.library else {}),
        "split": "test",
        "index": "exact",
        "k": args.k,
        "precision": args.precision,
        "batch_window_ms": args.batch_window_ms,
        "bounds": {"duration_s_per_phase": args.duration_s, "max_requests_per_phase": args.max_requests},
        "users": args.users,
        "note": "client and server share this machine's CPUs; other work may have run at the same time "
        "(see load_average_1min before and after each phase)",
        "models": models,
        "goals": goals(models),
        "machine": {**started, "load_average_at_end": list(os.getloadavg())},
    }
    out = results_dir() / ("load_test_service_library.json" if args.library else "load_test_service.json")
    write_json(out, result)
    print(f"-> {out}")


if __name__ == "__main__":
    main()
