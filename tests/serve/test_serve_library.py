"""The service on a photo library: the same hits as ``capsearch search --json``, filters, photos by catalogue
id, files served only from inside the library's folders, paths as query terms only for the library's own
photos, and a library that grows while it is served."""

from __future__ import annotations

import gc
import io
import json
import os
import shutil
import subprocess
import time
import weakref
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from library_helpers import bump_mtime, key_of, make_folder, write_photo
from PIL import Image
from serve_process import CLI, environment, free_port, serving

from core.cli import main
from core.embed.engine import encode_text_query
from core.library.library import Library
from core.library.update import update
from core.serve.app import create_app
from core.serve.engine import Engine
from core.serve.library import ServedLibrary
from core.serve.metrics import Metrics
from core.serve.settings import Settings

MODEL = ["--model", "capsearch-tiny", "--device", "cpu", "--precision", "fp32"]


@pytest.fixture
def api(library_engine: Engine) -> TestClient:
    return TestClient(create_app(library_engine.settings, library_engine), raise_server_exceptions=False)


def _cli(capsys, *argv: str) -> dict:
    capsys.readouterr()
    assert main(["search", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _same(api: list[dict], cli: list[dict]) -> None:
    assert [h["id"] for h in api] == [str(h["id"]) for h in cli]
    assert [h["path"] for h in api] == [h["path"] for h in cli]
    assert np.allclose([h["score"] for h in api], [h["score"] for h in cli], atol=1e-5)
    assert [(h["date"], h["camera"]) for h in api] == [(h["date"], h["camera"]) for h in cli]


@pytest.mark.parametrize(
    ("cli_args", "params"),
    [
        (("a dog", "-k", "4"), {"q": "a dog", "k": 4}),
        (("a dog", "--camera", "pixel"), {"q": "a dog", "camera": "pixel"}),
        (("a dog", "--before", "2020-01-01", "-k", "5"), {"q": "a dog", "before": "2020-01-01", "k": 5}),
        (("a dog", "--sort", "date", "-k", "6"), {"q": "a dog", "sort": "date", "k": 6}),
        (("a dog", "--dedup", "-k", "3"), {"q": "a dog", "dedup": "true", "k": 3}),
        (("a dog", "--in", "FOLDER", "-k", "9"), {"q": "a dog", "folder": "FOLDER", "k": 9}),
    ],
)
def test_the_api_gives_what_the_cli_gives(capsys, api, photos, cli_args, params) -> None:
    folder = str(photos / "d1")
    cli = _cli(capsys, *(folder if a == "FOLDER" else a for a in cli_args))
    params = {k: folder if v == "FOLDER" else v for k, v in params.items()}
    got = api.get("/v1/search", params=params)
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["library"] == "photos" and body["dataset"] is None and body["model_id"] == cli["model_id"]
    assert body["index"] == cli["index"] and body["hits"] and body["caption_hits"] is None
    _same(body["hits"], cli["hits"])
    posted = api.post("/v1/search", json={"text": params.pop("q"), **params}).json()
    _same(posted["hits"], cli["hits"])


def test_catalogue_endpoints_describe_the_library(api, photos) -> None:
    ready = api.get("/readyz").json()
    assert ready == {
        "ready": True,
        "reason": None,
        "model_id": "capsearch-tiny@random",
        "dataset": None,
        "split": None,
        "library": "photos",
    }
    (lib,) = api.get("/v1/libraries").json()
    assert lib["name"] == "photos" and lib["photos"] == 10 and lib["index_kind"] == "exact"
    assert lib["folders"] == [str(photos.resolve())]
    assert api.get("/v1/datasets").json() == []
    (model,) = api.get("/v1/models").json()
    assert model["model_id"] == "capsearch-tiny@random" and model["precision"] == "fp32"


def test_photos_by_id_and_library_paths_as_query_terms(capsys, api, library_engine, photos, tmp_path) -> None:
    inside = photos / "dated" / "a.jpg"
    (first,) = api.get("/v1/search", params={"q": "a dog", "camera": "pixel"}).json()["hits"]
    by_id = api.post("/v1/search", json={"image_id": first["id"], "k": 3}).json()["hits"]
    assert by_id[0]["id"] == first["id"] and by_id[0]["score"] == pytest.approx(1.0, abs=1e-5)
    for term in (str(inside), "dated/a.jpg"):  # absolute, or under one of the library's folders
        query = f'a dog + "{term}" - night'
        found = api.post("/v1/search", json={"text": query, "k": 5}).json()["hits"]
        _same(found, _cli(capsys, f'a dog + "{inside}" - night', "-k", "5")["hits"])

    # a file on this machine that is not one of the library's photos is text, never read
    outside = write_photo(tmp_path / "elsewhere.jpg", 5)
    found = api.post("/v1/search", json={"text": str(outside), "k": 10}).json()["hits"]
    served = library_engine.ready().served
    as_text = encode_text_query(served.lm, str(outside))
    expected = served.searcher.search_vector(as_text, 10)
    assert [h["id"] for h in found] == [str(h.file.id) for h in expected]
    as_image = _cli(capsys, "--image", str(outside), "-k", "10")["hits"]
    assert [h["score"] for h in found] != pytest.approx([h["score"] for h in as_image], abs=1e-4)

    assert api.post("/v1/search", json={"image_id": "999999", "k": 3}).status_code == 404
    assert api.post("/v1/search", json={"image_id": "../a.jpg", "k": 3}).status_code == 404


def test_files_are_served_by_id_while_they_are_what_the_catalogue_describes(
    api, library_engine, photos, tmp_path, tiny_model
) -> None:
    hits = api.get("/v1/search", params={"q": "a dog", "k": 10}).json()["hits"]
    first = hits[0]
    image = api.get(first["image_url"])
    assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"
    assert image.content == Path(first["path"]).read_bytes()
    thumb = api.get(first["thumbnail_url"].replace("256", "16"))
    assert thumb.status_code == 200 and max(Image.open(io.BytesIO(thumb.content)).size) <= 16
    again = api.get(first["image_url"], headers={"If-None-Match": image.headers["etag"]})
    assert again.status_code == 304

    # a photo replaced by a symlink to another file, or edited, since the scan: not served until rescanned
    secret = write_photo(tmp_path / "secret.jpg", 555)
    swapped, edited = Path(hits[1]["path"]), Path(hits[2]["path"])
    swapped.unlink()
    swapped.symlink_to(secret)
    write_photo(edited, 556)
    bump_mtime(edited)
    for hit in hits[1:3]:
        r = api.get(hit["image_url"])
        assert r.status_code == 404 and "changed on disk" in r.json()["message"]
        assert api.get(hit["thumbnail_url"]).status_code == 404
    for bad in ("0", "abc", "..%2F..%2Fetc%2Fpasswd", "1" * 40, "-1", "１"):
        for kind in ("images", "thumbnails"):
            assert api.get(f"/v1/{kind}/{bad}").status_code == 404, (kind, bad)

    # after an update they are served, the symlinked one too (the scan follows a symlinked file)
    outside = write_photo(tmp_path / "elsewhere" / "linked.jpg", 557)
    (photos / "linked.jpg").symlink_to(outside)
    with Library.open("photos") as lib:
        update(lib, tiny_model, key_of(tiny_model))
    assert library_engine.reload_if_changed() is True
    after = {h["path"]: h for h in api.get("/v1/search", params={"q": "a dog", "k": 20}).json()["hits"]}
    for path, content in ((swapped, secret), (edited, edited), (photos / "linked.jpg", outside)):
        r = api.get(after[str(path)]["image_url"])
        assert r.status_code == 200 and r.content == content.read_bytes(), path


def test_refusals_name_what_is_wrong(api, make_client) -> None:
    r = api.get("/v1/search", params={"q": "a dog", "direction": "captions"})
    assert r.status_code == 400 and "no captions" in r.json()["message"]
    r = api.post("/v1/search", json={"text": "a dog", "dataset": "flickr8k"})
    assert r.status_code == 404 and "library photos" in r.json()["message"]
    assert api.get("/v1/search", params={"q": "a dog", "library": "other"}).status_code == 404
    r = api.get("/v1/search", params={"q": "a dog", "after": "last week"})
    assert r.status_code == 400 and "not a date" in r.json()["message"]
    r = api.get("/v1/search", params={"q": "a dog", "folder": "relative/dir"})
    assert r.status_code == 400 and "absolute" in r.json()["message"]
    r = api.get("/v1/search", params={"q": "a dog", "sort": "name"})
    assert r.status_code == 422
    # a dataset service refuses the library filters, and a library's name
    dataset = make_client()
    r = dataset.get("/v1/search", params={"q": "a dog", "camera": "pixel", "dedup": "true"})
    assert r.status_code == 400 and "camera, dedup" in r.json()["message"]
    assert dataset.get("/v1/search", params={"q": "a dog", "library": "photos"}).status_code == 404
    assert dataset.get("/v1/libraries").json() == []


def test_a_library_that_changes_is_served_as_it_is_now(api, library_engine, photos, tiny_model) -> None:
    params = {"q": "a dog", "k": 20}
    before = api.get("/v1/search", params=params).json()
    assert api.get("/v1/search", params=params).json()["cached"] is True
    etag = api.get("/v1/search", params=params).headers["etag"]
    new = write_photo(photos / "new" / "b.jpg", 1234)
    gone = Path(before["hits"][0]["path"])
    gone.unlink()
    edited = Path(before["hits"][1]["path"])
    write_photo(edited, 4321)
    bump_mtime(edited)
    assert library_engine.reload_if_changed() is False  # nothing committed yet
    served = library_engine.ready().served
    with Library.open("photos") as lib:  # what `capsearch library update` does, in another connection
        update(lib, tiny_model, key_of(tiny_model))
    assert library_engine.reload_if_changed() is True
    assert library_engine.ready().served is served  # caught up in place: only the changes were applied

    after = api.get("/v1/search", params=params, headers={"If-None-Match": etag})
    assert after.status_code == 200 and after.json()["cached"] is False
    paths = [h["path"] for h in after.json()["hits"]]
    assert str(new) in paths and str(gone) not in paths and len(paths) == 10
    assert api.get(before["hits"][0]["image_url"]).status_code == 404
    (lib,) = api.get("/v1/libraries").json()
    assert lib["photos"] == 10 and lib["generation"] > 0
    new_hit = next(h for h in after.json()["hits"] if h["path"] == str(new))
    assert api.get(new_hit["image_url"]).content == new.read_bytes()
    edited_hit = next(h for h in after.json()["hits"] if h["path"] == str(edited))
    fresh = api.post("/v1/search", json={"image_id": edited_hit["id"], "k": 1}).json()["hits"][0]
    assert fresh["path"] == str(edited) and fresh["score"] == pytest.approx(1.0, abs=1e-5)
    assert library_engine.reload_if_changed() is False

    # another index kind (as past the exact/HNSW crossover) cannot be caught up: the library is opened again
    with Library.open("photos") as lib:
        lib.set_index_kind("hnsw")
    assert library_engine.reload_if_changed() is True
    again = library_engine.ready().served
    assert again is not served and again.searcher.index_kind == "hnsw"
    assert api.get("/v1/search", params=params).json()["index"] == "hnsw"
    assert [h["path"] for h in api.get("/v1/search", params=params).json()["hits"]] == paths


def test_a_replaced_library_is_freed_in_a_server_engine(photos) -> None:
    """With ``freeze_heap`` (``capsearch serve``) the collections replaced by reloads are freed (the one
    replaced last is kept until the next swap, for the requests that may still hold it)."""
    settings = Settings(library="photos", reload_check_s=0, freeze_heap=True)
    engine = Engine(settings, Metrics(), ServedLibrary.opener("photos"))
    try:
        engine.load()
        replaced = []
        for _ in range(4):
            current = engine.ready().served
            replaced.append((weakref.ref(current), weakref.ref(current.searcher.index)))
            engine._swap(ServedLibrary.opener("photos", lm=current.lm)(engine._progress))  # opened again
            del current
        assert [(a() is None, b() is None) for a, b in replaced] == [(True, True)] * 3 + [(False, False)]
        assert engine.ready().worker is engine._retired.worker  # one model thread throughout
    finally:
        engine.close()
        gc.unfreeze()


def test_a_name_that_is_not_utf8_is_sent_escaped_and_its_file_served(tmp_path, artifacts, tiny_model) -> None:
    folder = tmp_path / "photos"
    make_folder(folder, 2)
    odd = os.path.join(os.fsencode(folder), b"caf\xe9.jpg")
    try:
        write_photo(Path(os.fsdecode(odd)), 91)
    except OSError:
        pytest.skip("this file system takes only UTF-8 names")
    assert main(["library", "add", str(folder), *MODEL]) == 0
    engine = Engine(Settings(library="photos", reload_check_s=0), Metrics(), ServedLibrary.opener("photos"))
    engine.load()
    try:
        client = TestClient(create_app(engine.settings, engine), raise_server_exceptions=False)
        r = client.get("/v1/search", params={"q": "a dog", "k": 3})
        assert r.status_code == 200 and b"caf\\udce9.jpg" in r.content
        hit = next(h for h in r.json()["hits"] if h["path"].endswith("caf\udce9.jpg"))
        image = client.get(hit["image_url"])
        assert image.status_code == 200 and image.content == Path(os.fsdecode(odd)).read_bytes()
        assert client.get(hit["thumbnail_url"]).status_code == 200
    finally:
        engine.close()


@pytest.mark.slow
def test_capsearch_serve_serves_the_default_library_as_it_grows(tmp_path: Path) -> None:
    """A real uvicorn process on 127.0.0.1 serves the default library; what `capsearch library update` in
    another process commits is searchable within ``--reload-s``."""
    root, folder = tmp_path / "artifacts", tmp_path / "photos"
    make_folder(folder, 6)
    run = lambda *argv: subprocess.run(  # noqa: E731
        [str(CLI), *argv], env=environment(root), capture_output=True, text=True, timeout=300
    )
    assert run("library", "add", str(folder), *MODEL).returncode == 0
    with serving(root, "--reload-s", "0.2") as server:
        ready = httpx.get(f"{server.url}/readyz").json()
        assert ready["library"] == "photos" and ready["dataset"] is None
        search = lambda: httpx.get(f"{server.url}/v1/search", params={"q": "a dog", "k": 50}).json()  # noqa: E731
        assert len(search()["hits"]) == 6
        new = write_photo(folder / "new.jpg", 4242)
        assert run("library", "update").returncode == 0
        deadline = time.monotonic() + 30
        while str(new) not in {h["path"] for h in search()["hits"]} and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(search()["hits"]) == 7
    for argv, says in (
        (("--library", "photos", "--model", "capsearch-tiny"), "--model does not apply to a library"),
        (("--library", "nope"), "no library named 'nope'"),
    ):
        proc = run("serve", "--port", str(free_port()), *argv)
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
        assert proc.returncode == 2 and len(errors) == 1 and says in errors[0], proc.stderr


def test_the_search_page_loads_without_the_token_and_runs_only_its_own_files(make_client, api) -> None:
    """The page and its two files are static (no data) and open; the API they call keeps the token. Their
    headers allow only this origin's script, styles, images (and blob: images) and fetches."""
    guarded = make_client(token="s3cret")
    page = guarded.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    for path, kind in (("/ui/app.js", "text/javascript"), ("/ui/app.css", "text/css")):
        asset = guarded.get(path)
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(kind), path
        assert f'"{path}"' in page.text
    assert guarded.get("/v1/search", params={"q": "a dog"}).status_code == 401
    assert guarded.get("/ui/other.js").status_code == 401  # only the page's own files are open
    assert guarded.get("/ui/other.js", headers={"Authorization": "Bearer s3cret"}).status_code == 404
    script = guarded.get("/ui/app.js").text
    assert "innerHTML" not in script and "insertAdjacentHTML" not in script and "eval(" not in script
    assert (
        "<script>" not in page.text and "style=" not in page.text
    )  # nothing inline: the CSP would refuse it
    assert "/" not in api.get("/openapi.json").json()["paths"]


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_the_search_page_script_parses(tmp_path: Path) -> None:
    from core.serve.app import WEB

    proc = subprocess.run(["node", "--check", str(WEB / "app.js")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
