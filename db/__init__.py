"""The tweet store: SQLAlchemy 2 models and engine, the queries (`queries`), and the store's rules for
adding, editing and deleting tweets (`store`: validation, allowed status changes, its errors)."""
