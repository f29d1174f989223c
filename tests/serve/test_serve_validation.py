"""Every bad request gets a 4xx with a JSON body that says what was wrong (and never a traceback)."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from core.serve.settings import MAX_BODY_BYTES

ID = "scene_0000"  # replaced by a real id of the split below


def _png(size: tuple[int, int] = (16, 16)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 10, 10)).save(out, format="PNG")
    return out.getvalue()


BAD_BODIES = [
    ({"text": "dog", "bogus": 1}, 422, "bogus"),
    ({"text": "dog", "k": 0}, 422, "k"),
    ({"text": "dog", "k": 1001}, 422, "k"),
    ({"text": "dog", "k": "many"}, 422, "k"),
    ({"text": "x" * 1001}, 422, "text"),
    ({"text": ""}, 422, "text"),
    ({"text": "   "}, 400, "empty"),
    ({"text": "dog +"}, 400, ""),
    ({"text": "1e999:dog"}, 400, "weight"),
    ({}, 400, "exactly one"),
    ({"text": "dog", "image_id": ID}, 400, "exactly one"),
    ({"text": "dog", "direction": "sideways"}, 422, "direction"),
    ({"text": "dog", "min_score": 2}, 422, "min_score"),
    ({"image_base64": "not base64!"}, 400, "base64"),
    ({"image_base64": base64.b64encode(b"plain text, not a picture").decode()}, 400, "not an image"),
    ({"image_id": "no-such-image"}, 404, "no image"),
    ({"embedding": [1.0, 2.0]}, 400, "dimension"),
    ({"embedding": [0.0] * 64}, 400, "zero"),
    ({"embedding": []}, 422, "embedding"),
    ({"text": "dog", "dataset": "other"}, 404, "searches"),
    ({"text": "dog", "split": "train"}, 404, "searches"),
    ([1, 2], 422, ""),
    ("just a string", 422, ""),
]


@pytest.mark.parametrize(("body", "status", "says"), BAD_BODIES)
def test_bad_search_bodies(client, synthetic_small, body, status, says) -> None:
    if isinstance(body, dict) and body.get("image_id") == ID:
        body = {**body, "image_id": synthetic_small.split("test")[0].id}
    r = client.post("/v1/search", json=body)
    assert r.status_code == status, r.text
    err = r.json()
    assert set(err) == {"error", "message", "hint", "errors"} and says.lower() in err["message"].lower()
    assert "Traceback" not in r.text


@pytest.mark.parametrize(
    ("content", "content_type", "status"),
    [
        (b"{not json", "application/json", 422),
        (b"", "application/json", 422),
        (b"text=dog", "application/x-www-form-urlencoded", 415),
        (b"dog", "text/plain", 415),
        (b"dog", None, 415),
        (b"--x\r\nbroken", "multipart/form-data; boundary=x", 400),
    ],
)
def test_bad_content(client, content, content_type, status) -> None:
    headers = {"content-type": content_type} if content_type else {}
    r = client.post("/v1/search", content=content, headers=headers)
    assert r.status_code == status, r.text
    assert r.json()["message"]


def test_multipart_cases(client) -> None:
    ok = client.post(
        "/v1/search", files={"file": ("a.png", _png(), "image/png")}, data={"k": "2", "direction": "captions"}
    )
    assert ok.status_code == 200 and len(ok.json()["hits"]) == 2 and ok.json()["hits"][0]["caption"]
    no_file = client.post("/v1/search", data={"k": "2"}, files={"other": ("a.txt", b"x", "text/plain")})
    assert no_file.status_code == 400 and "file" in no_file.json()["message"]
    unknown = client.post(
        "/v1/search", files={"file": ("a.png", _png(), "image/png")}, data={"colour": "red"}
    )
    assert unknown.status_code == 422 and "colour" in unknown.json()["message"]
    bad_k = client.post("/v1/search", files={"file": ("a.png", _png(), "image/png")}, data={"k": "0"})
    assert bad_k.status_code == 422
    not_image = client.post("/v1/search", files={"file": ("a.png", b"GIF89a garbage", "image/png")})
    assert not_image.status_code == 400 and "upload" in not_image.json()["message"]
    two = client.post(
        "/v1/search",
        files=[("file", ("a.png", _png(), "image/png")), ("file", ("b.png", _png(), "image/png"))],
    )
    assert two.status_code == 400


def test_the_pixel_limit_of_prepare_applies_to_uploads(client, monkeypatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    r = client.post("/v1/search", files={"file": ("big.png", _png((64, 64)), "image/png")})
    assert r.status_code == 400 and "exceeds" in r.json()["message"]
    b64 = base64.b64encode(_png((64, 64))).decode()
    assert client.post("/v1/search", json={"image_base64": b64}).status_code == 400
    assert client.post("/v1/embed", json={"images_base64": [b64]}).status_code == 400


def test_bodies_over_the_cap_are_413(client, make_client) -> None:
    big = b"\0" * (MAX_BODY_BYTES + 1)
    r = client.post("/v1/search", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"] == "payload_too_large"
    small = make_client(max_body_bytes=1000)
    r = small.post("/v1/search", files={"file": ("a.png", b"\x89PNG" + b"\0" * 2000, "image/png")})
    assert r.status_code == 413

    def chunks():  # no Content-Length: the cap applies to what is streamed
        for _ in range(5):
            yield b"\0" * 400

    r = small.post("/v1/search", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({}, 422),
        ({"q": ""}, 422),
        ({"q": "x" * 1001}, 422),
        ({"q": "dog", "k": 0}, 422),
        ({"q": "dog", "k": 1001}, 422),
        ({"q": "dog", "direction": "up"}, 422),
        ({"q": "dog", "min_score": "high"}, 422),
        ({"q": "dog - dog"}, 400),
        ({"q": "dog", "k": 1000}, 200),
    ],
)
def test_get_search_parameters(client, params, status) -> None:
    r = client.get("/v1/search", params=params)
    assert r.status_code == status, r.text
    if status >= 400:
        assert r.json()["message"]


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"texts": []},
        {"texts": ["x" * 1001]},
        {"texts": ["a"] * 65},
        {"texts": ["a"], "extra": 1},
        {"images_base64": ["%%%"]},
    ],
)
def test_bad_embed_bodies(client, body) -> None:
    r = client.post("/v1/embed", json=body)
    assert 400 <= r.status_code < 500 and r.json()["message"]


def test_unknown_routes_and_methods(client) -> None:
    r = client.get("/v2/search")
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    r = client.delete("/v1/search")
    assert r.status_code == 405 and r.json()["error"] == "method_not_allowed"
    assert client.post("/v1/embed", content=b"x", headers={"content-type": "text/plain"}).status_code == 415
