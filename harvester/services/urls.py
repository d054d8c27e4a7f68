"""Canonical URLs and dedupe keys."""

from __future__ import annotations

import hashlib
import ipaddress
import re
from urllib.parse import quote, unquote_plus, urljoin, urlsplit, urlunsplit

from w3lib.url import canonicalize_url

# Parameters that identify a campaign or a click, never the content.
TRACKING_PREFIXES = ("utm_", "mtm_", "pk_", "hsa_")
TRACKING_PARAMS = frozenset(
    {
        "fbclid", "gclid", "dclid", "gbraid", "wbraid", "msclkid", "yclid", "twclid",
        "igshid", "mc_cid", "mc_eid", "_hsenc", "_hsmi", "mkt_tok", "ref_src", "ref_url",
        "cmpid", "ncid", "spm", "sr_share", "vero_id", "oly_anon_id", "oly_enc_id",
        "_ga", "_gl", "rss", "at_medium", "at_campaign", "rb_clickid", "s_cid",
    }
)


def _is_tracking(name: str) -> bool:
    lowered = name.lower()
    return lowered in TRACKING_PARAMS or lowered.startswith(TRACKING_PREFIXES)


# Already canonical but for the scheme: lower-case host, plain ASCII path, no query, no
# fragment, no escapes. Most feed links look like this, and w3lib's full treatment is the
# costliest step of keying an item.
_SIMPLE = re.compile(r"(https?)://([a-z0-9-]+(?:\.[a-z0-9-]+)*)(:\d+)?(/[A-Za-z0-9._~!$&'()*+,;=:@/-]*)$")


