"""Opening http(s) URLs the model chose, without letting it reach anything but the public internet (SSRF guard).

The model's URL is untrusted (a page it read can tell it what to open). For each hop, redirects included:
1. the URL must be plain http(s) with a host: no user:password@, no backslashes, whitespace or control characters;
2. the host is resolved first (a resolver hook, `socket.getaddrinfo` by default), and every address it resolves to
   must be public: loopback, private, link-local, multicast, reserved, unspecified, shared (CGNAT), the cloud
   metadata address, and IPv6 forms that embed an IPv4 address (mapped, compatible, 6to4, Teredo, NAT64) are
   refused. Numeric hosts in any notation inet_aton accepts (2130706433, 0x7f.1, 0177.0.0.1, 127.1) are decoded
   and judged the same way;
3. the connection goes to the vetted IP itself (URL host = IP literal, `Host` header and TLS SNI = the name), so a
   second DNS answer (rebinding) cannot move it;
4. redirects are followed by hand (at most `max_redirects`), each new URL going through 1-3 again;
5. only text content types are read, at most `max_bytes` of them, all within `timeout` seconds in total.
Proxies from the environment are ignored (they would connect somewhere else than the vetted IP).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urljoin

import httpx

from gptoss.tools.browser.backend import Backend, BackendError
from gptoss.tools.browser.page import Page, html_to_page, markdown_to_page, source_page, text_to_page

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]

METADATA_IPS = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
NAT64 = ipaddress.ip_network("64:ff9b::/96")
NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
BLOCKED_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback")
BLOCKED_SUFFIXES = (".localhost", ".local", ".internal", ".home.arpa", ".localdomain")
TEXT_TYPES = ("text/", "application/xhtml+xml", "application/xml", "application/json", "application/ld+json")
_HOST_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_BAD_URL_CHARS = re.compile(r"[\x00-\x20\x7f\\]")
_REDIRECTS = (301, 302, 303, 307, 308)


class UrlRefused(BackendError):
    """The URL (or a redirect) points somewhere the browser must not go; nothing was sent."""


def forbidden_reason(ip: Address) -> str | None:
    """Why a connection to `ip` is refused, or None for a public unicast address."""
    if ip.is_unspecified:
        return "the unspecified address"
    if ip.is_loopback:
        return "a loopback address"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return "an IPv4-mapped IPv6 address"
        if ip.sixtofour is not None or ip.teredo is not None:
            return "an IPv6 address that embeds an IPv4 address (6to4 / Teredo)"
        if ip in NAT64 or ip in NAT64_LOCAL:
            return "a NAT64 address"
        if ip in IPV4_COMPATIBLE:
            return "an IPv4-compatible IPv6 address"
    if ip in METADATA_IPS:
        return "the cloud metadata address"
    for attribute, reason in (
        ("is_link_local", "a link-local address"),
        ("is_multicast", "a multicast address"),
        ("is_private", "a private address"),
        ("is_reserved", "a reserved address"),
    ):
        if getattr(ip, attribute):
            return reason
    if not ip.is_global:
        return "not a public address"
    return None


def _numeric_host(host: str) -> Address | None:
    """An IP literal, or an IPv4 address written any way inet_aton accepts (decimal, hex, octal, short forms)."""
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        pass
    if re.fullmatch(r"[0-9a-fA-FxX.]+", host) and any(c.isdigit() for c in host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


@dataclass(frozen=True)
class Target:
    """One vetted hop: where to connect and what to call it."""

    scheme: str
    host: str  # the name (IDNA ASCII) or IP literal the URL gave
    port: int
    target: str  # path and query
    ip: Address | None = None

    def connect_url(self) -> str:
        assert self.ip is not None
        ip = f"[{self.ip}]" if self.ip.version == 6 else str(self.ip)
        return f"{self.scheme}://{ip}:{self.port}{self.target}"

    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


def parse_target(url: str) -> Target:
    """Check the form of a URL (step 1 above); raises UrlRefused."""
    if _BAD_URL_CHARS.search(url):
        raise UrlRefused("Refused to open the URL: it contains whitespace, control characters or backslashes.")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError) as e:
        raise UrlRefused(f"Refused to open the URL: it is not a valid URL ({e}).") from None
    if parsed.scheme not in ("http", "https"):
        raise UrlRefused(f"Refused to open the URL: only http and https are allowed, not `{parsed.scheme}:`.")
    if parsed.userinfo:
        raise UrlRefused("Refused to open the URL: URLs with a user name or password are not allowed.")
    host = parsed.raw_host.decode("ascii").lower().rstrip(".")
    if not host:
        raise UrlRefused("Refused to open the URL: it has no host.")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    target = parsed.raw_path.decode("ascii") or "/"
    return Target(parsed.scheme, host, port, target)


def check_host(target: Target) -> Address | None:
    """Judge a numeric host now (returns its address) or check a name's form (returns None); raises UrlRefused."""
    ip = _numeric_host(target.host)
    if ip is not None:
        reason = forbidden_reason(ip)
        if reason is not None:
            raise UrlRefused(f"Refused to open the URL: its host {target.host} is {reason}.")
        if ip.version == 4 and target.host != str(ip):
            raise UrlRefused(f"Refused to open the URL: the numeric host {target.host} is not in dotted-quad form.")
        return ip
    if target.host in BLOCKED_NAMES or target.host.endswith(BLOCKED_SUFFIXES):
        raise UrlRefused(f"Refused to open the URL: {target.host} is a local name.")
    if not all(_HOST_LABEL.match(label) for label in target.host.split(".")):
        raise UrlRefused(f"Refused to open the URL: {target.host!r} is not a valid host name.")
    return None


