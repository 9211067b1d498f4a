"""Errors as values: a kind an interface can branch on and one line a person can read."""

from __future__ import annotations

from dataclasses import dataclass


class ArtveilError(Exception):
    """An expected failure with a one-line, user-facing message.

    kind is one of: "input" (a bad image file), "output" (cannot write), "model" (model missing
    or unusable), "memory" (out of memory after retries), "cancelled", "config" (bad settings).
    """

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind
        self.message = message

    def __str__(self) -> str:
        return self.message


class Cancelled(ArtveilError):
    def __init__(self, message: str = "Stopped by the user."):
        super().__init__("cancelled", message)


@dataclass(frozen=True)
class ErrorInfo:
    """A plain, thread-safe copy of an error for interfaces (no traceback objects)."""

    kind: str
    message: str

    @classmethod
    def from_exception(cls, exc: BaseException) -> "ErrorInfo":
        if isinstance(exc, ArtveilError):
            return cls(exc.kind, exc.message)
        return cls("internal", f"{type(exc).__name__}: {exc}")
