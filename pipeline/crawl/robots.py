"""robots.txt rules as RFC 9309 defines them: the crawler's group, longest match wins, Allow wins ties.

`urllib.robotparser` is not used: it applies the first matching rule instead of the longest, knows no `*` or
`$` wildcards, and a "Disallow: /" followed by "Allow: /public" would block /public. This parser:

- picks the groups whose `User-agent` matches the crawler's product token (the user agent up to the first
  "/", case-insensitive, e.g. "webtext-crawler"), else the `*` groups; groups with the same agent merge;
- matches `Allow`/`Disallow` paths as prefixes of the URL's path and query, with `*` (any run of
  characters) and a trailing `$` (end of URL); the longest matching pattern decides, Allow on a tie;
- reads `Crawl-delay` (seconds, a number) from the chosen groups, a non-standard but common extension.

What the crawler does when robots.txt is missing or broken (4xx allows all, 5xx or unreachable skips the
host) is decided in pipeline/crawl/politeness.py; this module only reads text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import quote, unquote, urlsplit


@dataclass
class Rule:
    allow: bool
    pattern: str
    regex: re.Pattern


@dataclass
class RobotsRules:
    rules: list[Rule] = field(default_factory=list)
    crawl_delay: float | None = None

    def allowed(self, url: str) -> bool:
        """True when the URL's path may be fetched; /robots.txt itself is always allowed (RFC 9309 2.2.2)."""
        parts = urlsplit(url)
        target = _normalize_path(parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        if target == "/robots.txt":
            return True
        best: Rule | None = None
        for rule in self.rules:
            if rule.regex.match(target) and (
                best is None
                or len(rule.pattern) > len(best.pattern)
                or (len(rule.pattern) == len(best.pattern) and rule.allow and not best.allow)
            ):
                best = rule
        return best is None or best.allow


ALLOW_ALL = RobotsRules()


def product_token(user_agent: str) -> str:
    """The name robots.txt groups are matched against: "webtext-crawler/0.1 (+url)" -> "webtext-crawler"."""
    return user_agent.split("/", 1)[0].split()[0].strip().lower()


def _normalize_path(path: str) -> str:
    """Percent-encode the same way on both sides so "/caf%C3%A9" and "/café" compare equal."""
    return quote(unquote(path), safe="/*$?=&;:@!,+-._~'()")


def _compile(pattern: str) -> re.Pattern:
    anchored = pattern.endswith("$")
    body = pattern[:-1] if anchored else pattern
    regex = ".*".join(re.escape(piece) for piece in body.split("*"))
    return re.compile(regex + ("$" if anchored else ""), re.DOTALL)


def parse(text: str, user_agent: str) -> RobotsRules:
    """The rules of `text` that apply to `user_agent` (see the module docstring for the matching rules)."""
    token = product_token(user_agent)
    groups: list[tuple[set[str], list[tuple[str, str]]]] = []
    agents: set[str] = set()
    lines: list[tuple[str, str]] = []
    in_agent_lines = False
    for raw in text.splitlines():
        key, sep, value = raw.split("#", 1)[0].partition(":")
        if not sep:
            continue
        key, value = key.strip().lower(), value.strip()
        if key == "user-agent":
            if not in_agent_lines:  # a User-agent line after rules starts a new group
                agents, lines = set(), []
                groups.append((agents, lines))
                in_agent_lines = True
            agents.add(value.lower())
        elif key in ("allow", "disallow", "crawl-delay"):
            in_agent_lines = False
            lines.append((key, value))
    ours = [g for g in groups if any(a != "*" and a == token for a in g[0])]
    chosen = ours or [g for g in groups if "*" in g[0]]
    rules = RobotsRules()
    for _, group_lines in chosen:
        for key, value in group_lines:
            if key == "crawl-delay":
                try:
                    rules.crawl_delay = max(rules.crawl_delay or 0.0, float(value))
                except ValueError:
                    continue
            elif value:  # an empty Disallow means "nothing is disallowed"
                pattern = _normalize_path(value)
                rules.rules.append(Rule(allow=key == "allow", pattern=pattern, regex=_compile(pattern)))
    return rules
