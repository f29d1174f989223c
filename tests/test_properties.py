"""Property-based tests for every parser and validator that reads user input (hypothesis).

Invariants: a parser never raises anything but a capsearch error; every valid row is kept; what is
written and read back is the same.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from core.data.captions import parse_captions
from core.data.records import load_dataset
from core.data.splits import parse_ratios, read_split_list, split_counts
from core.data.validation import ValidationReport
from core.errors import CapsearchError
from core.search.query import combine, parse_query

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# A file name part: printable, no path separators, no '#', tab, quote or comma (the formats' delimiters).
name_part = st.text(
    alphabet=st.characters(
        blacklist_categories=("Cc", "Cs", "Zl", "Zp"),
        blacklist_characters='/\\#\t",\r\n\x0b\x0c\x1c\x1d\x1e\x85',
    ),
    min_size=1,
    max_size=12,
).filter(lambda s: s.strip() not in ("", ".", "..") and s == s.strip())
image_name = st.builds(lambda stem, ext: f"{stem}.{ext}", name_part, st.sampled_from(["jpg", "png", "JPEG"]))
caption_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"), blacklist_characters="\t\x85"),
    min_size=1,
    max_size=40,
).filter(lambda s: s.strip() != "")
rows = st.lists(st.tuples(image_name, caption_text), min_size=1, max_size=8)
# Numbers as people and attackers write them: overflow, underflow, NaN, infinity, signs and exponents.
number_text = st.one_of(
    st.sampled_from(["nan", "inf", "-inf", "1e309", "-1e309", "1e-400", "0", "-0", "0.0", "1e3", ".5", "5."]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-(10**400), 10**400).map(str),
)
weighted_query = st.lists(
    st.tuples(
        st.sampled_from(["", " + ", " - ", "+", "-"]), number_text, st.sampled_from(["dog", '"a cat"', ""])
    ),
    min_size=1,
    max_size=4,
).map(lambda terms: "".join(f"{op}{num}:{word}" for op, num, word in terms))
ratios_text = st.one_of(st.text(max_size=40), st.lists(number_text, min_size=1, max_size=4).map(",".join))


def _expected(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(img, cap.strip()) for img, cap in pairs]


@FAST
@given(pairs=rows)
def test_token_captions_round_trip(tmp_path_factory, pairs):
    path = tmp_path_factory.mktemp("cap") / "captions.token.txt"
    path.write_text("".join(f"{img}#{i}\t{cap}\n" for i, (img, cap) in enumerate(pairs)), encoding="utf-8")
    entries, fmt = parse_captions(path, ValidationReport(), fmt="token")
    assert fmt == "token"
    assert [(e.image, e.caption) for e in entries] == _expected(pairs)


@FAST
@given(pairs=rows)
def test_csv_captions_round_trip(tmp_path_factory, pairs):
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["image", "caption"])
    writer.writerows(pairs)
    path = tmp_path_factory.mktemp("cap") / "captions.csv"
    path.write_text(out.getvalue(), encoding="utf-8")
    entries, _ = parse_captions(path, ValidationReport())
    assert [(e.image, e.caption) for e in entries] == _expected(pairs)


@FAST
@given(pairs=rows)
def test_jsonl_captions_round_trip(tmp_path_factory, pairs):
    path = tmp_path_factory.mktemp("cap") / "captions.jsonl"
    path.write_text(
        "".join(json.dumps({"image": img, "captions": [cap]}) + "\n" for img, cap in pairs), encoding="utf-8"
    )
    entries, _ = parse_captions(path, ValidationReport())
    assert [(e.image, e.caption) for e in entries] == _expected(pairs)


@FAST
@given(data=st.binary(max_size=400), fmt=st.sampled_from([None, "token", "csv", "jsonl"]))
def test_any_captions_file_parses_or_fails_cleanly(tmp_path_factory, data, fmt):
    path = tmp_path_factory.mktemp("cap") / "captions.txt"
    path.write_bytes(data)
    try:
        entries, _ = parse_captions(path, ValidationReport(), fmt=fmt)
    except CapsearchError:
        return
    for e in entries:
        assert e.image and not e.image.startswith(("/", "../")) and e.image != ".."


@FAST
@given(data=st.binary(max_size=300))
def test_any_split_list_parses(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("split") / "list.txt"
    path.write_bytes(data)
    for _, name in read_split_list(path, "list.txt", ValidationReport()):
        assert name == name.strip() and name


@FAST
@given(text=ratios_text)
def test_ratios_are_valid_or_refused(text):
    try:
        ratios = parse_ratios(text)
    except CapsearchError:
        return
    assert len(ratios) == 3 and all(math.isfinite(r) and r >= 0 for r in ratios) and sum(ratios) > 0
    assert sum(split_counts(1000, ratios)) == 1000


@FAST
@given(ratios=st.tuples(*[st.floats(0, 100, allow_nan=False)] * 3).filter(lambda r: sum(r) > 0))
def test_split_counts_add_up(ratios):
    parsed = parse_ratios(",".join(repr(r) for r in ratios))
    for n in (0, 1, 7, 1000):
        counts = split_counts(n, parsed)
        assert sum(counts) == n and all(c >= 0 for c in counts)


@FAST
@given(query=st.one_of(st.text(max_size=60), weighted_query))
def test_query_parses_to_finite_weights_or_fails_cleanly(query):
    try:
        terms = parse_query(query, resolve_image=lambda _: None)
    except CapsearchError:
        return
    assert terms and all(math.isfinite(t.weight) and t.weight != 0 and t.text for t in terms)
    rng = np.random.default_rng(0)
    table: dict[str, np.ndarray] = {}

    def encode(text: str) -> np.ndarray:
        return table.setdefault(text, rng.normal(size=8).astype(np.float32))

    try:
        vector = combine(terms, encode, lambda _: np.zeros(8, np.float32))
    except CapsearchError:
        return
    assert np.isfinite(vector).all() and abs(float(np.linalg.norm(vector)) - 1) < 1e-4


@FAST
@given(name=st.text(max_size=30))
def test_any_dataset_name_loads_or_fails_cleanly(tmp_path_factory, monkeypatch_env, name):
    with contextlib.suppress(CapsearchError):
        load_dataset(name)


def test_overflowing_weight_is_refused():
    with pytest.raises(CapsearchError, match="weight"):
        parse_query("1e309:dog", resolve_image=lambda _: None)
    with pytest.raises(CapsearchError):
        parse_ratios("nan,1,1")
    with pytest.raises(CapsearchError):
        parse_ratios("inf,1,1")


@pytest.fixture
def monkeypatch_env(tmp_path, monkeypatch):
    monkeypatch.setenv("CAPSEARCH_ARTIFACTS", str(tmp_path / "artifacts"))
    monkeypatch.chdir(tmp_path)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
# Manifests as they are, with one field replaced by anything JSON can hold.
DATASET_KEYS = ["name", "root", "splits", "input_checksum", "kind", "images"]


@FAST
@given(
    meta=st.one_of(
        json_values,
        st.builds(
            lambda key, value: {"name": "d", "root": ".", "splits": {}} | {key: value},
            st.sampled_from(DATASET_KEYS),
            json_values,
        ),
    )
)
@example(meta={"name": "", "root": ".", "splits": {}})  # once drawn in CI: an empty name loaded
@example(meta={"name": " ", "root": ".", "splits": {}})
def test_any_dataset_manifest_loads_or_fails_cleanly(tmp_path_factory, meta):
    folder = tmp_path_factory.mktemp("ds")
    (folder / "dataset.json").write_text(json.dumps(meta), encoding="utf-8")
    (folder / "test.jsonl").write_text('{"id": "a", "image": "a.jpg", "captions": ["x"]}\n', encoding="utf-8")
    try:
        data = load_dataset(folder)
        assert data.name and data.fingerprint is not None
        data.split("test")
        data.has_captions  # noqa: B018  # reads the splits' counts
    except CapsearchError:
        pass


@pytest.fixture(scope="module")
def saved_index(tmp_path_factory):
    from core.index.graph_kinds import HNSWSpec
    from core.index.vector_index import VectorIndex

    folder = tmp_path_factory.mktemp("index")
    vectors = np.random.default_rng(0).normal(size=(20, 8)).astype(np.float32)
    VectorIndex.build(vectors, HNSWSpec(), [str(i) for i in range(20)], "m@1").save(folder)
    return folder


@FAST
@given(
    key=st.sampled_from(["model_id", "count", "ids", "kind", "params", "faiss_sha256", None]),
    value=json_values,
)
def test_any_index_manifest_loads_or_fails_cleanly(saved_index, tmp_path_factory, key, value):
    import shutil

    from core.index.vector_index import VectorIndex

    folder = tmp_path_factory.mktemp("idx")
    shutil.copytree(saved_index, folder, dirs_exist_ok=True)
    meta = json.loads((folder / "index.json").read_text())
    (folder / "index.json").write_text(json.dumps(value if key is None else meta | {key: value}))
    with contextlib.suppress(CapsearchError):
        VectorIndex.load(folder, expected_model_id=None, expected_count=None)


@pytest.fixture(scope="module")
def saved_result(synthetic_small, tmp_path_factory):
    import os

    from core.evaluation.results import save_result
    from core.evaluation.runner import run_eval

    os.environ["CAPSEARCH_ARTIFACTS"] = str(tmp_path_factory.mktemp("artifacts"))
    return save_result(run_eval(synthetic_small, "test", "capsearch-tiny", latency_queries=0, device="cpu"))


@FAST
@given(
    key=st.sampled_from(["format_version", "ks", "counts", "metrics", "by_index", "dataset", None]),
    value=json_values,
)
def test_any_result_file_loads_or_fails_cleanly(saved_result, tmp_path_factory, key, value):
    import shutil

    from core.evaluation.results import load_result, ranks_path

    path = tmp_path_factory.mktemp("res") / saved_result.name
    shutil.copy(ranks_path(saved_result), ranks_path(path))
    data = json.loads(saved_result.read_text(encoding="utf-8"))
    path.write_text(json.dumps(value if key is None else data | {key: value}), encoding="utf-8")
    with contextlib.suppress(CapsearchError):
        load_result(path)
