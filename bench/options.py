"""Command-line options the benchmarks that run on a scratch PostgreSQL database share."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "benchmarks.md"


def add_scratch_database_options(parser: argparse.ArgumentParser) -> None:
    """--database-url, --output, --no-write, --keep."""
    parser.add_argument(
        "--database-url",
        default=os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
        help="a PostgreSQL server (a database is created on it and dropped after)",
    )
    parser.add_argument("--output", type=Path, default=DOC, help="markdown file to update")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--keep", action="store_true", help="keep the database")
