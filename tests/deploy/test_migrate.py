"""`migrate`, the images' migration command, run here with the workspace's alembic: it
waits for a database that is not there yet, and still fails on one that never comes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.deploy.manifests import REPO, SPECS

MIGRATE = REPO / "deploy" / "migrate.sh"
PACKAGE = next(pkg for pkg, spec in sorted(SPECS.items()) if spec.migrations)


def run_migrate(database: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["sh", str(MIGRATE), str(SPECS[PACKAGE].migrations), *args],
        cwd=REPO,
        env={
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
            "DATABASE_URL": f"sqlite+aiosqlite:///{database}",
            "DATA_DIR": str(database.parent.parent),
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_database_that_comes_late_is_migrated_once_it_is_there(tmp_path: Path) -> None:
    # Where the database's directory should be is a file: SQLite cannot open the
    # database (the "server" refuses connections) until the file makes way for it.
    database = tmp_path / "late" / "migrated.db"
    database.parent.write_text("in the way")
    process = run_migrate(database)
    assert process.stderr is not None
    seen = []
    for line in process.stderr:  # until the first attempt has failed
        seen.append(line)
        if "attempt 1 of" in line:
            break
    assert "attempt 1 of" in seen[-1], "".join(seen)
    database.parent.unlink()
    database.parent.mkdir()
    _, errors = process.communicate(timeout=90)
    assert process.returncode == 0, errors
    assert database.stat().st_size > 0


def test_a_database_that_never_comes_fails_the_migration(tmp_path: Path) -> None:
    database = tmp_path / "never" / "migrated.db"
    database.parent.write_text("in the way")
    process = run_migrate(database, "3")
    _, errors = process.communicate(timeout=90)
    assert process.returncode == 1
    assert "giving up" in errors
    assert database.parent.read_text() == "in the way"
