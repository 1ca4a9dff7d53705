"""GET /v1/apps/{name}/runs and GET /v1/runs: pages of runs, newest first, with filters."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from tower.server.api import serializers
from tower.server.api.deps import ContextDep, PrincipalDep, is_official_cli, scoped
from tower.server.api.presenters import present_runs
from tower.server.services import run_queries
from tower.server.services.context import ServerContext
from tower.server.services.runs import RunView

router = APIRouter(prefix="/v1", tags=["runs"])

# The defaults of the official API spec (its generated client sends them too);
# the official CLI sends page=0 ("everything") explicitly.
PageQuery = Annotated[
    int, Query(ge=0, description="1-based page; 0 returns every matching run at once.")
]
PageSizeQuery = Annotated[int, Query(ge=1, le=1000)]
StatusQuery = Annotated[
    list[str] | None,
    Query(description="Keep runs in any of these statuses (repeat the parameter)."),
]
TimeQuery = Annotated[
    str | None, Query(description="RFC 3339; filters on created_at (start inclusive).")
]


def _answer(
    request: Request,
    ctx: ServerContext,
    page: run_queries.Page,
    found: tuple[list[RunView], int],
) -> dict[str, Any]:
    views, total = found
    return {
        "runs": present_runs(ctx, views, official_cli=is_official_cli(request)),
        "pages": serializers.pages(page.number, page.size, total),
    }


@dataclass(frozen=True)
class Listing:
    """The query of a runs listing: which runs, and which page of them."""

    filter: run_queries.RunFilter
    page: run_queries.Page


def _listing(
    page: PageQuery = 1,
    page_size: PageSizeQuery = 20,
    status: StatusQuery = None,
    environment: str | None = None,
    start_at: TimeQuery = None,
    end_at: TimeQuery = None,
) -> Listing:
    flt = run_queries.make_filter(
        statuses=status, environment=environment, start_at=start_at, end_at=end_at
    )
    return Listing(flt, run_queries.Page(page, page_size))


ListingDep = Annotated[Listing, Depends(_listing)]


@router.get("/apps/{name}/runs", **scoped("runs:read"))
def list_runs(
    request: Request, ctx: ContextDep, principal: PrincipalDep, name: str, query: ListingDep
) -> dict[str, Any]:
    found = run_queries.list_app_runs(ctx, principal, name, query.filter, query.page)
    return _answer(request, ctx, query.page, found)


@router.get("/runs", **scoped("runs:read"))
def search_runs(
    request: Request, ctx: ContextDep, principal: PrincipalDep, query: ListingDep
) -> dict[str, Any]:
    found = run_queries.search_runs(ctx, principal, query.filter, query.page)
    return _answer(request, ctx, query.page, found)
