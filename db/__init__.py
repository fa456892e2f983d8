"""The tweet store: SQLAlchemy 2 models, engine and the queries the API and scripts use."""
