"""``capsearch serve``: the HTTP retrieval service (FastAPI on uvicorn); see :mod:`core.serve`."""

from __future__ import annotations

import argparse
import os
from types import FrameType

from rich_argparse import RawDescriptionRichHelpFormatter

from core.cli.console import add_command, console
from core.cli.options import PRECISION_CHOICES
from core.errors import CapsearchError
from core.safe_text import markup_safe

SERVE_DESCRIPTION = """\
Serve search over HTTP (OpenAPI docs at /docs). With no options it serves the default photo library when
there is one, else the built-in demo, prepared and trained on the first start as `capsearch app` does
(GET /readyz answers 503 until it is ready). A library is served as it grows: what `capsearch library
update` (or `--watch`) commits is searchable within --reload-s.

Examples:
  capsearch serve                                   # on http://127.0.0.1:8000
  curl 'localhost:8000/v1/search?q=a+red+circle&k=3'
  curl 'localhost:8000/v1/search?q=a+birthday+cake&after=2024-01-01&sort=date'   # a library
  capsearch serve --dataset flickr8k --model ViT-B-32 --token "$(openssl rand -hex 16)"
"""


def register(sub: argparse._SubParsersAction) -> None:
    parser = add_command(
        sub,
        "serve",
        serve,
        help="serve search over HTTP (FastAPI; default: the default library, else the built-in demo, on "
        "127.0.0.1:8000)",
        description=SERVE_DESCRIPTION,
        formatter_class=RawDescriptionRichHelpFormatter,
    )
    parser.add_argument("--dataset", help="a prepared dataset's name or folder")
    parser.add_argument(
        "--library", help="a photo library (default without dataset options: the default library)"
    )
    parser.add_argument(
        "--model", help="model (default: the newest trained on the dataset, else the demo model)"
    )
    parser.add_argument("--pretrained", help="open_clip weights tag or a local weights file")
    parser.add_argument("--split", default="test", help="split to serve (default: test)")
    parser.add_argument(
        "--index", default="auto", choices=("auto", "exact", "hnsw"), help="index kind (default auto)"
    )
    parser.add_argument(
        "--precision", choices=("auto", *PRECISION_CHOICES), help="inference precision (default auto)"
    )
    parser.add_argument("--device", help="cpu, cuda or mps (default: the best available)")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"
    )
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument(
        "--token",
        default=os.environ.get("CAPSEARCH_TOKEN"),
        help="require `Authorization: Bearer TOKEN` on "
        "every endpoint but /healthz (default: $CAPSEARCH_TOKEN; none: no auth)",
    )
    parser.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        help="allow this browser origin (repeatable; default: CORS off)",
    )
    parser.add_argument(
        "--log-queries", action="store_true", help="put query text in the access log (default: not)"
    )
    parser.add_argument(
        "--batch-window-ms", type=float, default=3.0, help="text micro-batch window (default 3 ms)"
    )
    parser.add_argument("--max-batch", type=int, default=32, help="largest text micro-batch (default 32)")
    parser.add_argument(
        "--reload-s",
        type=float,
        default=10.0,
        help="how often to look for a rebuilt index or an updated library (default 10 s; 0: never)",
    )


def _library(args: argparse.Namespace) -> str | None:
    """The library to serve: ``--library``, else the default library when no dataset option is given."""
    given = [f"--{name}" for name in ("dataset", "model", "pretrained", "precision") if getattr(args, name)]
    given += [
        f"--{name}"
        for name, default in (("split", "test"), ("index", "auto"))
        if getattr(args, name) != default
    ]
    if args.library is None:
        from core.library.home import default_library

        return None if given else default_library()
    if given:
        raise CapsearchError(
            f"{', '.join(given)} {'does' if len(given) == 1 else 'do'} not apply to a library: it is served with "
            "the model and index it was built with",
            hint="drop them, or change the library with `capsearch library update --model M`",
        )
    return str(args.library)


def _loopback(host: str) -> bool:
    """Whether ``host`` is only reachable from this machine."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def _server_class() -> type:
    import uvicorn

    class GracefulServer(uvicorn.Server):
        """uvicorn's server, which on SIGTERM/SIGINT stops accepting, drains the requests in flight and then
        returns (exit code 0) instead of re-raising the signal."""

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            super().handle_exit(sig, frame)
            captured = getattr(self, "_captured_signals", None)
            if isinstance(captured, list):
                captured.clear()

    return GracefulServer


def serve(args: argparse.Namespace) -> int:
    """Check what can fail fast, then run uvicorn until SIGINT/SIGTERM (in-flight requests drain)."""
    import uvicorn

    from core.serve.app import create_app
    from core.serve.engine import Engine, preflight
    from core.serve.metrics import Metrics
    from core.serve.settings import Settings

    if not 0 < args.port < 65536:
        raise CapsearchError(f"--port must be 1-65535, got {args.port}")
    if args.reload_s < 0:
        raise CapsearchError(f"--reload-s must be 0 or more, got {args.reload_s}")
    settings = Settings(
        dataset=args.dataset,
        library=_library(args),
        model=args.model,
        pretrained=args.pretrained,
        split=args.split,
        index=args.index,
        precision=None if args.precision in (None, "auto") else args.precision,
        device=args.device,
        token=args.token or None,
        cors_origins=tuple(args.cors_origin),
        log_queries=args.log_queries,
        batch_window_ms=args.batch_window_ms,
        max_batch=args.max_batch,
        reload_check_s=args.reload_s,
        freeze_heap=True,  # this process serves one engine: keep the collector off the loaded model
    )
    if settings.token is None and not _loopback(args.host):
        served = f"the photos of library {settings.library}" if settings.library else "what it serves"
        console.print(
            f"[bold yellow]warning:[/] serving on {markup_safe(args.host)} without a token: anyone who can "
            f"reach port {args.port} can search and download {markup_safe(served)}; pass --token (or set "
            "CAPSEARCH_TOKEN)",
            highlight=False,
            soft_wrap=True,
        )
    engine = Engine(settings, Metrics(), preflight(settings))
    config = uvicorn.Config(
        create_app(settings, engine),
        host=args.host,
        port=args.port,
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=30,
    )
    server = _server_class()(config)

    def stop(reason: str) -> None:
        server.should_exit = True

    engine.on_failure = stop
    try:
        server.run()
    finally:
        engine.close()
    if engine.failure is not None:
        console.print(f"[bold red]error:[/] {markup_safe(engine.failure)}", highlight=False, soft_wrap=True)
        return 2
    return 0 if server.started else 1
