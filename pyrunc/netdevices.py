"""``linux.netDevices`` (runtime-spec v1.3.0, config-linux.md "Network Devices"), as runc does it.

``create`` checks the config and the host before anything is made (``NetDevices(...)``), then
moves the devices when it learns the init's pid (the init stage has entered or created the
container's network namespace by then; the createRuntime hooks come later), as runc's parent
does before its hooks: each device is set down, moved and renamed in one RTM_NEWLINK
(IFLA_NET_NS_FD + IFLA_IFNAME: ``name`` may be a ``%d`` template), its permanent global-scope
addresses re-added (the kernel drops them on a move) and set up.

A failure leaves nothing half-done: the devices moved so far go back to the host with their names,
addresses and state, also when a later step of ``create`` fails (``restore``).  Once the
container exists, pyrunc does not move them back (the spec says it MUST NOT): when the
namespace is freed the kernel moves physical devices back to the host's namespace (under their
container names) and destroys virtual ones (dummy, veth, macvlan, ...).
"""

from __future__ import annotations

import os

from .errors import ConfigError, PyruncError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable

    from .config import Linux
    from .net import IPRoute


class _Moved:
    __slots__ = ("host_name", "index", "addresses", "was_up")

    def __init__(self, host_name: str, index: int, addresses: list[dict], was_up: bool) -> None:
        self.host_name = host_name
        self.index = index  # in the container's namespace
        self.addresses = addresses
        self.was_up = was_up


def static_problems(linux: Linux, rootless: bool) -> list[str]:
    """What is wrong with linux.netDevices without looking at the host (runc's validator)."""
    from .config import is_own_namespace
    from .net import valid_ifname

    out = []
    ns = linux.namespace("network")
    if ns is None or is_own_namespace("network", ns.path):
        out.append("linux.netDevices: unable to move network devices without a NET namespace "
                   "(linux.namespaces has no network namespace of the container's own)")
    if rootless:
        out.append("linux.netDevices: network devices are not supported for rootless containers")
    targets: dict[str, str] = {}
    for name, dev in linux.net_devices.items():
        if not valid_ifname(name):
            out.append(f"linux.netDevices.{name}: invalid network device name {name!r}")
        new = str((dev or {}).get("name") or name)
        if new != name or "name" in (dev or {}):
            if not valid_ifname(new):
                out.append(f"linux.netDevices.{name}.name: invalid network device name {new!r}")
        if new == "lo":
            out.append(f"linux.netDevices.{name}.name: 'lo' already exists in the container's network namespace")
        if "%" not in new:
            if new in targets:
                out.append(f"linux.netDevices.{name}.name: {new!r} is also the name of linux.netDevices."
                           f"{targets[new]} in the container")
            targets[new] = name
    return out


class NetDevices:
    """The devices of one ``create``: checked at construction, moved by ``on_pid``."""

    def __init__(self, linux: Linux, rootless: bool) -> None:
        problems = static_problems(linux, rootless)
        self.devices = dict(linux.net_devices)
        self.moved: list[_Moved] = []
        self.nsfd = -1
        if not problems:
            from .net import link_index, route
            with route() as ipr:
                for name in self.devices:
                    if not link_index(ipr, name):
                        problems.append(f"linux.netDevices.{name}: no such host interface")
        if problems:
            raise ConfigError(problems)

    def on_pid(self, record: Callable[[int], dict]) -> Callable[[int], dict]:
        """``record`` (Container._record_init_pid) and then the move, for the PID step."""
        def both(pid: int) -> dict:
            state = record(pid)
            self.move_into(pid)
            return state
        return both

    def move_into(self, pid: int) -> None:
        from .net import netns_fd, route

        self.nsfd = netns_fd(pid)
        try:
            with route() as host, route(self.nsfd) as ns:
                for name, dev in self.devices.items():
                    self._move(host, ns, name, str((dev or {}).get("name") or name))
        except BaseException:
            self.restore()
            raise

    def _move(self, host: IPRoute, ns: IPRoute, name: str, new: str) -> None:
        from .net import IFF_UP, NetlinkError, kept_addresses, link_index, netlink_message

        where = f"linux.netDevices.{name}"
        try:
            index = link_index(host, name)
            if not index:
                raise PyruncError(f"{where}: no such host interface")
            link = host.get_links(index)[0]
            was_up = bool(link["flags"] & IFF_UP)
            addresses = kept_addresses(host, index)
            before = {int(li["index"]) for li in ns.get_links()}
            host.link("set", index=index, state="down")
            try:
                host.link("set", index=index, net_ns_fd=self.nsfd, ifname=new)
            except NetlinkError as e:
                if was_up:
                    host.link("set", index=index, state="up")
                if abs(int(e.code or 0)) == 17:  # EEXIST
                    raise PyruncError(f"{where}: a device named {new!r} already exists in the container's "
                                      "network namespace") from None
                raise
            moved = [li for li in ns.get_links() if int(li["index"]) not in before]
            if len(moved) != 1:
                raise PyruncError(f"{where}: cannot find the device in the container's namespace after the move")
            entry = _Moved(name, int(moved[0]["index"]), addresses, was_up)
            self.moved.append(entry)
            for kw in addresses:
                try:
                    ns.addr("add", index=entry.index, **kw)
                except NetlinkError as e:
                    raise PyruncError(f"{where}: cannot set up address {kw['address']}/{kw['prefixlen']} in the "
                                      f"container's network namespace: {netlink_message(e)}") from None
            ns.link("set", index=entry.index, state="up")
        except NetlinkError as e:
            hint = " (a device the kernel keeps in its namespace, such as a bridge?)" \
                if abs(int(e.code or 0)) == 22 else ""
            raise PyruncError(f"{where}: cannot move it into the container's network namespace: "
                              f"{netlink_message(e)}{hint}") from None

    def restore(self) -> None:
        """Move what was moved back to our namespace, with its name, addresses and state (best
        effort: each device on its own)."""
        if self.nsfd < 0:
            return
        from .net import route

        own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            with route() as host, route(self.nsfd) as ns:
                for m in reversed(self.moved):
                    try:
                        ns.link("set", index=m.index, state="down")
                        ns.link("set", index=m.index, net_ns_fd=own, ifname=m.host_name)
                        from .net import link_index
                        index = link_index(host, m.host_name)
                        for kw in m.addresses:
                            host.addr("add", index=index, **kw)
                        if m.was_up:
                            host.link("set", index=index, state="up")
                    except Exception:  # noqa: BLE001 - the others still go back
                        continue
        finally:
            os.close(own)
            self.moved = []
            self.close()

    def close(self) -> None:
        if self.nsfd >= 0:
            os.close(self.nsfd)
            self.nsfd = -1
