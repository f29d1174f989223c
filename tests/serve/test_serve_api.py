"""Every endpoint of the service, and the API giving what ``capsearch search --json`` gives."""

from __future__ import annotations

import base64
import json
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from core.cli import build_parser
from core.cli.console import main
from core.embed.engine import encode_text_query
from core.serve.app import create_app
from core.serve.dataset import ServedDataset
from core.serve.engine import Engine
from core.serve.metrics import Metrics
from core.serve.settings import Settings


def _cli_search(capsys, data, *argv: str) -> dict:
    common = ["--dataset", str(data.dir), "--model", "capsearch-tiny", "--device", "cpu", "--json"]
    code = main(build_parser(), ["search", *argv, *common])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads(out)


def _same_hits(api: list[dict], cli: list[dict]) -> None:
    assert [h["id"] for h in api] == [h["id"] for h in cli]
    assert np.allclose([h["score"] for h in api], [h["score"] for h in cli], atol=1e-5)
    assert [h["caption"] for h in api] == [h["caption"] for h in cli]


@pytest.mark.parametrize(
    ("cli_args", "body"),
    [
        (("dog + snow - night", "-k", "7"), {"text": "dog + snow - night", "k": 7}),
        (
            ("a red circle", "--direction", "text-text", "-k", "5"),
            {"text": "a red circle", "direction": "captions", "k": 5},
        ),
        (("--image", "ID", "-k", "4"), {"image_id": "ID", "k": 4}),
        (("--image", "ID", "--direction", "image-text"), {"image_id": "ID", "direction": "captions"}),
    ],
)
def test_api_equals_cli_search_json(capsys, client, synthetic_small, cli_args, body) -> None:
    image_id = synthetic_small.split("test")[3].id
    cli_args = tuple(image_id if a == "ID" else a for a in cli_args)
    body = {k: image_id if v == "ID" else v for k, v in body.items()}
    cli = _cli_search(capsys, synthetic_small, *cli_args)
    api = client.post("/v1/search", json=body).json()
    assert api["model_id"] == cli["model_id"] and api["index"] == cli["index"] and api["k"] == cli["k"]
    _same_hits(api["hits"], cli["hits"])


def test_a_split_caption_and_get_search_equal_the_cli(capsys, client, synthetic_small) -> None:
    caption = synthetic_small.split("test")[0].captions[0]
    cli = _cli_search(capsys, synthetic_small, caption, "-k", "5")
    r = client.get("/v1/search", params={"q": caption, "k": 5})
    assert r.status_code == 200 and r.headers["cache-control"] == "private, no-cache"
    _same_hits(r.json()["hits"], cli["hits"])
    again = client.get(
        "/v1/search", params={"q": caption, "k": 5}, headers={"If-None-Match": r.headers["etag"]}
    )
    assert again.status_code == 304 and again.content == b""


def test_health_ready_catalogue(client, engine) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["model_id"] == "capsearch-tiny@random"
    (ds,) = client.get("/v1/datasets").json()
    assert (
        ds["name"] == "synthetic"
        and ds["split"] == "test"
        and ds["images"] == engine.ready().served.retriever.size
    )
    (model,) = client.get("/v1/models").json()
    assert model["model_id"] == "capsearch-tiny@random" and model["embed_dim"] == 64
    assert model["precision"] == model["computed_in"] == engine.ready().served.lm.precision == "fp32"


def test_not_ready_until_loaded(synthetic_small, tiny_model) -> None:
    settings = Settings(dataset=str(synthetic_small.dir), reload_check_s=0)
    engine = Engine(settings, Metrics(), ServedDataset.opener(synthetic_small, tiny_model, "test", "auto"))
    client = TestClient(create_app(settings, engine))
    r = client.get("/readyz")
    assert r.status_code == 503 and r.json()["ready"] is False and "loading" in r.json()["reason"]
    r = client.get("/v1/search", params={"q": "dog"})
    assert r.status_code == 503 and r.json()["error"] == "not_ready"
    with client:  # the lifespan loads the engine in the background
        deadline = time.monotonic() + 60
        while client.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.get("/v1/search", params={"q": "dog"}).status_code == 200
    assert client.get("/v1/search", params={"q": "a cat"}).status_code == 200  # the caller's engine lives on
    engine.close()
    r = client.get("/v1/search", params={"q": "a closed engine"})
    assert r.status_code == 503 and "stopping" in r.json()["message"]


