"""One phase of the imageId flow, driven by the Python MCP SDK (mcp 2.x).

Run by scripts/checks/sdk_clients.sh with the venv it installs (not by
itself; it lives outside scripts/checks/ so the test command does not run it).
The client is the SDK's high-level `mcp.Client` in its default negotiation
(`mode="auto"`: it probes `server/discover` and adopts 2026-07-28 when the
server offers it); only the bearer token is added, through the httpx2 client
the SDK's streamable HTTP transport accepts.

  py_client.py generate URL OUT.json   generate_image; writes {imageId, sha256, protocol}
  py_client.py continue URL IN.json    continue_editing by imageId, get_last_image_info,
                                       continue_editing without imageId (must be refused)

Env: SDK_TOKEN (bearer token), SDK_EXPECT_PROTOCOL (the version the
negotiation must end on), SDK_PROMPT_TAG (a word added to the generate
prompt), SDK_EXPECT_SHA256 (override the sha compared against, to prove the
check fails when it should). Prints one JSON line on success; on a failed
assertion prints `py_client: FAILED: ...` to stderr and exits 1.
"""

from __future__ import annotations

import json
import os
import re
import sys
import traceback
from importlib.metadata import version

import anyio
import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

IMAGE_ID = re.compile(r"^img_[0-9a-f]{32}$")


class CheckFailed(Exception):
    pass


def ensure(cond: bool, what: str, result=None) -> None:
    if not cond:
        detail = ""
        if result is not None:
            detail = "\n--- result ---\n" + json.dumps(dump(result), indent=2)[:2000]
        raise CheckFailed(what + detail)


def dump(result):
    return result.model_dump(mode="json", by_alias=True, exclude_none=True)


def text_of(result) -> str:
    return "\n".join(getattr(c, "text", "") for c in result.content if getattr(c, "type", None) == "text")


def structured(result) -> dict:
    s = result.structured_content
    if s is None:  # the text block carries the same JSON
        s = json.loads(text_of(result))
    ensure(isinstance(s, dict), "structuredContent is not an object", result)
    return s


async def call(client: Client, name: str, args: dict, *, want_error: bool = False):
    result = await client.call_tool(name, args)
    if want_error:
        ensure(result.is_error, f"{name} {json.dumps(args)}: expected isError, got a result", result)
    else:
        ensure(not result.is_error, f"{name} {json.dumps(args)}: isError: {text_of(result)[:300]}", result)
    return result


async def run(phase: str, url: str, state_path: str) -> dict:
    token = os.environ["SDK_TOKEN"]
    expect = os.environ.get("SDK_EXPECT_PROTOCOL", "")
    # The SDK's own defaults (30 s connect, 300 s read) are far longer than this check waits.
    timeout = httpx2.Timeout(20.0, read=60.0)
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=timeout) as http:
        async with Client(streamable_http_client(url, http_client=http)) as client:
            protocol = client.protocol_version
            ensure(not expect or protocol == expect, f"negotiated protocol {protocol!r}, expected {expect!r}")
            out = {"phase": phase, "protocol": protocol, "sdk": f"mcp {version('mcp')}"}

            if phase == "generate":
                # The fake Gemini seeds its image from the prompt: a tag per run makes the sha unique.
                prompt = f"a red fox {os.environ.get('SDK_PROMPT_TAG', '')} fake:size=200000"
                r = await call(client, "generate_image", {"prompt": prompt})
                s = structured(r)
                ensure(bool(IMAGE_ID.match(str(s.get("imageId")))), f"imageId {s.get('imageId')!r} is not img_ + 32 hex", r)
                ensure(bool(re.fullmatch(r"[0-9a-f]{64}", str(s.get("sha256")))), "no sha256 in the result", r)
                out.update(imageId=s["imageId"], sha256=s["sha256"], path=s.get("path"))
                with open(state_path, "w") as f:
                    json.dump(out, f)
                return out

            state = json.load(open(state_path))
            image_id, sha = state["imageId"], state["sha256"]
            # A sha to compare against, overridable so the check can prove it fails when it should.
            sha = os.environ.get("SDK_EXPECT_SHA256", sha)

            r = await call(client, "continue_editing", {"imageId": image_id, "prompt": "add a hat fake:size=100000"})
            s = structured(r)
            ensure(s.get("parentImageId") == image_id,
                   f"continue_editing: parentImageId {s.get('parentImageId')!r}, expected {image_id!r}", r)
            ensure(bool(IMAGE_ID.match(str(s.get("imageId")))) and s["imageId"] != image_id,
                   f"continue_editing: the edit's imageId {s.get('imageId')!r} is not a new id", r)

            r = await call(client, "get_last_image_info", {"imageId": image_id})
            info = structured(r)
            image = info.get("image") or {}
            ensure(image.get("imageId") == image_id,
                   f"get_last_image_info: image.imageId {image.get('imageId')!r}, expected {image_id!r}", r)
            ensure(image.get("sha256") == sha, f"get_last_image_info: image.sha256 {image.get('sha256')!r}, expected {sha!r}", r)

            r = await call(client, "continue_editing", {"prompt": "add a scarf fake:size=100000"}, want_error=True)
            ensure("imageId" in text_of(r), "continue_editing without imageId: the error does not mention imageId", r)

            out.update(imageId=image_id, editId=s["imageId"])
            return out


def leaves(e: BaseException) -> list[BaseException]:
    """The real errors inside anyio's (nested) exception groups."""
    if isinstance(e, BaseExceptionGroup):
        return [leaf for sub in e.exceptions for leaf in leaves(sub)]
    return [e]


def main() -> int:
    if len(sys.argv) != 4 or sys.argv[1] not in ("generate", "continue"):
        print(__doc__, file=sys.stderr)
        return 2
    phase, url, state_path = sys.argv[1:]
    try:
        out = anyio.run(_bounded, phase, url, state_path)
    except BaseException as e:  # noqa: BLE001 - report every failure the same way, then exit 1
        errors = leaves(e)
        failed = [x for x in errors if isinstance(x, CheckFailed)]
        for x in failed or errors:
            if isinstance(x, CheckFailed):
                print(f"py_client: FAILED ({phase} on {url}): {x}", file=sys.stderr)
            else:
                tb = "".join(traceback.format_exception(x))
                print(f"py_client: FAILED ({phase} on {url}): {type(x).__name__}: {x}\n{tb}", file=sys.stderr)
        return 1
    print(json.dumps(out))
    return 0


async def _bounded(phase: str, url: str, state_path: str) -> dict:
    with anyio.fail_after(90):
        return await run(phase, url, state_path)


if __name__ == "__main__":
    sys.exit(main())
