"""The tweet store's endpoints, on SQLite and on Postgres through psycopg2 and pg8000."""
import pytest
from sqlalchemy import func, select

from db.models import Tweet, TweetStatus, utcnow
from tests.conftest import ACCOUNT

DELIM = "=" * 20


def stored_count(session_factory) -> int:
    with session_factory() as session:
        return session.scalar(select(func.count()).select_from(Tweet))


def curated(*samples: str) -> bytes:
    return "".join(f"{s}\n{DELIM}\n" for s in samples).encode()


def upload(client, data: bytes, filename="curated.txt", **params):
    return client.post("/add_tweets_file/", files={"file": (filename, data)}, params=params)


# ---- auth -------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "method, path",
    [
        ("get", "/tweets/"),
        ("get", "/tweets/1"),
        ("patch", "/tweets/1"),
        ("delete", "/tweets/1"),
        ("post", "/add_tweets/"),
        ("post", "/add_tweets_file/"),
    ],
)
@pytest.mark.parametrize("headers, message", [({}, "missing x-token"), ({"x-token": "wrong"}, "wrong x-token")])
def test_every_endpoint_needs_the_token(anon_client, session_factory, method, path, headers, message):
    response = anon_client.request(method, path, headers=headers, json={"tweet": "hi"})
    assert response.status_code == 401
    assert message in response.json()["detail"]
    assert stored_count(session_factory) == 0


def test_health_needs_no_token(anon_client):
    response = anon_client.get("/health")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_health_names_a_missing_schema(settings, empty_engine):
    from fastapi.testclient import TestClient

    from api.app import create_app

    with TestClient(create_app(settings, engine=empty_engine, configure_logs=False)) as client:
        response = client.get("/health")
    assert response.status_code == 503
    assert "make migrate" in response.json()["detail"]


@pytest.mark.parametrize("path", ["/tweets", "/tweets/", "/health", "/health/"])
def test_paths_work_with_and_without_trailing_slash(client, path):
    assert client.get(path, follow_redirects=False).status_code == 200


def test_swagger_documents_the_token_header(client):
    spec = client.get("/openapi.json").json()
    schemes = spec["components"]["securitySchemes"]
    assert {"type": "apiKey", "in": "header", "name": "x-token"}.items() <= next(iter(schemes.values())).items()
    assert client.get("/docs").status_code == 200


# ---- adding one tweet -------------------------------------------------------------------

def test_add_one_tweet(client):
    response = client.post("/add_tweets/", json={"tweet": "  hello world  "})
    assert response.status_code == 201
    body = response.json()
    assert body["text"] == "hello world" and body["status"] == "queued" and body["account"] == ACCOUNT
    assert body["created_at"].endswith("Z") or "+00:00" in body["created_at"]


def test_add_answers_with_the_tweet_it_added_not_another(client):
    client.post("/add_tweets/", json={"tweet": "first tweet"})
    response = client.post("/add_tweets/", json={"tweet": "second tweet"})
    assert response.status_code == 201 and response.json()["text"] == "second tweet"


def test_add_pending_tweet(client):
    assert client.post("/add_tweets", json={"tweet": "review me", "status": "pending"}).json()["status"] == "pending"


@pytest.mark.parametrize(
    "tweet, message",
    [
        ("a" * 281, "281 weighted characters"),
        ("日" * 141, "282 weighted"),
        ("text <|endoftext|>", "marker"),
        ("   ", "empty"),
    ],
)
def test_add_invalid_tweet_is_refused(client, session_factory, tweet, message):
    response = client.post("/add_tweets/", json={"tweet": tweet})
    assert response.status_code == 422 and message in response.json()["detail"]
    assert stored_count(session_factory) == 0


def test_add_duplicate_tweet_is_refused(client, session_factory):
    client.post("/add_tweets/", json={"tweet": "same"})
    response = client.post("/add_tweets/", json={"tweet": "  SAME "})
    assert response.status_code == 409 and "already stored" in response.json()["detail"]
    assert stored_count(session_factory) == 1


@pytest.mark.parametrize("body", [{}, {"text": "wrong field"}, {"tweet": 5}, {"tweet": "x", "status": "posted"}])
def test_add_bad_body_is_422(client, body):
    assert client.post("/add_tweets/", json=body).status_code == 422


