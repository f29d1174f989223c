"""Errors that become a specific HTTP status (every other :class:`CapsearchError` is a 400)."""

from __future__ import annotations

from core.errors import CapsearchError


class ServiceError(CapsearchError):
    """A request the service refuses with ``status`` and the short code ``code``."""

    status = 400
    code = "bad_request"


class NotFound(ServiceError):
    status = 404
    code = "not_found"


class NotReady(ServiceError):
    status = 503
    code = "not_ready"


class PayloadTooLarge(ServiceError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(ServiceError):
    status = 415
    code = "unsupported_media_type"
