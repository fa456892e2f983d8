"""Posting curated tweets to X: the post-next job (`job`), its command line (`post_next`) and the
self-hosted cron scheduler (`scheduler`). Plain functions; the HTTP route is one caller of many."""
