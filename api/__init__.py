"""The HTTP service only (FastAPI): app, deps, schemas, the error-to-HTTP table, the routes, and the
curation page (api/curate/). The store is in db/, posting in posting/, shared rules in core/."""
