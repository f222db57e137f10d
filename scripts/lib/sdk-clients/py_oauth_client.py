"""The Python MCP SDK's own OAuth client (mcp 2.x, mcp.client.auth) against the
server in OAuth mode and the test OpenID provider (scripts/lib/oidc/provider.mjs).

Run by scripts/oauth_check.py with the venv scripts/checks/oauth.sh installs
(not by itself; it lives outside scripts/checks/ so the test command does not
run it). The client starts with no token at all: its first request is refused
with 401, and the SDK has to find everything else itself, from the
WWW-Authenticate header on.

  py_oauth_client.py authcode URL
      OAuthClientProvider: Protected Resource Metadata → authorization server
      metadata → dynamic client registration → authorization code with PKCE
      (the "browser" is oidc_helpers.dev_login, which posts oidc-provider's
      login and consent forms) → token → the call again, with the token.
  py_oauth_client.py client-credentials URL
      ClientCredentialsOAuthProvider with a pre-registered client
      (env OAUTH_CLIENT_ID, OAUTH_CLIENT_SECRET, OAUTH_ISSUER).

Either way it then lists the tools and calls generate_image. Prints one JSON
line: {mode, sdk, protocol, tools, imageId, sha256, path, exchanges, claims,
first_challenge}, where `exchanges` is every HTTP request the SDK's client made
("METHOD URL STATUS", in order) and `claims` the access token's claims (not
verified here: the server did that). On failure prints
`py_oauth_client: FAILED: ...` to stderr and exits 1.

Env: SDK_PROMPT_TAG (a word added to the prompt, so the image is new),
SDK_LOGIN (the user name to sign in as; default "alice").
"""

from __future__ import annotations

import json
import os
import socket
import sys
import traceback
from importlib.metadata import version

import anyio
import httpx2
from mcp import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientInformationFull, OAuthClientMetadata, OAuthToken

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "oidc"))
import oidc_helpers  # noqa: E402


class CheckFailed(Exception):
    pass


class MemoryStorage:
    """TokenStorage in memory: this client starts with nothing stored."""

    def __init__(self) -> None:
        self.tokens: OAuthToken | None = None
        self.client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self.tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self.client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self.client_info = client_info


def unused_loopback_url() -> str:
    """A redirect URI nobody listens on: dev_login stops at the provider's
    redirect to it and hands the code over, as a browser would to a local
    callback listener."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/callback"


def auth_code_provider(url: str, storage: MemoryStorage, login: str) -> OAuthClientProvider:
    redirect_uri = unused_loopback_url()
    result: dict = {}

    async def redirect_handler(authorization_url: str) -> None:
        result.update(await anyio.to_thread.run_sync(oidc_helpers.dev_login, authorization_url, redirect_uri, login))

    async def callback_handler() -> AuthorizationCodeResult:
        if "code" not in result:
            raise CheckFailed(f"the provider sent no code to the redirect URI: {result}")
        return AuthorizationCodeResult(code=result["code"], state=result.get("state"), iss=result.get("iss"))

    metadata = OAuthClientMetadata(
        client_name="nano-banana oauth check",
        redirect_uris=[redirect_uri],
        grant_types=["authorization_code", "refresh_token"],
        response_types=["code"],
    )
    return OAuthClientProvider(url, metadata, storage, redirect_handler, callback_handler)


async def run(mode: str, url: str) -> dict:
    storage = MemoryStorage()
    if mode == "authcode":
        auth = auth_code_provider(url, storage, os.environ.get("SDK_LOGIN", "alice"))
    else:
        auth = ClientCredentialsOAuthProvider(
            url,
            storage,
            client_id=os.environ["OAUTH_CLIENT_ID"],
            client_secret=os.environ["OAUTH_CLIENT_SECRET"],
            issuer=os.environ["OAUTH_ISSUER"],
        )

    exchanges: list[str] = []
    challenges: list[str] = []

    async def record(response: httpx2.Response) -> None:
        exchanges.append(f"{response.request.method} {response.request.url} {response.status_code}")
        if response.status_code == 401 and not challenges:
            challenges.append(response.headers.get("www-authenticate", ""))

    timeout = httpx2.Timeout(20.0, read=60.0)
    async with httpx2.AsyncClient(auth=auth, timeout=timeout, trust_env=False,
                                  event_hooks={"response": [record]}) as http:
        async with Client(streamable_http_client(url, http_client=http)) as client:
            tools = await client.list_tools()
            names = sorted(t.name for t in tools.tools)
            prompt = f"an owl {os.environ.get('SDK_PROMPT_TAG', '')} fake:size=50000"
            r = await client.call_tool("generate_image", {"prompt": prompt})
            if r.is_error:
                text = " ".join(getattr(c, "text", "") for c in r.content)
                raise CheckFailed(f"generate_image: isError: {text[:300]}")
            s = r.structured_content
            if s is None:
                s = json.loads(next(c.text for c in r.content if getattr(c, "type", None) == "text"))
            protocol = client.protocol_version

    if storage.tokens is None:
        raise CheckFailed("the call went through but the SDK stored no token")
    _header, claims = oidc_helpers.unverified(storage.tokens.access_token)
    return {
        "mode": mode,
        "sdk": f"mcp {version('mcp')}",
        "protocol": protocol,
        "tools": names,
        "imageId": s.get("imageId"),
        "sha256": s.get("sha256"),
        "path": s.get("path"),
        "exchanges": exchanges,
        "first_challenge": challenges[0] if challenges else None,
        "claims": claims,
        "client_id": storage.client_info.client_id if storage.client_info else os.environ.get("OAUTH_CLIENT_ID"),
    }


def leaves(e: BaseException) -> list[BaseException]:
    if isinstance(e, BaseExceptionGroup):
        return [leaf for sub in e.exceptions for leaf in leaves(sub)]
    return [e]


async def _bounded(mode: str, url: str) -> dict:
    with anyio.fail_after(90):
        return await run(mode, url)


def main() -> int:
    if len(sys.argv) != 3 or sys.argv[1] not in ("authcode", "client-credentials"):
        print(__doc__, file=sys.stderr)
        return 2
    mode, url = sys.argv[1:]
    try:
        out = anyio.run(_bounded, mode, url)
    except BaseException as e:  # noqa: BLE001 - report every failure the same way, then exit 1
        for x in leaves(e):
            if isinstance(x, CheckFailed):
                print(f"py_oauth_client: FAILED ({mode} on {url}): {x}", file=sys.stderr)
            else:
                tb = "".join(traceback.format_exception(x))
                print(f"py_oauth_client: FAILED ({mode} on {url}): {type(x).__name__}: {x}\n{tb}", file=sys.stderr)
        return 1
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
