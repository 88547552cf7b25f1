"""What a model spec declares about its externalized state stores.

A STATE_SNAPSHOT model keeps state outside its weights (an embedding cache, a counter
table, a calibration table). Rollback can only be honest about that state if the spec says
where it lives, so every store is declared here and validated before anything runs.
"""

from __future__ import annotations

import os
import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "SqlTableStoreSpec",
    "DirectoryStoreSpec",
    "S3PrefixStoreSpec",
    "StateStoreSpec",
    "STORE_KINDS",
]

STORE_KINDS = ("sql_table", "directory", "s3_prefix")

_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_SQL_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,47}$")  # room for the log table's suffix
_ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


class _StoreBase(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="unique within the model; names the store in reports")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(
                f"store name {v!r} is not allowed; use 1-64 chars of a-z, 0-9, '_', '.', '-'"
            )
        return v


def _ident(v: str, what: str) -> str:
    if not _SQL_IDENT.match(v):
        raise ValueError(
            f"{what} {v!r} is not allowed; use 1-48 chars of letters, digits and '_', "
            "not starting with a digit"
        )
    return v


class SqlTableStoreSpec(_StoreBase):
    """A table on SQLite or PostgreSQL, rolled back through a trigger-fed change log."""

    kind: Literal["sql_table"] = "sql_table"
    url: str | None = Field(
        default=None, description="sqlite:///PATH or postgresql://...; or use url_env"
    )
    url_env: str | None = Field(
        default=None, description="environment variable holding the URL (keeps passwords out)"
    )
    table: str
    db_schema: str | None = Field(
        default=None, description="PostgreSQL schema of the table (default: public)"
    )
    key_columns: list[str] = Field(
        default_factory=list, description="unique key of a row; empty means the primary key"
    )
    log_table: str | None = Field(
        default=None, description="change-log table name (default: <table>__modelops_log)"
    )

    @field_validator("table")
    @classmethod
    def _table(cls, v: str) -> str:
        return _ident(v, "table")

    @field_validator("db_schema")
    @classmethod
    def _schema(cls, v: str | None) -> str | None:
        return None if v is None else _ident(v, "db_schema")

    @field_validator("log_table")
    @classmethod
    def _log(cls, v: str | None) -> str | None:
        return None if v is None else _ident(v, "log_table")

    @field_validator("key_columns")
    @classmethod
    def _keys(cls, v: list[str]) -> list[str]:
        for c in v:
            _ident(c, "key column")
        if len(set(v)) != len(v):
            raise ValueError("key_columns must be unique")
        return v

    @field_validator("url_env")
    @classmethod
    def _env(cls, v: str | None) -> str | None:
        if v is not None and not _ENV.match(v):
            raise ValueError(f"url_env {v!r} is not an environment variable name")
        return v

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is not None:
            _check_sql_url(v)
        return v

    @model_validator(mode="after")
    def _one_url(self) -> SqlTableStoreSpec:
        if (self.url is None) == (self.url_env is None):
            raise ValueError(f"store {self.name!r}: give exactly one of url and url_env")
        return self

    @property
    def log_table_name(self) -> str:
        return self.log_table or f"{self.table}__modelops_log"

    def resolved_url(self) -> str:
        """The URL, read from the environment at use time if declared by name."""
        if self.url is not None:
            return self.url
        assert self.url_env is not None
        value = os.environ.get(self.url_env)
        if not value:
            from modelops.errors import SpecError

            raise SpecError(
                f"state store {self.name!r}: environment variable {self.url_env} is not set; "
                "it must hold a sqlite:/// or postgresql:// URL"
            )
        try:
            return _check_sql_url(value)
        except ValueError as exc:
            from modelops.errors import SpecError

            raise SpecError(f"state store {self.name!r}: {self.url_env}: {exc}") from None

    def location(self) -> str:
        """Where the store is, without credentials, for error lines and reports."""
        url = self.url if self.url is not None else f"${self.url_env}"
        url = re.sub(r"//[^@/]*@", "//", url)
        return f"{url} table {self.table}"


def _check_sql_url(v: str) -> str:
    scheme = v.split(":", 1)[0].lower()
    if scheme not in ("sqlite", "postgresql", "postgresql+psycopg", "postgres"):
        raise ValueError(
            f"url scheme {scheme!r} is not supported; allowed: sqlite:///PATH or "
            "postgresql://USER@HOST:PORT/DB"
        )
    if scheme == "sqlite" and (not v.startswith("sqlite:///") or v == "sqlite:///"):
        raise ValueError("a SQLite url is sqlite:///PATH to an existing database file")
    return v


class DirectoryStoreSpec(_StoreBase):
    """A local directory of files; empty directories are not state."""

    kind: Literal["directory"] = "directory"
    path: str = Field(description="the directory; ~ and $VARS are expanded when used")

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("path must not be empty")
        return v

    def resolved_path(self) -> str:
        return os.path.abspath(os.path.expanduser(os.path.expandvars(self.path)))

    def location(self) -> str:
        return f"directory {self.path}"


class S3PrefixStoreSpec(_StoreBase):
    """Objects under s3://bucket/prefix/. The prefix is required: restore deletes objects
    under it that the snapshot does not have, and that must never be a whole bucket."""

    kind: Literal["s3_prefix"] = "s3_prefix"
    bucket: str
    prefix: str
    endpoint_url: str | None = Field(
        default=None, description="S3-compatible endpoint; default from MODELOPS_S3_ENDPOINT_URL"
    )

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, v: str) -> str:
        if not _BUCKET.match(v):
            raise ValueError(f"bucket {v!r} is not an S3 bucket name")
        return v

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        v = v.strip("/")
        if not v:
            raise ValueError("prefix must not be empty: a restore never owns a whole bucket")
        if ".." in v.split("/"):
            raise ValueError("prefix must not contain '..'")
        return v

    def resolved_endpoint(self) -> str | None:
        return self.endpoint_url or os.environ.get("MODELOPS_S3_ENDPOINT_URL") or None

    def location(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}/"


StateStoreSpec = Annotated[
    SqlTableStoreSpec | DirectoryStoreSpec | S3PrefixStoreSpec,
    Field(discriminator="kind"),
]
