#!/usr/bin/env bash
# Idempotent set-up of a development/CI machine (Debian 12, as root):
#   - Debian packages the project and its tests need (apt-get update only when
#     something is missing),
#   - .venv at the repo top, made with Debian's /usr/bin/python3,
#   - `pip install -e '.[test]'` into it, redone only when pyproject.toml changes,
#     then pyrunc's fast launcher over pip's console script (pyrunc/launcher.py).
# Quiet on success; on failure prints what failed and the command's output.
# Fast (well under a second) when everything is already there.
#
# Env: SETUP_FORCE_PIP=1 reinstalls the package even if the stamp matches.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv="$repo/.venv"
stamp="$venv/.pyrunc-setup-stamp"
# golang-github-containers-common: podman's default seccomp profile (/usr/share/containers/seccomp.json),
# which tests/integration/test_seccomp.py resolves and runs
# uidmap: newuidmap/newgidmap, which a rootless pyrunc runs (as runc does) for id maps of more
# than the user's own id (tests/integration/test_rootless.py)
# podman conmon containerd docker.io: the engines tests/e2e drives pyrunc with (each started there with
# private directories; their system daemons are kept from starting, see policy-rc.d below)
packages=(busybox-static libcap-dev gcc python3-venv python3-dev runc crun iproute2 libseccomp2
          golang-github-containers-common uidmap podman conmon containerd docker.io)

die() { echo "setup.sh: ERROR: $*" >&2; exit 1; }

# Serialise concurrent runs (several test runs in one tree share .venv).
if command -v flock >/dev/null; then
    lock="${TMPDIR:-/tmp}/pyrunc-setup-$(printf %s "$repo" | cksum | cut -d' ' -f1).lock"
    exec 9>>"$lock"
    flock 9
fi

log=$(mktemp "${TMPDIR:-/tmp}/pyrunc-setup.XXXXXX")
trap 'rm -f "$log"' EXIT

# run_quiet DESCRIPTION CMD...: run CMD with its output to $log; show it on failure.
run_quiet() {
    local what=$1; shift
    local rc=0
    "$@" >"$log" 2>&1 || rc=$?
    if ((rc)); then
        echo "setup.sh: ERROR: $what failed (exit $rc): $*" >&2
        echo "---- output (last 60 lines) ----" >&2
        tail -n 60 "$log" >&2
        echo "--------------------------------" >&2
        exit "$rc"
    fi
}

# ---- Debian packages --------------------------------------------------------
missing_packages() {
    # One dpkg-query for all: prints "name status" per package it knows about.
    local -A st=()
    local name status
    while read -r name status; do
        st[$name]=$status
    done < <(dpkg-query -W -f='${Package} ${db:Status-Status}\n' "${packages[@]}" 2>/dev/null || true)
    for name in "${packages[@]}"; do
        [[ ${st[$name]:-} == installed ]] || echo "$name"
    done
}

# Packages among "$@" that apt has no installation candidate for.
no_candidate() {
    local p out
    for p in "$@"; do
        # (no `| grep -q`: with pipefail, grep's early exit would fail the pipe)
        out=$(apt-cache policy "$p" 2>/dev/null || true)
        [[ $out =~ Candidate:\ [^\(] ]] || echo "$p"
    done
}

mapfile -t missing < <(missing_packages)
if ((${#missing[@]})); then
    ((EUID == 0)) || die "missing Debian packages (${missing[*]}) and not root: run as root"
    export DEBIAN_FRONTEND=noninteractive
    # docker.io's and containerd's postinst start system daemons (invoke-rc.d): deny it while we
    # install, unless the machine already has a policy of its own
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        trap 'rm -f "$log" /usr/sbin/policy-rc.d' EXIT
    fi
    updated=0
    mapfile -t unknown < <(no_candidate "${missing[@]}")
    if ((${#unknown[@]})); then
        run_quiet "apt-get update" apt-get update
        updated=1
        mapfile -t unknown < <(no_candidate "${missing[@]}")
        ((${#unknown[@]} == 0)) || die "no apt candidate for: ${unknown[*]} (check /etc/apt/sources.list*)"
    fi
    if ! apt-get install -y --no-install-recommends "${missing[@]}" >"$log" 2>&1; then
        # Stale package lists give 404s: refresh once and retry.
        ((updated)) || { run_quiet "apt-get update" apt-get update; updated=1; }
        run_quiet "apt-get install" apt-get install -y --no-install-recommends "${missing[@]}"
    fi
    mapfile -t still < <(missing_packages)
    ((${#still[@]} == 0)) || die "still not installed after apt-get install: ${still[*]}"
fi

# ---- virtualenv ---------------------------------------------------------------
[[ -x /usr/bin/python3 ]] || die "/usr/bin/python3 not found (apt-get install python3)"
if [[ -e $venv ]] && ! "$venv/bin/python" -c '' >/dev/null 2>&1; then
    # Present but unusable (e.g. made from an interpreter that is gone): rebuild.
    echo "setup.sh: $venv is broken, recreating it" >&2
    rm -rf "$venv"
fi
if [[ ! -e $venv ]]; then
    run_quiet "creating $venv" /usr/bin/python3 -m venv "$venv"
    rm -f "$stamp"
fi

# ---- pip install -e '.[test]' -------------------------------------------------
[[ -f $repo/pyproject.toml ]] || die "$repo/pyproject.toml not found"
want=$(cat "$repo/pyproject.toml" <("$venv/bin/python" -c 'import sys; print(sys.version)' 2>/dev/null) | sha256sum)
want=${want%% *}
have=$(cat "$stamp" 2>/dev/null || true)
if [[ ${SETUP_FORCE_PIP:-0} != 0 || $want != "$have" || ! -x $venv/bin/pyrunc ]]; then
    rm -f "$stamp"
    # compat mode: a plain path in a .pth file; the default editable finder imports
    # pathlib and re at every interpreter start (~8 ms on every pyrunc command).
    run_quiet "pip install -e '.[test]'" \
        "$venv/bin/python" -m pip install --disable-pip-version-check -q \
        --config-settings editable_mode=compat -e "${repo}[test]"
    # Replace pip's console script with pyrunc's -I -S launcher (see pyrunc/launcher.py).
    run_quiet "writing the pyrunc launcher" "$venv/bin/python" -m pyrunc.launcher "$venv/bin/pyrunc"
    echo "$want" >"$stamp"
fi
