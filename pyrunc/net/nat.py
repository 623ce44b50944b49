"""Masquerade NAT through nftables, over netlink (pyroute2.nftables): no ``nft``/``iptables`` binary.

One table per container, ``ip pyrunc-net-<host veth>``, holding one chain
(``type nat hook postrouting priority srcnat``) with one rule, as ``nft`` would print it::

    table ip pyrunc-net-pn-demo {
        chain postrouting {
            type nat hook postrouting priority srcnat; policy accept;
            ip saddr 10.200.0.0/24 masquerade
        }
    }

Removing the table removes its chain and rule in one step.
"""

from __future__ import annotations

import ipaddress
import socket

NFPROTO_IPV4 = 2
NF_ACCEPT = 1
NF_IP_PRI_NAT_SRC = 100
NFT_PAYLOAD_NETWORK_HEADER = 1
NFT_REG_1 = 1
NFT_CMP_EQ = 0
CHAIN = "postrouting"


def table_name(host_ifname: str) -> str:
    return f"pyrunc-net-{host_ifname}"


def _nft():  # type: ignore[no-untyped-def]
    from pyroute2.nftables.main import NFTables
    return NFTables(nfgen_family=NFPROTO_IPV4)


def _expr(name: str, data: dict) -> dict:
    from pyroute2.nftables.expressions import genex
    return genex(name, data)  # type: ignore[no-any-return]


def masquerade_rule(network: ipaddress.IPv4Network) -> list[dict]:
    """``ip saddr NETWORK masquerade``: load the source address, mask it, compare, masquerade."""
    mask = int(network.netmask).to_bytes(4, "big")
    return [
        _expr("payload", {"dreg": NFT_REG_1, "base": NFT_PAYLOAD_NETWORK_HEADER, "offset": 12, "len": 4}),
        _expr("bitwise", {"sreg": NFT_REG_1, "dreg": NFT_REG_1, "len": 4,
                          "mask": {"attrs": [("NFTA_DATA_VALUE", mask)]},
                          "xor": {"attrs": [("NFTA_DATA_VALUE", b"\0\0\0\0")]}}),
        _expr("cmp", {"sreg": NFT_REG_1, "op": NFT_CMP_EQ,
                      "data": {"attrs": [("NFTA_DATA_VALUE", socket.inet_aton(str(network.network_address)))]}}),
        _expr("masq", {}),
    ]


def add(table: str, network: ipaddress.IPv4Network) -> None:
    """Create the table, its postrouting nat chain and the masquerade rule (the table is removed
    again if a later step fails)."""
    nft = _nft()
    try:
        nft.table("add", name=table)
        try:
            nft.chain("add", table=table, name=CHAIN, hook="postrouting", type="nat",
                      priority=NF_IP_PRI_NAT_SRC, policy=NF_ACCEPT)
            nft.rule("add", table=table, chain=CHAIN, expressions=[masquerade_rule(network)])
        except BaseException:
            try:
                nft.table("del", name=table)
            except Exception:  # noqa: BLE001 - the first error is the one to report
                pass
            raise
    finally:
        nft.close()


def delete(table: str) -> bool:
    """Remove the table if it exists; True when it did."""
    nft = _nft()
    try:
        if table not in tables(nft):
            return False
        nft.table("del", name=table)
        return True
    finally:
        nft.close()


def tables(nft: object = None) -> list[str]:
    """The names of the ip-family tables."""
    own = nft is None
    if own:
        nft = _nft()
    try:
        return [t.get_attr("NFTA_TABLE_NAME") for t in nft.get_tables()]  # type: ignore[attr-defined]
    finally:
        if own:
            nft.close()  # type: ignore[attr-defined]


def rules(table: str) -> list[dict]:
    """The rules of ``table`` as pyroute2 decodes them (for tests and the demo)."""
    nft = _nft()
    try:
        return [r for r in nft.get_rules() if r.get_attr("NFTA_RULE_TABLE") == table]
    finally:
        nft.close()
