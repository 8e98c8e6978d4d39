"""`GET /openapi.json` and `GET /docs`: the whole public API, documented at the gateway.

Swagger UI's files come from the `fastapi-offline` package and are served by the
gateway itself, with the page's own start-up script, so that the page works with no
internet and under a Content-Security-Policy that allows nothing from elsewhere.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from api_gateway.openapi import ApiDocument

ASSETS = "/docs/assets"

#: Only the gateway's own files; Swagger UI sets style attributes, hence 'unsafe-inline'
#: for styles (and only for them); its logos are data: URLs.
DOCS_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; font-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)

_PAGE = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>E-commerce API</title>
<link rel="icon" type="image/png" href="{ASSETS}/favicon.png">
<link rel="stylesheet" href="{ASSETS}/swagger-ui.css">
</head>
<body>
<main id="swagger-ui"></main>
<script src="{ASSETS}/swagger-ui-bundle.js"></script>
<script src="{ASSETS}/docs.js"></script>
</body>
</html>
"""


async def get_api_document(request: Request) -> ApiDocument:
    document: ApiDocument = request.app.state.api_document
    return document


ApiDocumentDep = Annotated[ApiDocument, Depends(get_api_document)]

router = APIRouter(include_in_schema=False)


@router.get("/openapi.json")
async def read_openapi(document: ApiDocumentDep) -> Response:
    """The OpenAPI 3.1 document of every public route, merged from the services'."""
    return Response(await document.body(), media_type="application/json")


@router.api_route("/docs", methods=["GET", "HEAD"])
async def read_docs() -> HTMLResponse:
    """Interactive documentation of `/openapi.json`."""
    return HTMLResponse(_PAGE, headers={"Content-Security-Policy": DOCS_CSP})


def assets() -> Mount:
    """Swagger UI's files (from `fastapi-offline`) and the page's start-up script."""
    files = StaticFiles(packages=[("api_gateway", "static/docs"), ("fastapi_offline", "static")])
    return Mount(ASSETS, files, name="docs-assets")