def _to_page(body: str, url: str, content_type: str, view_source: bool) -> Page:
    if view_source:
        return source_page(body, url)
    if "html" in content_type:
        return html_to_page(body, url)
    if "markdown" in content_type:
        return markdown_to_page(body, url)
    return text_to_page(body, url)


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


class WebFetcher(Backend):
    """Fetches http(s) pages through the SSRF guard. Cannot search."""

    def __init__(
        self,
        *,
        resolver: Resolver | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = 15.0,
        max_bytes: int = 2 << 20,
        max_redirects: int = 5,
        user_agent: str = "gptoss-browser/0.1",
    ) -> None:
        self.resolver = resolver or system_resolver
        self.timeout, self.max_bytes, self.max_redirects = timeout, max_bytes, max_redirects
        self.user_agent = user_agent
        self._client = httpx.AsyncClient(
            transport=transport, trust_env=False, follow_redirects=False, timeout=httpx.Timeout(timeout)
        )

    def can_search(self) -> bool:
        return False

    def handles(self, url: str) -> bool:
        return url.lower().startswith(("http://", "https://"))

    async def vet(self, url: str) -> Target:
        """Steps 1-2 for one hop: the target with the address to connect to; raises UrlRefused."""
        target = parse_target(url)
        ip = check_host(target)
        if ip is None:
            try:
                answers = await self.resolver(target.host, target.port)
            except (OSError, UnicodeError) as e:
                raise BackendError(f"Could not resolve {target.host}: {e}") from None
            addresses: list[Address] = []
            for answer in answers:
                address = ipaddress.ip_address(answer.split("%")[0])
                reason = forbidden_reason(address)
                if reason is not None:
                    raise UrlRefused(f"Refused to open the URL: {target.host} resolves to {address}, {reason}.")
                addresses.append(address)
            if not addresses:
                raise BackendError(f"Could not resolve {target.host}: no addresses.")
            ip = addresses[0]
        return Target(target.scheme, target.host, target.port, target.target, ip)

    async def fetch(self, url: str, *, view_source: bool = False) -> Page:
        try:
            async with asyncio.timeout(self.timeout):
                final_url, content_type, body = await self._get(url)
        except TimeoutError:
            raise BackendError(f"Timed out after {self.timeout:g} seconds fetching `{url}`.") from None
        except httpx.HTTPError as e:
            raise BackendError(f"Error fetching `{url}`: {type(e).__name__}: {e}") from None
        return await asyncio.to_thread(_to_page, body, final_url, content_type, view_source)  # lxml: CPU-bound

    async def _get(self, url: str) -> tuple[str, str, str]:
        """(final URL, content type, text) following vetted redirects."""
        for _ in range(self.max_redirects + 1):
            target = await self.vet(url)
            headers = {"Host": target.host_header(), "User-Agent": self.user_agent, "Accept": "text/html, text/*"}
            extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
            request = self._client.build_request("GET", target.connect_url(), headers=headers, extensions=extensions)
            response = await self._client.send(request, stream=True)
            try:
                if response.status_code in _REDIRECTS and "location" in response.headers:
                    url = urljoin(url, response.headers["location"])
                    continue
                if response.status_code >= 400:
                    raise BackendError(f"Error fetching `{url}`: HTTP {response.status_code}.")
                content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
                if not content_type.startswith(TEXT_TYPES):
                    raise BackendError(f"Cannot open `{url}`: content type `{content_type or 'unknown'}` is not text.")
                body = await self._read(response)
                return url, content_type, body.decode(response.encoding or "utf-8", "replace")
            finally:
                await response.aclose()
        raise BackendError(f"Too many redirects (more than {self.max_redirects}) opening `{url}`.")

    async def _read(self, response: httpx.Response) -> bytes:
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) >= self.max_bytes:
                del body[self.max_bytes :]  # keep the first max_bytes: a long page is still useful
                break
        return bytes(body)

    async def aclose(self) -> None:
        await self._client.aclose()
