"""Hostile input: every integer and text that reaches the database is bounded to its column and
refused with a 4xx before the query; JSON the validator cannot echo still gets a clean 422; CSV
parser errors are the file format's 400. On SQLite and on Postgres through psycopg2 and pg8000."""
from __future__ import annotations

import csv
import json

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from api.schemas import ERROR_MAX_LENGTH, ID_MAX, OFFSET_MAX, POSITION_MAX, POSITION_MIN
from core.tweet_text import CuratedFileError, parse_curated_file
from db.models import Tweet, TweetStatus
from posting.job import MAX_IDEMPOTENCY_KEY_LENGTH
from tests.conftest import store_texts
from tests.test_curate import sign_in

JSON_BODY = {"content-type": "application/json"}
# Ids no int4 column holds; 2**31 already fails on Postgres, 2**63 on SQLite.
OUT_OF_RANGE_IDS = [0, -1, 2**31, 2**63, 10**20]
SOME_OUT_OF_RANGE_IDS = [0, 2**31, 10**20]


@pytest.fixture
def settings_values(settings_values) -> dict:
    settings_values.update(TWITTER_DRY_RUN=True)
    return settings_values


@pytest.fixture
def tweet_id(session_factory) -> int:
    return store_texts(session_factory, "a tweet to poke at", status=TweetStatus.pending)[0]


def stored(session_factory, tweet_id: int) -> tuple:
    with session_factory() as session:
        tweet = session.get(Tweet, tweet_id)
        return tweet.text, tweet.status, tweet.position, tweet.error


def patch(client, tweet_id: int, body: dict):
    """PATCH with JSON's \\u escapes, which carry lone surrogates (httpx's json= cannot)."""
    return client.patch(f"/tweets/{tweet_id}", content=json.dumps(body), headers=JSON_BODY)


def assert_refused(response, status_code: int = 422, says: str = "") -> None:
    assert response.status_code == status_code, response.text
    assert says in response.text


# ---- ids, offsets and positions ---------------------------------------------------------

@pytest.mark.parametrize("bad_id", OUT_OF_RANGE_IDS)
@pytest.mark.parametrize("method", ["get", "patch", "delete"])
def test_tweet_ids_outside_the_column_are_422(client, session_factory, tweet_id, method, bad_id):
    before = stored(session_factory, tweet_id)
    response = client.request(method, f"/tweets/{bad_id}", json={"error": "x"} if method == "patch" else None)
    assert_refused(response, says="tweet_id")
    assert stored(session_factory, tweet_id) == before


@pytest.mark.parametrize("method", ["get", "patch", "delete"])
def test_the_largest_id_is_looked_up(client, tweet_id, method):
    response = client.request(method, f"/tweets/{ID_MAX}", json={"error": "x"} if method == "patch" else None)
    assert response.status_code == 404 and f"no tweet with id {ID_MAX}" in response.json()["detail"]


@pytest.mark.parametrize("offset", [-1, OFFSET_MAX + 1, 2**63, 10**20])
def test_offsets_outside_the_range_are_422(client, tweet_id, offset):
    assert_refused(client.get("/tweets/", params={"offset": offset}), says="offset")


def test_the_largest_offset_gives_an_empty_page(client, tweet_id):
    response = client.get("/tweets/", params={"offset": OFFSET_MAX})
    assert response.status_code == 200 and response.json() == {"data": [], "count": 1}


@pytest.mark.parametrize("position", [POSITION_MIN - 1, POSITION_MAX + 1, 2**31, 2**63, 10**30, -(10**30)])
def test_positions_outside_the_range_are_422_and_change_nothing(client, session_factory, tweet_id, position):
    before = stored(session_factory, tweet_id)
    response = client.patch(f"/tweets/{tweet_id}", json={"position": position})
    assert_refused(response, says="position")
    assert stored(session_factory, tweet_id) == before


@pytest.mark.parametrize("position", [POSITION_MIN, POSITION_MAX])
def test_positions_at_the_bounds_are_stored_and_new_tweets_still_fit_after_them(client, session_factory, tweet_id, position):
    response = client.patch(f"/tweets/{tweet_id}", json={"position": position})
    assert response.status_code == 200 and response.json()["position"] == position
    # New tweets go after the last position: the bound leaves them room in the int4 column.
    assert client.post("/add_tweets/", json={"tweet": "one more"}).json()["position"] == position + 1


