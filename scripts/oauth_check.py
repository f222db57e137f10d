"""The OAuth resource-server checks against a real OpenID provider.

Run by scripts/checks/oauth.sh (which starts the provider, the fake Gemini and
the server, and builds the venv this needs: the MCP SDK, PyJWT, cryptography);
not by itself.

  oauth_check.py --info FILE                       the provider alone
  oauth_check.py --info FILE --server-url URL \\
                 --out-dir DIR --python VENV_PYTHON  the provider and the server

FILE is the provider's info file (scripts/lib/oidc/provider.mjs --info-file).
Prints one `oauth: PASS|FAIL <check> ...` line per check and at the end
`oauth: N passed, M failed`; exits 1 when anything failed.

Every bad token is first proven bad for exactly one reason here (it verifies
with PyJWT once that one thing is put right), so a refusal by the server
cannot come from something else.

Env: OAUTH_MAX_LEEWAY (s, default 120: how long after a token's exp the server
may still accept it before the expiry check fails), OAUTH_ROTATION_WAIT (s,
default 90: how long the server may take to accept a token signed with a
rotated key), SDK_CLIENTS_PY (path of py_oauth_client.py; default next to this
script).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import re
import signal
import subprocess
import sys
import time
import traceback
from urllib.parse import urlsplit

import httpx2
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "lib", "oidc"))
sys.path.insert(0, os.path.join(HERE, "lib"))
import oidc_helpers as op  # noqa: E402
from mcpdrive import parse_messages, sha256_file  # noqa: E402

SCOPES = {"generate": "images:generate", "edit": "images:edit", "read": "images:read"}
ALL = " ".join(SCOPES.values())
PROTOCOL = "2025-06-18"

RESULTS: list[tuple[str, bool, str]] = []


def record(name: str, ok: bool, detail: str = "") -> bool:
    RESULTS.append((name, ok, detail))
    line = f"oauth: {'PASS' if ok else 'FAIL'} {name}"
    if detail:
        line += f" -- {detail}"
    print(line, flush=True)
    return ok


class Failed(Exception):
    pass


def ensure(cond, what: str) -> None:
    if not cond:
        raise Failed(what)


def check(name: str):
    """Decorator: run the function as one named check; its return value (a
    string) is the PASS detail, a Failed (or any exception) makes it FAIL."""

    def wrap(fn):
        def run(*a, **kw):
            try:
                detail = fn(*a, **kw)
            except (Failed, op.ProviderError) as e:
                return record(name, False, str(e))
            except Exception as e:  # noqa: BLE001 - a crash is a failed check, with its trace
                tb = traceback.format_exc(limit=4)
                return record(name, False, f"{type(e).__name__}: {e}\n{tb}")
            return record(name, True, detail or "")

        return run

    return wrap


# --- tokens -----------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def verify(info: dict, token: str, *, jwks: dict | None = None, audience: str | None = None,
           leeway: float = 0) -> dict:
    """PyJWT verification against the provider's JWKS (fetched unless given)."""
    jwks = jwks or op.jwks(info)
    header = jwt.get_unverified_header(token)
    keys = {k["kid"]: k for k in jwks["keys"]}
    if header.get("kid") not in keys:
        raise jwt.InvalidKeyError(f"kid {header.get('kid')!r} is not in the JWKS ({sorted(keys)})")
    key = jwt.PyJWK(keys[header["kid"]]).key
    return jwt.decode(token, key, algorithms=["RS256"], audience=audience or info["resource"],
                      issuer=info["issuer"], leeway=leeway,
                      options={"require": ["exp", "iat", "iss", "aud"]})


def fails(fn, exc) -> bool:
    try:
        fn()
    except exc:
        return True
    return False


