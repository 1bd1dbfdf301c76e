"""Network address helpers shared by the adapters that speak HTTP (registry, etcd).

Both must decide the same way whether a host is this machine's own: a proxy from the
environment cannot reach our loopback, and a loopback registry without a CA is plain http, as
the Docker engine treats it.
"""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IPs (``127.0.0.0/8``, ``::1``), given without brackets or port."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
