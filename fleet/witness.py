"""Who may vouch for a model's identity from the network: the official Hugging Face Hub, and
the endpoints an operator declares trusted (fleet-worker --trust-endpoint URL,
$FLEET_TRUSTED_ENDPOINTS). Any other HF_ENDPOINT is a mirror: whoever runs it serves the bytes
and the hashes that describe them, so its answers prove only that the copy agrees with itself.
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from fleet.errors import BadInput

OFFICIAL = "https://huggingface.co"


def normalize(url: str) -> str:
    """scheme://host[:port][/path] without credentials, query or trailing slash; BadInput when
    it is not an http(s) URL with a host."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise BadInput(f"endpoint {url[:200]!r}: not a URL ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadInput(f"endpoint {url[:200]!r}: expected an http:// or https:// URL with a host")
    host = parts.hostname.lower() + (f":{port}" if port else "")
    return urlunsplit((parts.scheme, host, parts.path.rstrip("/"), "", ""))


def label(url: str) -> str:
    """The endpoint as a result records it: normalized, credentials stripped; the raw text
    (truncated) when it cannot be parsed."""
    try:
        return normalize(url)
    except BadInput:
        return "<unparsable endpoint>"


def is_witness(url: str, trusted: tuple[str, ...] = ()) -> bool:
    """Whether this endpoint's answers anchor identity: the official Hub or a declared one. A URL
    that HTTP clients may read two ways (userinfo, a backslash, spaces) is never a witness."""
    if any(ch in url for ch in "@\\ \t") or any(ord(ch) < 0x20 for ch in url):
        return False
    here = label(url)
    return here == OFFICIAL or here in {label(t) for t in trusted}
