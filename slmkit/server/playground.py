"""The web playground at ``/``: static files shipped in the package, no build step, no CDN.

The page itself is public (it holds no data); every API call it makes carries the user's key, so
a server with ``--api-key`` gives nothing away to someone who can only load the page. Without the
playground, app.py answers ``/`` like Ollama's root ("slmkit is running").
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse
from starlette.staticfiles import StaticFiles

STATIC_DIR = files("slmkit.server") / "static"
ASSETS_PREFIX = "/playground/"  # the page's scripts and styles; public like the page

# No inline script or style, no other origin: model output that slipped into the DOM as markup
# could still not run, load or send anything.
SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; script-src 'self'; style-src 'self'; "
                                "img-src 'self' data: blob:; connect-src 'self'; base-uri 'none'; "
                                "form-action 'none'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class _Assets(StaticFiles):
    def file_response(self, *args, **kwargs):
        response = super().file_response(*args, **kwargs)
        response.headers.update(SECURITY_HEADERS)
        response.headers["Cache-Control"] = "no-cache"  # revalidate (ETag): an upgrade shows at once
        return response


def is_public(path: str, playground: bool) -> bool:
    """Paths of the page itself, reachable without an API key (without the playground, ``/`` is
    an API route like the others and needs the key)."""
    return playground and (path == "/" or path.startswith(ASSETS_PREFIX))


def install(app: FastAPI, enabled: bool) -> None:
    """The page at ``/`` and its assets; nothing when disabled (app.py then answers ``/``)."""
    if not enabled:
        return
    router = APIRouter()

    @router.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def page():
        return FileResponse(str(STATIC_DIR / "index.html"), media_type="text/html",
                            headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"})

    app.mount(ASSETS_PREFIX.rstrip("/"), _Assets(directory=str(STATIC_DIR)), name="playground")
    app.include_router(router)
