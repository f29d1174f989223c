"""`capsearch library ...` and `capsearch search` on the default library: add, rescan, status, list,
search with filters and --json/--paths (paths are file paths), image->image from any file, query
arithmetic, remove; a dataset search refuses library filters."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from library_helpers import make_folder, scene, write_photo

from core.cli import main

MODEL = ["--model", "capsearch-tiny", "--device", "cpu", "--precision", "fp32"]


def test_library_commands_and_search(tmp_path, artifacts, capsys):
    photos = tmp_path / "photos"
    make_folder(photos, 8)
    write_photo(photos / "dated" / "a.jpg", 77, exif_date="2019:05:06 07:08:09", camera="Pixel 7")
    assert main(["library", "add", str(photos), *MODEL, "--exclude", "skip*"]) == 0
    capsys.readouterr()
    assert main(["library", "list"]) == 0
    assert "photos" in capsys.readouterr().out
    assert main(["library", "status"]) == 0
    status = capsys.readouterr().out
    assert "files 9" in status and "capsearch-tiny@random (fp32)" in status

    assert main(["search", "a dog", "-k", "3", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["library"] == "photos" and len(out["hits"]) == 3
    assert all(h["path"].startswith(str(photos)) for h in out["hits"])

    assert main(["search", "a dog", "--paths", "--camera", "pixel"]) == 0
    assert capsys.readouterr().out.split() == [str(photos / "dated" / "a.jpg")]
    assert main(["search", "a dog", "--paths", "--before", "2020-01-01", "-k", "5"]) == 0
    assert capsys.readouterr().out.split() == [str(photos / "dated" / "a.jpg")]

    outside = write_photo(tmp_path / "elsewhere.jpg", 5)  # image->image from a file outside the library
    assert main(["search", "--image", str(outside), "--json", "-k", "9"]) == 0
    assert len(json.loads(capsys.readouterr().out)["hits"]) == 9
    inside = photos / "dated" / "a.jpg"
    assert main(["search", "--image", str(inside), "--paths", "-k", "1"]) == 0
    assert capsys.readouterr().out.split() == [str(inside)]
    assert (
        main(["search", f'a dog + "{inside}" - night', "--paths", "-k", "2", "--in", str(photos / "d0")]) == 0
    )
    assert all(p.startswith(str(photos / "d0")) for p in capsys.readouterr().out.split())

    write_photo(photos / "later.jpg", 99)
    shutil.copy(inside, photos / "copy-of-a.jpg")
    assert main(["library", "update"]) == 0
    assert "2 new" in capsys.readouterr().err.replace("\n", " ")
    assert (
        main(["library", "duplicates", "--json", "--threshold", "0.99999"]) == 0
    )  # a random model: all close
    groups = json.loads(capsys.readouterr().out)["groups"]
    assert [sorted(g["ids"]) for g in groups] == [sorted([str(inside), str(photos / "copy-of-a.jpg")])]

    assert main(["search", "a dog", "--dataset", "synthetic", "--after", "2020-01-01"]) == 2
    assert "filter library searches" in capsys.readouterr().err
    assert main(["library", "remove", "photos"]) == 0
    assert photos.is_dir() and len(list(photos.rglob("*.jpg"))) == 11
    assert main(["library", "status"]) == 2


def test_search_dedup_collapses_a_resized_copy(tmp_path, artifacts, capsys):
    photos = tmp_path / "photos"
    make_folder(photos, 6)
    original = scene(7)
    original.save(photos / "scene.jpg", quality=90)
    original.resize((80, 60)).save(photos / "scene-half.jpg", quality=50)  # other embedding, close pixels
    assert main(["library", "add", str(photos), *MODEL]) == 0
    capsys.readouterr()

    assert main(["search", "a dog", "--json", "-k", "8"]) == 0
    every = [h["path"] for h in json.loads(capsys.readouterr().out)["hits"]]
    assert {str(photos / "scene.jpg"), str(photos / "scene-half.jpg")} <= set(every)
    assert main(["search", "a dog", "--json", "-k", "8", "--dedup"]) == 0
    hits = json.loads(capsys.readouterr().out)["hits"]
    kept = [h["path"] for h in hits]
    assert (
        len(kept) == 7 and len({str(photos / "scene.jpg"), str(photos / "scene-half.jpg")} & set(kept)) == 1
    )
    assert [h["rank"] for h in hits] == list(range(1, 8))
    assert kept == [p for p in every if p in kept]  # the survivors keep their order

    assert main(["search", "a dog", "--dataset", "synthetic", "--dedup"]) == 2
    assert "--dedup" in capsys.readouterr().err


def test_a_new_library_embeds_in_the_fast_mode_and_keeps_its_precision(tmp_path, artifacts, capsys):
    import torch

    from core.library.library import Library
    from core.models.device import resolve_precision

    photos = tmp_path / "photos"
    make_folder(photos, 3)
    assert main(["library", "add", str(photos), "--model", "capsearch-tiny", "--device", "cpu"]) == 0
    fast = resolve_precision(torch.device("cpu"), "fast")  # bf16 where the CPU has it, else fp32
    with Library.open("photos") as lib:
        assert lib.target is not None and lib.target.precision == fast
    write_photo(photos / "new.jpg", 91)
    assert main(["library", "update", "--device", "cpu"]) == 0  # the vectors' precision, not a new one
    with Library.open("photos") as lib:
        assert lib.active is not None and lib.active.precision == fast
        (count,) = lib.catalogue.db.execute("SELECT COUNT(*) FROM models").fetchone()
        assert count == 1


def _no_model_load(*args, **kwargs):
    raise AssertionError("a rescan with nothing to embed loaded the model")


def test_a_rescan_loads_the_model_only_when_a_file_needs_embedding(tmp_path, artifacts, capsys, monkeypatch):
    from core.library.library import Library
    from core.models import loading

    photos = tmp_path / "photos"
    make_folder(photos, 3)
    assert main(["library", "add", str(photos), *MODEL]) == 0
    real_load = loading.load_model
    monkeypatch.setattr(loading, "load_model", _no_model_load)
    capsys.readouterr()
    assert main(["library", "update"]) == 0
    err = capsys.readouterr().err
    assert "0 embedded" in err and "model " not in err  # no model, so no loading time either
    write_photo(photos / "new.jpg", 91)
    loads = []
    monkeypatch.setattr(loading, "load_model", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    assert main(["library", "update"]) == 0
    assert "1 new" in capsys.readouterr().err and len(loads) == 1
    with Library.open("photos") as lib:
        assert lib.active is not None and lib.catalogue.embedded_count(lib.active.key) == 4


def test_a_model_that_keys_its_vectors_anew_embeds_the_whole_library(
    tmp_path, artifacts, capsys, monkeypatch
):
    """The library's model, loaded for a new file, may compute its vectors differently than before (its file
    or the CPU changed): then every photo is embedded under the new key, as ``--model`` would."""
    import dataclasses

    from core.library import library

    photos = tmp_path / "photos"
    make_folder(photos, 3)
    assert main(["library", "add", str(photos), *MODEL]) == 0
    real_key = library.model_key
    monkeypatch.setattr(library, "model_key", lambda n, lm: dataclasses.replace(real_key(n, lm), key="moved"))
    write_photo(photos / "new.jpg", 91)
    capsys.readouterr()
    assert main(["library", "update"]) == 0
    err = capsys.readouterr().err.replace("\n", " ")
    assert "4 embedded" in err and "now computes its vectors as moved" in err
    with library.Library.open("photos") as lib:
        assert lib.active is not None and lib.active.key == "moved"
        assert lib.catalogue.embedded_count("moved") == 4


def test_a_photo_whose_name_is_not_utf8_is_catalogued_searched_and_printed_exactly(
    tmp_path, artifacts, capsysbinary, monkeypatch
):
    """Latin-1 names (old archives) reach Python as lone surrogates: the catalogue keeps them, ``--in``
    matches such a folder, ``--paths``/``--paths0`` give a pipe the file's own bytes, ``--json`` escapes
    them, and a terminal sees them escaped."""
    import os
    import sys

    photos = tmp_path / "photos"
    make_folder(photos, 3)
    folder = os.path.join(os.fsencode(photos), b"d\xe9j\xe0")
    try:
        os.mkdir(folder)
    except OSError:
        pytest.skip("this file system takes only UTF-8 names")
    write_photo(Path(os.fsdecode(os.path.join(folder, b"caf\xe9.jpg"))), 91)
    assert main(["library", "add", str(photos), *MODEL]) == 0
    capsysbinary.readouterr()
    odd = os.fsdecode(folder)
    assert main(["search", "a dog", "--in", odd, "--paths", "-k", "5"]) == 0
    assert capsysbinary.readouterr().out == os.path.join(folder, b"caf\xe9.jpg") + b"\n"
    assert main(["search", "a dog", "--paths0", "-k", "9"]) == 0
    listed = capsysbinary.readouterr().out.split(b"\0")
    assert listed[-1] == b"" and os.path.join(folder, b"caf\xe9.jpg") in listed and len(listed) == 5
    assert main(["search", "a dog", "--json", "-k", "9"]) == 0
    out = capsysbinary.readouterr().out
    assert b"caf\\udce9.jpg" in out
    assert os.path.join(odd, "caf\udce9.jpg") in {h["path"] for h in json.loads(out)["hits"]}
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert main(["search", "a dog", "--in", odd, "--paths"]) == 0
    assert capsysbinary.readouterr().out.endswith(b"/d\\udce9j\\udce0/caf\\udce9.jpg\n")
