"""A small Hugging Face Hub stand-in for tests (no network).

It implements only the routes that ``huggingface_hub``'s real client touches when timm-nas pushes a folder and
timm pulls it back (see ``shared/reference/ecosystem.md`` section 4):

* ``POST /api/repos/create``                     create a model repo (409 with its URL when it exists)
* ``POST /api/validate-yaml``                    card metadata check (YAML, types, ``model-index`` shape)
* ``POST /api/models/{repo}/preupload/{rev}``    every file is uploaded "regular" (inline, no LFS / Xet)
* ``POST /api/models/{repo}/commit/{rev}``       NDJSON commit: ``header`` / ``file`` / ``deletedFile`` lines
* ``HEAD|GET /{repo}/resolve/{rev}/{path}``      file metadata (``X-Repo-Commit``, ``ETag``) and content

Anything else answers 404 and is recorded in :attr:`FakeHub.unknown`, so a test can assert that the client
used no route the stand-in does not know. The server binds 127.0.0.1 only, serves a bounded number of requests
and stops by itself after ``lifetime_s`` seconds even if a test forgets to stop it.
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

__all__ = ["FakeHub", "Repo"]

_REPO = r"(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)"
_ROUTES = {
    "create": re.compile(r"^/api/repos/create$"),
    "validate_yaml": re.compile(r"^/api/validate-yaml$"),
    "preupload": re.compile(rf"^/api/models/{_REPO}/preupload/(?P<rev>[^/]+)$"),
    "commit": re.compile(rf"^/api/models/{_REPO}/commit/(?P<rev>[^/]+)$"),
    "resolve": re.compile(rf"^/{_REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$"),
}


@dataclass
class Repo:
    """One model repository: its files at the head of ``main`` and its commit ids (oldest first)."""

    private: bool = False
    files: dict[str, bytes] = field(default_factory=dict)
    commits: list[str] = field(default_factory=list)

    @property
    def head(self) -> str:
        return self.commits[-1] if self.commits else "0" * 40


class FakeHub:
    """The stand-in server. Use as a context manager; ``endpoint`` is the base URL for ``HF_ENDPOINT``.

    Args:
        token: the only token accepted for writes (``Authorization: Bearer <token>``); reads are open.
        max_requests: the serving loop stops after this many requests.
        lifetime_s: the serving loop stops after this many seconds.
        echo_auth_in_errors: make every write answer 403 with the request's ``Authorization`` header in the
            error message, to check that the client side never shows a token it receives back.
    """

    def __init__(self, token: str = "hf_dummy_token", *, max_requests: int = 400, lifetime_s: float = 180.0,
                 echo_auth_in_errors: bool = False) -> None:
        self.token = token
        self.max_requests = max_requests
        self.lifetime_s = lifetime_s
        self.echo_auth_in_errors = echo_auth_in_errors
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path) in arrival order
        self.unknown: list[tuple[str, str]] = []
        self.auth_headers: list[str] = []
        self.create_payloads: list[dict[str, Any]] = []
        self.validated: list[str] = []  # README contents sent to /api/validate-yaml
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    # ----------------------------------------------------------------------------------------- lifecycle
    @property
    def endpoint(self) -> str:
        if self._server is None:
            raise RuntimeError("the fake Hub is not running; use it as a context manager")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "FakeHub":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        hub = self

        class Handler(_Handler):
            fake = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._server.timeout = 0.2  # handle_request() returns at least this often, so the loop sees stop/deadline
        self._thread = threading.Thread(target=self._serve, name="fake-hub", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        assert self._server is not None
        deadline = time.monotonic() + self.lifetime_s
        while not self._stop.is_set() and time.monotonic() < deadline and len(self.requests) < self.max_requests:
            self._server.handle_request()
        self._server.server_close()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # ------------------------------------------------------------------------------------------- helpers
    def commit(self, repo_id: str, files: dict[str, bytes], deleted: list[str] = ()) -> str:
        """Apply a commit to ``repo_id`` and return its 40-hex id."""
        with self._lock:
            repo = self.repos[repo_id]
            for path in deleted:
                repo.files.pop(path, None)
            repo.files.update(files)
            h = hashlib.sha1(repo.head.encode())
            for path in sorted(files):
                h.update(path.encode() + b"\0" + files[path])
            oid = h.hexdigest()
            repo.commits.append(oid)
            return oid


def _card_metadata_errors(content: str) -> list[str]:
    """The checks the stand-in applies to a card's front matter: YAML mapping, string ``library_name`` and
    ``license``, list ``tags`` / ``datasets``, and a well-formed ``model-index``."""
    import yaml

    m = re.match(r"^---\n(.*?)\n---\n", content, flags=re.S)
    if not m:
        return []  # no metadata: the Hub only warns
    try:
        meta = yaml.safe_load(m.group(1))
    except yaml.YAMLError as e:
        return [f"invalid YAML: {e}"]
    if not isinstance(meta, dict):
        return ["metadata must be a YAML mapping"]
    errors = [f"{k} must be a string" for k in ("library_name", "license", "pipeline_tag")
              if k in meta and not isinstance(meta[k], str)]
    errors += [f"{k} must be a list of strings" for k in ("tags", "datasets")
               if k in meta and not (isinstance(meta[k], list) and all(isinstance(x, str) for x in meta[k]))]
    for entry in meta.get("model-index") or []:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            errors.append("model-index entries need a name")
            continue
        for result in entry.get("results") or [None]:
            ok = (isinstance(result, dict) and isinstance(result.get("task"), dict) and "type" in result["task"]
                  and isinstance(result.get("dataset"), dict) and {"name", "type"} <= set(result["dataset"])
                  and isinstance(result.get("metrics"), list) and result["metrics"]
                  and all(isinstance(x, dict) and {"type", "value"} <= set(x) for x in result["metrics"]))
            if not ok:
                errors.append(f"model-index result of {entry['name']!r} needs task.type, dataset.name/type and "
                              "metrics with type and value")
    return errors


class _Handler(BaseHTTPRequestHandler):
    fake: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
        pass

    # ------------------------------------------------------------------------------------------ plumbing
    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
              content_type: str = "application/json", head: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if not head and body:
            self.wfile.write(body)

    def _json(self, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(data).encode(), headers)

    def _error(self, status: int, code: str, message: str, head: bool = False) -> None:
        body = b"" if head else json.dumps({"error": message}).encode()
        self._send(status, body, {"X-Error-Code": code, "X-Error-Message": message}, head=head)

    def _authorized(self) -> bool:
        auth = self.headers.get("Authorization", "")
        self.fake.auth_headers.append(auth)
        if self.fake.echo_auth_in_errors:
            self._error(403, "Forbidden", f"token rejected: {auth}")
            return False
        if auth != f"Bearer {self.fake.token}":
            self._error(401, "Unauthorized", "Invalid credentials in Authorization header")
            return False
        return True

    def _route(self, method: str) -> None:
        path = unquote(urlsplit(self.path).path)
        self.fake.requests.append((method, path))
        for name, pattern in _ROUTES.items():
            m = pattern.match(path)
            if m:
                getattr(self, f"_{name}")(method, **m.groupdict())
                return
        self.fake.unknown.append((method, path))
        self._error(404, "NotFound", f"the fake Hub has no route for {method} {path}", head=method == "HEAD")

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        self._route("GET")

    def do_HEAD(self) -> None:  # noqa: N802
        self._route("HEAD")

    def do_POST(self) -> None:  # noqa: N802
        self._route("POST")

    # -------------------------------------------------------------------------------------------- routes
    def _create(self, method: str) -> None:
        payload = json.loads(self._body() or b"{}")
        if not self._authorized():
            return
        self.fake.create_payloads.append(payload)
        repo_id = f"{payload.get('organization') or 'user'}/{payload['name']}"
        url = f"{self.fake.endpoint}/{repo_id}"
        with self.fake._lock:
            if repo_id in self.fake.repos:
                self._json(409, {"error": "You already created this model repo", "url": url},
                           {"X-Error-Message": "You already created this model repo"})
                return
            self.fake.repos[repo_id] = Repo(private=payload.get("visibility") == "private")
        self._json(200, {"url": url, "name": repo_id})

    def _validate_yaml(self, method: str) -> None:
        payload = json.loads(self._body() or b"{}")
        content = payload.get("content", "")
        self.fake.validated.append(content)
        errors = [{"message": m} for m in _card_metadata_errors(content)]
        self._json(400 if errors else 200, {"errors": errors, "warnings": []},
                   {"X-Error-Message": "Invalid metadata"} if errors else None)

    def _preupload(self, method: str, repo: str, rev: str) -> None:
        payload = json.loads(self._body() or b"{}")
        if not self._authorized():
            return
        if repo not in self.fake.repos:
            self._error(404, "RepoNotFound", f"repository {repo} not found")
            return
        files = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in payload.get("files", [])]
        self._json(200, {"files": files, "commitOid": self.fake.repos[repo].head})

    def _commit(self, method: str, repo: str, rev: str) -> None:
        body = self._body()
        if not self._authorized():
            return
        if repo not in self.fake.repos:
            self._error(404, "RepoNotFound", f"repository {repo} not found")
            return
        files: dict[str, bytes] = {}
        deleted: list[str] = []
        for line in body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "file":
                if value.get("encoding") != "base64":
                    self._error(400, "BadRequest", f"unsupported encoding {value.get('encoding')!r}")
                    return
                files[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                deleted.append(value["path"])
            elif key != "header":
                self._error(400, "BadRequest", f"the fake Hub does not support commit operation {key!r}")
                return
        oid = self.fake.commit(repo, files, deleted)
        self._json(200, {"commitUrl": f"{self.fake.endpoint}/{repo}/commit/{oid}", "commitOid": oid,
                         "success": True})

    def _resolve(self, method: str, repo: str, rev: str, path: str) -> None:
        head = method == "HEAD"
        if method not in ("HEAD", "GET"):
            self._error(405, "MethodNotAllowed", "resolve supports HEAD and GET", head=head)
            return
        entry = self.fake.repos.get(repo)
        if entry is None or not entry.commits:
            self._error(404, "RepoNotFound", f"repository {repo} not found", head=head)
            return
        if rev not in ("main", entry.head):
            self._error(404, "RevisionNotFound", f"revision {rev} not found in {repo}", head=head)
            return
        data = entry.files.get(path)
        if data is None:
            self._error(404, "EntryNotFound", f"{path} does not exist in {repo}@{rev}", head=head)
            return
        etag = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # git's blob id, as the Hub sends
        self._send(200, data, {"X-Repo-Commit": entry.head, "ETag": f'"{etag}"'},
                   content_type="application/octet-stream", head=head)
