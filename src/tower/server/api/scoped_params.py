"""Request parameters of the routers of per-environment resources (secrets, catalogs):
which environment(s) and page a listing or export covers, and sealed values."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Query
from pydantic import BaseModel, ConfigDict, Field

from tower.server.api import serializers
from tower.server.services.accounts import DEFAULT_ENVIRONMENT

T = TypeVar("T")

#: base64 of the hybrid format: room for values of several hundred KiB (a JSON key file)
MAX_ENCRYPTED_VALUE_CHARS = 1024 * 1024
MAX_PAGE_SIZE = 1000
# The official API spec's defaults (its generated SDK sends them); the CLI sends page=0.
DEFAULT_PAGE = 1
DEFAULT_PAGE_SIZE = 20

EncryptedValue = Annotated[
    str,
    Field(
        max_length=MAX_ENCRYPTED_VALUE_CHARS,
        description="The value encrypted to GET /v1/secrets/key (RSA-OAEP + AES-256-GCM, base64).",
    ),
]
#: clients compute a preview too; the server computes its own from the plaintext
ClientPreview = Annotated[str | None, Field(default=None, description="Ignored.")]

PageQuery = Annotated[int, Query(ge=0, description="1-based page; 0 returns every item.")]
PageSizeQuery = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)]
AllQuery = Annotated[bool, Query(alias="all")]


def _answer(
    key: str, items: Sequence[T], to_json: Callable[[T], dict[str, Any]], pages: dict[str, int]
) -> dict[str, Any]:
    return {key: [to_json(item) for item in items], "pages": pages}


@dataclass(frozen=True, slots=True)
class ScopeQuery:
    """The query of a listing: what a run in `environment` sees (or, with `all=true`,
    every environment's), and which page of it."""

    environment: str
    all_environments: bool
    page: int
    page_size: int

    def answer(
        self, key: str, items: list[T], to_json: Callable[[T], dict[str, Any]]
    ) -> dict[str, Any]:
        """The listing's body: this page of `items` under `key`, and the `pages`."""
        shown = serializers.paginate(items, self.page, self.page_size)
        pages = serializers.pages(self.page, self.page_size, len(items))
        return _answer(key, shown, to_json, pages)


def _scope_query(
    page: PageQuery = DEFAULT_PAGE,
    page_size: PageSizeQuery = DEFAULT_PAGE_SIZE,
    environment: str = DEFAULT_ENVIRONMENT,
    all_environments: AllQuery = False,
) -> ScopeQuery:
    return ScopeQuery(environment, all_environments, page, page_size)


ScopeQueryDep = Annotated[ScopeQuery, Depends(_scope_query)]


class ExportParams(BaseModel):
    """The body of an export: which rows and page, and the key to encrypt values to."""

    model_config = ConfigDict(populate_by_name=True)

    public_key: str = Field(description="RSA public key PEM (SPKI or PKCS#1) to encrypt to.")
    environment: str = DEFAULT_ENVIRONMENT
    all_environments: bool = Field(default=False, alias="all")
    page: int = Field(default=DEFAULT_PAGE, ge=0)
    page_size: int = Field(default=DEFAULT_PAGE_SIZE, ge=1, le=MAX_PAGE_SIZE)

    def answer(
        self, key: str, items: list[T], total: int, to_json: Callable[[T], dict[str, Any]]
    ) -> dict[str, Any]:
        """The export's body: `items` (the page the service picked out of `total`)."""
        pages = serializers.pages(self.page, self.page_size, total)
        return _answer(key, items, to_json, pages)