# ---- uploading a curated file -------------------------------------------------------------

def test_upload_curated_file(client, session_factory):
    data = curated("first tweet", "second\nwith a newline", "first tweet", "x" * 281, "third <|endoftext|>", "FIRST  tweet")
    response = upload(client, data)
    assert response.status_code == 201
    body = response.json()
    assert body["filename"] == "curated.txt"
    assert body["added"] == 2 and body["duplicates"] == 2
    assert [r["index"] for r in body["rejected"]] == [4, 5]
    assert "281" in body["rejected"][0]["reason"] and "marker" in body["rejected"][1]["reason"]
    tweets = client.get("/tweets/").json()
    assert [t["text"] for t in tweets["data"]] == ["first tweet", "second\nwith a newline"]
    assert {t["status"] for t in tweets["data"]} == {"queued"}


def test_upload_with_a_huge_entry_stores_the_others_and_names_its_length(client):
    huge = "see a.b " * 500_000
    body = upload(client, curated("before", huge, "after")).json()
    assert body["added"] == 2
    (rejection,) = body["rejected"]
    assert rejection["index"] == 2
    assert rejection["reason"].startswith(f"tweet is {len(huge.strip()):,} characters long")
    assert [t["text"] for t in client.get("/tweets/").json()["data"]] == ["before", "after"]


def test_upload_skips_tweets_already_stored(client):
    upload(client, curated("one", "two"))
    body = upload(client, curated("two", "three")).json()
    assert body["added"] == 1 and body["duplicates"] == 1


def test_upload_as_pending_and_csv(client):
    data = 'tweets\n"a, b"\n"c ""d"""\n'.encode()
    body = upload(client, data, filename="t.csv", status="pending").json()
    assert body["added"] == 2
    assert client.get("/tweets/", params={"status": "pending"}).json()["count"] == 2


def test_upload_crlf_and_no_trailing_delimiter(client):
    body = upload(client, f"one\r\n{DELIM}\r\ntwo".encode()).json()
    assert body["added"] == 2


@pytest.mark.parametrize(
    "data, status, message",
    [
        (b"", 400, "empty"),
        (b"\xff\xfe\x00bad", 400, "not UTF-8"),
        (f"\n{DELIM}\n{DELIM}\n".encode(), 400, "no tweets"),
        (curated("x" * 281, "<|startoftext|>"), 422, "no valid tweet"),
        (curated("a NUL \x00 byte"), 422, "control character U+0000"),
    ],
)
def test_bad_uploads_store_nothing(client, session_factory, data, status, message):
    response = upload(client, data)
    assert response.status_code == status
    assert message in response.json()["detail"]
    assert stored_count(session_factory) == 0


@pytest.fixture
def small_upload_limit(settings_values):
    settings_values["MAX_UPLOAD_BYTES"] = 100


def test_oversize_upload_stores_nothing(small_upload_limit, client, session_factory):
    response = upload(client, curated("a" * 60, "b" * 60))
    assert response.status_code == 413
    assert "MAX_UPLOAD_BYTES" in response.json()["detail"]
    assert stored_count(session_factory) == 0


def test_upload_exactly_at_the_limit_is_stored(small_upload_limit, client):
    data = curated("a" * 78)
    assert len(data) == 100
    response = upload(client, data)
    assert (response.status_code, response.json()["added"]) == (201, 1), response.text


def test_upload_named_csv_is_read_as_csv_whatever_its_first_column(client):
    body = upload(client, b"id,tweets\n1,hello\n2,world\n", filename="export.CSV").json()
    assert body["added"] == 2
    assert [t["text"] for t in client.get("/tweets/").json()["data"]] == ["hello", "world"]


@pytest.mark.parametrize(
    "data, detail",
    [
        (f"\n{DELIM}\n".encode(), "file holds no tweets: samples must be separated by a line of 20 '='"),
        (
            curated(*("x" * n for n in (281, 282, 283, 284))),
            "file holds no valid tweet (4 rejected: #1: tweet is 281 weighted characters, over X's limit of 280; "
            "#2: tweet is 282 weighted characters, over X's limit of 280; "
            "#3: tweet is 283 weighted characters, over X's limit of 280); nothing was stored",
        ),
    ],
    ids=["no tweets", "the first three reasons"],
)
def test_an_upload_with_nothing_to_store_says_why(client, session_factory, data, detail):
    assert upload(client, data).json()["detail"] == detail
    assert stored_count(session_factory) == 0


