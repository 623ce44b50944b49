"""python -m conformance against pyrunc: pyrunc must pass every check that runc passes on this
machine (runc's results are committed in conformance/results/runc.txt)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import PYRUNC, REPO, TEST_PREFIX, needs_root

sys.path.insert(0, str(REPO))
from conformance.results import parse_tap  # noqa: E402

# Checks runc passes and pyrunc fails on purpose or for a reason too big for a quick fix; each
# with the reason.  A check failing that is not listed here fails this test.
KNOWN_FAILURES: dict[str, str] = {
    "process.capabilities: unknown name is a warning, not an error":
        "pyrunc refuses unknown capability names (config.py check_semantics, tested as an error in "
        "test_bad_input/test_exec/test_config_semantics); the spec wants a warning",
}


@needs_root
def test_pyrunc_passes_what_runc_passes(state_root: Path, workdir: Path) -> None:
    runc = {row: s for (rt, row), s in parse_tap((REPO / "conformance/results/runc.txt").read_text()).items()
            if rt == "runc"}
    assert len(runc) > 100, "conformance/results/runc.txt holds no runc results"
    tap = workdir / "conformance-pyrunc.tap"
    p = subprocess.run([sys.executable, "-m", "conformance", "--runtime", f"{PYRUNC} --root {state_root}",
                        "--name", "pyrunc", "--id-prefix", f"{TEST_PREFIX}conf-", "--tap", str(tap)],
                       cwd=REPO, capture_output=True, text=True, timeout=900)
    assert tap.exists(), p.stderr[-2000:]
    ours = {row: s for (rt, row), s in parse_tap(tap.read_text()).items() if rt == "pyrunc"}
    closing = [line for line in p.stdout.splitlines() if line.startswith("pyrunc: ")]
    assert closing and closing[-1].endswith(" skipped"), p.stdout[-2000:]
    missing = sorted(set(runc) - set(ours))
    assert not missing, f"checks runc ran that the suite did not run on pyrunc: {missing}"
    regressions = {row: s for row, s in ours.items()
                   if s == "FAIL" and runc.get(row) == "pass" and row not in KNOWN_FAILURES}
    details = [line for line in tap.read_text().splitlines() if "message:" in line or line.startswith("not ok")]
    assert not regressions, "pyrunc fails checks that runc passes:\n" + "\n".join(details)
    stale = [row for row in KNOWN_FAILURES if row not in ours]
    assert not stale, f"KNOWN_FAILURES names checks that no longer exist: {stale}"
    # exit status: 0 only when the first (only) runtime failed nothing
    assert (p.returncode == 0) == (not any(s == "FAIL" for s in ours.values())), p.returncode
