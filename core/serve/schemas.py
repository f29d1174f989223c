"""Request and response models of the API (strict: unknown fields are refused)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from core.serve.settings import MAX_K, MAX_QUERY_CHARS

QueryText = Annotated[str, Field(min_length=1, max_length=MAX_QUERY_CHARS)]
Target = Literal["images", "captions", "both"]
# base64 of at most 20 MB of image bytes (4/3 of it, rounded up)
MAX_BASE64_CHARS = 4 * ((20 * 2**20 + 2) // 3)
MAX_EMBEDDING_DIM = 8192


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SearchForm(Strict):
    """A search's parameters (all of a multipart search but its ``file`` part); the last six filter a photo
    library's hits and are refused by a dataset service."""

    direction: Target = Field("images", description="search the images, the captions (datasets), or both")
    k: int = Field(10, ge=1, le=MAX_K, description="number of hits")
    min_score: float | None = Field(None, ge=-1.0, le=1.0, description="drop hits scoring below this")
    dataset: Annotated[str, Field(max_length=200)] | None = Field(None, description="the served dataset")
    split: Annotated[str, Field(max_length=20)] | None = Field(None, description="the served split")
    library: Annotated[str, Field(max_length=200)] | None = Field(None, description="the served library")
    after: Annotated[str, Field(max_length=40)] | None = Field(
        None, description="taken on or after this date (EXIF, else file time): YYYY-MM-DD[THH:MM[:SS]]"
    )
    before: Annotated[str, Field(max_length=40)] | None = Field(None, description="taken before this date")
    folder: Annotated[str, Field(min_length=1, max_length=4096)] | None = Field(
        None, description="only files under this absolute folder"
    )
    camera: Annotated[str, Field(min_length=1, max_length=200)] | None = Field(
        None, description="only photos whose camera contains this text (case-insensitive)"
    )
    sort: Literal["score", "date"] = Field("score", description="order of the hits (date: newest first)")
    dedup: bool = Field(False, description="collapse near-duplicate photos to their best-scored one")


LIBRARY_FIELDS = ("after", "before", "folder", "camera", "sort", "dedup")


class SearchRequest(SearchForm):
    """Exactly one of ``text``, ``image_base64``, ``image_id`` or ``embedding`` (or an uploaded file)."""

    text: QueryText | None = Field(
        None,
        description="a text query; supports the CLI's arithmetic (`dog + snow - night`, `2:dog`, and as image "
        "terms the ids of the served split's images or the paths of the served library's photos)",
    )
    image_base64: Annotated[str, Field(min_length=1, max_length=MAX_BASE64_CHARS)] | None = Field(
        None, description="an image file's bytes, base64 encoded (at most 20 MB)"
    )
    image_id: Annotated[str, Field(min_length=1, max_length=MAX_QUERY_CHARS)] | None = Field(
        None, description="the id of an image of the served split or library"
    )
    embedding: Annotated[list[float], Field(min_length=1, max_length=MAX_EMBEDDING_DIM)] | None = Field(
        None, description="a raw query vector of the model's dimension (normalised by the service)"
    )

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"text": "a dog runs on the beach", "k": 5},
                {"text": "dog + snow - night", "direction": "both", "k": 3, "min_score": 0.1},
                {"image_id": "img-00001", "direction": "captions", "k": 5},
                {"text": "a birthday cake", "after": "2024-01-01", "sort": "date", "dedup": True},
            ]
        },
    )

    def sources(self) -> list[str]:
        return [
            name
            for name in ("text", "image_base64", "image_id", "embedding")
            if getattr(self, name) is not None
        ]

    def params(self) -> SearchForm:
        """The parameters without the query."""
        return SearchForm.model_validate(self.model_dump(include=set(SearchForm.model_fields)))


