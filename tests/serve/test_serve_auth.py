"""Auth on/off matrix (every endpoint but /healthz needs the bearer token when one is set), CORS, and the
access log (no query text unless asked)."""

from __future__ import annotations

import json

import pytest

TOKEN = "s3cret-token"
GETS = ["/readyz", "/v1/datasets", "/v1/models", "/v1/search?q=dog", "/metrics", "/openapi.json", "/docs"]


@pytest.mark.parametrize("path", GETS)
@pytest.mark.parametrize(
    ("token", "header", "allowed"),
    [
        (None, None, True),
        (None, f"Bearer {TOKEN}", True),
        (TOKEN, None, False),
        (TOKEN, "Bearer wrong", False),
        (TOKEN, f"Bearer {TOKEN}x", False),
        (TOKEN, f"bearer{TOKEN}", False),
        (TOKEN, TOKEN, False),
        (TOKEN, f"Bearer {TOKEN}", True),
    ],
)
def test_auth_matrix(make_client, path, token, header, allowed) -> None:
    client = make_client(token=token)
    r = client.get(path, headers={"Authorization": header} if header else {})
    if allowed:
        assert r.status_code == 200, r.text
    else:
        assert r.status_code == 401 and r.json()["error"] == "unauthorized"
        assert r.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("token", [None, TOKEN])
def test_healthz_is_always_open(make_client, token) -> None:
    assert make_client(token=token).get("/healthz").status_code == 200


def test_posts_and_files_need_the_token(make_client, synthetic_small) -> None:
    client = make_client(token=TOKEN)
    image_id = synthetic_small.split("test")[0].id
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for method, url, kwargs in [
        ("post", "/v1/search", {"json": {"text": "dog"}}),
        ("post", "/v1/embed", {"json": {"texts": ["dog"]}}),
        ("get", f"/v1/images/{image_id}", {}),
        ("get", f"/v1/thumbnails/{image_id}", {}),
    ]:
        assert getattr(client, method)(url, **kwargs).status_code == 401
        assert getattr(client, method)(url, headers=auth, **kwargs).status_code == 200
    # a refused request reads no body: an oversized one is still 401, not 413
    assert client.post("/v1/search", content=b"\0" * 30_000_000).status_code == 401


def test_cors_is_off_unless_an_origin_is_given(make_client) -> None:
    origin = "https://app.example"
    off = make_client().get("/healthz", headers={"Origin": origin})
    assert "access-control-allow-origin" not in off.headers
    on = make_client(cors_origins=(origin,))
    assert on.get("/healthz", headers={"Origin": origin}).headers["access-control-allow-origin"] == origin
    other = on.get("/healthz", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers
    pre = on.options("/v1/search", headers={"Origin": origin, "Access-Control-Request-Method": "POST"})
    assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == origin


@pytest.mark.parametrize("log_queries", [False, True])
def test_access_log_leaves_out_queries_unless_asked(make_client, capsys, log_queries) -> None:
    client = make_client(log_queries=log_queries)
    capsys.readouterr()
    client.get("/v1/search", params={"q": "secret words one"})
    client.post("/v1/search", json={"text": "secret words two"})
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines() if line.startswith("{")]
    searches = [e for e in lines if e["endpoint"] == "/v1/search"]
    assert len(searches) == 2 and all(e["status"] == 200 and e["ms"] >= 0 for e in searches)
    text = json.dumps(lines)
    assert ("secret" in text) is log_queries
    if log_queries:
        assert searches[1]["query"] == "secret words two"
