"""The FastAPI app: :func:`create_app` wires the engine, the middleware, the routes and error handlers."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from core import __version__
from core.embed.fp32_fast import vectors_label
from core.errors import CapsearchError
from core.models.loading import LoadedModel
from core.safe_text import json_text
from core.serve import files
from core.serve.dataset import ServedDataset
from core.serve.engine import Engine, decode_base64
from core.serve.errors import PayloadTooLarge, ServiceError, UnsupportedMediaType
from core.serve.library import ServedLibrary
from core.serve.metrics import Metrics
from core.serve.middleware import ServiceMiddleware, configure_access_log
from core.serve.schemas import (
    DatasetOut,
    EmbedRequest,
    EmbedResponse,
    ErrorBody,
    Health,
    LibraryOut,
    ModelOut,
    Ready,
    SearchForm,
    SearchRequest,
    SearchResponse,
    Target,
)
from core.serve.served import Query as SearchQuery
from core.serve.settings import MAX_K, MAX_QUERY_CHARS, Settings

log = logging.getLogger("capsearch.serve")
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": what}
    for status, what in (
        (400, "a bad query (unparseable arithmetic, an undecodable image, wrong embedding size)"),
        (401, "missing or wrong bearer token (when the service has one)"),
        (404, "no such image id, or another dataset, split or library than the one served"),
        (413, "body or upload over 20 MB"),
        (415, "a content type the endpoint does not take"),
        (422, "a field is missing, unknown or out of range"),
        (503, "the model and index are still loading"),
    )
}
WEB = Path(__file__).with_name("web")
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
SEARCH_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/SearchRequest"}},
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file"],
                "properties": {
                    "file": {"type": "string", "format": "binary", "description": "the query image"},
                    **{k: v for k, v in SearchForm.model_json_schema()["properties"].items()},
                },
            }
        },
    },
}
EMBED_BODY = {
    "required": True,
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/EmbedRequest"}}},
}


def create_app(settings: Settings, engine: Engine | None = None) -> FastAPI:
    """The service's app. Its lifespan starts loading the engine in the background (unless it is loaded
    or loading); an engine made here from ``settings`` is closed when the app stops, one passed in is
    closed by its owner."""
    owned = engine is None
    metrics = engine.metrics if engine is not None else Metrics()
    engine = engine if engine is not None else Engine(settings, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine.start()
        yield
        if owned:
            engine.close()

    app = FastAPI(
        title="capsearch",
        version=__version__,
        description="Image <-> text retrieval over a captioned image collection or a photo library.",
        lifespan=lifespan,
        default_response_class=SafeJSONResponse,
    )
    app.state.engine = engine
    app.include_router(_routes(engine, metrics))
    _handlers(app)
    configure_access_log()
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(
        ServiceMiddleware,
        metrics=metrics,
        token=settings.token,
        max_body=settings.max_body_bytes,
        log_queries=settings.log_queries,
    )
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


class SafeJSONResponse(JSONResponse):
    """JSON with every character :func:`core.safe_text.json_text` escapes written as ``\\uXXXX``: a file name
    that is not UTF-8 (lone surrogates) is sent, not a 500, and no control character reaches a terminal."""

    def render(self, content: Any) -> bytes:
        return json_text(content, allow_nan=False, separators=(",", ":")).encode()


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in (SearchRequest, EmbedRequest):
            model_schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
            components.update(model_schema.pop("$defs", {}))
            components[model.__name__] = model_schema
        app.openapi_schema = schema
    return app.openapi_schema


# -- routes -------------------------------------------------------------------------------------------------
def _routes(engine: Engine, metrics: Metrics) -> APIRouter:
    router = APIRouter(responses=ERRORS)

    @router.get("/healthz", response_model=Health, tags=["health"])
    def healthz() -> dict[str, str]:
        """The process is alive (no auth)."""
        return {"status": "ok"}

    @router.get("/readyz", response_model=Ready, tags=["health"], responses={503: {"model": Ready}})
    def readyz() -> SafeJSONResponse:
        """The model and collection are loaded: 200, else 503 with the reason."""
        r = engine.loaded
        if r is None:
            return SafeJSONResponse({"ready": False, "reason": engine.reason}, status_code=503)
        return SafeJSONResponse({"ready": True, "reason": None, **r.served.describe()})

    @router.get("/v1/datasets", response_model=list[DatasetOut], tags=["catalogue"])
    def datasets() -> list[dict[str, Any]]:
        """The dataset split this service searches (none when it serves a library)."""
        served = engine.ready().served
        return served.datasets() if isinstance(served, ServedDataset) else []

    @router.get("/v1/libraries", response_model=list[LibraryOut], tags=["catalogue"])
    def libraries() -> list[dict[str, Any]]:
        """The photo library this service searches (none when it serves a dataset)."""
        served = engine.ready().served
        return served.libraries() if isinstance(served, ServedLibrary) else []

    @router.get("/v1/models", response_model=list[ModelOut], tags=["catalogue"])
    def models() -> list[dict[str, Any]]:
        """The model this service searches with, and the format its vectors are computed in."""
        return [model_out(engine.ready().served.lm)]

    @router.post(
        "/v1/search",
        response_model=SearchResponse,
        tags=["search"],
        openapi_extra={"requestBody": SEARCH_BODY},
    )
    async def search_post(request: Request) -> SafeJSONResponse:
        """Search with a JSON body (text, base64 image, image id or embedding) or a multipart upload."""
        query, params = await _search_input(request)
        return SafeJSONResponse(await _search(engine, query, params))

    @router.get(
        "/v1/search",
        response_model=SearchResponse,
        tags=["search"],
        responses={304: {"description": "not modified"}},
    )
    async def search_get(
        request: Request,
        q: Annotated[str, Query(min_length=1, max_length=MAX_QUERY_CHARS, description="the text query")],
        k: Annotated[int, Query(ge=1, le=MAX_K)] = 10,
        direction: Target = "images",
        min_score: Annotated[float | None, Query(ge=-1.0, le=1.0)] = None,
        dataset: Annotated[str | None, Query(max_length=200)] = None,
        split: Annotated[str | None, Query(max_length=20)] = None,
        library: Annotated[str | None, Query(max_length=200)] = None,
        after: Annotated[str | None, Query(max_length=40, description="YYYY-MM-DD (libraries)")] = None,
        before: Annotated[str | None, Query(max_length=40, description="YYYY-MM-DD (libraries)")] = None,
        folder: Annotated[str | None, Query(min_length=1, max_length=4096, description="absolute")] = None,
        camera: Annotated[str | None, Query(min_length=1, max_length=200)] = None,
        sort: Literal["score", "date"] = "score",
        dedup: bool = False,
    ) -> Any:
        """A text search as a GET (for curl and browsers); ETag and Cache-Control like the other GETs. The
        last six parameters filter a photo library's hits (see ``SearchForm``)."""
        request.scope.setdefault("state", {})["query_text"] = q
        params = SearchForm(
            direction=direction,
            k=k,
            min_score=min_score,
            dataset=dataset,
            split=split,
            library=library,
            after=after,
            before=before,
            folder=folder,
            camera=camera,
            sort=sort,
            dedup=dedup,
        )
        query = SearchQuery("text", text=q)
        etag = engine.etag(query, params)
        headers = {"ETag": etag, "Cache-Control": "private, no-cache"}
        if _matches(request, etag):
            return Response(status_code=304, headers=headers)
        return SafeJSONResponse(await _search(engine, query, params), headers=headers)

    @router.post(
        "/v1/embed", response_model=EmbedResponse, tags=["search"], openapi_extra={"requestBody": EMBED_BODY}
    )
    async def embed(request: Request) -> dict[str, Any]:
        """Texts and base64 images to L2-normalised vectors (for clients that keep their own index)."""
        _require_json(request)
        req = EmbedRequest.model_validate_json(await request.body())
        return await run_in_threadpool(_embed, engine, req)

    @router.get(
        "/v1/images/{image_id:path}",
        tags=["files"],
        responses={200: {"content": {"image/*": {}}}, 304: {"description": "not modified"}},
    )
    def image(image_id: str, request: Request) -> Response:
        """The image file of an id of the served split or library."""
        path = engine.ready().served.file(image_id)
        etag, modified = files.validators(path)
        headers = {"ETag": etag, "Last-Modified": modified, "Cache-Control": "private, max-age=3600"}
        if _matches(request, etag):
            return Response(status_code=304, headers=headers)
        return FileResponse(path, media_type=files.media_type(path), headers=headers)

    @router.get(
        "/v1/thumbnails/{image_id:path}",
        tags=["files"],
        responses={200: {"content": {"image/jpeg": {}}}, 304: {"description": "not modified"}},
    )
    def thumbnail(
        image_id: str,
        request: Request,
        size: Annotated[int, Query(ge=files.THUMBNAIL_SIZES[0], le=files.THUMBNAIL_SIZES[1])] = 256,
    ) -> Response:
        """A JPEG thumbnail at most ``size`` pixels on its longer side."""
        path = engine.ready().served.file(image_id)
        etag, modified = files.validators(path, f"thumb{size}")
        headers = {"ETag": etag, "Last-Modified": modified, "Cache-Control": "private, max-age=3600"}
        if _matches(request, etag):
            return Response(status_code=304, headers=headers)
        data = engine.thumbnails.get(etag)
        if data is None:
            data = files.thumbnail(path, size)
            engine.thumbnails.put(etag, data)
        return Response(data, media_type="image/jpeg", headers=headers)

    @router.get("/", include_in_schema=False)
    def page() -> FileResponse:
        """The search page (static; no token needed to load it, its API calls send one)."""
        return _web_file("index.html", "text/html; charset=utf-8")

    @router.get("/ui/app.js", include_in_schema=False)
    def script() -> FileResponse:
        return _web_file("app.js", "text/javascript; charset=utf-8")

    @router.get("/ui/app.css", include_in_schema=False)
    def stylesheet() -> FileResponse:
        return _web_file("app.css", "text/css; charset=utf-8")

    @router.get("/metrics", tags=["health"], responses={200: {"content": {"text/plain": {}}}})
    def prometheus() -> Response:
        """Prometheus text format."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return router


def _web_file(name: str, media_type: str) -> FileResponse:
    """One of the search page's files, with headers that let it run only its own script and styles, fetch
    only from this service, and never be framed."""
    return FileResponse(WEB / name, media_type=media_type, headers=PAGE_HEADERS)


def model_out(lm: LoadedModel) -> dict[str, Any]:
    """``/v1/models``' entry for ``lm``: ``precision`` as asked, ``computed_in`` what its vectors are computed
    in (fp32fast for a model kind whose fast copy stays fp32, :mod:`core.embed.fp32_fast`)."""
    return {
        "model_id": lm.model_id,
        "embed_dim": lm.embed_dim,
        "precision": lm.precision,
        "computed_in": vectors_label(lm),
        "device": str(lm.device),
        "context_length": lm.context_length,
    }


def _matches(request: Request, etag: str) -> bool:
    given = request.headers.get("if-none-match", "")
    return any(tag.strip() in (etag, "*", f"W/{etag}") for tag in given.split(",")) if given else False


def _require_json(request: Request) -> None:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise UnsupportedMediaType(f"this endpoint takes application/json, not {kind or 'no content type'}")


async def _search_input(request: Request) -> tuple[SearchQuery, SearchForm]:
    """The query and its parameters from a JSON body or a multipart form with one ``file``."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "application/json":
        req = SearchRequest.model_validate_json(await request.body())
        sources = req.sources()
        if len(sources) != 1:
            raise ServiceError(
                f"give exactly one of text, image_base64, image_id or embedding (got {len(sources)})"
            )
        params = req.params()
        if req.text is not None:
            request.scope.setdefault("state", {})["query_text"] = req.text
            return SearchQuery("text", text=req.text), params
        if req.image_base64 is not None:
            return SearchQuery("image", data=decode_base64(req.image_base64)), params
        if req.image_id is not None:
            return SearchQuery("image_id", text=req.image_id), params
        return SearchQuery("embedding", vector=tuple(req.embedding or ())), params
    if kind == "multipart/form-data":
        async with request.form(max_files=1, max_fields=8) as form:
            upload = form.get("file")
            if not isinstance(upload, UploadFile):
                raise ServiceError("a multipart search needs one image in the `file` part")
            fields = {k: v for k, v in form.items() if k != "file"}
            params = SearchForm.model_validate(fields)
            data = await upload.read()
        return SearchQuery("image", data=data), params
    raise UnsupportedMediaType(
        f"POST /v1/search takes application/json or multipart/form-data, not {kind or 'no content type'}"
    )


