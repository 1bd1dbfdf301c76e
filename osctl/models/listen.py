"""Where a server of osctl listens: ``HOST:PORT`` or ``:PORT``, parsed once at the edge.

``--metrics ADDR`` and the ``metrics:`` settings give one; what comes out is a ``ListenAddress``
whose host is an IP literal or a DNS name and whose port is in range, so the server adapter
never sees text it would have to judge. An empty host means loopback (``127.0.0.1``): an
endpoint that says what a host runs is opened to the network only when someone writes so
(``0.0.0.0:9101``). No pydantic here: settings are read by every command.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

DEFAULT_HOST = "127.0.0.1"
_DNS_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_DNS_NAME = re.compile(rf"{_DNS_LABEL}(?:\.{_DNS_LABEL})*\.?")
_FORMS = "use HOST:PORT or :PORT, e.g. 127.0.0.1:9101, :9101 or [::1]:9101"


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass(frozen=True)
class ListenAddress:
    """A host (IP literal or DNS name, no brackets) and a TCP port (1-65535)."""

    host: str
    port: int

    @classmethod
    def parse(cls, text: object) -> ListenAddress:
        """``HOST:PORT``, ``[IPV6]:PORT`` or ``:PORT`` (loopback); ValueError with the forms otherwise."""
        if not isinstance(text, str) or len(text) > 300 or ":" not in text:
            raise ValueError(f"{_shown(text)} is not a listen address ({_FORMS})")
        value = text.strip()
        if value.startswith("["):
            inside, bracket, rest = value[1:].partition("]")
            if not bracket or not rest.startswith(":"):
                raise ValueError(f"{_shown(text)} is not a listen address ({_FORMS})")
            host, port_text = inside, rest[1:]
            try:
                if ipaddress.ip_address(host).version != 6:
                    raise ValueError
            except ValueError:
                raise ValueError(f"{_shown(text)}: [{host}] is not an IPv6 address") from None
        else:
            host, _, port_text = value.rpartition(":")
            if ":" in host:
                raise ValueError(f"{_shown(text)}: an IPv6 address goes in brackets ({_FORMS})")
            host = host or DEFAULT_HOST
            numeric = all(part.isdigit() for part in host.split("."))  # 999.1.1.1 is no name either
            if not _is_ipv4(host) and (numeric or not _DNS_NAME.fullmatch(host)):
                raise ValueError(f"{_shown(text)}: {host!r} is not a host name or IP address")
        if not port_text.isascii() or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise ValueError(f"{_shown(text)}: the port must be a number from 1 to 65535")
        return cls(host, int(port_text))

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def loopback(self) -> bool:
        """Only this machine can connect (``localhost``, ``127.0.0.0/8``, ``::1``)."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


def _is_ipv4(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).version == 4
    except ValueError:
        return False
