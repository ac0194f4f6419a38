"""The HTTP API, route for route and status for status what Toxiproxy 2.x answers."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from aichaos.fixtures.control import refusal

from .collection import ProxyCollection
from .errors import ApiError, bad_body
from .metrics import make_registry, render

API_VERSION = "2.6.0"  # the Toxiproxy release whose API this server speaks
COLLECTION = web.AppKey("collection", ProxyCollection)
LOOPBACK = web.AppKey("loopback", bool)  # the API listens on loopback only


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=json.dumps(data).encode(), status=status, content_type="application/json"
    )


def _error(exc: ApiError, headers: dict[str, str] | None = None) -> web.Response:
    response = _json(exc.body(), exc.status)
    if headers:
        response.headers.update(headers)
    return response


@web.middleware
async def _api_errors(request: web.Request, handler) -> web.StreamResponse:
    # Toxiproxy refuses browsers, so a web page cannot drive it through a user's browser.
    if request.headers.get("User-Agent", "").startswith("Mozilla/"):
        return _error(ApiError("User agent not allowed", 403))
    # The rules of every control API here: no cross-site request and, on loopback, no Host
    # but a loopback one (DNS rebinding). Any content type: Toxiproxy's own clients post
    # /reset without a JSON body.
    refused = refusal(
        request.method, request.headers, require_json=False, check_host=request.app[LOOPBACK]
    )
    if refused is not None:
        return _error(ApiError(refused.message, refused.status))
    try:
        return await handler(request)
    except ApiError as exc:
        return _error(exc)
    except web.HTTPMethodNotAllowed as exc:
        allow = ", ".join(sorted(exc.allowed_methods))
        return _error(ApiError("method not allowed", 405), {"Allow": allow})
    except web.HTTPNotFound:
        return _error(ApiError("not found", 404))


async def _body(request: web.Request) -> Any:
    raw = await request.read()
    if not raw.strip():
        raise bad_body("EOF")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_body(str(exc)) from None


def _collection(request: web.Request) -> ProxyCollection:
    return request.app[COLLECTION]


async def version(request: web.Request) -> web.Response:
    return _json({"version": API_VERSION})


async def proxy_index(request: web.Request) -> web.Response:
    proxies = _collection(request).proxies
    return _json({name: proxy.to_json() for name, proxy in proxies.items()})


async def proxy_create(request: web.Request) -> web.Response:
    proxy = await _collection(request).create(await _body(request))
    return _json(proxy.to_json(), 201)


async def populate(request: web.Request) -> web.Response:
    proxies = await _collection(request).populate(await _body(request))
    return _json({"proxies": [p.to_json() for p in proxies]}, 201)


async def reset(request: web.Request) -> web.Response:
    await _collection(request).reset()
    return web.Response(status=204)


async def proxy_show(request: web.Request) -> web.Response:
    return _json(_collection(request).get(request.match_info["proxy"]).to_json())


async def proxy_update(request: web.Request) -> web.Response:
    name = request.match_info["proxy"]
    _collection(request).get(name)  # 404 before looking at the body, as Toxiproxy does
    proxy = await _collection(request).update(name, await _body(request))
    return _json(proxy.to_json())


async def proxy_delete(request: web.Request) -> web.Response:
    await _collection(request).delete(request.match_info["proxy"])
    return web.Response(status=204)


async def toxic_index(request: web.Request) -> web.Response:
    proxy = _collection(request).get(request.match_info["proxy"])
    return _json([t.to_json() for t in proxy.toxic_list()])


async def toxic_create(request: web.Request) -> web.Response:
    collection = _collection(request)
    name = request.match_info["proxy"]
    collection.get(name)
    toxic = collection.add_toxic(name, await _body(request))
    return _json(toxic.to_json())  # 200, not 201: Toxiproxy's own choice


async def toxic_show(request: web.Request) -> web.Response:
    proxy = _collection(request).get(request.match_info["proxy"])
    return _json(proxy.find_toxic(request.match_info["toxic"]).to_json())


async def toxic_update(request: web.Request) -> web.Response:
    proxy = _collection(request).get(request.match_info["proxy"])
    proxy.find_toxic(request.match_info["toxic"])
    toxic = proxy.update_toxic(request.match_info["toxic"], await _body(request))
    return _json(toxic.to_json())


async def toxic_delete(request: web.Request) -> web.Response:
    proxy = _collection(request).get(request.match_info["proxy"])
    proxy.remove_toxic(request.match_info["toxic"])
    return web.Response(status=204)


def build_app(
    collection: ProxyCollection, metrics: bool = False, loopback: bool = True
) -> web.Application:
    """The API; ``loopback``: it listens on loopback only, so a request naming any other
    ``Host`` is a rebound DNS name and refused."""
    app = web.Application(middlewares=[_api_errors])
    app[COLLECTION] = collection
    app[LOOPBACK] = loopback
    r = app.router
    r.add_post("/reset", reset)
    r.add_get("/proxies", proxy_index)
    r.add_post("/proxies", proxy_create)
    r.add_post("/populate", populate)
    r.add_get("/proxies/{proxy}", proxy_show)
    r.add_post("/proxies/{proxy}", proxy_update)
    r.add_patch("/proxies/{proxy}", proxy_update)
    r.add_delete("/proxies/{proxy}", proxy_delete)
    r.add_get("/proxies/{proxy}/toxics", toxic_index)
    r.add_post("/proxies/{proxy}/toxics", toxic_create)
    r.add_get("/proxies/{proxy}/toxics/{toxic}", toxic_show)
    r.add_post("/proxies/{proxy}/toxics/{toxic}", toxic_update)
    r.add_patch("/proxies/{proxy}/toxics/{toxic}", toxic_update)
    r.add_delete("/proxies/{proxy}/toxics/{toxic}", toxic_delete)
    r.add_get("/version", version)
    if metrics:
        registry = make_registry(collection)

        async def metrics_handler(request: web.Request) -> web.Response:
            return web.Response(
                body=render(registry), headers={"Content-Type": "text/plain; version=0.0.4"}
            )

        r.add_get("/metrics", metrics_handler)
    return app