def tamper_signature(token: str) -> str:
    head, body, sig = token.split(".")
    raw = bytearray(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)))
    raw[len(raw) // 2] ^= 0x01
    return f"{head}.{body}.{b64url(bytes(raw))}"


def good_claims(info: dict, **over) -> dict:
    now = int(time.time())
    c = {"iss": info["issuer"], "aud": info["resource"], "sub": "mallory", "client_id": "nb-full",
         "scope": ALL, "iat": now, "exp": now + 300, "jti": b64url(os.urandom(12))}
    c.update(over)
    return c


# --- the server over HTTP ---------------------------------------------------


class Server:
    def __init__(self, url: str, info: dict):
        self.url = url
        self.info = info
        p = urlsplit(url)
        self.origin = f"{p.scheme}://{p.netloc}"
        self.prm_url = f"{self.origin}/.well-known/oauth-protected-resource{p.path}"
        self.http = op.http_client(timeout=httpx2.Timeout(60.0, connect=5.0))
        self.rid = 0

    def post(self, token: str | None, method: str, params: dict | None = None):
        """One JSON-RPC request; returns (status, lower-case headers, message or None)."""
        self.rid += 1
        h = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
             "MCP-Protocol-Version": PROTOCOL}
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        body = {"jsonrpc": "2.0", "id": self.rid, "method": method}
        if params is not None:
            body["params"] = params
        r = self.http.post(self.url, headers=h, content=json.dumps(body).encode())
        msgs = parse_messages(r.headers.get("content-type", ""), r.content)
        msg = next((m for m in msgs if isinstance(m, dict) and m.get("id") == self.rid), None)
        return r.status_code, {k.lower(): v for k, v in r.headers.items()}, msg

    def initialize(self, token: str | None):
        return self.post(token, "initialize", {"protocolVersion": PROTOCOL, "capabilities": {},
                                               "clientInfo": {"name": "oauth_check", "version": "1"}})

    def call(self, token: str | None, tool: str, args: dict):
        return self.post(token, "tools/call", {"name": tool, "arguments": args})


def challenge(headers: dict) -> dict:
    """The parameters of a `WWW-Authenticate: Bearer ...` header ({} if none)."""
    v = headers.get("www-authenticate", "")
    if not v.lower().startswith("bearer"):
        return {}
    return dict(re.findall(r'([A-Za-z_]+)="([^"]*)"', v))


def expect_401(srv: Server, token: str | None, *, invalid: bool) -> str:
    status, h, msg = srv.initialize(token)
    ensure(status == 401, f"status {status}, expected 401 (body {json.dumps(msg)[:200] if msg else ''})")
    c = challenge(h)
    ensure(c, f"no Bearer WWW-Authenticate: {h.get('www-authenticate')!r}")
    ensure(c.get("resource_metadata") == srv.prm_url,
           f"resource_metadata={c.get('resource_metadata')!r}, expected {srv.prm_url!r}")
    ensure(c.get("scope"), f"no scope in the challenge: {h.get('www-authenticate')!r}")
    if invalid:
        ensure(c.get("error") == "invalid_token", f"error={c.get('error')!r}, expected invalid_token")
    else:
        ensure("error" not in c, f"a request with no token got error={c.get('error')!r} (RFC 6750 3.1: none)")
    return f"WWW-Authenticate: {h['www-authenticate']}"


def expect_ok_init(srv: Server, token: str) -> None:
    status, h, msg = srv.initialize(token)
    ensure(status == 200 and msg and "result" in msg,
           f"initialize: status {status}, {json.dumps(msg)[:300] if msg else 'no message'}; "
           f"WWW-Authenticate {h.get('www-authenticate')!r}")


def expect_403(srv: Server, token: str, tool: str, args: dict, scope: str) -> str:
    status, h, msg = srv.call(token, tool, args)
    ensure(status == 403, f"{tool}: status {status}, expected 403 ({json.dumps(msg)[:200] if msg else ''})")
    c = challenge(h)
    ensure(c.get("error") == "insufficient_scope", f"error={c.get('error')!r}: {h.get('www-authenticate')!r}")
    ensure(c.get("scope") == scope, f"scope={c.get('scope')!r}, expected {scope!r}")
    ensure(c.get("resource_metadata") == srv.prm_url, f"resource_metadata={c.get('resource_metadata')!r}")
    return f"{tool}: WWW-Authenticate: {h['www-authenticate']}"


# --- the checks ---------------------------------------------------------------


