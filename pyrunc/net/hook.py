"""``pyrunc-net``: the article's container networking as OCI hooks.

``pyrunc-net up`` is a createRuntime hook (the runtime's namespaces, the container's network
namespace already made); it reads the container's state JSON on stdin (``id``, ``pid``,
``annotations``) and:

1. creates a veth pair, its host end named from the container id (``pn-<id>``, hashed when that
   would not fit in IFNAMSIZ), its other end made directly in the container's namespace
   (``ifname``, default ``eth0``);
2. gives the container end ``address`` and brings it up, gives the host end ``gateway`` (same
   prefix) and brings it up, and routes the container's default traffic through ``gateway``;
3. with ``nat``: turns IPv4 forwarding on (if it was off) and masquerades the container's subnet
   through an nftables table of its own (``pyrunc.net.nat``, over netlink).

Everything it changed is recorded in ``/run/pyrunc-net/<id>.json``; ``pyrunc-net down`` (the
poststop hook) removes exactly that, and turns forwarding off again only if it turned it on and
no other container of ours still needs it.  A bad parameter (malformed CIDR, a gateway outside
the subnet, an address the host already has, an interface name in use) is an error naming it,
before anything is made; a failure half-way undoes what was done.

Parameters come from annotations ``dev.pyrunc.net.<key>``, or a JSON object in the file named by
``--config FILE`` or by the annotation ``dev.pyrunc.net.config`` (annotations win):
``address`` (required, CIDR), ``gateway``, ``ifname``, ``host-ifname``, ``nat`` (true/false).
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import sys

PREFIX = "dev.pyrunc.net."
KEYS = ("address", "gateway", "ifname", "host-ifname", "nat", "config")
RUN_DIR = os.environ.get("PYRUNC_NET_RUN_DIR", "/run/pyrunc-net")
FORWARD = "/proc/sys/net/ipv4/ip_forward"
_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_+,-.")


TYPE_CHECKING = False
if TYPE_CHECKING:
    from . import IPRoute


class NetError(Exception):
    """A clear, user-facing failure: printed as ``pyrunc-net: <message>``, exit 1."""


class Params:
    def __init__(self) -> None:
        self.address: ipaddress.IPv4Interface | ipaddress.IPv6Interface | None = None
        self.gateway: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None
        self.ifname = "eth0"
        self.host_ifname = ""
        self.nat = False


def host_ifname_for(container_id: str) -> str:
    """``pn-<id>`` when it fits in IFNAMSIZ (15 bytes), else ``pn-<first 5>-<6 hex of sha1(id)>``."""
    name = "pn-" + container_id
    if len(name) <= 15:
        return name
    import hashlib
    return f"pn-{container_id[:5]}-{hashlib.sha1(container_id.encode()).hexdigest()[:6]}"


def read_params(state: dict, config_file: str | None) -> Params:
    """Params from the annotations and/or the config file; every problem at once, each named."""
    annotations = state.get("annotations") or {}
    given: dict[str, tuple[str, object]] = {}  # key -> (where, value)
    file = annotations.get(PREFIX + "config") or config_file
    if file:
        where = f"annotations[\"{PREFIX}config\"]" if annotations.get(PREFIX + "config") else "--config"
        try:
            with open(str(file)) as f:
                doc = json.load(f)
        except (OSError, ValueError) as e:
            raise NetError(f"{where}: cannot read {file}: {getattr(e, 'strerror', None) or e}") from None
        if not isinstance(doc, dict):
            raise NetError(f"{file}: must be a JSON object")
        for key, value in doc.items():
            if key not in KEYS or key == "config":
                raise NetError(f"{file}: {key}: unknown key (known: {', '.join(KEYS[:-1])})")
            given[key] = (f"{file}: {key}", value)
    for key, value in annotations.items():
        if key.startswith(PREFIX):
            short = key[len(PREFIX):]
            if short not in KEYS:
                raise NetError(f"annotations[\"{key}\"]: unknown key (known: {', '.join(PREFIX + k for k in KEYS)})")
            if short != "config":
                given[short] = (f"annotations[\"{key}\"]", value)

    p, problems = Params(), []
    if "address" not in given:
        problems.append(f"annotations[\"{PREFIX}address\"]: required (the container's address, e.g. 10.200.0.2/24)")
    else:
        where, value = given["address"]
        text = str(value)
        try:
            if "/" not in text:
                raise ValueError
            p.address = ipaddress.ip_interface(text)
        except ValueError:
            problems.append(f"{where}: {text!r} is not an address with a prefix length (CIDR, e.g. 10.200.0.2/24)")
        else:
            net = p.address.network
            if p.address.ip in (net.network_address, getattr(net, "broadcast_address", None)) \
                    and net.prefixlen < net.max_prefixlen - 1:
                problems.append(f"{where}: {text} is the network's own or broadcast address")
    if "gateway" in given:
        where, value = given["gateway"]
        try:
            p.gateway = ipaddress.ip_address(str(value))
        except ValueError:
            problems.append(f"{where}: {value!r} is not an IP address")
        else:
            if p.address is not None:
                if p.gateway.version != p.address.version or p.gateway not in p.address.network:
                    problems.append(f"{where}: {p.gateway} is not in {p.address.network} (the address's subnet)")
                elif p.gateway == p.address.ip:
                    problems.append(f"{where}: {p.gateway} is the container's own address")
    for key, attr in (("ifname", "ifname"), ("host-ifname", "host_ifname")):
        if key in given:
            where, value = given[key]
            from . import valid_ifname
            if not isinstance(value, str) or not valid_ifname(value):
                problems.append(f"{where}: {value!r} is not a valid interface name (1-15 bytes, no '/', ':' "
                                "or spaces)")
            else:
                setattr(p, attr, value)
    if "nat" in given:
        where, value = given["nat"]
        flag = {"true": True, "false": False}.get(str(value).lower()) if not isinstance(value, bool) else value
        if flag is None:
            problems.append(f"{where}: {value!r} is not true or false")
        else:
            p.nat = flag
            if flag and p.address is not None and p.address.version != 4:
                problems.append(f"{where}: NAT is IPv4 only")
            if flag and p.gateway is None:
                problems.append(f"{where}: NAT needs a gateway (the host end's address)")
    if problems:
        raise NetError("\n".join(problems))
    return p


# ---------------------------------------------------------------------------------- records


def _record_path(container_id: str) -> str:
    return os.path.join(RUN_DIR, container_id + ".json")


def _lock() -> int:
    os.makedirs(RUN_DIR, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(RUN_DIR, ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _write_json(path: str, doc: dict) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f)
    os.rename(tmp, path)


def _read_json(path: str) -> dict | None:
    try:
        with open(path) as f:
            doc = json.load(f)
    except FileNotFoundError:
        return None
    return doc if isinstance(doc, dict) else None


def _forwarding(container_id: str, need: bool) -> None:
    """IPv4 forwarding as a reference count over our containers: on when the first needs it (and it
    was off), back off when the last goes, only if we turned it on."""
    path = os.path.join(RUN_DIR, "forwarding.json")
    doc = _read_json(path) or {"turned_on": False, "users": []}
    users = [u for u in doc["users"] if u != container_id]
    if need:
        if not users:
            with open(FORWARD) as f:
                on = f.read().strip() == "1"
            if not on:
                with open(FORWARD, "w") as f:
                    f.write("1")
            doc["turned_on"] = doc["turned_on"] or not on
        users.append(container_id)
    elif not users and doc["turned_on"]:
        with open(FORWARD, "w") as f:
            f.write("0")
        doc["turned_on"] = False
    doc["users"] = users
    if users or doc["turned_on"]:
        _write_json(path, doc)
    else:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


# ---------------------------------------------------------------------------------- up / down


def _check_id(state: dict) -> str:
    cid = state.get("id")
    if not isinstance(cid, str) or not cid or cid in (".", "..") or not _ID_CHARS.issuperset(cid):
        raise NetError(f"the state on stdin has no usable container id ({cid!r})")
    return cid


def up(state: dict, config_file: str | None = None) -> dict:
    """Set the container's network up; returns the record of what was made."""
    from . import NetlinkError, netlink_message, netns_fd, route

    cid = _check_id(state)
    p = read_params(state, config_file)
    assert p.address is not None
    pid = state.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        raise NetError(f"the state on stdin has no container pid ({pid!r}): run pyrunc-net up as a createRuntime hook")
    host_if = p.host_ifname or host_ifname_for(cid)
    lock = _lock()
    try:
        if os.path.exists(_record_path(cid)):
            raise NetError(f"container {cid}: already set up ({_record_path(cid)} exists; run pyrunc-net down first)")
        try:
            nsfd = netns_fd(pid)
        except OSError as e:
            raise NetError(f"container {cid}: cannot open /proc/{pid}/ns/net: {e.strerror}") from None
        try:
            if os.fstat(nsfd).st_ino == os.stat("/proc/self/ns/net").st_ino:
                raise NetError(f"container {cid}: it has no network namespace of its own (add "
                               "{\"type\": \"network\"} to linux.namespaces)")
            with route() as host, route(nsfd) as ns:
                _check_free(host, ns, p, host_if)
                record = {"id": cid, "host_ifname": host_if, "ifname": p.ifname, "address": str(p.address),
                          "gateway": str(p.gateway) if p.gateway else None, "veth": False, "nat_table": None,
                          "forwarding": False}
                try:
                    _make(host, ns, nsfd, p, host_if, record)
                except BaseException as e:
                    _undo(record)
                    if os.path.exists(_record_path(cid)):
                        os.unlink(_record_path(cid))
                    if isinstance(e, NetlinkError):
                        raise NetError(f"container {cid}: {netlink_message(e)}") from None
                    raise
        finally:
            os.close(nsfd)
    finally:
        os.close(lock)
    return record


