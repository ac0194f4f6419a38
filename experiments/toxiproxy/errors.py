"""API errors with the status codes and messages Toxiproxy 2.x answers with."""

from __future__ import annotations


class ApiError(Exception):
    """An error the HTTP API turns into ``{"error": message, "status": code}``."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.message = message
        self.status = status

    def body(self) -> dict[str, object]:
        return {"error": self.message, "status": self.status}


def bad_body(detail: str) -> ApiError:
    return ApiError(f"bad request body: {detail}", 400)


def missing_field(field: str) -> ApiError:
    return ApiError(f"missing required field: {field}", 400)


PROXY_NOT_FOUND = ApiError("proxy not found", 404)
PROXY_EXISTS = ApiError("proxy already exists", 409)
TOXIC_NOT_FOUND = ApiError("toxic not found", 404)
TOXIC_EXISTS = ApiError("toxic already exists", 409)
INVALID_TOXIC_TYPE = ApiError("invalid toxic type", 400)
INVALID_STREAM = ApiError("stream was invalid, can be either upstream or downstream", 400)