def test_both_directions_and_min_score(client) -> None:
    body = client.post("/v1/search", json={"text": "a blue square", "direction": "both", "k": 4}).json()
    assert len(body["hits"]) == 4 and len(body["caption_hits"]) == 4
    assert all(h["caption"] is None for h in body["hits"]) and all(h["caption"] for h in body["caption_hits"])
    cut = (body["hits"][1]["score"] + body["hits"][2]["score"]) / 2
    kept = client.post("/v1/search", json={"text": "a blue square", "k": 4, "min_score": cut}).json()["hits"]
    assert [h["id"] for h in kept] == [h["id"] for h in body["hits"][:2]]
    assert all(h["score"] >= cut for h in kept)
    timings = body["timings"]
    assert timings["total_ms"] >= timings["encode_ms"] + timings["search_ms"] - 1e-3


def test_image_queries_upload_base64_and_embedding(client, synthetic_small) -> None:
    record = synthetic_small.split("test")[2]
    raw = synthetic_small.image_path(record).read_bytes()
    upload = client.post("/v1/search", files={"file": ("q.png", raw, "image/png")}, data={"k": "3"}).json()
    assert upload["query_kind"] == "image" and upload["hits"][0]["id"] == record.id
    assert upload["hits"][0]["score"] == pytest.approx(1.0, abs=1e-4)
    b64 = client.post("/v1/search", json={"image_base64": base64.b64encode(raw).decode(), "k": 3}).json()
    assert b64["hits"] == upload["hits"]
    vector = client.post("/v1/embed", json={"texts": ["a green triangle"]}).json()["text_embeddings"][0]
    by_vector = client.post("/v1/search", json={"embedding": [2 * v for v in vector], "k": 5}).json()
    by_text = client.post("/v1/search", json={"text": "a green triangle", "k": 5}).json()
    _same_hits(by_vector["hits"], by_text["hits"])


def test_a_file_path_in_a_query_is_text_not_a_file_read(client, synthetic_small, engine) -> None:
    """Through the API an image term is an id of the split, never a path on the server."""
    path = str(synthetic_small.image_path(synthetic_small.split("test")[0]))
    assert engine.ready().served.retriever.search_text(path, 1)[0].score == pytest.approx(
        1.0, abs=1e-4
    )  # the CLI reads it
    hits = client.post("/v1/search", json={"text": path, "k": 1}).json()["hits"]
    assert hits[0]["score"] < 0.99


def test_embed_matches_single_encoding(client, engine, synthetic_small) -> None:
    raw = synthetic_small.image_path(synthetic_small.split("test")[1]).read_bytes()
    body = client.post(
        "/v1/embed",
        json={
            "texts": ["a dog", "two red circles on the left"],
            "images_base64": [base64.b64encode(raw).decode()],
        },
    ).json()
    assert body["model_id"] == "capsearch-tiny@random" and body["dim"] == 64
    texts = np.asarray(body["text_embeddings"])
    assert np.allclose(np.linalg.norm(texts, axis=1), 1, atol=1e-5)
    assert np.allclose(
        texts[1],
        encode_text_query(engine.ready().served.retriever.lm, "two red circles on the left"),
        atol=1e-5,
    )
    row = engine.ready().served.retriever.records.index(synthetic_small.split("test")[1])
    assert np.allclose(
        body["image_embeddings"][0], engine.ready().served.retriever.embeddings.image_emb[row], atol=1e-4
    )


def test_images_and_thumbnails_with_validators(client, synthetic_small) -> None:
    record = synthetic_small.split("test")[0]
    r = client.get(f"/v1/images/{record.id}")
    assert r.status_code == 200 and r.content == synthetic_small.image_path(record).read_bytes()
    assert r.headers["content-type"] == "image/png" and r.headers["last-modified"] and r.headers["etag"]
    assert (
        client.get(f"/v1/images/{record.id}", headers={"If-None-Match": r.headers["etag"]}).status_code == 304
    )
    t = client.get(f"/v1/thumbnails/{record.id}", params={"size": 24})
    assert t.status_code == 200 and t.headers["content-type"] == "image/jpeg"
    from io import BytesIO

    assert max(Image.open(BytesIO(t.content)).size) <= 24
    assert t.headers["etag"] != r.headers["etag"]
    assert (
        client.get(
            f"/v1/thumbnails/{record.id}", params={"size": 24}, headers={"If-None-Match": t.headers["etag"]}
        ).status_code
        == 304
    )
    for size in (0, 15, 1025, "x"):
        assert client.get(f"/v1/thumbnails/{record.id}", params={"size": size}).status_code == 422


