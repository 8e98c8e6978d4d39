"""`GET /`: the storefront, web pages for customers and administrators over the public
API. Plain HTML, CSS and ES modules from this package, served as they are: nothing to
build, nothing fetched from elsewhere."""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter
from fastapi.responses import HTMLResponse
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

ASSETS = "/storefront"

#: The pages' own files only, and the API on the same origin; no inline script or style.
STOREFRONT_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)

_FILES = ("api_gateway", "static/storefront")
_INDEX = files("api_gateway").joinpath("static", "storefront", "index.html").read_text("utf-8")

router = APIRouter(include_in_schema=False)


@router.api_route("/", methods=["GET", "HEAD"])
async def read_storefront() -> HTMLResponse:
    """The storefront's one page; the address after `#` says which view it shows."""
    return HTMLResponse(
        _INDEX,
        headers={
            "Content-Security-Policy": STOREFRONT_CSP,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "same-origin",
            # The page is tiny and names its assets: always fresh, assets revalidated.
            "Cache-Control": "no-cache",
        },
    )


def assets() -> Mount:
    """The storefront's stylesheet, scripts and icon."""
    return Mount(ASSETS, StaticFiles(packages=[_FILES]), name="storefront-assets")