def provider_checks(info: dict, tokens: dict) -> None:
    @check("provider: discovery document")
    def discovery():
        with op.http_client() as http:
            d = http.get(info["issuer"] + "/.well-known/openid-configuration").json()
        ensure(d["issuer"] == info["issuer"], f"issuer {d['issuer']!r}")
        ensure(d["jwks_uri"] == info["jwks_uri"], f"jwks_uri {d['jwks_uri']!r}")
        ensure(d.get("registration_endpoint"), "no registration_endpoint (dynamic registration)")
        ensure("S256" in d.get("code_challenge_methods_supported", []), "no PKCE S256")
        ensure(set(SCOPES.values()) <= set(d.get("scopes_supported", [])), f"scopes {d.get('scopes_supported')}")
        ensure({"client_credentials", "authorization_code"} <= set(d.get("grant_types_supported", [])),
               f"grant types {d.get('grant_types_supported')}")
        return f"issuer {d['issuer']}"

    discovery()

    @check("provider: client_credentials gives a JWT access token the JWKS verifies")
    def full():
        t = op.client_credentials(info, "full", resource=info["resource"], scope=ALL)
        token = t["access_token"]
        header, _ = op.unverified(token)
        ensure(header.get("alg") == "RS256", f"alg {header.get('alg')}")
        ensure(header.get("kid") == info["kid"], f"kid {header.get('kid')!r}, expected {info['kid']!r}")
        ensure(header.get("typ") == "at+jwt", f"typ {header.get('typ')!r}")
        c = verify(info, token)
        ensure(c["iss"] == info["issuer"] and c["aud"] == info["resource"], f"iss/aud {c['iss']} {c['aud']}")
        ensure(set(c["scope"].split()) == set(SCOPES.values()), f"scope {c['scope']!r}")
        ensure(c["exp"] - c["iat"] == info["ttl"], f"lifetime {c['exp'] - c['iat']} s, expected {info['ttl']}")
        ensure(c.get("sub") == "nb-full" and c.get("client_id") == "nb-full", f"sub {c.get('sub')!r}")
        tokens["full"] = token
        return f"kid {header['kid']}, aud {c['aud']}, scope {c['scope']!r}, exp-iat {c['exp'] - c['iat']} s"

    full()

    @check("provider: the read-only client gets images:read and nothing more")
    def read():
        t = op.client_credentials(info, "read", resource=info["resource"], scope="images:read")
        c = verify(info, t["access_token"])
        ensure(c["scope"] == "images:read", f"scope {c['scope']!r}")
        status, body = op.token_error(info, "read", resource=info["resource"], scope="images:generate")
        ensure(status == 400 and body.get("error") == "invalid_scope",
               f"asking for images:generate: {status} {body}")
        tokens["read"] = t["access_token"]
        return "images:generate refused with invalid_scope"

    read()

    @check("provider: a token for the other resource carries the other audience")
    def other():
        ensure(info.get("other_resource"), "the provider has no --other-resource")
        t = op.client_credentials(info, "full", resource=info["other_resource"], scope=ALL)
        token = t["access_token"]
        c = verify(info, token, audience=info["other_resource"])  # good in every other way
        ensure(c["aud"] == info["other_resource"], f"aud {c['aud']!r}")
        ensure(fails(lambda: verify(info, token), jwt.InvalidAudienceError), "verifies for the MCP resource")
        status, body = op.token_error(info, "full", resource="http://127.0.0.1:9/unknown", scope=ALL)
        ensure(status == 400 and body.get("error") == "invalid_target", f"unknown resource: {status} {body}")
        tokens["other_aud"] = token
        return f"aud {c['aud']}; an unknown resource is refused with invalid_target"

    other()

    @check("provider: authorization code + PKCE + dynamic registration, signed in through devInteractions")
    def authcode():
        redirect_uri = "http://127.0.0.1:9/callback"
        with op.http_client() as http:
            reg = http.post(info["issuer"] + "/reg", json={
                "redirect_uris": [redirect_uri], "application_type": "native",
                "grant_types": ["authorization_code"], "response_types": ["code"],
                "token_endpoint_auth_method": "none", "scope": ALL})
            ensure(reg.status_code == 201, f"registration: {reg.status_code} {reg.text[:300]}")
            client_id = reg.json()["client_id"]
            verifier = b64url(os.urandom(48))
            challenge_ = b64url(hashlib.sha256(verifier.encode()).digest())
            state = b64url(os.urandom(12))
            q = httpx2.QueryParams({"response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri,
                                    "scope": ALL, "state": state, "code_challenge": challenge_,
                                    "code_challenge_method": "S256", "resource": info["resource"]})
            got = op.dev_login(f"{info['issuer']}/auth?{q}", redirect_uri, "bob")
            ensure("code" in got, f"no code: {got}")
            ensure(got.get("state") == state and got.get("iss") == info["issuer"], f"state/iss {got}")
            tok = http.post(info["token_endpoint"], data={
                "grant_type": "authorization_code", "code": got["code"], "redirect_uri": redirect_uri,
                "client_id": client_id, "code_verifier": verifier, "resource": info["resource"]})
            ensure(tok.status_code == 200, f"token: {tok.status_code} {tok.text[:300]}")
        c = verify(info, tok.json()["access_token"])
        ensure(c["sub"] == "bob" and c["client_id"] == client_id, f"sub {c['sub']!r} client {c['client_id']!r}")
        ensure(set(c["scope"].split()) == set(SCOPES.values()), f"scope {c['scope']!r}")
        return f"sub bob, client {client_id}, aud {c['aud']}"

    authcode()

    @check("provider: the crafted bad tokens are bad for one reason each")
    def crafted():
        full_token = tokens["full"]
        tampered = tamper_signature(full_token)
        ensure(op.unverified(tampered) == op.unverified(full_token), "tampering changed the header or claims")
        ensure(fails(lambda: verify(info, tampered), jwt.InvalidSignatureError), "the tampered token verifies")
        foreign = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        kid = "unknown-" + b64url(os.urandom(6))
        unknown = jwt.encode(good_claims(info), foreign, algorithm="RS256", headers={"kid": kid, "typ": "at+jwt"})
        ensure(fails(lambda: verify(info, unknown), jwt.InvalidKeyError), "the unknown kid is in the JWKS")
        jwt.decode(unknown, foreign.public_key(), algorithms=["RS256"], audience=info["resource"],
                   issuer=info["issuer"])  # good in every other way
        # A foreign key under the provider's own kid: only the signature is wrong.
        stolen_kid = jwt.encode(good_claims(info), foreign, algorithm="RS256",
                                headers={"kid": info["kid"], "typ": "at+jwt"})
        ensure(fails(lambda: verify(info, stolen_kid), jwt.InvalidSignatureError), "the foreign key verifies")
        # alg=none, and HS256 keyed with the provider's public key (algorithm confusion).
        head_none = b64url(json.dumps({"alg": "none", "typ": "at+jwt", "kid": info["kid"]}).encode())
        body = b64url(json.dumps(good_claims(info)).encode())
        alg_none = f"{head_none}.{body}."
        pub = jwt.PyJWK(next(k for k in op.jwks(info)["keys"] if k["kid"] == info["kid"])).key
        pem = pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        head_hs = b64url(json.dumps({"alg": "HS256", "typ": "at+jwt", "kid": info["kid"]}).encode())
        mac = hmac.new(pem, f"{head_hs}.{body}".encode(), hashlib.sha256).digest()
        hs256 = f"{head_hs}.{body}.{b64url(mac)}"
        tokens.update(tampered=tampered, unknown_key=unknown, stolen_kid=stolen_kid, alg_none=alg_none,
                      hs256_confusion=hs256)
        return f"unknown kid {kid}"

    crafted()