@pytest.mark.parametrize(
    "path",
    [
        "/v1/images/nope",
        "/v1/images/..%2F..%2F..%2Fetc%2Fpasswd",
        "/v1/images/../../etc/passwd",
        "/v1/thumbnails/%2Fetc%2Fpasswd",
        "/v1/images/%00",
    ],
)
def test_unknown_ids_and_traversal_are_404(client, path) -> None:
    r = client.get(path)
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    assert b"root:" not in r.content


def test_files_that_leave_the_dataset_are_404(
    client, engine, synthetic_small, tmp_path: Path, monkeypatch
) -> None:
    """A record pointing outside the image root, or a symlink in it that leaves it, is never served."""
    from dataclasses import replace

    outside = tmp_path / "secret.png"
    Image.new("RGB", (8, 8)).save(outside)
    records = list(engine.ready().served.retriever.records)
    link = synthetic_small.root / "link-out.png"
    link.symlink_to(outside)
    try:
        monkeypatch.setattr(
            engine.ready().served.retriever,
            "records",
            [
                replace(records[0], image="link-out.png"),
                replace(records[1], image=str(outside)),
                replace(records[2], image="../" * 12 + str(outside).lstrip("/")),
                *records[3:],
            ],
        )
        for record in engine.ready().served.retriever.records[:3]:
            for url in (f"/v1/images/{record.id}", f"/v1/thumbnails/{record.id}"):
                assert client.get(url).status_code == 404, url
        assert client.get(f"/v1/images/{records[3].id}").status_code == 200
    finally:
        link.unlink()


def test_metrics(client) -> None:
    client.get("/v1/search", params={"q": "metrics probe", "k": 2})
    client.get("/v1/search", params={"q": "metrics probe", "k": 2})
    text = client.get("/metrics").text
    for name in (
        'capsearch_http_requests_total{endpoint="/v1/search",method="GET",status="200"}',
        'capsearch_http_request_seconds_bucket{endpoint="/v1/search"',
        "capsearch_encode_seconds_bucket",
        "capsearch_search_seconds_bucket",
        "capsearch_encode_batch_size_bucket",
        'capsearch_cache_hit_ratio{cache="result"}',
        "capsearch_encode_queue_depth",
        "capsearch_ready 1.0",
    ):
        assert name in text, name


def test_openapi_documents_every_endpoint_with_examples(client) -> None:
    schema = client.get("/openapi.json").json()
    paths = set(schema["paths"])
    assert {
        "/healthz",
        "/readyz",
        "/v1/datasets",
        "/v1/models",
        "/v1/search",
        "/v1/embed",
        "/metrics",
    } <= paths
    assert {"/v1/images/{image_id}", "/v1/thumbnails/{image_id}"} <= paths
    content = schema["paths"]["/v1/search"]["post"]["requestBody"]["content"]
    assert {"application/json", "multipart/form-data"} <= set(content)
    assert schema["components"]["schemas"]["SearchRequest"]["examples"]
    assert schema["components"]["schemas"]["SearchResponse"]["examples"]


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (("--split", "nope", "--model", "capsearch-tiny"), "no split"),
        (("--model", "capsearch-tiny", "--port", "0"), "--port"),
        (("--model", "capsearch-tiny", "--index", "flat"), "invalid choice"),
    ],
)
def test_serve_refuses_bad_options_before_starting(capsys, synthetic_small, argv, says) -> None:
    with pytest.raises(SystemExit) if says == "invalid choice" else nullcontext():
        code = main(build_parser(), ["serve", "--dataset", str(synthetic_small.dir), *argv])
        assert code == 2
    assert says in capsys.readouterr().err


def test_no_dataset_serves_the_demo(monkeypatch, synthetic_small, tiny_model) -> None:
    """Without --dataset the engine prepares/trains the demo first (core.demo.ensure_demo, stubbed here
    with the tiny dataset and model: the real one trains for a minute) and reports progress until ready."""
    import core.demo

    calls = []

    def fake_demo(reporter):
        calls.append(reporter)
        reporter.log("training the demo model")
        return synthetic_small, "capsearch-tiny"

    monkeypatch.setattr(core.demo, "ensure_demo", fake_demo)
    engine = Engine(Settings(reload_check_s=0), Metrics())
    engine.load()
    try:
        served = engine.ready().served
        assert calls and served.describe()["dataset"] == "synthetic"
        assert served.model_id == "capsearch-tiny@random" and engine.reason is None
    finally:
        engine.close()


def test_the_engine_lets_its_threads_reuse_freed_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    import core.serve.engine

    calls: list[None] = []
    monkeypatch.setattr(core.serve.engine, "share_one_arena", lambda: calls.append(None))
    Engine(Settings(reload_check_s=0), Metrics()).close()
    assert len(calls) == 1  # before it starts its loading and model threads (core.embed.heap)
