"""One registry over HTTP: the connection (scheme, pooled connections) and the auth, under
every distribution API call of :class:`~supervisor.registry.client.RegistryClient`.

Apart from the calls themselves (:mod:`supervisor.registry.client`: manifests, blobs,
login) because this is the one place that decides how a request reaches the registry and
what a refusal means: :meth:`RegistrySession.request` sends any call, answering one 401 with
fresh credentials, and :meth:`RegistrySession.failure` turns an unexpected answer into the
error that names the registry and the object. httpx (on trio through anyio) does the
HTTP; this module and the client are the only ones of the package that import it.

Scheme
    A registry is reached over HTTPS with certificates verified. A loopback registry or one
    listed as insecure is tried over HTTPS without verification first, then over plain HTTP
    (docker's rule), once per client, in :meth:`RegistryClient.ping`.

Auth
    ``ping`` (GET /v2/) learns the registry's challenge. Before the first request for a set
    of scopes, a bearer token is fetched from the challenge's realm (with the saved
    credentials, if any); with a basic challenge the credentials go on every request. A
    401 later (a token expired) fetches one new token and retries once; a 401 without a
    challenge, or a second 401, is an :class:`AuthError`.

Every error names the registry and the object (``blob sha256:... of REPO``,
``manifest REPO:TAG``) and the cause.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlencode

import httpx
import trio

from supervisor.registry.auth import Challenge, Credentials, parse_challenges
from supervisor.registry.errors import AuthError, NotFoundError, ProtocolError, RegistryError, RegistryUnavailable
from supervisor.registry.options import Options


def distribution_errors(body: bytes) -> str:
    """The ``errors`` of a distribution error body, as ``CODE: message`` text."""
    try:
        document = json.loads(body)
        parts = [f"{e.get('code', '?')}: {e.get('message', '')}".rstrip(": ") for e in document["errors"]]
        return "; ".join(parts)
    except (ValueError, KeyError, TypeError, AttributeError):
        text = body[:200].decode("utf-8", "replace").strip()
        return text


class RegistrySession:
    """The connection to one registry for one set of repository scopes, authenticated.

    Use as ``async with ...:``; the HTTP connections are pooled for the session's life.
    """

    def __init__(self, registry: str, api_host: str | None = None, *, scopes: tuple[str, ...] = (),
                 credentials: Credentials | None = None, options: Options | None = None):
        self.registry = registry
        self.api_host = api_host or registry
        self.scopes = tuple(scopes)
        self.credentials = credentials
        self.options = options or Options()
        self.base_url: str | None = None
        self.challenge: Challenge | None = None
        self.token: str | None = None
        self._http: httpx.AsyncClient | None = None
        self._ping_lock = trio.Lock()  # concurrent blob tasks share one ping and one pool

    async def __aenter__(self) -> RegistrySession:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    # --- connection and auth -------------------------------------------------------------

    def _new_http(self, verify: bool) -> httpx.AsyncClient:
        options = self.options
        return httpx.AsyncClient(
            verify=verify,
            timeout=httpx.Timeout(options.read_timeout, connect=options.connect_timeout),
            follow_redirects=True,
            max_redirects=options.max_redirects,
            headers={"User-Agent": options.user_agent},
            # No proxy, netrc or certificate settings from the environment: the daemon talks
            # to the host in the reference and nothing else.
            trust_env=False,
        )

    def unavailable(self, exc: Exception, what: str) -> RegistryUnavailable:
        """The error for a request that did not reach the registry."""
        return RegistryUnavailable(f"cannot reach registry {self.registry} for {what}: {type(exc).__name__}: {exc}",
                                   registry=self.registry, object=what)

    async def ping(self) -> None:
        """Choose the scheme, learn the challenge, and authenticate for ``self.scopes``."""
        async with self._ping_lock:
            if self.base_url is None:
                await self._ping()

    async def _ping(self) -> None:
        insecure = self.options.is_insecure(self.api_host)
        attempts = [("https", not insecure)] + ([("http", False)] if insecure else [])
        last: Exception | None = None
        for scheme, verify in attempts:
            http = self._new_http(verify)
            try:
                response = await http.get(f"{scheme}://{self.api_host}/v2/")
            except httpx.TooManyRedirects as exc:
                await http.aclose()
                raise self._redirect_loop(exc, "the API version check (GET /v2/)") from None
            except httpx.TransportError as exc:
                await http.aclose()
                last = exc
                continue
            self._http, self.base_url = http, f"{scheme}://{self.api_host}"
            break
        else:
            assert last is not None
            raise self.unavailable(last, "the API version check (GET /v2/)") from None
        if response.status_code == 401:
            self.challenge = self._challenge_of(response, "the API version check (GET /v2/)")
            if self.challenge.scheme == "bearer":
                await self._fetch_token("the API version check (GET /v2/)")
        elif response.status_code >= 400 and response.status_code != 404:
            # 404: some registries (and proxies) serve the API without /v2/ itself.
            raise ProtocolError(
                f"registry {self.registry} answered GET /v2/ with {response.status_code} "
                f"({distribution_errors(response.content) or response.reason_phrase})",
                registry=self.registry, object="/v2/")

    def _challenge_of(self, response: httpx.Response, what: str) -> Challenge:
        header = response.headers.get("www-authenticate", "")
        for challenge in parse_challenges(header):
            if challenge.scheme == "bearer" and challenge.realm:
                return challenge
        for challenge in parse_challenges(header):
            if challenge.scheme == "basic":
                return challenge
        if header:
            raise AuthError(f"registry {self.registry} asks for unsupported authentication for {what}: {header!r}",
                            registry=self.registry, object=what)
        raise AuthError(f"registry {self.registry} refused {what} with 401 Unauthorized and no WWW-Authenticate "
                        "challenge: there is no way to authenticate", registry=self.registry, object=what)

    async def _fetch_token(self, what: str, scopes: tuple[str, ...] | None = None) -> None:
        assert self.challenge is not None and self._http is not None
        realm = self.challenge.realm
        if not realm or not realm.startswith(("https://", "http://")):
            raise AuthError(f"registry {self.registry} gave a bearer challenge without a valid realm ({realm!r})",
                            registry=self.registry, object=what)
        query: list[tuple[str, str]] = []
        if self.challenge.params.get("service"):
            query.append(("service", self.challenge.params["service"]))
        for scope in self.scopes if scopes is None else scopes:
            query.append(("scope", scope))
        headers = {}
        if self.credentials is not None:
            headers["Authorization"] = self.credentials.basic_header()
            query.append(("account", self.credentials.username))
        url = realm + ("&" if "?" in realm else "?") + urlencode(query) if query else realm
        try:
            response = await self._http.get(url, headers=headers)
        except httpx.TooManyRedirects as exc:
            raise self._redirect_loop(exc, f"a token from {realm}") from None
        except httpx.TransportError as exc:
            raise AuthError(f"cannot get a token for registry {self.registry} from {realm}: {type(exc).__name__}: {exc}",
                            registry=self.registry, object=what) from None
        if response.status_code in (401, 403):
            who = f"as {self.credentials.username}" if self.credentials else "anonymously (no saved credentials: `dockyard login`)"
            raise AuthError(f"the token server of registry {self.registry} refused {what} {who}: "
                            f"{response.status_code} {distribution_errors(response.content) or response.reason_phrase}",
                            registry=self.registry, object=what)
        try:
            document = response.json()
            token = document.get("token") or document.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if response.status_code != 200 or not isinstance(token, str) or not token:
            raise AuthError(f"the token server of registry {self.registry} ({realm}) gave no token for {what} "
                            f"(status {response.status_code})", registry=self.registry, object=what)
        self.token = token

    def _auth_headers(self) -> dict[str, str]:
        if self.challenge is None:
            return {}
        if self.challenge.scheme == "bearer" and self.token:
            return {"Authorization": f"Bearer {self.token}"}
        if self.challenge.scheme == "basic" and self.credentials is not None:
            return {"Authorization": self.credentials.basic_header()}
        return {}

    def _redirect_loop(self, exc: Exception, what: str) -> ProtocolError:
        return ProtocolError(f"registry {self.registry}: redirect loop for {what} (more than "
                             f"{self.options.max_redirects} redirects)", registry=self.registry, object=what)

    @asynccontextmanager
    async def request(self, method: str, url: str, what: str, headers: dict[str, str] | None = None,
                      content: Callable[[], Any] | None = None) -> AsyncIterator[httpx.Response]:
        """Send a request (``url`` relative to the API root, or absolute) and yield the
        streaming response, after answering one 401 with fresh credentials."""
        await self.ping()
        assert self._http is not None and self.base_url is not None
        if not url.startswith(("http://", "https://")):
            url = self.base_url + url
        for attempt in (1, 2):
            request_headers = {**(headers or {}), **self._auth_headers()}
            request = self._http.build_request(method, url, headers=request_headers,
                                               content=content() if content else None)
            try:
                response = await self._http.send(request, stream=True)
            except httpx.TooManyRedirects as exc:
                raise self._redirect_loop(exc, what) from None
            except httpx.TransportError as exc:
                raise self.unavailable(exc, what) from None
            try:
                if response.status_code == 401:
                    challenge = self._challenge_of(response, what)
                    if attempt == 2 or (challenge.scheme == "basic" and (self.credentials is None or self.challenge == challenge)):
                        who = f"as {self.credentials.username}" if self.credentials else \
                            "anonymously (no saved credentials: `dockyard login " + self.registry + "`)"
                        raise AuthError(f"registry {self.registry} refused {what} {who}: 401 "
                                        f"{distribution_errors(await response.aread()) or 'Unauthorized'}",
                                        registry=self.registry, object=what)
                    self.challenge = challenge
                    if challenge.scheme == "bearer":
                        await self._fetch_token(what)
                    continue
                yield response
                return
            finally:
                await response.aclose()

    async def failure(self, response: httpx.Response, what: str) -> RegistryError:
        """The error for an unexpected status (the body is read for the registry's reason)."""
        try:
            detail = distribution_errors(await response.aread())
        except httpx.HTTPError:
            detail = ""
        detail = detail or response.reason_phrase
        if response.status_code == 404:
            return NotFoundError(f"registry {self.registry}: {what} not found ({detail})", registry=self.registry, object=what)
        if response.status_code == 403:
            return AuthError(f"registry {self.registry} denied {what}: 403 {detail}", registry=self.registry, object=what)
        return ProtocolError(f"registry {self.registry} answered {response.status_code} for {what}: {detail}",
                             registry=self.registry, object=what, status=response.status_code)
