"""``python -m pyrunc.net.show ID [--left]``: what pyrunc-net made on the host for container ID
(its record, host veth end, nftables table), read through netlink; with ``--left``, only what is
still there, one line each (nothing printed: nothing left).  Used by hack/article-demo.sh."""

from __future__ import annotations

import json
import os
import sys


def main(argv: list[str]) -> int:
    if not argv or argv[0].startswith("-"):
        print("usage: python -m pyrunc.net.show ID [--left]", file=sys.stderr)
        return 2
    from . import IFF_UP, link_index, nat, route
    from .hook import RUN_DIR, host_ifname_for

    cid, left_only = argv[0], "--left" in argv[1:]
    record_path = os.path.join(RUN_DIR, cid + ".json")
    record = None
    if os.path.exists(record_path):
        with open(record_path) as f:
            record = json.load(f)
        print(f"record {record_path}: {json.dumps(record)}" if not left_only else f"record {record_path}")
    host_if = (record or {}).get("host_ifname") or host_ifname_for(cid)
    with route() as ipr:
        index = link_index(ipr, host_if)
        if index:
            link = ipr.get_links(index)[0]
            addrs = [f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}" for a in ipr.get_addr(index=index)]
            state = "UP" if link["flags"] & IFF_UP else "DOWN"
            print(f"host interface {host_if} {state} {' '.join(addrs)}" if not left_only else f"interface {host_if}")
    table = nat.table_name(host_if)
    if table in nat.tables():
        if left_only:
            print(f"nftables table ip {table}")
        else:
            n = len(nat.rules(table))
            print(f"nftables table ip {table}: chain {nat.CHAIN} (nat, postrouting), {n} masquerade rule(s)")
    if not left_only:
        with open("/proc/sys/net/ipv4/ip_forward") as f:
            print(f"net.ipv4.ip_forward = {f.read().strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