def _check_free(host: IPRoute, ns: IPRoute, p: Params, host_if: str) -> None:
    from . import link_index

    assert p.address is not None
    problems = []
    if link_index(host, host_if):
        problems.append(f"{PREFIX}host-ifname: the host already has an interface named {host_if!r}")
    if link_index(ns, p.ifname):
        problems.append(f"{PREFIX}ifname: the container already has an interface named {p.ifname!r}")
    names = {int(li["index"]): li.get_attr("IFLA_IFNAME") for li in host.get_links()}
    for a in host.get_addr():
        text = a.get_attr("IFA_LOCAL") or a.get_attr("IFA_ADDRESS")
        try:
            theirs = ipaddress.ip_network(f"{text}/{a['prefixlen']}", strict=False)
        except ValueError:
            continue
        if theirs.version == p.address.version and theirs.overlaps(p.address.network):
            problems.append(f"{PREFIX}address: {p.address} clashes with the host's {text}/{a['prefixlen']} on "
                            f"{names.get(int(a['index']), '?')}")
    if problems:
        raise NetError("\n".join(problems))


def _make(host: IPRoute, ns: IPRoute, nsfd: int, p: Params, host_if: str, record: dict) -> None:
    from . import link_index

    assert p.address is not None
    h, c = host, ns
    # 1. the pair, its container end made in the container's namespace at once
    h.link("add", ifname=host_if, kind="veth", peer={"ifname": p.ifname, "net_ns_fd": nsfd})
    record["veth"] = True
    _write_json(_record_path(record["id"]), record)
    hidx, cidx = link_index(h, host_if), link_index(c, p.ifname)
    v6 = {"flags": 0x02} if p.address.version == 6 else {}  # IFA_F_NODAD: usable at once
    # 2. addresses, links up, the default route
    c.addr("add", index=cidx, address=str(p.address.ip), prefixlen=p.address.network.prefixlen, **v6)
    c.link("set", index=cidx, state="up")
    lo = link_index(c, "lo")
    if lo:
        c.link("set", index=lo, state="up")
    if p.gateway is not None:
        h.addr("add", index=hidx, address=str(p.gateway), prefixlen=p.address.network.prefixlen, **v6)
    h.link("set", index=hidx, state="up")
    if p.gateway is not None:
        c.route("add", dst="default" if p.address.version == 4 else "::/0", gateway=str(p.gateway),
                family=2 if p.address.version == 4 else 10)
    # 3. NAT
    if p.nat:
        from . import nat
        assert isinstance(p.address, ipaddress.IPv4Interface)
        record["forwarding"] = True  # recorded first: a hook killed half-way is undone by `down`
        _write_json(_record_path(record["id"]), record)
        _forwarding(record["id"], True)
        table = record["nat_table"] = nat.table_name(host_if)
        _write_json(_record_path(record["id"]), record)
        nat.add(table, p.address.network)
    _write_json(_record_path(record["id"]), record)


