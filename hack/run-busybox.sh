#!/usr/bin/env bash
# Run a busybox container with pyrunc in the foreground (the README's first command).
#
#   hack/run-busybox.sh
#   PYRUNC=runc hack/run-busybox.sh              # same with another runtime
#   PYRUNC='.venv/bin/pyrunc --debug' hack/run-busybox.sh
#
# Sets the machine up (hack/setup.sh), builds a bundle in a temporary directory
# with hack/mkbundle.py, runs it as container demo-$$ and removes it all after.
# Exits with the container's exit status.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$repo/hack/setup.sh"

# The runtime command; may carry global flags (word-split on purpose).
read -r -a runtime <<<"${PYRUNC:-$repo/.venv/bin/pyrunc}"
id="demo-$$"
bundle=$(mktemp -d "${TMPDIR:-/tmp}/pyrunc-demo.XXXXXX")
started=0

# shellcheck disable=SC2317  # (called from the EXIT trap)
cleanup() {
    if ((started)); then
        "${runtime[@]}" delete --force "$id" >/dev/null 2>&1 || true
    fi
    rm -rf "$bundle"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

"$repo/.venv/bin/python" "$repo/hack/mkbundle.py" "$bundle" --hostname pyrunc-demo --args \
    sh -c 'echo "Hello from a busybox container run by pyrunc!"; id; hostname; ps; exit 0'

started=1
rc=0
"${runtime[@]}" run --bundle "$bundle" "$id" </dev/null || rc=$?
exit "$rc"