def test_upload_without_file_is_422(client):
    assert client.post("/add_tweets_file/").status_code == 422


# ---- listing, reading, editing, deleting --------------------------------------------------

@pytest.fixture
def five_tweets(client):
    upload(client, curated(*(f"tweet number {n}" for n in range(5))))
    return [t["id"] for t in client.get("/tweets/").json()["data"]]


def test_list_paginates_in_a_stable_order(client, five_tweets):
    page = client.get("/tweets/", params={"limit": 2, "offset": 2}).json()
    assert page["count"] == 5
    assert [t["id"] for t in page["data"]] == five_tweets[2:4]


def test_list_keeps_the_id_order_after_an_edit(client, five_tweets):
    """Postgres writes an updated row anew at the end of the table: without ORDER BY it would come last."""
    client.patch(f"/tweets/{five_tweets[0]}", json={"text": "edited first tweet"})
    assert [t["id"] for t in client.get("/tweets/").json()["data"]] == five_tweets


def test_list_filters_by_status_and_account(client, five_tweets):
    client.patch(f"/tweets/{five_tweets[0]}", json={"status": "rejected"})
    assert client.get("/tweets/", params={"status": "rejected"}).json()["count"] == 1
    assert client.get("/tweets/", params=[("status", "rejected"), ("status", "queued")]).json()["count"] == 5
    assert client.get("/tweets/", params={"account": "someone_else"}).json()["count"] == 0
    assert client.get("/tweets/", params={"status": "nonsense"}).status_code == 422
    assert client.get("/tweets/", params={"limit": 0}).status_code == 422


def test_read_and_unknown_id(client, five_tweets):
    assert client.get(f"/tweets/{five_tweets[1]}").json()["text"] == "tweet number 1"
    missing = client.get("/tweets/999999")
    assert missing.status_code == 404 and "999999" in missing.json()["detail"]
    assert client.get("/tweets/abc").status_code == 422


def test_edit_text_revalidates(client, five_tweets):
    tweet_id = five_tweets[0]
    assert client.patch(f"/tweets/{tweet_id}", json={"text": " edited "}).json()["text"] == "edited"
    too_long = client.patch(f"/tweets/{tweet_id}", json={"text": "a" * 281})
    assert too_long.status_code == 422
    clash = client.patch(f"/tweets/{tweet_id}", json={"text": "tweet number 1"})
    assert clash.status_code == 409
    assert client.get(f"/tweets/{tweet_id}").json()["text"] == "edited"


def test_status_transitions(client, five_tweets):
    tweet_id = five_tweets[0]
    assert client.patch(f"/tweets/{tweet_id}", json={"status": "pending"}).json()["status"] == "pending"
    rejected = client.patch(f"/tweets/{tweet_id}", json={"status": "rejected", "error": "not funny"}).json()
    assert rejected["status"] == "rejected" and rejected["error"] == "not funny"
    requeued = client.patch(f"/tweets/{tweet_id}", json={"status": "queued"}).json()
    assert requeued["status"] == "queued" and requeued["error"] is None
    for forbidden in ("posting", "posted", "failed"):
        response = client.patch(f"/tweets/{tweet_id}", json={"status": forbidden})
        assert (response.status_code, response.json()["detail"]) == (409, f"cannot change a queued tweet to {forbidden}")
    assert client.patch(f"/tweets/{tweet_id}", json={"status": "bogus"}).status_code == 422
    assert client.patch(f"/tweets/{tweet_id}", json={"unknown": 1}).status_code == 422


def test_posted_tweet_cannot_be_edited(client, five_tweets, session_factory):
    with session_factory() as session:
        session.get(Tweet, five_tweets[0]).status = TweetStatus.posted
        session.commit()
    response = client.patch(f"/tweets/{five_tweets[0]}", json={"text": "new"})
    assert (response.status_code, response.json()["detail"]) == (409, "a posted tweet cannot be edited")


