"""URL normalization and host rules shared by the Reddit, crawl and extract stages.

`normalize_url` returns the canonical form of a link so that the same page posted with different
tracking parameters, case or default ports becomes one row:

- scheme and host lowercased, the host IDNA-encoded (punycode), a trailing dot removed;
- default ports (http:80, https:443) and user:password@ removed;
- an empty path becomes "/"; the fragment is removed;
- query parameters named in `tracking_params` (a trailing "*" matches a prefix, e.g. utm_*) are removed;
  the other parameters keep their order and their original encoding;
- Pushshift's HTML-escaped "&amp;" is unescaped first.
"""

from __future__ import annotations

import ipaddress
import re
from functools import lru_cache
from urllib.parse import unquote, urlsplit

_HOST_CHARS = re.compile(r"^[a-z0-9._-]+$")
_SPACE = re.compile(r"\s")
_DEFAULT_PORTS = {"http": 80, "https": 443}
# scheme:[//netloc]path[?query][#fragment], as urllib.parse.urlsplit divides a URL (RFC 3986, appendix B).
_URL_PARTS = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):(?://([^/?#]*))?([^?#]*)(?:\?([^#]*))?")
_C0_CONTROLS = "".join(map(chr, range(32)))


class InvalidURL(ValueError):
    """Carries the drop reason: url_invalid or url_scheme."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


@lru_cache(maxsize=65536)
def _idna_host(host: str) -> str:
    host = host.strip().rstrip(".").lower()
    if ":" in host:
        try:
            return str(ipaddress.IPv6Address(host))
        except ValueError:
            raise InvalidURL("url_invalid", f"bad IPv6 host {host!r}") from None
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError as err:
            raise InvalidURL("url_invalid", f"host is not valid IDNA: {err}") from None
    if not host or not _HOST_CHARS.match(host) or ".." in host or host.startswith(("-", ".")):
        raise InvalidURL("url_invalid", f"bad host {host!r}")
    return host


def split_url(url: str) -> tuple[str, str | None, str, int | None, str, str]:
    """(scheme, hostname, netloc, port, path, query) as urlsplit(url) and its .hostname/.port give them.

    urlsplit costs ~8 µs a URL, most of a Reddit link's processing; this is the same split by one regular
    expression. IPv6 hosts (brackets) go to urlsplit, which validates them. ValueError for a bad port.
    """
    match = _URL_PARTS.match(url.lstrip(_C0_CONTROLS + " "))
    if match is None or match[2] is None or "[" in match[2] or "]" in match[2]:
        parts = urlsplit(url)
        return parts.scheme, parts.hostname, parts.netloc, parts.port, parts.path, parts.query
    scheme, netloc, path, query = match[1].lower(), match[2], match[3], match[4] or ""
    hostname, _, port = netloc.rpartition("@")[2].partition(":")
    name, percent, zone = hostname.partition("%")  # urlsplit keeps an IPv6 zone's case
    hostname = name.lower() + percent + zone or None
    if not port:
        return scheme, hostname, netloc, None, path, query
    if not (port.isdigit() and port.isascii()):
        raise ValueError(f"Port could not be cast to integer value as {port!r}")
    if not 0 <= int(port) <= 65535:
        raise ValueError("Port out of range 0-65535")
    return scheme, hostname, netloc, int(port), path, query


@lru_cache(maxsize=4096)
def _is_tracking(name: str, tracking_params: tuple[str, ...]) -> bool:
    name = unquote(name).lower()
    return any(name.startswith(p[:-1]) if p.endswith("*") else name == p for p in tracking_params)


def normalize_url(url: str, tracking_params: tuple[str, ...] = (), max_length: int = 2048) -> tuple[str, str]:
    """Return (normalized url, host) or raise InvalidURL with the reason to count."""
    url = url.strip().replace("&amp;", "&")
    if len(url) > max_length:
        raise InvalidURL("url_too_long", f"longer than {max_length} characters")
    if _SPACE.search(url):
        raise InvalidURL("url_invalid", "contains whitespace")
    try:
        scheme, hostname, _, port, path, query = split_url(url)
    except ValueError as err:
        raise InvalidURL("url_invalid", str(err)) from None
    if scheme not in _DEFAULT_PORTS:
        raise InvalidURL("url_scheme" if scheme else "url_invalid", f"scheme {scheme!r}")
    if not hostname:
        raise InvalidURL("url_invalid", "no host")
    host = _idna_host(hostname)
    netloc = f"[{host.strip('[]')}]" if ":" in host else host
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        netloc = f"{netloc}:{port}"
    query = "&".join(
        pair for pair in query.split("&") if pair and not _is_tracking(pair.split("=", 1)[0], tracking_params)
    )
    return f"{scheme}://{netloc}{path or '/'}{'?' + query if query else ''}", host


def domain_matches(host: str, rules: frozenset[str]) -> bool:
    """True when `host` is a rule or a subdomain of one (rules: lowercase host names)."""
    labels = host.split(".")
    return any(".".join(labels[i:]) in rules for i in range(len(labels)))


def path_extension(normalized_url: str) -> str:
    """Lowercase extension of a normalized URL's last path segment ("" if none); such a URL always has a
    path and never a fragment, so the segment ends at the query."""
    last = normalized_url.partition("?")[0].rsplit("/", 1)[-1]
    return last.rsplit(".", 1)[-1].lower() if "." in last else ""


@lru_cache(maxsize=1)
def _tld_extractor():
    import tldextract

    # The bundled public-suffix snapshot: no network fetch at run time.
    return tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)


@lru_cache(maxsize=65536)
def registered_domain(host: str) -> str:
    """The registrable domain ("news.bbc.co.uk" -> "bbc.co.uk"); the host itself for IPs and bare names."""
    result = _tld_extractor()(host)
    return result.top_domain_under_public_suffix or host