# ---- text fields ------------------------------------------------------------------------

@pytest.mark.parametrize(
    "error, says",
    [("\ud800", "U+D800"), ("a\x00b", "U+0000"), ("bell\x07", "U+0007"), ("x" * (ERROR_MAX_LENGTH + 1), str(ERROR_MAX_LENGTH))],
)
def test_errors_the_database_cannot_store_are_422(client, session_factory, tweet_id, error, says):
    before = stored(session_factory, tweet_id)
    response = patch(client, tweet_id, {"error": error})
    assert_refused(response, says=says)
    assert stored(session_factory, tweet_id) == before


def test_an_error_of_several_lines_at_the_length_limit_is_stored(client, session_factory, tweet_id):
    error = ("line\n\tindented ü 日 😀 " * ERROR_MAX_LENGTH)[:ERROR_MAX_LENGTH]
    response = client.patch(f"/tweets/{tweet_id}", json={"error": error})
    assert response.status_code == 200, response.text
    assert stored(session_factory, tweet_id)[3] == error


@pytest.mark.parametrize(
    "params, says",
    [({"account": "a" * 16}, "account"), ({"account": "bot\x00"}, "U+0000"),
     ({"status": ["queued"] * (len(TweetStatus) + 1)}, "status")],
)
def test_list_filters_are_bounded(client, tweet_id, params, says):
    assert_refused(client.get("/tweets/", params=params), says=says)


def test_every_status_at_once_is_a_valid_filter(client, tweet_id):
    response = client.get("/tweets/", params={"status": [s.value for s in TweetStatus]})
    assert response.status_code == 200 and response.json()["count"] == 1


@pytest.mark.parametrize("header", ["Idempotency-Key", "X-CloudScheduler-ScheduleTime"])
@pytest.mark.parametrize("key, says", [(b"key\x00", "U+0000"), (b"\x1b[2J", "U+001B")])
def test_posting_keys_with_control_characters_are_422_and_post_nothing(client, session_factory, header, key, says):
    queued = store_texts(session_factory, "a queued tweet", status=TweetStatus.queued)[0]
    response = client.post("/tweet_curated/", headers=[(header.encode(), key)])
    assert_refused(response, says=says)
    assert stored(session_factory, queued)[1] is TweetStatus.queued


# ---- JSON the validator cannot echo -----------------------------------------------------

