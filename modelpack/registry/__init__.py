"""Push and pull bundles through any OCI distribution registry (resumable, digest-verified).

    push(ref, dest=None, *, store=None, insecure=False, ...) -> PushResult
    pull(ref, *, store=None, insecure=False, ...) -> PullResult
    login(host, username, password, *, insecure=False) -> where the credentials went
    logout(host) -> bool
    list_tags(ref, *, insecure=False) -> list[str]
"""

from __future__ import annotations

from modelpack.registry.auth import Credentials, get_credentials, remove_credentials, store_credentials
from modelpack.registry.client import RegistryClient, repository_scope
from modelpack.registry.pull import PullResult, fetch_manifest, pull
from modelpack.registry.push import PushResult, push
from modelpack.registry.state import graceful_interrupt


def login(host: str, username: str, password: str, *, insecure: bool = False) -> str:
    """Check the credentials against the registry, then save them; returns where they went."""
    from modelpack.errors import InvalidNameError
    from modelpack.names import invalid_part_reason

    reason = invalid_part_reason("host", host)
    if reason:
        raise InvalidNameError(reason)
    client = RegistryClient(host, insecure=insecure, credentials=Credentials(username, password, "login"))
    client.request("GET", "/v2/").close()  # answers the auth challenge: wrong credentials raise AuthError
    return store_credentials(host, username, password)


def logout(host: str) -> bool:
    return remove_credentials(host)


def list_tags(ref, *, insecure: bool = False, client: RegistryClient | None = None) -> list[str]:
    """Tags of the repository `host/namespace/model` (following Link pagination)."""
    from modelpack.names import parse_ref

    r = parse_ref(str(ref))
    client = client or RegistryClient(r.host, insecure=insecure, credentials=get_credentials(r.host))
    tags: list[str] = []
    path = f"/v2/{r.repository}/tags/list?n=1000"
    while path:
        resp = client.request("GET", path, scope=repository_scope(r.repository))
        tags.extend(resp.json().get("tags") or [])
        link = resp.links.get("next", {}).get("url")
        path = link or ""
    return tags


__all__ = ["push", "pull", "login", "logout", "list_tags", "fetch_manifest", "graceful_interrupt",
           "PushResult", "PullResult", "RegistryClient", "Credentials", "get_credentials"]
