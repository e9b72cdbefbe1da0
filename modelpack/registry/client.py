"""An OCI distribution API client: auth, retries and one-line errors.

One `RegistryClient` talks to one registry host. Auth follows the WWW-Authenticate challenge:
Basic sends the stored credentials, Bearer fetches a token from the challenge's realm for
service/scope (with the credentials when there are any, anonymously otherwise). Requests
without a streaming body are retried with backoff on connection errors, 5xx and 429; streaming
uploads and downloads recover at the protocol level (push.py / pull.py resume from the offset
the registry confirmed).
"""

from __future__ import annotations

import base64
import random
import re
import time
from typing import Iterable
from urllib.parse import urljoin

import requests

from modelpack.errors import AuthError, ProtocolError, RateLimitError, RegistryError, RegistryNotFoundError
from modelpack.registry.auth import Credentials

API_VERSION_HEADER = "Docker-Distribution-API-Version"

MANIFEST_TYPES = {
    "oci": "application/vnd.oci.image.manifest.v1+json",
    "docker": "application/vnd.docker.distribution.manifest.v2+json",
}
INDEX_TYPES = ("application/vnd.oci.image.index.v1+json",
               "application/vnd.docker.distribution.manifest.list.v2+json")
MANIFEST_ACCEPT = ", ".join(MANIFEST_TYPES.values())

# status -> (error class, what it means); the registry's own error code is appended
STATUS_ERRORS: dict[int, tuple[type[RegistryError], str]] = {
    401: (AuthError, "authentication required or credentials rejected (try `modelpack login`)"),
    403: (AuthError, "access denied"),
    404: (RegistryNotFoundError, "not found"),
    429: (RateLimitError, "rate limited by the registry"),
}
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_CHALLENGE_PARAM = re.compile(r'(\w+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """'Bearer realm="...",service="...",scope="..."' -> ('bearer', {realm, service, scope})."""
    scheme, _, rest = header.strip().partition(" ")
    params = {m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3))
              for m in _CHALLENGE_PARAM.finditer(rest)}
    return scheme.lower(), params


def registry_error_detail(resp: requests.Response) -> str:
    """The registry's `errors[0].code: message`, if the body is the API's error JSON."""
    try:
        errors = resp.json().get("errors") or []
        first = errors[0]
        return f"{first.get('code', '')}: {first.get('message', '')}".strip(": ")
    except Exception:
        return ""