def test_delete(client, five_tweets, session_factory):
    assert client.delete(f"/tweets/{five_tweets[0]}").status_code == 204
    assert client.get(f"/tweets/{five_tweets[0]}").status_code == 404
    assert client.delete(f"/tweets/{five_tweets[0]}").status_code == 404
    assert stored_count(session_factory) == 4


def test_a_deleted_tweets_id_is_never_given_again(client, session_factory):
    """A link, a log line or a history entry naming a deleted tweet must not come to name another one."""
    upload(client, curated("older", "newest"))
    older, newest = [t["id"] for t in client.get("/tweets/").json()["data"]]
    assert client.delete(f"/tweets/{newest}").status_code == 204
    added = client.post("/add_tweets/", json={"tweet": "added after the delete"}).json()["id"]
    assert added > newest
    upload(client, curated("uploaded after the delete"))
    assert [t["id"] for t in client.get("/tweets/").json()["data"]] == [older, added, added + 1]


def test_wrong_method_is_405(client):
    assert client.put("/tweets/1", json={}).status_code == 405
    assert client.get("/add_tweets_file/").status_code == 405


def test_race_between_uploads_is_a_conflict_and_stores_nothing(session_factory, monkeypatch):
    """Two uploads that both checked for duplicates before either committed: the second loses whole."""
    from db.store import TweetConflict, ingest_texts
    from db import queries

    with session_factory() as first:
        ingest_texts(first, account=ACCOUNT, texts=["shared text"], status=TweetStatus.queued)
        first.commit()
    monkeypatch.setattr(queries, "existing_hashes", lambda session, account: set())
    with session_factory() as second:
        with pytest.raises(TweetConflict) as caught:
            ingest_texts(second, account=ACCOUNT, texts=["new text", "shared text"], status=TweetStatus.queued)
    assert str(caught.value) == (
        "another request stored some of these tweets at the same moment; "
        "send the file again (tweets already stored are skipped as duplicates)"
    )
    assert stored_count(session_factory) == 1


# ---- the store's bulk insert and counts ----------------------------------------------------

def bulk_insert(session_factory, account: str, *texts: str, status=TweetStatus.queued) -> None:
    from core.tweet_text import content_hash
    from db import queries

    with session_factory() as session:
        queries.insert_tweets(session, account=account, texts_and_hashes=[(t, content_hash(t)) for t in texts],
                              status=status)
        session.commit()


def test_bulk_inserts_go_to_the_back_of_their_accounts_queue(session_factory):
    """Each account numbers its own queue from 1; a batch shares one time, as a row never updated does."""
    bulk_insert(session_factory, ACCOUNT, "a1", "a2", "a3")
    bulk_insert(session_factory, "another_bot", "b1", "b2")
    bulk_insert(session_factory, ACCOUNT, "a4", "a5", status=TweetStatus.pending)
    with session_factory() as session:
        rows = session.execute(select(Tweet.account, Tweet.text, Tweet.position, Tweet.status, Tweet.dry_run,
                                      Tweet.created_at, Tweet.updated_at).order_by(Tweet.id)).all()
    assert [(r.account, r.text, r.position) for r in rows] == [
        (ACCOUNT, "a1", 1), (ACCOUNT, "a2", 2), (ACCOUNT, "a3", 3),
        ("another_bot", "b1", 1), ("another_bot", "b2", 2),
        (ACCOUNT, "a4", 4), (ACCOUNT, "a5", 5),
    ]
    assert [r.status for r in rows] == [TweetStatus.queued] * 5 + [TweetStatus.pending] * 2
    assert not any(r.dry_run for r in rows)
    for batch in (rows[:3], rows[3:5], rows[5:]):
        assert {(r.created_at, r.updated_at) for r in batch} == {(batch[0].created_at, batch[0].created_at)}


def test_bulk_insert_on_postgres_is_one_copy_not_inserts(session_factory, engine, backend):
    """The COPY path is the one the Postgres tests must exercise (and the fast one: bench_ingest)."""
    from sqlalchemy import event

    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    bulk_insert(session_factory, ACCOUNT, "one", "two", "three")
    inserts = [s for s in statements if s.lstrip().upper().startswith("INSERT")]
    assert len(inserts) == (0 if backend != "sqlite" else 1)
    assert stored_count(session_factory) == 3