@pytest.mark.parametrize("number", ["1e999", "-1e999", "NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("field", ["position", "error"])
def test_json_numbers_out_of_range_are_422(client, session_factory, tweet_id, field, number):
    before = stored(session_factory, tweet_id)
    response = client.patch(f"/tweets/{tweet_id}", content=f'{{"{field}": {number}}}', headers=JSON_BODY)
    assert_refused(response, says="JSON number out of range")
    assert response.json()["detail"][0]["loc"] == ["body", field]
    assert stored(session_factory, tweet_id) == before


@pytest.mark.parametrize("backend", ["sqlite"])
@pytest.mark.parametrize("depth", [10, 500, *range(900, 1101, 4), 5_000, 100_000])
def test_deeply_nested_json_is_refused_not_a_500(client, tweet_id, depth):
    body = '{"error": ' + "[" * depth + "]" * depth + "}"
    response = client.patch(f"/tweets/{tweet_id}", content=body, headers=JSON_BODY)
    # 100,000 levels are over the route's body limit: 413 before the parse.
    assert response.status_code in (400, 413, 422), (depth, response.status_code, response.text[:200])


@pytest.mark.parametrize("backend", ["sqlite"])
def test_a_validation_error_echoes_a_short_json_safe_input(client, tweet_id):
    response = patch(client, tweet_id, {"position": "\ud800" + "x" * 60_000})  # within the 64 KiB body limit
    assert response.status_code == 422
    echoed = response.json()["detail"][0]["input"]
    assert echoed.startswith("\ufffdxxx") and len(echoed) < 1000


# ---- the curation page's ids ------------------------------------------------------------

@pytest.fixture
def curator(app):
    with TestClient(app, base_url="https://testserver") as test_client:
        test_client.csrf = sign_in(test_client)
        yield test_client


@pytest.mark.parametrize("bad_id", SOME_OUT_OF_RANGE_IDS)
@pytest.mark.parametrize("action", ["edit", "requeue", "confirm-posted", "unqueue", "move"])
def test_curation_page_tweet_ids_outside_the_column_are_422(curator, session_factory, tweet_id, action, bad_id):
    before = stored(session_factory, tweet_id)
    form = {"csrf_token": curator.csrf, "text": "new text", "to": "up"}
    response = curator.post(f"/curate/tweets/{bad_id}/{action}", data=form, headers={"Accept": "application/json"})
    assert_refused(response, says="tweet_id")
    assert stored(session_factory, tweet_id) == before


@pytest.mark.parametrize("bad_id", SOME_OUT_OF_RANGE_IDS)
@pytest.mark.parametrize("action", ["approve", "reject"])
def test_curation_page_bulk_ids_outside_the_column_are_422(curator, session_factory, tweet_id, action, bad_id):
    before = stored(session_factory, tweet_id)
    response = curator.post(f"/curate/{action}", data={"ids": [tweet_id, bad_id], "csrf_token": curator.csrf})
    assert_refused(response, says="ids")
    assert stored(session_factory, tweet_id) == before


@pytest.mark.parametrize("backend", ["sqlite"])
def test_curation_page_bulk_actions_take_at_most_a_page_of_ids(curator, session_factory, tweet_id):
    from api.curate.actions import REVIEW_PAGE_SIZE

    response = curator.post("/curate/approve", data={"ids": [tweet_id] * (REVIEW_PAGE_SIZE + 1), "csrf_token": curator.csrf})
    assert_refused(response, says="ids")
    assert stored(session_factory, tweet_id)[1] is TweetStatus.pending


def test_curation_page_post_next_key_with_a_control_character_is_422_and_posts_nothing(curator, session_factory):
    queued = store_texts(session_factory, "a queued tweet", status=TweetStatus.queued)[0]
    form = {"idempotency_key": "curate-\x00", "csrf_token": curator.csrf}
    response = curator.post("/curate/post-next", data=form, headers={"Accept": "application/json"})
    assert_refused(response, says="U+0000")
    assert stored(session_factory, queued)[1] is TweetStatus.queued


# ---- CSV files --------------------------------------------------------------------------

def big_field_csv() -> bytes:
    return ("tweets\nfine\n\"" + "x" * (csv.field_size_limit() + 1) + "\"\nafter\n").encode()


@pytest.mark.parametrize(
    "data, says",
    [(big_field_csv(), "line 3"), (b'tweets\n"fine\n', "line 2")],
)
def test_csv_parser_errors_are_curated_file_errors_naming_the_line(data, says):
    with pytest.raises(CuratedFileError, match=says):
        parse_curated_file(data, "tweets.csv")


def test_a_csv_field_over_the_parser_limit_is_a_400_and_stores_nothing(client, session_factory):
    response = client.post("/add_tweets_file/", files={"file": ("tweets.csv", big_field_csv())})
    assert_refused(response, 400, says="line 3")
    with session_factory() as session:
        assert session.scalars(select(Tweet)).all() == []


# ---- the public schema ------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["sqlite"])
def test_the_public_schema_states_the_bounds(client):
    spec = client.get("/openapi.json").json()

    def parameter(path: str, method: str, name: str) -> dict:
        found = [p for p in spec["paths"][path][method]["parameters"] if p["name"] == name]
        return found[0]["schema"]

    for method in ("get", "patch", "delete"):
        assert {"minimum": 1, "maximum": ID_MAX}.items() <= parameter("/tweets/{tweet_id}", method, "tweet_id").items()
    assert {"minimum": 0, "maximum": OFFSET_MAX}.items() <= parameter("/tweets/", "get", "offset").items()
    assert {"minimum": 1, "maximum": 1000}.items() <= parameter("/tweets/", "get", "limit").items()
    assert parameter("/tweets/", "get", "status")["maxItems"] == len(TweetStatus)
    account = parameter("/tweets/", "get", "account")["anyOf"][0]
    assert account["maxLength"] == Tweet.__table__.c.account.type.length
    for header in ("idempotency-key", "x-cloudscheduler-scheduletime"):
        assert parameter("/tweet_curated/", "post", header)["anyOf"][0]["maxLength"] == MAX_IDEMPOTENCY_KEY_LENGTH
    update = spec["components"]["schemas"]["TweetUpdate"]["properties"]
    assert {"minimum": POSITION_MIN, "maximum": POSITION_MAX}.items() <= update["position"]["anyOf"][0].items()
    assert update["error"]["anyOf"][0]["maxLength"] == ERROR_MAX_LENGTH
