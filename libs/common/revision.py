"""Write a new Alembic revision for one service: `make migration SERVICE=chat MSG="add x"`.

Autogenerates against a scratch SQLite database migrated to the current head, so the revision holds
exactly what the service's models add. Review it: it must run on PostgreSQL and SQLite alike.
"""

from __future__ import annotations

import argparse
import importlib
import tempfile
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("service")
    parser.add_argument("-m", "--message", required=True)
    args = parser.parse_args()
    package = Path("services") / args.service
    models = importlib.import_module(f"services.{args.service}.models")
    with tempfile.TemporaryDirectory() as scratch:
        engine = create_engine(f"sqlite:///{scratch}/scratch.db")
        with engine.begin() as connection:
            cfg = Config()
            cfg.set_main_option("script_location", str(package / "migrations"))
            cfg.attributes["connection"] = connection
            cfg.attributes["metadata"] = models.Base.metadata
            command.upgrade(cfg, "head")
            existing = len(list((package / "migrations" / "versions").glob("*.py")))
            command.revision(
                cfg, message=args.message, autogenerate=True, rev_id=f"{existing + 1:04d}"
            )


if __name__ == "__main__":
    main()