def test_counts_by_status_name_every_status_for_the_account_only(session_factory):
    from db import queries

    bulk_insert(session_factory, ACCOUNT, "q1", "q2")
    bulk_insert(session_factory, ACCOUNT, "p1", status=TweetStatus.pending)
    bulk_insert(session_factory, "another_bot", "q3", "q4", "q5")
    with session_factory() as session:
        counts = queries.count_by_status(session, ACCOUNT)
    assert counts == {status: {TweetStatus.queued: 2, TweetStatus.pending: 1}.get(status, 0) for status in TweetStatus}


# ---- the listing and queue queries --------------------------------------------------------

def ids_of(session_factory, *texts: str) -> list[int]:
    with session_factory() as session:
        return [session.scalar(select(Tweet.id).where(Tweet.text == t)) for t in texts]


def test_list_tweets_gives_the_first_100_by_default(session_factory):
    from db import queries

    bulk_insert(session_factory, ACCOUNT, *(f"tweet {n}" for n in range(101)))
    with session_factory() as session:
        ids = list(session.scalars(select(Tweet.id).order_by(Tweet.id)))
        page, total = queries.list_tweets(session)
    assert ([t.id for t in page], total) == (ids[:100], 101)


def test_page_by_status_counts_every_match_not_only_the_page(session_factory):
    from db import queries

    bulk_insert(session_factory, ACCOUNT, "q1", "q2", "q3")
    bulk_insert(session_factory, ACCOUNT, "p1", status=TweetStatus.pending)
    bulk_insert(session_factory, "another_bot", "q4")
    with session_factory() as session:
        page, total = queries.page_by_status(session, ACCOUNT, [TweetStatus.queued], order_by=[Tweet.id.desc()], limit=2)
        assert ([t.text for t in page], total) == (["q3", "q2"], 3)
        assert queries.page_by_status(session, ACCOUNT, [TweetStatus.rejected], order_by=[Tweet.id], limit=2) == ([], 0)


def test_queue_line_is_the_accounts_queued_tweets_by_position_then_id(session_factory, backend):
    """a ties with b on position but is stored after it (Postgres writes an updated row anew): only the id
    orders them. The index on (account, status, position, id) would order them too, but Postgres reads a
    big queue without it, as here where index scans are off."""
    from sqlalchemy import text

    from db import queries

    bulk_insert(session_factory, ACCOUNT, "a", "b", "c")
    bulk_insert(session_factory, ACCOUNT, "pending", status=TweetStatus.pending)
    bulk_insert(session_factory, "another_bot", "theirs")
    a, b, c = ids_of(session_factory, "a", "b", "c")
    with session_factory() as session:
        session.get(Tweet, a).position = 2
        session.commit()
        if backend != "sqlite":
            session.execute(text("SET LOCAL enable_indexscan = off"))
            session.execute(text("SET LOCAL enable_bitmapscan = off"))
        assert [t.id for t in queries.queue_line(session, ACCOUNT)] == [a, b, c]


def sqlstate(error) -> str:
    """The SQLSTATE of a DBAPI error from psycopg2 or pg8000."""
    return getattr(error.orig, "pgcode", None) or error.orig.args[0]["C"]


def row_is_locked(engine, tweet_id: int) -> bool:
    """Whether another transaction holds the tweet's row lock (asked with NOWAIT: never waits)."""
    from sqlalchemy.exc import DBAPIError

    with engine.connect() as other:
        try:
            other.execute(select(Tweet.id).where(Tweet.id == tweet_id).with_for_update(nowait=True))
        except DBAPIError as error:
            assert sqlstate(error) == "55P03", error  # lock_not_available
            return True
        return False


def test_lock_queue_locks_the_accounts_queued_tweets_only(session_factory, engine, backend):
    from db import queries

    if backend == "sqlite":
        pytest.skip("SQLite has no row locks: BEGIN IMMEDIATE holds the whole database")
    bulk_insert(session_factory, ACCOUNT, "q1", "q2")
    bulk_insert(session_factory, ACCOUNT, "p1", status=TweetStatus.pending)
    bulk_insert(session_factory, "another_bot", "theirs")
    q1, q2, p1, theirs = ids_of(session_factory, "q1", "q2", "p1", "theirs")
    with session_factory() as session:
        queries.lock_queue(session, ACCOUNT)
        assert [row_is_locked(engine, i) for i in (q1, q2, p1, theirs)] == [True, True, False, False]


