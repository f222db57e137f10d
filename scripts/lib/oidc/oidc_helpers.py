"""Talking to the test OpenID provider (scripts/lib/oidc/provider.mjs).

Imported by scripts/oauth_check.py and scripts/lib/sdk-clients/py_oauth_client.py
(run with the venv scripts/checks/oauth.sh builds: httpx2 comes with the MCP
SDK, PyJWT and cryptography are pinned in scripts/lib/oidc/requirements.txt).
Every request goes to 127.0.0.1 with a timeout; nothing here follows a
redirect by itself.
"""

from __future__ import annotations

import base64
import json
import os
import re
import time
from html import unescape
from urllib.parse import parse_qs, urljoin, urlsplit

import httpx2

TIMEOUT = httpx2.Timeout(10.0)


class ProviderError(Exception):
    pass


def load_info(path: str) -> dict:
    with open(path) as f:
        return json.load(f)


def wait_generation(path: str, generation: int, timeout: float = 15.0) -> dict:
    """The provider's info file once it reports `generation` (after a SIGHUP rotation)."""
    end = time.monotonic() + timeout
    while True:
        try:
            info = load_info(path)
            if info.get("generation") == generation:
                return info
        except (OSError, ValueError):
            pass  # replaced atomically, but it may be missing for a moment at start
        if time.monotonic() > end:
            raise ProviderError(f"the provider did not reach generation {generation} in {timeout} s")
        time.sleep(0.05)


def http_client(**kw) -> httpx2.Client:
    kw.setdefault("timeout", TIMEOUT)
    return httpx2.Client(trust_env=False, follow_redirects=False, **kw)


def client_credentials(info: dict, which: str, *, resource: str | None = None, scope: str | None = None) -> dict:
    """A client_credentials token response for one of the provider's fixed
    clients ("full", "read", "short"); raises ProviderError with the
    provider's answer when it refuses."""
    c = info["clients"][which]
    data = {"grant_type": "client_credentials"}
    if resource is not None:
        data["resource"] = resource
    if scope is not None:
        data["scope"] = scope
    with http_client() as http:
        r = http.post(info["token_endpoint"], data=data, auth=(c["client_id"], c["client_secret"]))
    if r.status_code != 200:
        raise ProviderError(f"token endpoint answered {r.status_code}: {r.text[:300]}")
    return r.json()


def token_error(info: dict, which: str, *, resource: str | None = None, scope: str | None = None) -> tuple[int, dict]:
    """The provider's refusal of a client_credentials request: (status, body)."""
    try:
        client_credentials(info, which, resource=resource, scope=scope)
    except ProviderError as e:
        m = re.match(r"token endpoint answered (\d+): (.*)", str(e), re.S)
        try:
            body = json.loads(m.group(2)) if m else {}
        except ValueError:
            body = {"raw": m.group(2)}
        return (int(m.group(1)) if m else 0), body
    return 200, {}


def jwks(info: dict) -> dict:
    with http_client() as http:
        r = http.get(info["jwks_uri"])
    if r.status_code != 200:
        raise ProviderError(f"jwks_uri answered {r.status_code}")
    return r.json()


def b64url_json(part: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def unverified(token: str) -> tuple[dict, dict]:
    """(header, claims) of a JWS compact token, without checking anything."""
    head, body, _sig = token.split(".")
    return b64url_json(head), b64url_json(body)


def _form_action(html: str, base: str) -> str:
    m = re.search(r'<form[^>]*\baction="([^"]+)"', html)
    if not m:
        raise ProviderError(f"no form on the interaction page: {html[:300]!r}")
    return urljoin(base, unescape(m.group(1)))


def dev_login(authorization_url: str, redirect_uri: str, login: str, *, max_steps: int = 12) -> dict:
    """Sign in through oidc-provider's devInteractions as a browser would:
    follow the authorization request's redirects, post the login form (any
    login and password), then the consent form, until the provider redirects
    to `redirect_uri`. Returns the query of that redirect ({code, state, iss}
    or {error, error_description}). Cookies stay in this one client; every
    URL before the final redirect must be on the provider's origin."""
    origin = "{0.scheme}://{0.netloc}".format(urlsplit(authorization_url))
    with http_client() as http:
        r = http.get(authorization_url)
        for _ in range(max_steps):
            if r.status_code in (302, 303):
                loc = urljoin(str(r.request.url), r.headers["location"])
                if loc.startswith(redirect_uri):
                    return {k: v[0] for k, v in parse_qs(urlsplit(loc).query).items()}
                if not loc.startswith(origin + "/"):
                    raise ProviderError(f"redirected off the provider to {loc}")
                r = http.get(loc)
                continue
            if r.status_code != 200:
                raise ProviderError(f"{r.request.url} answered {r.status_code}: {r.text[:300]}")
            page = r.text
            action = _form_action(page, str(r.request.url))
            if not action.startswith(origin + "/"):
                raise ProviderError(f"the form posts off the provider, to {action}")
            prompt = re.search(r'name="prompt" value="([a-z]+)"', page)
            if prompt and prompt.group(1) == "login":
                r = http.post(action, data={"prompt": "login", "login": login, "password": os.urandom(8).hex()})
            elif 'value="consent"' in page or (prompt and prompt.group(1) == "consent"):
                r = http.post(action, data={"prompt": "consent"})
            else:
                raise ProviderError(f"an interaction page this script does not know: {page[:300]!r}")
        raise ProviderError(f"no redirect to {redirect_uri} after {max_steps} steps")
