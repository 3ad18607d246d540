"""The hub's refusal of a request, carrying the HTTP status to answer."""

from __future__ import annotations

__all__ = ["HubError"]


class HubError(Exception):
    """A request the hub refuses: ``status`` is the HTTP status code to answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
