"""A local HTTP server standing in for the Hugging Face Hub (reached through HF_ENDPOINT).

It serves real model directories built by the tests, through the same two endpoints the
real huggingface_hub client calls: /api/models/{repo}[/revision/{rev}] and
/{repo}/resolve/{rev}/{file}. Per repo it can instead answer 401, gated 403, 404, 500, never
answer, or serve weights whose bytes differ from the sha256 it advertises.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit


@dataclass
class Repo:
    path: Path | None = None
    mode: str = "ok"  # ok | 401 | gated | 404 | 500 | hang | corrupt (weights served with bytes flipped)
    gated: bool = False


@dataclass
class FakeHub:
    repos: dict[str, Repo] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    hang_s: float = 30.0

    def add(self, repo_id: str, path: Path | None = None, mode: str = "ok") -> None:
        self.repos[repo_id] = Repo(path, mode)

    def start(self) -> str:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                self._serve(body=False)

            def do_GET(self) -> None:
                self._serve(body=True)

            def _send(
                self, status: int, payload: bytes = b"", headers: dict[str, str] | None = None, body: bool = True
            ) -> None:
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if body:
                    self.wfile.write(payload)

            def _serve(self, body: bool) -> None:
                path = unquote(urlsplit(self.path).path)
                hub.requests.append(f"{self.command} {path}")
                repo_id, kind, rest = _parse(path)
                repo = hub.repos.get(repo_id or "")
                if repo is None or repo.mode == "404":
                    return self._send(404, b'{"error":"Repository not found"}', {"X-Error-Code": "RepoNotFound"}, body)
                if repo.mode == "hang":
                    time.sleep(hub.hang_s)
                    return self._send(504, b"", {}, body)
                if repo.mode == "401":
                    return self._send(401, b'{"error":"Invalid username or password."}', {}, body)
                if repo.mode == "gated" and kind == "resolve":
                    return self._send(
                        403,
                        b'{"error":"gated"}',
                        {"X-Error-Code": "GatedRepo", "X-Error-Message": "Access to this repo is restricted."},
                        body,
                    )
                if repo.mode == "500":
                    return self._send(500, b"internal error", {}, body)
                assert repo.path is not None
                commit = hashlib.sha1(repo_id.encode()).hexdigest()  # type: ignore[union-attr]
                if kind == "tree":
                    return self._send(200, json.dumps(_tree(repo)).encode(), {"Content-Type": "application/json"}, body)
                if kind == "api":
                    return self._send(
                        200,
                        json.dumps(_info(repo_id, repo, commit)).encode(),
                        {"Content-Type": "application/json"},
                        body,
                    )
                file = repo.path / rest
                if not file.is_file():
                    return self._send(404, b"", {"X-Error-Code": "EntryNotFound"}, body)
                data = file.read_bytes()
                if repo.mode == "corrupt" and file.suffix == ".safetensors":
                    data = data[:-8] + bytes(b ^ 0xFF for b in data[-8:])  # metadata still names the genuine sha256
                headers = {"X-Repo-Commit": commit, "ETag": f'"{_etag(file)}"'}
                if file.suffix == ".safetensors":
                    headers["X-Linked-Etag"] = f'"{_etag(file)}"'
                    headers["X-Linked-Size"] = str(len(data))
                return self._send(200, data, headers, body)

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: object, client_address: object) -> None:
                pass  # a client that gave up on a hanging answer is expected here

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _parse(path: str) -> tuple[str | None, str, str]:
    parts = path.strip("/").split("/")
    if parts[:2] == ["api", "models"] and len(parts) >= 4:
        kind = "tree" if len(parts) >= 5 and parts[4] == "tree" else "api"
        return "/".join(parts[2:4]), kind, ""
    if len(parts) >= 5 and parts[2] == "resolve":
        return "/".join(parts[:2]), "resolve", "/".join(parts[4:])
    return None, "", ""


def _etag(file: Path) -> str:
    data = file.read_bytes()
    if file.suffix == ".safetensors":
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # the Hub's git blob id


def _info(repo_id: str, repo: Repo, commit: str) -> dict[str, object]:
    assert repo.path is not None
    siblings = []
    for f in sorted(repo.path.iterdir()):
        entry: dict[str, object] = {"rfilename": f.name, "size": f.stat().st_size, "blobId": _etag(f)}
        if f.suffix == ".safetensors":
            entry["lfs"] = {"sha256": _etag(f), "size": f.stat().st_size, "pointerSize": 134}
        siblings.append(entry)
    return {
        "id": repo_id,
        "modelId": repo_id,
        "sha": commit,
        "private": False,
        "gated": "manual" if repo.mode == "gated" else False,
        "disabled": False,
        "siblings": siblings,
        "tags": [],
        "downloads": 0,
        "likes": 0,
    }


def _tree(repo: Repo) -> list[dict[str, object]]:
    assert repo.path is not None
    out: list[dict[str, object]] = []
    for f in sorted(repo.path.iterdir()):
        entry: dict[str, object] = {"type": "file", "path": f.name, "size": f.stat().st_size, "oid": _etag(f)}
        if f.suffix == ".safetensors":
            entry["lfs"] = {"oid": _etag(f), "size": f.stat().st_size, "pointerSize": 134}
        out.append(entry)
    return out