_AUTHORITY = re.compile(r"[^:/?#]*:(?://[^/?#]*)?")
#: Whitespace, control characters (C0, DEL, C1) and the bidi embeddings, overrides and
#: isolates (U+202A-U+202E, U+2066-U+2069: a link shown in an alert or the API read
#: backwards): what a URL must not hold as it is.
UNSAFE = re.compile(r"[\s\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_DROPPED_WHITESPACE = str.maketrans("", "", "\t\n\r")


def encode_whitespace(url: str) -> str:
    """``url`` with the whitespace and control characters of its path, query and fragment
    written as a browser sends them: tabs and line breaks removed, any other percent-encoded
    (a space is ``%20``, ESC ``%1B``: stored raw, it cleared the screen of whoever listed
    it). In the scheme or host they are left for validation to refuse."""
    head = _AUTHORITY.match(url)
    cut = head.end() if head else 0
    rest = url[cut:].translate(_DROPPED_WHITESPACE)
    return url[:cut] + UNSAFE.sub(lambda m: quote(m.group(), safe=""), rest)


def split_error(url: str) -> str | None:
    """Why ``urllib`` cannot take the URL apart, brackets and port included ("Port out of
    range 0-65535", "Invalid IPv6 URL"), or None when it can (1–2 µs)."""
    try:
        urlsplit(url).port  # noqa: B018 - the property parses the port
    except ValueError as exc:
        return str(exc)
    return None


def canonical_url(url: str) -> str:
    """The URL two copies of the same item share: no fragment, no tracking parameters,
    sorted query, lower-cased scheme and host, default port dropped (w3lib); a tweet's is
    ``https://x.com/i/web/status/{id}`` (:func:`tweet_canonical`). ValueError for a URL
    that does not parse (a port out of range)."""
    general = _canonical(url)
    if "/status" not in general:  # most links: spared the pattern (a fifth of the cost)
        return general
    return tweet_canonical(general) or general


# A tweet's address on x.com or twitter.com, in the form canonical_url gives it: any
# author segment (or "i/web"), "status" (or the old "statuses"), the id, then whatever
# view of it ("/photo/1", "?s=20"). Stored keys follow it (migration 0014): a change to it
# needs a migration of its own.
_TWEET = re.compile(r"https://(?:www\.|mobile\.)?(?:x|twitter)\.com/(?:i/web|[^/?]+)"
                    r"/status(?:es)?/([0-9]{1,20})(?:[/?][^#]*)?")
_TWEET_CANONICAL = "https://x.com/i/web/status/"


def tweet_canonical(canonical: str) -> str | None:
    """``https://x.com/i/web/status/{id}`` for a canonical URL of a tweet, else None. The
    author in a tweet's address is no part of it: X leaves it out (no ``includes.users``)
    or it changes (a renamed account), and x.com shows the tweet under any name; keyed by
    the address as written, one tweet was stored once for each form."""
    tweet = _TWEET.fullmatch(canonical)
    return _TWEET_CANONICAL + tweet.group(1) if tweet else None


def _canonical(url: str) -> str:
    """:func:`canonical_url` of any link, a tweet's as written."""
    url = url.strip().partition("#")[0]
    base, _, query = url.partition("?")
    if query and _only_tracking(query):
        url = base  # what the full treatment would leave of it, without its cost
    simple = _SIMPLE.match(url)
    if simple and "/." not in url:  # dot segments need w3lib's resolution
        scheme, host, port, path = simple.groups()
        if port == ":443" or (scheme, port) == ("http", ":80"):
            port = None
        elif port and int(port[1:]) > 65535:  # as urllib says it, for the rejection
            raise ValueError("Port out of range 0-65535")
        return f"https://{host}{port or ''}{path}"
    return _full_canonical(url)


def _only_tracking(query: str) -> bool:
    """Whether every parameter of ``query`` is a tracking one, judged on the raw names
    (a name with an escape or a ``+`` is left to the full treatment, which decodes it)."""
    for pair in query.split("&"):
        name = pair.partition("=")[0]
        if pair and ("%" in name or "+" in name or not _is_tracking(name)):
            return False
    return True


def _full_canonical(url: str) -> str:
    """:func:`canonical_url` through ``urllib`` and w3lib, for any URL; ValueError for
    one that ``urllib`` cannot take apart (a port out of range: stored, no client could
    open it)."""
    parts = urlsplit(url)
    parts.port  # noqa: B018 - the property checks the port
    if parts.query:
        # The raw pairs, not parse_qsl's: it decoded escapes as UTF-8 and made every byte
        # that is not (a Latin-1 "caf%E9", "caf%E8") U+FFFD, so two different articles had
        # one key and the second was dropped as a duplicate. w3lib below keeps the bytes.
        kept = [pair for pair in map(_unescape_amp, parts.query.split("&"))
                if not _is_tracking(unquote_plus(pair.partition("=")[0]))]
        parts = parts._replace(query="&".join(kept))
    netloc = parts.netloc.lower()
    port = netloc.rpartition(":")[2]
    # "http://x/a" and "https://x/a" are the same story on today's web. The key is always
    # https, so ":443" goes whatever the scheme was: kept after "http", the key of the key
    # ("https://x:443/a") would be another one ("https://x/a").
    if port == "443" or (parts.scheme.lower(), port) == ("http", "80"):
        netloc = netloc.rpartition(":")[0]
    parts = parts._replace(scheme="https", netloc=netloc, fragment="")
    return canonicalize_url(urlunsplit(parts))


_AMP = re.compile(r"(?:amp;|amp%3b)+", re.IGNORECASE)


def _unescape_amp(pair: str) -> str:
    """A query pair without the ``amp;`` a twice-escaped link leaves in its name: a feed
    writing ``&amp;amp;`` gives ``?a=1&amp;utm_source=x``, whose second name is
    ``amp;utm_source`` (no real parameter's name starts so)."""
    return _AMP.sub("", pair, count=1) if pair[:3].lower() == "amp" else pair


def web_link(base: str, target: str) -> str | None:
    """``target`` resolved against ``base`` when it is a web address; None for
    ``javascript:``, ``mailto:``, ``data:`` and one that does not parse (``http://[::1``:
    raised mid-page, the page's later items were lost)."""
    try:
        url = urljoin(base, target.strip())
        scheme = urlsplit(url).scheme
    except ValueError:
        return None
    return url if scheme in ("http", "https") else None


def item_link(base: str, target: str, page_url: str) -> tuple[str | None, str | None]:
    """An item's link on a listing page: ``(url, None)``, or ``(None, why)`` when it is no
    address of its own: not a web address, or the listing page itself (``href="#"`` or
    ``""`` on a card whose script does the rest: every such card had the page's key, and
    all but the first were dropped as duplicates)."""
    url = web_link(base, target)
    if url is None:
        return None, f"{target.strip()[:80]!r} is not a usable link"
    page, _, fragment = url.partition("#")
    if not fragment and page == page_url.partition("#")[0]:
        return None, f"{target.strip()[:80]!r} links to the listing page itself"
    return url, None


def in_page_anchor(url: str | None, listing_url: str) -> str | None:
    """The canonical URL, fragment kept, of a link to a place on the listing page itself
    (an entry of a changelog, a hash route of a single-page app); None for any other link.
    Elsewhere a fragment is dropped from the key (``#comments`` is the same story), which
    made every entry of a one-page changelog or advisory list one item: the first was
    stored and the rest counted as duplicates."""
    if not url or "#" not in url:
        return None
    page, _, fragment = url.partition("#")
    try:
        key = canonical_url(page)
        if not fragment or key != canonical_url(listing_url):
            return None
    except ValueError:  # a port that is no number: the dedupe step rejects the link
        return None
    return f"{key}#{fragment}"


def url_key(canonical: str) -> str:
    return "u:" + hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:32]


def keyed_by_id(url: str | None, external_id: str | None) -> bool:
    """Whether a feed entry is known by its id, not its link: when its link is the site's
    home page, not the entry's own address (every episode of a podcast links to it: keyed
    by the link, 122 of a podcast's 131 episodes were dropped as duplicates of the first).
    Judged on the entry alone, so that its key does not change when the document around
    it does. (Posts that are fragments of one day's page are not told apart: a "#top" or
    "#comments" on a link is as common, and no part of the entry's address.)"""
    if not url or not external_id:
        return False
    page = url.partition("#")[0]
    try:
        parts = urlsplit(page)
        if parts.path not in ("", "/"):
            return False
        # "https://show.example/?utm_source=rss" is the home page; "/?p=123" a post.
        return not parts.query or not urlsplit(canonical_url(page)).query
    except ValueError:  # a port that is no number: the dedupe step rejects the link
        return False


def id_key(source: str, external_id: str) -> str:
    return "i:" + hashlib.sha256(f"{source}\x00{external_id}".encode()).hexdigest()[:32]


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine only: ``localhost`` or a loopback address (a name
    may resolve anywhere, so it is not)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False
