#!/usr/bin/env bash
# Run the test suite (the README's second command).
#
#   hack/test.sh                          # all of tests/
#   hack/test.sh -k state -x              # extra pytest arguments are passed through
#   hack/test.sh tests/unit/test_x.py     # given paths replace the default tests/
#
# Sets the machine up first (hack/setup.sh). Exits with pytest's status.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
hack/setup.sh

# Run tests/ unless a path (or path::test id) was given.
default=(tests)
for arg in "$@"; do
    case $arg in
        -*) ;;
        *) if [[ -e ${arg%%::*} ]]; then default=(); break; fi ;;
    esac
done

exec .venv/bin/python -m pytest -v "${default[@]}" "$@"