async def _search(engine: Engine, query: SearchQuery, params: SearchForm) -> dict[str, Any]:
    """A cached answer straight from the event loop, else the search in a request thread. The body is
    returned as built (its shape is SearchResponse's, which the schemathesis run checks), not validated
    again per request."""
    hit = engine.cached(query, params)
    if hit is not None:
        return hit
    return await run_in_threadpool(engine.search, query, params, lookup=False)


def _embed(engine: Engine, req: EmbedRequest) -> dict[str, Any]:
    r = engine.ready()
    images = [decode_base64(b, f"images_base64[{i}]") for i, b in enumerate(req.images_base64)]
    if sum(len(b) for b in images) > engine.settings.max_body_bytes:
        raise PayloadTooLarge("the images are over 20 MB together")
    texts = engine.encode_texts(req.texts, r) if req.texts else []
    return {
        "model_id": r.model_id,
        "dim": r.served.lm.embed_dim,
        "text_embeddings": [v.tolist() for v in texts],
        "image_embeddings": [
            engine.encode_image(b, f"images_base64[{i}]", r).tolist() for i, b in enumerate(images)
        ],
    }


# -- errors -------------------------------------------------------------------------------------------------
def _error(
    status: int,
    code: str,
    message: str,
    hint: str | None = None,
    errors: list[dict[str, str]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = ErrorBody(error=code, message=message, hint=hint, errors=errors).model_dump()
    return SafeJSONResponse(body, status_code=status, headers=headers)


def _validation(errors: list[Any]) -> JSONResponse:
    items = [
        {"loc": ".".join(str(p) for p in e.get("loc", ())), "msg": str(e.get("msg", ""))[:300]}
        for e in errors[:20]
    ]
    first = items[0] if items else {"loc": "", "msg": "invalid request"}
    message = f"{first['loc']}: {first['msg']}" if first["loc"] else first["msg"]
    return _error(422, "invalid_request", message, errors=items)


def _handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def request_invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation(list(exc.errors()))

    @app.exception_handler(ValidationError)
    async def body_invalid(request: Request, exc: ValidationError) -> JSONResponse:
        return _validation(list(exc.errors(include_url=False, include_input=False)))

    @app.exception_handler(ServiceError)
    async def refused(request: Request, exc: ServiceError) -> JSONResponse:
        return _error(exc.status, exc.code, exc.message, exc.hint)

    @app.exception_handler(CapsearchError)
    async def bad_query(request: Request, exc: CapsearchError) -> JSONResponse:
        return _error(400, "bad_query", exc.message, exc.hint)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        codes = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}
        return _error(
            exc.status_code, codes.get(exc.status_code, "bad_request"), str(exc.detail), headers=exc.headers
        )

    @app.exception_handler(Exception)
    async def bug(request: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
        return _error(500, "internal_error", "internal error (logged on the server)")
