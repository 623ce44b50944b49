"""Write a fast ``pyrunc`` launcher: ``python -m pyrunc.launcher DEST``.

The console script pip generates starts the interpreter with ``site`` (about
2-3 ms here, much more with some editable-install finders) and imports ``re``
before our code runs (another ~5 ms).  Engines call the runtime for every step of
every container, so ``hack/setup.sh`` replaces that script with this launcher:
the same interpreter with ``-I -S`` and the package's paths set explicitly.
"""

from __future__ import annotations

import os
import sys

TEMPLATE = """#!{python} -IS
# pyrunc launcher, written by `python -m pyrunc.launcher`: isolated mode, no site,
# explicit paths (see pyrunc/launcher.py for why).
import sys
sys.path[:0] = {paths!r}
from pyrunc.cli import run
run()
"""


def launcher_text() -> str:
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    import _prctl  # where python-prctl (and the other dependencies) live
    site_packages = os.path.dirname(os.path.abspath(_prctl.__file__))
    paths = [package_parent] + ([site_packages] if site_packages != package_parent else [])
    return TEMPLATE.format(python=sys.executable, paths=paths)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m pyrunc.launcher DEST", file=sys.stderr)
        return 2
    dest = argv[0]
    tmp = dest + ".tmp"
    with open(tmp, "w") as f:
        f.write(launcher_text())
    os.chmod(tmp, 0o755)
    os.rename(tmp, dest)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
