"""Alembic owns the schema: upgrade, downgrade, upgrade again, and the models match."""
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from db.models import Base

ROOT = Path(__file__).resolve().parent.parent


def run_alembic(engine, *args) -> None:
    config = Config(str(ROOT / "alembic.ini"))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        getattr(command, args[0])(config, *args[1:])


def diff_against_models(engine) -> list:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(context, Base.metadata)


def test_upgrade_downgrade_upgrade(empty_engine):
    run_alembic(empty_engine, "upgrade", "head")
    assert "tweets" in inspect(empty_engine).get_table_names()
    assert diff_against_models(empty_engine) == []

    run_alembic(empty_engine, "downgrade", "base")
    assert "tweets" not in inspect(empty_engine).get_table_names()

    run_alembic(empty_engine, "upgrade", "head")
    assert diff_against_models(empty_engine) == []