def _undo(record: dict) -> list[str]:
    """Remove what ``record`` says was made; returns what could not be removed."""
    from . import NetlinkError, link_index, netlink_message, route

    failed = []
    if record.get("nat_table"):
        from . import nat
        try:
            nat.delete(record["nat_table"])
        except Exception as e:  # noqa: BLE001
            failed.append(f"nftables table {record['nat_table']}: {netlink_message(e)}")
    if record.get("forwarding"):
        try:
            _forwarding(record["id"], False)
        except OSError as e:
            failed.append(f"{FORWARD}: {e.strerror}")
    if record.get("veth"):
        try:
            with route() as host:
                index = link_index(host, record["host_ifname"])
                if index:
                    kind = host.get_links(index)[0].get_nested("IFLA_LINKINFO", "IFLA_INFO_KIND")
                    if kind == "veth":
                        host.link("del", index=index)  # its peer in the container goes with it
        except NetlinkError as e:
            failed.append(f"interface {record['host_ifname']}: {netlink_message(e)}")
    return failed


def down(state: dict) -> list[str]:
    """Undo ``up`` for the container of ``state`` (nothing recorded: nothing to do)."""
    cid = _check_id(state)
    lock = _lock()
    try:
        record = _read_json(_record_path(cid))
        if record is None:
            return []
        failed = _undo(record)
        os.unlink(_record_path(cid))
        return failed
    finally:
        os.close(lock)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    usage = ("usage: pyrunc-net up [--config FILE] | pyrunc-net down   (an OCI hook: the container's state "
             "JSON on stdin)")
    config_file = None
    if "--config" in args:
        i = args.index("--config")
        if i + 1 >= len(args):
            print(usage, file=sys.stderr)
            return 2
        config_file = args[i + 1]
        del args[i:i + 2]
    if len(args) != 1 or args[0] not in ("up", "down"):
        print(usage, file=sys.stderr)
        return 2
    try:
        try:
            state = json.load(sys.stdin)
        except ValueError as e:
            raise NetError(f"the container state on stdin is not JSON: {e}") from None
        if not isinstance(state, dict):
            raise NetError("the container state on stdin is not a JSON object")
        if args[0] == "up":
            up(state, config_file)
            return 0
        failed = down(state)
        for msg in failed:
            print(f"pyrunc-net: cannot remove {msg}", file=sys.stderr)
        return 1 if failed else 0
    except NetError as e:
        for line in str(e).splitlines():
            print(f"pyrunc-net: {line}", file=sys.stderr)
        return 1
