"""Query arithmetic, and the Retriever on the tiny model over the small synthetic dataset."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.search.query import QueryError, combine, parse_query


def _parsed(query: str) -> list[tuple[float, str]]:
    return [(t.weight, t.text) for t in parse_query(query)]


# -- query arithmetic ---------------------------------------------------------------------------------------
def test_plus_and_minus_split_terms() -> None:
    assert _parsed("dog + snow - night") == [(1.0, "dog"), (1.0, "snow"), (-1.0, "night")]
    assert _parsed("a dog in the snow") == [(1.0, "a dog in the snow")]
    assert _parsed("- night") == [(-1.0, "night")]


def test_weights_and_hyphens() -> None:
    assert _parsed("2:dog + -0.5:night") == [(2.0, "dog"), (-0.5, "night")]
    assert _parsed("well-lit room - 1.5:night") == [(1.0, "well-lit room"), (-1.5, "night")]
    assert _parsed(".5:cat - -2:dog") == [(0.5, "cat"), (2.0, "dog")]
    assert _parsed("time:noon") == [(1.0, "time:noon")], "a non-numeric prefix is text"


def test_quotes_protect_operators() -> None:
    assert _parsed('"salt + pepper" - cat') == [(1.0, "salt + pepper"), (-1.0, "cat")]
    assert _parsed('3:"a - b"') == [(3.0, "a - b")]


@pytest.mark.parametrize("query", ["", "   ", "dog +", "dog + + cat", "0:dog", "dog - 2:"])
def test_malformed_queries_are_refused(query: str) -> None:
    with pytest.raises(QueryError):
        parse_query(query)


def test_image_file_terms(tmp_path: Path) -> None:
    photo = tmp_path / "my photo.png"
    Image.new("RGB", (8, 8), "red").save(photo)
    terms = parse_query(f'"{photo}" - 0.5:red')
    assert terms[0].image == photo.resolve() and terms[0].weight == 1.0
    assert terms[1].image is None and terms[1].weight == -0.5
    assert parse_query(str(tmp_path / "missing.png"))[0].image is None


def test_weighted_sum_semantics() -> None:
    rng = np.random.default_rng(0)
    vectors = {w: v / np.linalg.norm(v) for w, v in zip("abc", rng.standard_normal((3, 8)), strict=True)}
    got = combine(
        parse_query("2:a + b - 0.5:c"), vectors.__getitem__, lambda p: pytest.fail("no image terms")
    )
    want = 2 * vectors["a"] + vectors["b"] - 0.5 * vectors["c"]
    np.testing.assert_allclose(got, want / np.linalg.norm(want), atol=1e-6)
    assert got.dtype == np.float32
    with pytest.raises(QueryError, match="cancel out"):
        combine(parse_query("a - a"), vectors.__getitem__, lambda p: None)


# -- the Retriever ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def retriever(synthetic_small, tiny_model, tmp_path_factory: pytest.TempPathFactory):
    from core.search.retriever import Retriever

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CAPSEARCH_ARTIFACTS", str(tmp_path_factory.mktemp("retriever-artifacts")))
        yield Retriever.open(synthetic_small, tiny_model, split="test")


def test_text_query_returns_k_hits_sorted_by_score(retriever) -> None:
    hits = retriever.search_text("a red circle on a blue background", k=5)
    assert [h.rank for h in hits] == [1, 2, 3, 4, 5]
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert all(h.path.is_file() and h.caption is None for h in hits)
    assert len({h.record.id for h in hits}) == 5
    assert retriever.size == len(retriever.records) and retriever.index_kind == "exact"


def test_caption_query_shows_its_ground_truth_at_its_true_rank(retriever) -> None:
    captions = retriever.embeddings.captions
    j = next(j for j, c in enumerate(captions) if captions.count(c) == 1)
    record, rank = retriever.ground_truth(captions[j])
    row = int(retriever.embeddings.caption_image[j])
    assert record == retriever.records[row]
    scores = retriever.embeddings.image_emb @ retriever.query_vector(captions[j])
    assert rank == 1 + int(np.sum(np.delete(scores, row) >= scores[row]))
    hits = retriever.search_text(captions[j], k=retriever.size)
    assert next(h.rank for h in hits if h.record.id == record.id) == rank
    assert retriever.ground_truth("not a caption of this split, surely") is None


def test_image_to_image_returns_the_query_image_first(retriever) -> None:
    record = retriever.records[4]
    for image in (record.id, retriever.image_path(record)):
        hits = retriever.image_to_image(image, k=3)
        assert hits[0].record.id == record.id
        assert hits[0].score == pytest.approx(1.0, abs=1e-4)


def test_image_to_text_and_text_to_text_return_captions(retriever) -> None:
    emb = retriever.embeddings
    for hit in retriever.image_to_text(retriever.records[0].id, k=4):
        assert hit.caption == emb.captions[hit.caption_index]
        assert hit.record == retriever.records[int(emb.caption_image[hit.caption_index])]
    caption = emb.captions[5]
    hits = retriever.text_to_text(caption, k=3)
    assert hits[0].caption == caption and hits[0].score == pytest.approx(1.0, abs=1e-4)


def test_unknown_image_is_a_clear_error(retriever) -> None:
    with pytest.raises(QueryError, match="neither an image"):
        retriever.image_to_image("no-such-image-id", k=3)