def test_lock_queue_locks_in_id_order(session_factory, engine, backend):
    """Locking in one order is what keeps two moves from deadlocking. Here a has the lower id but comes
    after b on disk and in position order; b is held elsewhere, so lock_queue waits on b: holding a
    already shows that it went in id order."""
    import threading

    from sqlalchemy import text

    from db import queries

    if backend == "sqlite":
        pytest.skip("SQLite has no row locks: BEGIN IMMEDIATE holds the whole database")
    bulk_insert(session_factory, ACCOUNT, "a", "b")
    a, b = ids_of(session_factory, "a", "b")
    with session_factory() as session:
        session.get(Tweet, a).position = 3
        session.commit()
    errors: list[BaseException] = []

    def lock(session):
        try:
            queries.lock_queue(session, ACCOUNT)
        except BaseException as error:  # noqa: BLE001 (reported by the test thread)
            errors.append(error)

    with engine.connect() as holder, session_factory() as locker:
        holder.execute(select(Tweet.id).where(Tweet.id == b).with_for_update())
        pid = locker.scalar(text("SELECT pg_backend_pid()"))
        thread = threading.Thread(target=lock, args=(locker,))
        thread.start()
        try:
            with engine.connect() as watcher:
                waiting = text("SELECT cardinality(pg_blocking_pids(:pid)) > 0")
                while not watcher.scalar(waiting, {"pid": pid}):  # until lock_queue waits on b
                    watcher.rollback()
                    assert thread.is_alive(), errors
            assert row_is_locked(engine, a)
        finally:
            holder.rollback()
            thread.join(10)
    assert not errors and not thread.is_alive()


# ---- what the store refuses, and what it must not refuse ----------------------------------

def set_posting(session_factory, tweet_id: int) -> None:
    """Put a tweet where a posting call leaves it while X answers."""
    with session_factory() as session:
        tweet = session.get(Tweet, tweet_id)
        tweet.status, tweet.claimed_at = TweetStatus.posting, utcnow()
        session.commit()


@pytest.mark.parametrize("status", ["queued", "pending", "rejected", "failed", "unconfirmed", "posted"])
def test_a_tweet_being_posted_keeps_its_status(client, five_tweets, session_factory, status):
    """A requeue while X answers would let the next run claim and post the text a second time."""
    set_posting(session_factory, five_tweets[0])
    response = client.patch(f"/tweets/{five_tweets[0]}", json={"status": status})
    assert response.status_code == 409, response.text
    assert client.get(f"/tweets/{five_tweets[0]}").json()["status"] == "posting"


def test_a_tweet_being_posted_keeps_its_text(client, five_tweets, session_factory):
    set_posting(session_factory, five_tweets[0])
    assert client.patch(f"/tweets/{five_tweets[0]}", json={"text": "changed under X"}).status_code == 409
    assert client.get(f"/tweets/{five_tweets[0]}").json()["text"] == "tweet number 0"


def test_a_tweet_being_posted_cannot_be_deleted(client, five_tweets, session_factory):
    """Deleting it would leave a post on X with no record, and the posting call a row to update that is gone."""
    set_posting(session_factory, five_tweets[0])
    response = client.delete(f"/tweets/{five_tweets[0]}")
    assert response.status_code == 409
    assert response.json()["detail"] == "this tweet is being posted right now; try again in a minute"
    assert client.get(f"/tweets/{five_tweets[0]}").json()["status"] == "posting"
    assert stored_count(session_factory) == 5


@pytest.mark.parametrize(("same_text", "stored"), [
    ("tweet number 0", "tweet number 0"),
    ("Tweet Number 0", "Tweet Number 0"),
    ("  TWEET   number 0 ", "TWEET   number 0"),
])
def test_saving_a_text_unchanged_or_recased_is_not_a_duplicate_of_itself(client, five_tweets, same_text, stored):
    response = client.patch(f"/tweets/{five_tweets[0]}", json={"text": same_text})
    assert response.status_code == 200, response.text
    assert client.get(f"/tweets/{five_tweets[0]}").json()["text"] == stored


