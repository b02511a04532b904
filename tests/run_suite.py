"""Run the test suite on one database; called by ``make test``.

    python tests/run_suite.py sqlite|postgresql [PYTEST ARGS...]

- sqlite: every test.
- postgresql: the tests that use a database (marker ``db``), against a temporary cluster. Without
  PostgreSQL on the machine this pass is skipped with a plain message, except under CI (CI=true),
  where a missing PostgreSQL is a failure.

pytest's exit code 5 ("no tests collected") is a failure here: a pass that tested nothing must not
look green.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests import pgcluster

NO_TESTS_COLLECTED = 5


# Both passes spread their tests over the machine's cores (pytest-xdist): every test has its own
# database, so they are independent, and on 2 cores this roughly halves the PostgreSQL pass.
PARALLEL = ["-n", "auto"]


def _pytest(args: list[str], env: dict[str, str] | None = None) -> int:
    command = [sys.executable, "-m", "pytest", *PARALLEL, *args]
    code = subprocess.run(command, env=env, check=False).returncode
    if code == NO_TESTS_COLLECTED:
        sys.stderr.write(
            f"pytest collected no tests for: {' '.join(args)} - treating as a failure\n"
        )
        return 1
    return code


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("sqlite", "postgresql"):
        sys.stderr.write(__doc__ or "")
        return 2
    database, extra = argv[0], argv[1:]
    if database == "sqlite":
        return _pytest(["--db=sqlite", *extra])

    ci = os.environ.get("CI", "").lower() in ("1", "true", "yes")
    if not os.environ.get(pgcluster.ENV_URL) and not pgcluster.available():
        if ci:
            sys.stderr.write(
                "FAILED: PostgreSQL (initdb) not found, and CI requires the PostgreSQL suite\n"
            )
            return 1
        banner = "*" * 72
        sys.stderr.write(
            f"{banner}\n* PostgreSQL (initdb) not found: the PostgreSQL test suite was SKIPPED.\n"
            f"* Only SQLite was tested. Install PostgreSQL 15+ to run both.\n{banner}\n"
        )
        return 0
    if os.environ.get(pgcluster.ENV_URL):
        return _pytest(["--db=postgresql", "-m", "db", *extra])
    with pgcluster.TempCluster() as cluster:
        env = dict(os.environ, **{pgcluster.ENV_URL: cluster.url})
        return _pytest(["--db=postgresql", "-m", "db", *extra], env=env)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
