"""Who may fetch and touch what, when users sign in: one ASGI middleware in front of Gradio's routes.

Gradio serves every file in its upload folder and cache (`/gradio_api/file=<path>`) to any signed-in
user, binds no session to a user, and neither limits failed sign-ins nor ages its session tokens.
`Guard` adds, without patching Gradio:

- **files**: a user fetches (or passes as an input) a file of Gradio's upload folder or cache only
  when the server handed that file to this user: their own uploads (the upload route's answer) and
  files in the answers to their own requests (outputs: galleries, downloads, previews). Others get
  403 "File not allowed", as for a file that is not there. Files are keyed by their content-hash
  folder, so one upload owned by two users (same bytes) opens for both.
- **sessions**: a Gradio session (its `session_hash`, which keys the per-page state and the event
  stream) belongs to the first user who used it; another user's request naming it is refused.
- **sign-in**: more than LOGIN_FAILURES failed sign-ins within LOGIN_WINDOW_S from one address, or
  for one user name, are answered 429 until the window has passed.
- **tokens**: a session token older than SESSION_MAX_AGE_S is forgotten (the user signs in again).

It is installed by webapp.ui.serve only with --auth (without sign-in every visitor is one user).
"""

from __future__ import annotations

import json
import os
import time
from collections import OrderedDict, deque
from pathlib import Path
from urllib.parse import parse_qs, unquote

LOGIN_FAILURES = 10
LOGIN_WINDOW_S = 60.0
SESSION_MAX_AGE_S = 7 * 24 * 3600.0
MAX_JSON_BODY = 8 << 20  # an event's JSON body (file inputs travel as paths: these are small)
MAX_SCANNED_BODY = 32 << 20  # JSON answers larger than this are passed on unread
MAX_OWNED = 200_000  # file folders remembered (oldest forgotten first)
MAX_SESSIONS = 100_000

API = "/gradio_api"
FILE_ROUTES = (f"{API}/file=", f"{API}/file/")
LOGIN_ROUTES = ("/login", "/login/")
FORBIDDEN_FILE = b'{"detail":"File not allowed."}'


def gradio_file_roots() -> list[Path]:
    """The folders whose files Gradio's file route serves as 'created': its upload folder and cache."""
    from gradio.utils import get_cache_folder, get_upload_folder

    roots = []
    for folder in (get_upload_folder(), get_cache_folder()):
        for form in (Path(os.path.abspath(folder)), Path(os.path.realpath(folder))):
            if form not in roots:
                roots.append(form)
    return roots