def get_short(info: dict, tokens: dict) -> bool:
    """A token from the short-lived client, fetched just before it is used."""

    @check("provider: a short-lived token (for the expiry check)")
    def short():
        t = op.client_credentials(info, "short", resource=info["resource"], scope=ALL)
        token = t["access_token"]
        c = verify(info, token)
        ensure(c["exp"] - c["iat"] == info["short_ttl"], f"lifetime {c['exp'] - c['iat']} s")
        tokens["short"] = token
        tokens["short_exp"] = c["exp"]
        return f"expires {info['short_ttl']} s after issue"

    return short()


def server_checks(srv: Server, info: dict, tokens: dict, args) -> None:
    @check("server: Protected Resource Metadata at both paths")
    def prm():
        got = []
        for path in ("/.well-known/oauth-protected-resource", urlsplit(srv.prm_url).path):
            r = srv.http.get(srv.origin + path)
            ensure(r.status_code == 200, f"{path}: {r.status_code}")
            ensure("application/json" in r.headers.get("content-type", ""), f"{path}: {r.headers.get('content-type')}")
            d = r.json()
            ensure(d.get("resource") == srv.url, f"{path}: resource {d.get('resource')!r}, expected {srv.url!r}")
            ensure(d.get("authorization_servers") == [info["issuer"]],
                   f"{path}: authorization_servers {d.get('authorization_servers')}")
            ensure(set(d.get("scopes_supported") or []) == set(SCOPES.values()),
                   f"{path}: scopes_supported {d.get('scopes_supported')}")
            ensure(d.get("bearer_methods_supported") == ["header"], f"{path}: {d.get('bearer_methods_supported')}")
            ensure(isinstance(d.get("resource_name"), str) and d["resource_name"], f"{path}: no resource_name")
            got.append(d)
        ensure(got[0] == got[1], "the two documents differ")
        return json.dumps(got[1])

    prm()

    @check("server: the short-lived token is accepted while it is fresh")
    def short_fresh():
        ensure(get_short(info, tokens), "no short-lived token")
        ensure(time.time() < tokens["short_exp"], "the short token expired before the server was asked")
        expect_ok_init(srv, tokens["short"])
        tokens["short_accepted"] = True
        return f"{tokens['short_exp'] - time.time():.1f} s before exp"

    short_fresh()

    check("server: no token -> 401 with resource_metadata and scope")(lambda: expect_401(srv, None, invalid=False))()

    @check("server: a full-scope provider token -> initialize, tools/list, generate_image (sha256 of the stored file)")
    def full_flow():
        token = tokens["full"]
        expect_ok_init(srv, token)
        status, h, msg = srv.post(token, "tools/list", {})
        ensure(status == 200 and msg and "result" in msg, f"tools/list: {status} {json.dumps(msg)[:300]}")
        names = {t["name"] for t in msg["result"]["tools"]}
        ensure({"generate_image", "edit_image", "continue_editing"} <= names, f"tools {sorted(names)}")
        tag = b64url(os.urandom(6))
        status, h, msg = srv.call(token, "generate_image", {"prompt": f"a heron {tag} fake:size=60000"})
        ensure(status == 200 and msg and "result" in msg, f"generate_image: {status} {json.dumps(msg)[:300]}")
        res = msg["result"]
        ensure(not res.get("isError"), f"generate_image isError: {json.dumps(res)[:300]}")
        s = res.get("structuredContent") or {}
        path = s.get("path")
        ensure(path and os.path.isfile(path), f"no stored file: {json.dumps(s)[:300]}")
        ensure(os.path.realpath(path).startswith(os.path.realpath(args.out_dir) + os.sep),
               f"{path} is not under the output folder")
        ensure(sha256_file(path) == s.get("sha256"), f"sha256 {s.get('sha256')} != the file's {sha256_file(path)}")
        return f"{s.get('imageId')} sha256 {s['sha256'][:16]}…, {len(names)} tools"

    full_flow()

    for name, key in (("a token for another audience (from the provider)", "other_aud"),
                      ("a provider token with its signature altered", "tampered"),
                      ("a token signed by an unknown key (kid not in the JWKS)", "unknown_key"),
                      ("a token signed by a foreign key under the provider's kid", "stolen_kid"),
                      ("an alg=none token", "alg_none"),
                      ("an HS256 token keyed with the provider's public key", "hs256_confusion"),
                      ("a bearer value that is not a JWT", None)):
        token = tokens[key] if key else "not-a-jwt"
        check(f"server: {name} -> 401 invalid_token")(lambda t=token: expect_401(srv, t, invalid=True))()

    @check("server: a read-only token -> initialize and a read tool work, generate/edit -> 403 insufficient_scope")
    def read_only():
        token = tokens["read"]
        expect_ok_init(srv, token)
        status, h, msg = srv.call(token, "get_configuration_status", {})
        ensure(status == 200 and msg and "result" in msg and not msg["result"].get("isError"),
               f"get_configuration_status: {status} {json.dumps(msg)[:300]}")
        d1 = expect_403(srv, token, "generate_image", {"prompt": "a forbidden fox fake:size=1000"},
                        SCOPES["generate"])
        d2 = expect_403(srv, token, "edit_image",
                        {"prompt": "a hat", "imagePath": "/nonexistent.png"}, SCOPES["edit"])
        return f"{d1}; {d2}"

    read_only()

    for mode in ("authcode", "client-credentials"):
        sdk_client_check(srv, info, args, mode)

    @check("server: the short-lived token is refused with 401 invalid_token after it expires")
    def short_expired():
        ensure(tokens.get("short_accepted"), "it was not accepted while fresh, so a refusal proves nothing")
        exp = tokens["short_exp"]
        bound = exp + float(os.environ.get("OAUTH_MAX_LEEWAY", "120"))
        # Proven expired and nothing else: it verifies with enough leeway.
        verify(info, tokens["short"], leeway=3600)
        while True:
            now = time.time()
            if now > exp:
                status, h, _ = srv.initialize(tokens["short"])
                if status == 401:
                    c = challenge(h)
                    ensure(c.get("error") == "invalid_token", f"error={c.get('error')!r}")
                    return f"refused {now - exp:.1f} s after exp (the server's leeway)"
                ensure(status == 200, f"status {status}")
            ensure(now < bound, f"still accepted {now - exp:.0f} s after exp (OAUTH_MAX_LEEWAY)")
            time.sleep(max(0.2, min(1.0, exp - now + 0.05)))

    short_expired()

    rotation_checks(info, args, srv, tokens)


