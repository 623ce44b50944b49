#!/usr/bin/env bash
# The article's walk-through, in one command, on pyrunc (docs/article.md explains each step):
#
#   sudo hack/article-demo.sh
#
# 1. builds a busybox bundle (hack/mkbundle.py): every namespace (pid, network, ipc, uts, mount,
#    cgroup, time, and a user namespace whose root is host uid 100000), a cpu limit of 2 CPUs
#    (quota 200000 / period 100000, cpu.max "200000 100000") and a 512 MiB memory limit;
# 2. wires it to the network with the pyrunc-net hook (createRuntime: a veth pair, addresses,
#    default route, forwarding and masquerade NAT through nftables; poststop: all of it undone);
# 3. runs it, and shows from inside that it is isolated: ps, hostname, id, ip addr, its limits;
# 4. kills and deletes it, and shows that nothing is left on the host: no veth, no NAT table,
#    no mount, no cgroup, no state directory.
#
# Env: DEMO_DIR (bundle, default /tmp/pyrunc-article), DEMO_ID (default article-demo),
# DEMO_ROOT (pyrunc --root, default /run/pyrunc), DEMO_ADDRESS (container CIDR, default
# 10.200.0.2/24), DEMO_GATEWAY (host end, default 10.200.0.1), DEMO_NAT (default true).
# The subnet must be on no host interface: the hook refuses a clash.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
[[ -x $repo/.venv/bin/pyrunc ]] || "$repo/hack/setup.sh"
py=$repo/.venv/bin/python
dir=${DEMO_DIR:-/tmp/pyrunc-article}
id=${DEMO_ID:-article-demo}
root=${DEMO_ROOT:-/run/pyrunc}
address=${DEMO_ADDRESS:-10.200.0.2/24}
gateway=${DEMO_GATEWAY:-10.200.0.1}
nat=${DEMO_NAT:-true}
pyrunc=("$repo/.venv/bin/pyrunc" --root "$root")
started=0

say() { printf '\n\033[1m### %s\033[0m\n' "$*"; }
# shellcheck disable=SC2317  # (called from the EXIT trap)
cleanup() {
    if ((started)); then "${pyrunc[@]}" delete --force "$id" >/dev/null 2>&1 || true; fi
}
trap cleanup EXIT

say "1. a busybox bundle in $dir: all namespaces, root mapped to host uid 100000, cpu and memory limits"
"$py" "$repo/hack/mkbundle.py" "$dir" --force --userns 100000:65536 --hostname article \
    --args sleep 600 >/dev/null
# The hook: the console script when hack/setup.sh installed it, else the module.
if [[ -x $repo/.venv/bin/pyrunc-net ]]; then hook=("$repo/.venv/bin/pyrunc-net"); else hook=("$py" -m pyrunc.net); fi
"$py" - "$dir/config.json" "$address" "$gateway" "$nat" "${hook[@]}" <<'EOF'
import json, sys
path, address, gateway, nat, *hook = sys.argv[1:]
with open(path) as f:
    c = json.load(f)
lx = c["linux"]
lx["namespaces"].append({"type": "time"})
lx["resources"]["cpu"] = {"quota": 200000, "period": 100000}    # cpu.max "200000 100000": 2 CPUs
lx["resources"]["memory"] = {"limit": 512 * 1024 * 1024}          # memory.max 512 MiB
c["hooks"] = {"createRuntime": [{"path": hook[0], "args": hook + ["up"]}],
              "poststop": [{"path": hook[0], "args": hook + ["down"]}]}
c["annotations"] = {"dev.pyrunc.net.address": address, "dev.pyrunc.net.gateway": gateway,
                    "dev.pyrunc.net.nat": nat}
with open(path, "w") as f:
    json.dump(c, f, indent=2)
print("namespaces:", " ".join(ns["type"] for ns in lx["namespaces"]))
print("uidMappings:", lx["uidMappings"], " resources:", {k: lx["resources"][k] for k in ("cpu", "memory")})
print("network:", c["annotations"])
EOF

say "2. pyrunc run -d $id (the createRuntime hook wires the network)"
started=1
"${pyrunc[@]}" run -d --bundle "$dir" "$id" </dev/null
"${pyrunc[@]}" state "$id"

say "3. inside the container"
"${pyrunc[@]}" exec "$id" sh -c '
echo "--- ps (its own PID namespace: sleep is PID 1)"; ps -o pid,user,comm
echo "--- hostname"; hostname
echo "--- id (root, but only inside: host uid 100000)"; id
echo "--- ip addr (loopback and its end of the veth pair; nothing of the host)"; ip addr
echo "--- ip route"; ip route
echo "--- ping the host end"; ping -c 1 -W 2 '"$gateway"'
echo "--- limits"
if [ -f /sys/fs/cgroup/cpu.max ]; then
    echo "cpu.max: $(cat /sys/fs/cgroup/cpu.max)"
    echo "memory.max: $(cat /sys/fs/cgroup/memory.max)"
else
    echo "cpu (cgroup v1 quota period): $(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us) $(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us)"
    echo "memory (cgroup v1 limit): $(cat /sys/fs/cgroup/memory/memory.limit_in_bytes)"
fi' </dev/null

pid=$("${pyrunc[@]}" state "$id" | "$py" -c 'import json,sys; print(json.load(sys.stdin)["pid"])')
say "seen from the host: the container's init is host pid $pid, running as uid $(awk '/^Uid:/{print $2}' "/proc/$pid/status")"
"$py" -m pyrunc.net.show "$id"

say "4. pyrunc kill $id KILL; pyrunc delete $id (the poststop hook undoes the network)"
"${pyrunc[@]}" kill "$id" KILL
for _ in $(seq 100); do
    [[ $("${pyrunc[@]}" state "$id" | "$py" -c 'import json,sys; print(json.load(sys.stdin)["status"])') == stopped ]] && break
    sleep 0.05
done
"${pyrunc[@]}" delete "$id"
started=0

say "what is left on the host"
left=0
check() {  # check WHAT OUTPUT: OUTPUT empty = nothing left
    if [[ -n $2 ]]; then echo "LEFT: $1: $2"; left=1; else echo "no $1"; fi
}
check "veth or NAT table" "$("$py" -m pyrunc.net.show "$id" --left)"
check "mount" "$(grep -F -e "$dir" -e "$id" /proc/self/mountinfo || true)"
check "cgroup" "$(find /sys/fs/cgroup -maxdepth 4 -name "*$id*" 2>/dev/null || true)"
check "state directory" "$(ls -d "$root/$id" 2>/dev/null || true)"
check "process" "$(ps -eo pid,args | grep -F "$dir" | grep -v grep || true)"
if ((left)); then echo "something is left on the host (above)"; exit 1; fi
echo "nothing is left on the host"
