"""The curation page at /curate, self-contained: its routes, actions (plain functions on a Session),
signed-in session, the live counter's rule, templates and static files."""