def test_a_text_another_account_stores_is_still_stored_for_this_one(client, session_factory):
    from db.store import ingest_texts

    with session_factory() as session:
        ingest_texts(session, account="another_bot", texts=["shared text", "also theirs", "only theirs"],
                     status=TweetStatus.queued)
        session.commit()
    added = client.post("/add_tweets/", json={"tweet": "shared text"})
    assert added.status_code == 201, added.text
    assert (added.json()["account"], added.json()["text"]) == (ACCOUNT, "shared text")
    body = upload(client, curated("also theirs", "ours alone")).json()
    assert (body["added"], body["duplicates"]) == (2, 0)
    ours = {t["text"]: t["id"] for t in client.get("/tweets/", params={"account": ACCOUNT}).json()["data"]}
    assert sorted(ours) == ["also theirs", "ours alone", "shared text"]
    edited = client.patch(f"/tweets/{ours['ours alone']}", json={"text": "ONLY theirs"})
    assert edited.status_code == 200, edited.text
    assert stored_count(session_factory) == 6


def test_the_store_errors_are_answered_from_one_table(client, app):
    """Every store error has its HTTP status in one place; a route raises it and the app answers."""
    from api.request_errors import STORE_ERROR_STATUS
    from db.store import TweetNotFound

    assert set(STORE_ERROR_STATUS) <= set(app.exception_handlers)
    response = client.get("/tweets/424242")
    assert (response.status_code, response.json()) == (STORE_ERROR_STATUS[TweetNotFound], {"detail": "no tweet with id 424242"})


# ---- the store's functions, below the routes ----------------------------------------------

def test_get_tweet_for_update_reads_the_row_as_it_is_now(session_factory, five_tweets):
    """The status check that guards a change must not run on what the session read earlier."""
    from sqlalchemy import update

    from db.store import get_tweet

    with session_factory() as session:
        read_earlier = get_tweet(session, five_tweets[0])  # held: the session keeps it while referenced
        assert read_earlier.status is TweetStatus.queued
        session.execute(update(Tweet).where(Tweet.id == five_tweets[0]).values(status=TweetStatus.posting)
                        .execution_options(synchronize_session=False))
        assert get_tweet(session, five_tweets[0], for_update=True).status is TweetStatus.posting


def test_only_get_tweet_for_update_locks_the_row(session_factory, engine, backend, five_tweets):
    """A read must not wait behind a posting call's lock; a change must hold one (SQLite has none to take)."""
    from sqlalchemy import event

    from db.store import get_tweet

    statements: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    with session_factory() as session:
        get_tweet(session, five_tweets[0])
        reads = len(statements)
        get_tweet(session, five_tweets[1], for_update=True)
    assert reads and not any("FOR UPDATE" in s for s in statements[:reads])
    assert any("FOR UPDATE" in s for s in statements[reads:]) == (backend != "sqlite")


def test_x_tweet_id_is_refused_unless_an_unconfirmed_tweet_is_set_to_posted(session_factory, five_tweets):
    from db.store import TweetConflict, get_tweet, update_tweet

    with session_factory() as session:
        tweet = get_tweet(session, five_tweets[0], for_update=True)
        tweet.status = TweetStatus.unconfirmed
        session.flush()
        with pytest.raises(TweetConflict) as caught:
            update_tweet(session, tweet, x_tweet_id="1234567890")
    assert str(caught.value) == "x_tweet_id is only recorded when setting an unconfirmed tweet to posted"


def test_an_edit_to_a_text_stored_after_the_check_is_a_duplicate(session_factory, five_tweets, monkeypatch):
    """Another transaction stored the text between the duplicate check and the write: the unique index answers."""
    from db import queries
    from db.store import DUPLICATE_TEXT, TweetConflict, get_tweet, update_tweet

    monkeypatch.setattr(queries, "existing_hashes", lambda session, account: set())
    with session_factory() as session:
        tweet = get_tweet(session, five_tweets[0], for_update=True)
        with pytest.raises(TweetConflict) as caught:
            update_tweet(session, tweet, text="tweet number 1")
    assert str(caught.value) == DUPLICATE_TEXT
