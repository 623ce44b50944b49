"""Networking through netlink (pyroute2): what ``linux.netDevices`` (``pyrunc.netdevices``) and
the ``pyrunc-net`` hook (``pyrunc.net.hook``) share.

pyroute2 costs about 100 ms to import: nothing on a command's hot path imports this package;
``create`` does only when the config has ``linux.netDevices`` (a new network namespace gets its
loopback up from the init stage with one ioctl, ``pyrunc.linux.interface_up``).

A netlink socket works in the network namespace it was created in: ``route(nsfd)`` makes one
in another namespace by entering it with setns(2) for the moment of the socket(2) call (only
the calling thread moves), instead of pyroute2's ``netns=``, which forks a helper process.
"""

from __future__ import annotations

import os
import socket

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

IFNAMSIZ = 16  # with the terminating NUL: a name has at most 15 bytes
IFF_UP = 0x1
IFA_F_PERMANENT = 0x80
RT_SCOPE_UNIVERSE = 0
NETLINK_ROUTE = 0

__all__ = ["IPRoute", "NetlinkError", "route", "netns_fd", "valid_ifname", "netlink_message", "link_index"]


def valid_ifname(name: str) -> bool:
    """The kernel's dev_valid_name(): 1..15 bytes, not ``.``/``..``, no ``/``, ``:`` or whitespace."""
    raw = name.encode()
    if not 0 < len(raw) < IFNAMSIZ or name in (".", ".."):
        return False
    return not any(c in "/:" or c.isspace() for c in name)


def netns_fd(pid: int) -> int:
    """An fd of the network namespace of process ``pid`` (close it)."""
    return os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)


def route(nsfd: int = -1) -> IPRoute:
    """An rtnetlink handle in the network namespace ``nsfd`` (-1: our own)."""
    if nsfd < 0:
        return IPRoute()
    from .. import linux as L

    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        L.setns(nsfd, L.CLONE_NEWNET)
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE)
        finally:
            L.setns(own, L.CLONE_NEWNET)
    finally:
        os.close(own)
    return IPRoute(fileno=sock.detach())


def netlink_message(e: BaseException) -> str:
    """A NetlinkError (or OSError) as the strerror words."""
    if isinstance(e, NetlinkError):
        code = abs(int(e.code or 0))
        return os.strerror(code) if code else str(e)
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e)


def link_index(ipr: IPRoute, name: str) -> int:
    """The ifindex of ``name`` in ``ipr``'s namespace, or 0."""
    found = ipr.link_lookup(ifname=name)
    return int(found[0]) if found else 0


def kept_addresses(ipr: IPRoute, index: int) -> list[dict]:
    """The addresses runtime-spec says a moved device keeps: permanent (IFA_F_PERMANENT), of global
    scope (RT_SCOPE_UNIVERSE), any family; each as the keywords of ``IPRoute.addr('add')``."""
    out = []
    for a in ipr.get_addr(index=index):
        flags = a.get("IFA_FLAGS")
        if flags is None:
            flags = a["flags"]
        if not flags & IFA_F_PERMANENT or a["scope"] != RT_SCOPE_UNIVERSE:
            continue
        kw: dict = {"address": a.get("IFA_ADDRESS"), "prefixlen": a["prefixlen"]}
        local = a.get("IFA_LOCAL")
        if local and local != kw["address"]:  # a point-to-point address: IFA_LOCAL is ours
            kw["local"] = local
        if a.get("IFA_BROADCAST"):
            kw["broadcast"] = a.get("IFA_BROADCAST")
        out.append(kw)
    return out
