"""Errors of the registry's domain, each one something a person can act on."""

from __future__ import annotations

import reprlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# How a refused value is quoted in a message: whole when short, cut (with "...") when a client
# sent a megabyte of it or nested it deep, so that a message and its log line stay readable.
_quoted = reprlib.Repr()
_quoted.maxlevel, _quoted.maxdict, _quoted.maxlist, _quoted.maxtuple = 4, 8, 8, 8
_quoted.maxstring, _quoted.maxlong, _quoted.maxother = 160, 60, 160


@dataclass(frozen=True)
class Problem:
    """One refused value: where it is, what it was, and the rule it broke."""

    field: str
    value: Any
    rule: str

    def __str__(self) -> str:
        return f"{self.field}: {_quoted.repr(self.value)} {self.rule}"

    def as_dict(self) -> dict[str, Any]:
        return {"field": self.field, "value": self.value, "rule": self.rule}


class RegistryError(Exception):
    """Base of every error the registry reports to its callers; a refused input lists its `problems`."""

    problems: Sequence[Problem] = ()

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InvalidInput(RegistryError):
    """The input broke one or more rules; nothing was changed."""

    def __init__(self, problems: list[Problem]):
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = problems


class NotFound(RegistryError):
    pass


class AlreadyExists(RegistryError):
    pass


class PreconditionFailed(RegistryError):
    """A conditional write expected a state of the service that is no longer current."""

    def __init__(self, name: str, current_etag: str | None):
        super().__init__(
            f"service {name!r} changed since it was read "
            f"(current ETag {current_etag or 'none: it does not exist'}); read it again and retry"
        )
        self.name = name
        self.current_etag = current_etag


class LimitExceeded(RegistryError):
    """A configured bound (hosts per service, number of services) would be passed."""

    def __init__(self, message: str, problem: Problem):
        super().__init__(message)
        self.problems = [problem]


def check(problems: list[Problem]) -> None:
    if problems:
        raise InvalidInput(problems)
