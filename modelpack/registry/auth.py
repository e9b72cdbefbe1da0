"""Registry credentials: environment variables, then the docker config.json and its helpers.

Lookup order for a host:
  1. MODELPACK_REGISTRY_USER + MODELPACK_REGISTRY_PASSWORD (for MODELPACK_REGISTRY_HOST only,
     when that is set; for every host otherwise)
  2. config.json `credHelpers[host]`, then `credsStore` (docker-credential-<name> get)
  3. config.json `auths[host]` (`auth` = base64 user:password, or username/password fields)
The config file is $MODELPACK_AUTH_FILE, else $DOCKER_CONFIG/config.json, else
~/.docker/config.json: the file `docker login`, skopeo and podman read too.
Secrets are never printed or logged: Credentials' repr hides the password and errors name
only the host.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from modelpack.errors import AuthError
from modelpack.fsutil import atomic_write

ENV_USER = "MODELPACK_REGISTRY_USER"
ENV_PASSWORD = "MODELPACK_REGISTRY_PASSWORD"
ENV_HOST = "MODELPACK_REGISTRY_HOST"


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)
    source: str = "config"  # where they came from: env, helper:<name>, config


def config_path() -> Path:
    if os.environ.get("MODELPACK_AUTH_FILE"):
        return Path(os.environ["MODELPACK_AUTH_FILE"]).expanduser()
    if os.environ.get("DOCKER_CONFIG"):
        return Path(os.environ["DOCKER_CONFIG"]).expanduser() / "config.json"
    return Path.home() / ".docker" / "config.json"


def _load_config(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        raise AuthError(f"cannot read the credentials file: {type(err).__name__}", path=str(path)) from None


def _host_keys(host: str) -> list[str]:
    """The spellings config.json uses for one registry."""
    return [host, f"https://{host}", f"http://{host}", f"https://{host}/v1/", f"https://{host}/v2/"]


def _run_helper(helper: str, action: str, payload: str) -> str:
    exe = f"docker-credential-{helper}"
    try:
        proc = subprocess.run([exe, action], input=payload, capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise AuthError(f"credential helper {exe} is not installed") from None
    except subprocess.TimeoutExpired:
        raise AuthError(f"credential helper {exe} timed out") from None
    if proc.returncode != 0:
        # helpers print "credentials not found in native keychain" for a missing entry
        raise _HelperMiss(proc.stdout.strip() or proc.stderr.strip())
    return proc.stdout


class _HelperMiss(Exception):
    pass


def _helper_for(config: dict, host: str) -> str | None:
    helpers = config.get("credHelpers") or {}
    for key in _host_keys(host):
        if key in helpers:
            return helpers[key]
    return config.get("credsStore") or None


def get_credentials(host: str) -> Credentials | None:
    """Credentials for `host` (`name[:port]`), or None for anonymous access."""
    user, password = os.environ.get(ENV_USER), os.environ.get(ENV_PASSWORD)
    if user and password is not None and os.environ.get(ENV_HOST, host) == host:
        return Credentials(user, password, "env")
    path = config_path()
    config = _load_config(path)
    helper = _helper_for(config, host)
    if helper:
        for key in _host_keys(host):
            try:
                out = json.loads(_run_helper(helper, "get", key))
            except _HelperMiss:
                continue
            except ValueError:
                raise AuthError(f"credential helper docker-credential-{helper} returned bad JSON") from None
            if out.get("Username") and out.get("Secret") is not None:
                return Credentials(out["Username"], out["Secret"], f"helper:{helper}")
    auths = config.get("auths") or {}
    for key in _host_keys(host):
        entry = auths.get(key)
        if not entry:
            continue
        if entry.get("auth"):
            try:
                user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                raise AuthError(f"malformed auth entry for {host}", path=str(path)) from None
            return Credentials(user, password, "config")
        if entry.get("username") and entry.get("password") is not None:
            return Credentials(entry["username"], entry["password"], "config")
    return None


def store_credentials(host: str, username: str, password: str) -> str:
    """Save credentials for `host`: in the configured helper, else in config.json (mode 0600).

    Returns where they went ('helper:<name>' or the file path).
    """
    path = config_path()
    config = _load_config(path)
    helper = _helper_for(config, host)
    if helper:
        payload = json.dumps({"ServerURL": host, "Username": username, "Secret": password})
        try:
            _run_helper(helper, "store", payload)
        except _HelperMiss as err:
            raise AuthError(f"credential helper docker-credential-{helper} failed to store: {err}") from None
        return f"helper:{helper}"
    auths = config.setdefault("auths", {})
    for key in _host_keys(host)[1:]:
        auths.pop(key, None)
    auths[host] = {"auth": base64.b64encode(f"{username}:{password}".encode()).decode()}
    _write_config(path, config)
    return str(path)


def remove_credentials(host: str) -> bool:
    """Forget `host`'s credentials; returns whether there were any."""
    path = config_path()
    config = _load_config(path)
    removed = False
    helper = _helper_for(config, host)
    if helper:
        for key in _host_keys(host):
            try:
                _run_helper(helper, "erase", key)
                removed = True
            except _HelperMiss:
                pass
    auths = config.get("auths") or {}
    for key in _host_keys(host):
        if auths.pop(key, None) is not None:
            removed = True
    if removed and path.exists():
        _write_config(path, config)
    return removed


def _write_config(path: Path, config: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with atomic_write(path) as f:
        os.fchmod(f.fileno(), 0o600)
        f.write((json.dumps(config, indent="\t") + "\n").encode())