class Guard:
    """The ASGI middleware (see the module's docstring); `scope["app"]` is Gradio's App (tokens, cookie id)."""

    def __init__(self, app, roots: list[Path] | None = None, clock=time.monotonic) -> None:
        self.app = app
        self.roots = roots if roots is not None else gradio_file_roots()
        self.clock = clock
        self.owned: OrderedDict[str, set[str]] = OrderedDict()
        self.sessions: OrderedDict[str, str] = OrderedDict()
        self.failures: dict[str, deque[float]] = {}
        self.first_seen: dict[str, float] = {}

    # ------------------------------------------------------------------ the request's way through

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = _route_path(scope)
        method = scope["method"]
        if method == "POST" and path in LOGIN_ROUTES:
            return await self._login(scope, receive, send)
        user = self._user(scope)
        if user is None:  # not signed in: Gradio answers 401 itself
            return await self.app(scope, receive, send)
        if path.startswith(FILE_ROUTES):
            prefix = next(p for p in FILE_ROUTES if path.startswith(p))
            if self._foreign(path[len(prefix):], user):
                return await _answer(send, 403, FORBIDDEN_FILE)
            return await self.app(scope, receive, send)
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if any(not self._session_ok(h, user) for h in query.get("session_hash", [])):
            return await _answer(send, 403, b'{"detail":"This session belongs to another user."}')
        named = (path.split("/")[3] if path.startswith((f"{API}/heartbeat/", f"{API}/stream/")) and method == "GET"
                 and path.count("/") >= 3 else None)  # /gradio_api/heartbeat/<hash>, /gradio_api/stream/<hash>/...
        if named and not self._session_ok(named, user):
            return await _answer(send, 403, b'{"detail":"This session belongs to another user."}')
        if method == "POST" and path.startswith(API) and _content_type(scope).startswith(b"application/json"):
            body = await _read_body(receive, MAX_JSON_BODY)
            if body is None:
                return await _answer(send, 413, b'{"detail":"Request body too large."}')
            refusal = self._check_event(body, user)
            if refusal:
                return await _answer(send, 403, json.dumps({"detail": refusal}).encode())
            receive = _replay(body, receive)
        return await self.app(scope, receive, self._recording(send, user, uploads=path == f"{API}/upload"))

    def _check_event(self, body: bytes, user: str) -> str | None:
        try:
            event = json.loads(body)
        except ValueError:
            return None  # Gradio answers malformed JSON itself
        if isinstance(event, dict) and isinstance(event.get("session_hash"), str):
            if not self._session_ok(event["session_hash"], user):
                return "This session belongs to another user."
        for value in _file_references(event):
            if self._foreign(value, user):
                return "A file in this request was not uploaded by you (or has expired): upload it again."
        return None

    # ------------------------------------------------------------------ users, sessions, files

    def _user(self, scope) -> str | None:
        app = scope.get("app")
        tokens, cookie_id = getattr(app, "tokens", None), getattr(app, "cookie_id", None)
        if tokens is None or cookie_id is None:
            return None
        cookies = _cookies(scope)
        token = cookies.get(f"access-token-{cookie_id}") or cookies.get(f"access-token-unsecure-{cookie_id}")
        user = tokens.get(token) if token else None
        if user is None:
            return None
        now = self.clock()
        born = self.first_seen.setdefault(token, now)
        if now - born > SESSION_MAX_AGE_S:
            tokens.pop(token, None)
            self.first_seen.pop(token, None)
            return None
        if len(self.first_seen) > 2 * len(tokens) + 1000:  # forget tokens Gradio no longer knows
            self.first_seen = {t: s for t, s in self.first_seen.items() if t in tokens}
        return user

    def _session_ok(self, session_hash: str, user: str) -> bool:
        owner = self.sessions.get(session_hash)
        if owner is None:
            self.sessions[session_hash] = user
            while len(self.sessions) > MAX_SESSIONS:
                self.sessions.popitem(last=False)
            return True
        self.sessions.move_to_end(session_hash)
        return owner == user

    def _key(self, value: str) -> str | None:
        """The content-hash folder of a path in Gradio's upload folder or cache; None for other paths."""
        if "file=" in value:
            value = unquote(value.split("file=", 1)[1])
        if not value or "\0" in value:
            return None
        for form in (Path(os.path.abspath(value)), Path(os.path.realpath(value))):
            for root in self.roots:
                if form.is_relative_to(root) and form != root:
                    return str(root / form.relative_to(root).parts[0])
        return None

    def _foreign(self, value: str, user: str) -> bool:
        key = self._key(value)
        return key is not None and user not in self.owned.get(key, ())

    def _own(self, value: str, user: str) -> None:
        key = self._key(value)
        if key is None:
            return
        self.owned.setdefault(key, set()).add(user)
        self.owned.move_to_end(key)
        while len(self.owned) > MAX_OWNED:
            self.owned.popitem(last=False)

    def _recording(self, send, user: str, uploads: bool):
        """`send`, noting the files in JSON and event-stream answers as the user's before passing them on."""
        kind, buffer = None, bytearray()

        async def recording_send(message) -> None:
            nonlocal kind, buffer
            if message["type"] == "http.response.start":
                ctype = dict(message.get("headers", [])).get(b"content-type", b"")
                encoded = b"content-encoding" in dict(message.get("headers", []))
                kind = None if encoded else ("json" if ctype.startswith(b"application/json")
                                             else "sse" if ctype.startswith(b"text/event-stream") else None)
            elif message["type"] == "http.response.body" and kind is not None:
                buffer += message.get("body", b"")
                if kind == "sse":
                    *events, rest = bytes(buffer).split(b"\n\n")
                    buffer = bytearray(rest)
                    for event in events:
                        for line in event.split(b"\n"):
                            if line.startswith(b"data:"):
                                self._note(line[5:], user, uploads=False)
                elif not message.get("more_body"):
                    self._note(bytes(buffer), user, uploads)
                    buffer = bytearray()
                if len(buffer) > MAX_SCANNED_BODY:
                    kind, buffer = None, bytearray()
            await send(message)

        return recording_send

    def _note(self, raw: bytes, user: str, uploads: bool) -> None:
        try:
            data = json.loads(raw)
        except ValueError:
            return
        if uploads and isinstance(data, list):  # the upload route answers with the saved paths
            for value in data:
                if isinstance(value, str):
                    self._own(value, user)
            return
        for value in _handed_files(data):
            self._own(value, user)

    # ------------------------------------------------------------------ sign-in

    async def _login(self, scope, receive, send) -> None:
        body = await _read_body(receive, 64 << 10)
        if body is None:
            return await _answer(send, 413, b'{"detail":"Request body too large."}')
        form = parse_qs(body.decode("utf-8", "replace")) if _content_type(scope).startswith(
            b"application/x-www-form-urlencoded") else {}
        name = (form.get("username") or [""])[0].strip()
        client = scope.get("client") or ("?", 0)
        keys = [f"ip:{client[0]}"] + ([f"user:{name}"] if name else [])
        now = self.clock()
        waits = [self._wait(key, now) for key in keys]
        if max(waits) > 0:
            wait = max(1, round(max(waits)))
            detail = json.dumps({"detail": f"Too many failed sign-ins: try again in {wait} s."}).encode()
            return await _answer(send, 429, detail, [(b"retry-after", str(wait).encode())])
        status = 0

        async def watching_send(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        await self.app(scope, _replay(body, receive), watching_send)
        if 400 <= status < 500:
            for key in keys:
                self.failures.setdefault(key, deque()).append(now)
            if len(self.failures) > 10_000:
                self.failures = {k: q for k, q in self.failures.items() if q and now - q[-1] < LOGIN_WINDOW_S}

    def _wait(self, key: str, now: float) -> float:
        """Seconds until `key` may try again (0: now)."""
        failed = self.failures.get(key)
        if not failed:
            return 0.0
        while failed and now - failed[0] >= LOGIN_WINDOW_S:
            failed.popleft()
        if len(failed) < LOGIN_FAILURES:
            return 0.0
        return LOGIN_WINDOW_S - (now - failed[-LOGIN_FAILURES])


# ---------------------------------------------------------------------- ASGI helpers


def _route_path(scope) -> str:
    path, root = scope.get("path", ""), scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


def _content_type(scope) -> bytes:
    return dict(scope.get("headers", [])).get(b"content-type", b"").lower()


def _cookies(scope) -> dict[str, str]:
    from starlette.requests import cookie_parser

    header = b"; ".join(v for k, v in scope.get("headers", []) if k == b"cookie")
    return cookie_parser(header.decode("latin-1")) if header else {}


async def _read_body(receive, limit: int) -> bytes | None:
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        body += message.get("body", b"")
        if len(body) > limit:
            return None
        if not message.get("more_body"):
            break
    return bytes(body)


def _replay(body: bytes, receive):
    sent = False

    async def replayed():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


async def _answer(send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


def _file_references(value) -> list[str]:
    """Every `path` and `url` string of the dicts in an event's data (how Gradio passes files in)."""
    found, stack = [], [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            found += [item[k] for k in ("path", "url") if isinstance(item.get(k), str)]
            stack += list(item.values())
        elif isinstance(item, list):
            stack += item
    return found


def _handed_files(value) -> list[str]:
    """The paths of the FileData dicts in an answer (files the server hands to the page)."""
    found, stack = [], [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            meta = item.get("meta")
            if isinstance(item.get("path"), str) and isinstance(meta, dict) and meta.get("_type") == "gradio.FileData":
                found.append(item["path"])
            stack += list(item.values())
        elif isinstance(item, list):
            stack += item
    return found