def sdk_client_check(srv: Server, info: dict, args, mode: str) -> None:
    label = {"authcode": "authorization code + PKCE + dynamic registration",
             "client-credentials": "ClientCredentialsOAuthProvider"}[mode]

    @check(f"server: the Python MCP SDK's OAuth client ({label}), starting with no token, completes a call")
    def run():
        env = dict(os.environ, SDK_PROMPT_TAG=f"{mode}-{b64url(os.urandom(6))}", SDK_LOGIN="carol")
        if mode == "client-credentials":
            c = info["clients"]["full"]
            env.update(OAUTH_CLIENT_ID=c["client_id"], OAUTH_CLIENT_SECRET=c["client_secret"],
                       OAUTH_ISSUER=info["issuer"])
        script = os.environ.get("SDK_CLIENTS_PY") or os.path.join(HERE, "lib", "sdk-clients", "py_oauth_client.py")
        try:
            p = subprocess.run([args.python, script, mode, srv.url], env=env, capture_output=True, text=True,
                               timeout=120)
        except subprocess.TimeoutExpired:
            raise Failed("the SDK client did not finish in 120 s")
        ensure(p.returncode == 0, f"exit {p.returncode}: {p.stderr[-3000:]}")
        out = json.loads(p.stdout.strip().splitlines()[-1])
        ex = out["exchanges"]
        # The first request went out with no token and was refused with the challenge ...
        ensure(ex and ex[0].startswith(f"POST {srv.url} 401"), f"first exchange {ex[:1]}")
        c = challenge({"www-authenticate": out["first_challenge"] or ""})
        ensure(c.get("resource_metadata") == srv.prm_url, f"first challenge {out['first_challenge']!r}")
        # ... the next one fetched the metadata the challenge named, then the provider's.
        ensure(ex[1] == f"GET {srv.prm_url} 200", f"second exchange {ex[1:2]}, expected GET {srv.prm_url} 200")
        ensure(any(e.startswith(f"GET {info['issuer']}/.well-known/") and e.endswith(" 200") for e in ex),
               "no authorization server metadata fetched")
        if mode == "authcode":
            ensure(any(e.startswith(f"POST {info['issuer']}/reg ") and e.endswith(" 201") for e in ex),
                   "no dynamic client registration")
            ensure(out["claims"].get("sub") == "carol", f"sub {out['claims'].get('sub')!r}")
        ensure(any(e.startswith(f"POST {info['token_endpoint']} 200") for e in ex), "no token request")
        ensure(any(e.startswith(f"POST {srv.url} 200") for e in ex), "no accepted MCP request")
        claims = out["claims"]
        ensure(claims.get("aud") == srv.url and claims.get("iss") == info["issuer"], f"claims {claims}")
        ensure("generate_image" in out["tools"], f"tools {out['tools']}")
        path = out.get("path")
        ensure(path and os.path.isfile(path) and sha256_file(path) == out.get("sha256"),
               f"generate_image: sha256 {out.get('sha256')} vs the stored file {path}")
        return (f"{out['sdk']}, protocol {out['protocol']}, client {out['client_id']}, scope {claims.get('scope')!r}, "
                f"{len(ex)} HTTP exchanges, {out['imageId']}")

    run()


