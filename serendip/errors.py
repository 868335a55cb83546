"""Project exceptions: errors are part of the interface.

Every error names *what* is wrong (a table, column, setting or input) and *how to fix it*, so
the CLI can print one line and the servers can answer HTTP 400 without a traceback.
"""

from __future__ import annotations


class SerendipError(Exception):
    """Base error: ``field`` names the culprit, ``fix`` tells the user what to change."""

    def __init__(self, message: str, *, field: str | None = None, fix: str | None = None):
        self.message = message
        self.field = field
        self.fix = fix
        super().__init__(self.__str__())

    def __str__(self) -> str:
        text = f"{self.field}: {self.message}" if self.field else self.message
        if self.fix:
            text += f" (fix: {self.fix})"
        return text


class SchemaError(SerendipError):
    """A table violates its data contract (README 'Data contracts')."""

    def __init__(self, table: str, column: str | None, message: str, fix: str):
        self.table = table
        self.column = column
        field = f"{table}.{column}" if column else table
        super().__init__(message, field=field, fix=fix)


class ConfigError(SerendipError):
    """A setting is out of range or inconsistent with the data."""


class ServiceError(SerendipError):
    """A service the run depends on (the MLflow tracking server, Redis, ...) failed or is
    unreachable: not the caller's mistake (the CLI exits 3, a server answers 5xx)."""