class RegistryClient:
    """HTTP access to one registry host (`host[:port]`)."""

    def __init__(
        self,
        host: str,
        *,
        insecure: bool = False,
        credentials: Credentials | None = None,
        retries: int = 4,
        backoff: float = 0.5,
        timeout: float = 60.0,
    ) -> None:
        self.host = host
        self.insecure = insecure
        self.credentials = credentials
        self.retries = retries
        self.backoff = backoff
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "modelpack"
        self.session.verify = not insecure
        self._base: str | None = None
        self._challenge: tuple[str, dict[str, str]] | None = None
        self._basic: str | None = None  # Authorization value once a Basic challenge was answered
        self._bearer: dict[str, str] = {}  # scope -> Authorization value
        if insecure:
            import urllib3

            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)

    # ---- URLs --------------------------------------------------------------------------
    @property
    def base(self) -> str:
        if self._base is None:
            self.ping()
        return self._base  # type: ignore[return-value]

    def url(self, path: str) -> str:
        return urljoin(self.base + "/", path.lstrip("/"))

    def ping(self) -> None:
        """GET /v2/: pick https (or http with --insecure) and learn the auth challenge."""
        schemes = ["https", "http"] if self.insecure else ["https"]
        last: Exception | None = None
        for scheme in schemes:
            base = f"{scheme}://{self.host}"
            try:
                resp = self._send_with_retries("GET", f"{base}/v2/", allow_redirects=False)
            except (requests.ConnectionError, requests.Timeout) as err:  # SSLError included
                last = err
                continue
            if resp.status_code in RETRY_STATUS:
                raise self.error_for(resp, f"{base}/v2/")
            if resp.status_code not in (200, 401) or (
                resp.status_code == 401 and "WWW-Authenticate" not in resp.headers
            ):
                raise ProtocolError(
                    f"not an OCI registry (GET /v2/ answered {resp.status_code})",
                    url=f"{base}/v2/", status=resp.status_code,
                )
            if API_VERSION_HEADER.lower() not in {k.lower() for k in resp.headers} and resp.status_code == 200:
                # most registries send it; one that answers 200 without it and without JSON is not one
                try:
                    resp.json()
                except ValueError:
                    raise ProtocolError("not an OCI registry (GET /v2/ is not the distribution API)",
                                        url=f"{base}/v2/", status=200) from None
            self._base = base
            if resp.status_code == 401:
                self._challenge = parse_challenge(resp.headers["WWW-Authenticate"])
            return
        hint = None if self.insecure else "use --insecure for a registry that speaks plain http"
        raise RegistryError(f"cannot reach the registry: {_short(last)}", url=f"{schemes[-1]}://{self.host}/v2/",
                            hint=hint)

    # ---- auth --------------------------------------------------------------------------
    def _authorization(self, scope: str | None) -> dict[str, str]:
        value = self._basic or self._bearer.get(scope or "")
        return {"Authorization": value} if value else {}

    def _authenticate(self, challenge_header: str, scope: str | None, url: str) -> bool:
        """Answer a 401 challenge; returns False when there is nothing new to try."""
        scheme, params = parse_challenge(challenge_header)
        if scheme == "basic":
            if self.credentials is None or self._basic is not None:
                return False
            self._basic = "Basic " + base64.b64encode(
                f"{self.credentials.username}:{self.credentials.password}".encode()).decode()
            return True
        if scheme == "bearer":
            value = "Bearer " + self._fetch_token(params, scope, url)
            if self._bearer.get(scope or "") == value:
                return False
            self._bearer[scope or ""] = value
            return True
        raise ProtocolError(f"unsupported auth scheme {scheme!r}", url=url, status=401)

    def _fetch_token(self, params: dict[str, str], scope: str | None, url: str) -> str:
        realm = params.get("realm")
        if not realm:
            raise ProtocolError("Bearer challenge without a realm", url=url, status=401)
        query: list[tuple[str, str]] = []
        if params.get("service"):
            query.append(("service", params["service"]))
        scopes = [s for s in (scope or "").split(" ") if s]
        if params.get("scope"):
            scopes += [s for s in params["scope"].split(" ") if s not in scopes]
        query += [("scope", s) for s in scopes]
        auth = (self.credentials.username, self.credentials.password) if self.credentials else None
        if auth and realm.startswith("http://") and not self.insecure:
            raise AuthError("refusing to send credentials to a plain-http token service (use --insecure)",
                            url=realm, status=401)
        try:
            resp = self._send_with_retries("GET", realm, params=query, auth=auth)
        except (requests.ConnectionError, requests.Timeout) as err:
            raise RegistryError(f"token service unreachable: {_short(err)}", url=_public(realm)) from None
        if resp.status_code in (401, 403):
            raise AuthError("the token service rejected the credentials (try `modelpack login`)",
                            url=realm, status=resp.status_code)
        if resp.status_code != 200:
            raise ProtocolError(f"token service answered {resp.status_code}", url=realm, status=resp.status_code)
        try:
            body = resp.json()
            return body.get("token") or body["access_token"]
        except (ValueError, KeyError, AttributeError):
            raise ProtocolError("token service did not return a token", url=realm, status=200) from None

    # ---- requests ----------------------------------------------------------------------
    def _sleep(self, attempt: int, resp: requests.Response | None) -> None:
        delay = self.backoff * (2 ** attempt) * (0.5 + random.random() / 2)
        if resp is not None and resp.headers.get("Retry-After", "").isdigit():
            delay = max(delay, min(float(resp.headers["Retry-After"]), 30.0))
        time.sleep(delay)

    def _send_with_retries(self, method: str, url: str, *, retry: bool = True, **kw) -> requests.Response:
        kw.setdefault("timeout", self.timeout)
        attempts = self.retries + 1 if retry else 1
        for attempt in range(attempts):
            try:
                resp = self.session.request(method, url, **kw)
            except (requests.ConnectionError, requests.Timeout) as err:
                if isinstance(err, requests.exceptions.SSLError) or attempt == attempts - 1:
                    raise
                self._sleep(attempt, None)
                continue
            if resp.status_code in RETRY_STATUS and attempt < attempts - 1:
                resp.close()
                self._sleep(attempt, resp)
                continue
            return resp
        raise AssertionError("unreachable")

    def request(
        self,
        method: str,
        path_or_url: str,
        *,
        scope: str | None = None,
        ok: Iterable[int] = (200,),
        retry: bool = True,
        headers: dict[str, str] | None = None,
        **kw,
    ) -> requests.Response:
        """Send one API request; answer auth challenges; raise the one-line error for bad statuses.

        `scope` is the token scope this request needs ('repository:ns/m:pull,push').
        Streaming bodies must pass retry=False: they cannot be sent twice.
        """
        url = path_or_url if "://" in path_or_url else self.url(path_or_url)
        for _ in range(3):
            hdrs = {**(headers or {}), **self._authorization(scope)}
            try:
                resp = self._send_with_retries(method, url, retry=retry, headers=hdrs, **kw)
            except (requests.ConnectionError, requests.Timeout) as err:
                raise RegistryError(f"connection failed: {_short(err)}", url=_public(url)) from None
            if resp.status_code == 401 and "WWW-Authenticate" in resp.headers:
                resp.close()
                if self._authenticate(resp.headers["WWW-Authenticate"], scope, url):
                    if not retry:  # a streamed body is spent: the caller resumes from the registry's offset
                        raise RegistryError("authorization renewed mid-request", url=_public(url), status=401)
                    continue
            break
        if resp.status_code not in ok:
            raise self.error_for(resp, url)
        return resp

    def error_for(self, resp: requests.Response, url: str) -> RegistryError:
        cls, what = STATUS_ERRORS.get(resp.status_code, (RegistryError, f"unexpected HTTP {resp.status_code}"))
        detail = registry_error_detail(resp)
        if not detail and resp.status_code not in STATUS_ERRORS and API_VERSION_HEADER.lower() not in {
            k.lower() for k in resp.headers
        }:
            cls, what = ProtocolError, f"not an OCI registry answer (HTTP {resp.status_code})"
        message = f"{what} ({detail})" if detail else what
        err = cls(message, url=_public(url), status=resp.status_code)
        resp.close()
        return err


def repository_scope(repository: str, actions: str = "pull") -> str:
    return f"repository:{repository}:{actions}"


def _public(url: str) -> str:
    """A URL fit for an error message: no query string (upload state tokens, signatures)."""
    return url.split("?", 1)[0]


def _short(err: Exception | None) -> str:
    if err is None:
        return "unknown error"
    text = str(err)
    # urllib3 wraps the reason deep inside; keep the innermost, shortest useful part
    m = re.search(r"\] (.+?)'?\)+$", text) or re.search(r"Caused by \w+\((.*)\)", text)
    text = m.group(1) if m else text
    return re.sub(r"\?[^\s'\")]*", "", text)[:200]  # query strings may carry upload tokens