class HitOut(Strict):
    rank: int = Field(description="1-based rank within its list")
    score: float = Field(description="cosine similarity (6 decimals)")
    id: str = Field(description="the image's id")
    caption: str | None = Field(None, description="the matching caption (caption hits only)")
    caption_index: int | None = Field(None, description="the caption's row (caption hits only)")
    image_url: str = Field(description="where to fetch the image")
    thumbnail_url: str = Field(description="where to fetch a thumbnail")
    path: str | None = Field(None, description="the photo's file (library hits only)")
    taken: float | None = Field(None, description="EXIF date taken, seconds since the epoch (library hits)")
    date: float | None = Field(None, description="date taken, else the file's mtime (library hits)")
    camera: str | None = Field(None, description="EXIF camera model (library hits)")
    width: int | None = Field(None, description="pixel width (library hits)")
    height: int | None = Field(None, description="pixel height (library hits)")


class Timings(Strict):
    encode_ms: float
    search_ms: float
    total_ms: float


class SearchResponse(Strict):
    """Ranked hits; with ``direction=both`` the image hits are in ``hits`` and the caption hits in
    ``caption_hits``."""

    model_id: str
    dataset: str | None = Field(description="the dataset searched (None for a library)")
    split: str | None = Field(description="the split searched (None for a library)")
    library: str | None = Field(None, description="the photo library searched (None for a dataset)")
    query_kind: Literal["text", "image", "image_id", "embedding"]
    direction: Target
    index: str = Field(description="kind of the index searched (exact or hnsw)")
    k: int
    hits: list[HitOut]
    caption_hits: list[HitOut] | None = None
    cached: bool = Field(description="whether the hits came from the result cache")
    timings: Timings

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "model_id": "demo-synthetic@3f2a",
                    "dataset": "synthetic",
                    "split": "test",
                    "query_kind": "text",
                    "direction": "images",
                    "index": "exact",
                    "k": 1,
                    "hits": [
                        {
                            "rank": 1,
                            "score": 0.41,
                            "id": "img-00017",
                            "caption": None,
                            "caption_index": None,
                            "image_url": "/v1/images/img-00017",
                            "thumbnail_url": "/v1/thumbnails/img-00017?size=256",
                        }
                    ],
                    "caption_hits": None,
                    "cached": False,
                    "timings": {"encode_ms": 3.1, "search_ms": 0.2, "total_ms": 3.6},
                }
            ]
        },
    )


class EmbedRequest(Strict):
    texts: Annotated[list[QueryText], Field(max_length=64)] = Field(
        default_factory=list, description="texts to embed as they are (no query arithmetic)"
    )
    images_base64: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=MAX_BASE64_CHARS)]], Field(max_length=8)
    ] = Field(default_factory=list, description="base64 image files to embed (all bodies at most 20 MB)")

    @model_validator(mode="after")
    def _something(self) -> EmbedRequest:
        if not self.texts and not self.images_base64:
            raise ValueError("give at least one of texts or images_base64")
        return self

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"texts": ["a dog in the snow", "a red car"]}]}
    )


class EmbedResponse(Strict):
    model_id: str
    dim: int
    text_embeddings: list[list[float]]
    image_embeddings: list[list[float]]


class ErrorBody(Strict):
    """Every 4xx and 5xx answer: a machine-readable code and a sentence saying what was wrong."""

    error: str = Field(description="a short code, e.g. invalid_request, not_found, unauthorized")
    message: str = Field(description="what was wrong, in one line")
    hint: str | None = Field(None, description="what to do instead, where there is something")
    errors: list[dict[str, str]] | None = Field(None, description="field-by-field validation problems")


class Health(Strict):
    status: Literal["ok"]


class Ready(Strict):
    ready: bool
    reason: str | None = Field(None, description="why not ready yet (loading, preparing the demo, failed)")
    model_id: str | None = None
    dataset: str | None = None
    split: str | None = None
    library: str | None = None


class DatasetOut(Strict):
    name: str
    split: str
    images: int
    captions: int
    image_index_kind: str
    caption_index_kind: str


class LibraryOut(Strict):
    name: str
    photos: int = Field(description="photos in the index")
    index_kind: str
    generation: int = Field(
        description="the catalogue generation the index reflects (grows with each change)"
    )
    folders: list[str] = Field(description="the folders the library indexes")


class ModelOut(Strict):
    model_id: str
    embed_dim: int
    precision: str
    computed_in: str
    device: str
    context_length: int