def rotation_checks(info: dict, args, srv: Server | None, tokens: dict) -> None:
    @check("provider: key rotation (SIGHUP) publishes a new kid and retires the old one")
    def rotate():
        old = info["kid"]
        os.kill(info["pid"], signal.SIGHUP)
        new_info = op.wait_generation(args.info, info["generation"] + 1)
        ensure(new_info["kid"] != old, "same kid after rotation")
        ensure(new_info["issuer"] == info["issuer"], "issuer changed")
        kids = [k["kid"] for k in op.jwks(new_info)["keys"]]
        ensure(kids == [new_info["kid"]], f"JWKS kids {kids}")
        t = op.client_credentials(new_info, "full", resource=new_info["resource"], scope=ALL)
        ensure(op.unverified(t["access_token"])[0]["kid"] == new_info["kid"], "the new token is not signed with the new key")
        verify(new_info, t["access_token"])
        ensure(fails(lambda: verify(new_info, tokens["full"]), jwt.InvalidKeyError),
               "the old token still verifies against the new JWKS")
        tokens["rotated"] = t["access_token"]
        info.update(new_info)
        return f"kid {old} -> {new_info['kid']}"

    if not rotate():
        return
    if srv is None:
        return

    @check("server: after the rotation a token signed with the new key is accepted (JWKS refetched)")
    def follows():
        wait = float(os.environ.get("OAUTH_ROTATION_WAIT", "90"))
        t0 = time.time()
        while True:
            status, h, msg = srv.initialize(tokens["rotated"])
            if status == 200 and msg and "result" in msg:
                break
            ensure(status == 401, f"status {status}")
            ensure(time.time() - t0 < wait, f"still refused after {wait:.0f} s: {h.get('www-authenticate')!r}")
            time.sleep(1)
        tag = b64url(os.urandom(6))
        status, h, msg = srv.call(tokens["rotated"], "generate_image", {"prompt": f"a kite {tag} fake:size=20000"})
        ensure(status == 200 and msg and not msg["result"].get("isError"), f"generate_image {status}")
        return f"accepted {time.time() - t0:.1f} s after the rotation"

    follows()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--info", required=True)
    ap.add_argument("--server-url")
    ap.add_argument("--out-dir")
    ap.add_argument("--python", default=sys.executable)
    args = ap.parse_args()
    if args.server_url and not args.out_dir:
        ap.error("--server-url needs --out-dir")

    info = op.load_info(args.info)
    tokens: dict = {}
    provider_checks(info, tokens)
    if args.server_url:
        if all(k in tokens for k in ("full", "read", "other_aud", "tampered")):
            server_checks(Server(args.server_url, info), info, tokens, args)
        else:
            record("server checks", False, "skipped: the provider checks above failed")
    else:
        @check("provider: the short-lived token is rejected by PyJWT once it expired")
        def expired():
            wait = tokens["short_exp"] - time.time() + 1.1
            if wait > 0:
                time.sleep(wait)
            ensure(fails(lambda: verify(info, tokens["short"]), jwt.ExpiredSignatureError), "still valid")
            verify(info, tokens["short"], leeway=3600)
            return "ExpiredSignatureError, and nothing else wrong with it"

        if get_short(info, tokens):
            expired()
        rotation_checks(info, args, None, tokens)

    passed = sum(1 for _, ok, _ in RESULTS if ok)
    failed = len(RESULTS) - passed
    print(f"oauth: {passed} passed, {failed} failed", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
