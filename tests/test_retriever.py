"""The retriever: real processes over HTTP on loopback, plus the fusion and index units."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import ServiceProcess
from prometheus_client.parser import text_string_to_metric_families

from aichaos.fixtures.retriever import DEFAULT_CORPUS
from aichaos.fixtures.retriever.corpus import Chunk, load_corpus
from aichaos.fixtures.retriever.fusion import reciprocal_rank_fusion
from aichaos.fixtures.retriever.index import HybridIndex, new_vectorizer
from aichaos.fixtures.retriever.text import tokenize

MODULE = "aichaos.fixtures.retriever"
INDEX_LINE = re.compile(r"index: (built and cached in|loaded from cache) (\S+) in ([\d.]+) s")


def start(args: list[str], log: Path) -> ServiceProcess:
    proc = ServiceProcess(MODULE, args, log, wait=False)
    try:
        proc.wait_ready(timeout=90)  # the first start builds the index (a few seconds)
    except BaseException:
        proc.stop()
        raise
    return proc


def index_line(log: Path) -> re.Match:
    match = INDEX_LINE.search(log.read_text())
    assert match, log.read_text()
    return match


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("index-cache")


@pytest.fixture(scope="module")
def server(tmp_path_factory, cache_dir) -> Iterator[ServiceProcess]:
    """The retriever on the shipped corpus, started with an empty index cache."""
    log = tmp_path_factory.mktemp("retriever") / "first.log"
    proc = start(["--index-cache", str(cache_dir)], log)
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def shipped_index(server, cache_dir) -> HybridIndex:
    """The server's index loaded in this process from the cache the server wrote."""
    (entry,) = cache_dir.iterdir()
    return HybridIndex.load(entry, load_corpus(DEFAULT_CORPUS))


def search(url: str, body) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(f"{url}/search", content=content, timeout=10)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("os.path.join", "os.path.join"),
        ("join one or more path segments", "os.path.join"),
        ("lru_cache decorator maxsize", "functools.lru_cache"),
        ("run a command and capture its output with capture_output", "subprocess.run"),
        ("copy an entire directory tree recursively", "shutil.copytree"),
    ],
)
def test_search_finds_a_known_function_in_the_top_three(server, query, expected):
    resp = search(server.url, {"query": query, "k": 5})
    assert resp.status_code == 200
    body = resp.json()
    assert set(body) == {"results", "took_ms"} and body["took_ms"] >= 0
    results = body["results"]
    assert len(results) == 5
    for r in results:
        assert set(r) == {"id", "title", "text", "score"}
        assert r["id"] and r["title"] and r["text"] and r["score"] > 0
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    assert len({r["id"] for r in results}) == 5
    assert expected in [r["id"].split("~")[0] for r in results[:3]]


def test_k_defaults_to_five_and_reaches_fifty(server):
    assert len(search(server.url, {"query": "socket timeout"}).json()["results"]) == 5
    assert len(search(server.url, {"query": "socket timeout", "k": 50}).json()["results"]) == 50


def test_rrf_matches_hand_computed_scores():
    fused = reciprocal_rank_fusion([["a", "b", "c"], ["c", "a", "d"]], k=60)
    assert [item for item, _ in fused] == ["a", "c", "b", "d"]
    expected = {"a": 1 / 61 + 1 / 62, "c": 1 / 63 + 1 / 61, "b": 1 / 62, "d": 1 / 63}
    for item, score in fused:
        assert score == pytest.approx(expected[item], abs=1e-12)
    # equal scores keep first-seen order; an empty ranking changes nothing
    assert [i for i, _ in reciprocal_rank_fusion([["x", "y"], ["y", "x"], []])] == ["x", "y"]
    assert reciprocal_rank_fusion([]) == []


HAND_MADE = [
    Chunk("queue", "Queues", "A queue holds items. Put items in the queue, get items from it."),
    Chunk("lock", "Locks", "A lock guards shared state; acquire the lock, then release it."),
    Chunk("timeout", "Timeouts", "A queue get may wait with a timeout in seconds."),
    Chunk("event", "Events", "An event wakes every waiting task when it is set."),
    Chunk("pool", "Worker pools", "Workers take jobs from a shared queue of jobs."),
]


def test_hybrid_ranking_is_rrf_of_the_two_rankers_on_a_hand_made_corpus():
    index = HybridIndex.build(HAND_MADE)
    ids = [c.id for c in HAND_MADE]
    query = "queue get timeout"
    bm25 = [ids[h.index] for h in index.search(query, 5, mode="bm25")]
    tfidf = [ids[h.index] for h in index.search(query, 5, mode="tfidf")]
    # "lock" and "event" share no term with the query: neither ranker returns them
    assert set(bm25) == set(tfidf) == {"queue", "timeout", "pool"}
    assert bm25[:2] == ["timeout", "queue"]  # "timeout" and "get" twice over a shorter text
    hybrid = index.search(query, 5)
    expected = {d: 1 / (60 + bm25.index(d) + 1) + 1 / (60 + tfidf.index(d) + 1) for d in bm25}
    assert [ids[h.index] for h in hybrid] == sorted(expected, key=lambda d: -expected[d])
    for hit in hybrid:
        assert hit.score == pytest.approx(expected[ids[hit.index]], abs=1e-12)
    assert index.search("nothing matches zebra", 5) == []


def test_bm25_only_and_tfidf_only_differ_from_fused(shipped_index):
    query = "parse json string into object"

    def ranked(mode):
        return [shipped_index.chunks[h.index].id for h in shipped_index.search(query, 5, mode)]

    fused, bm25, tfidf = ranked("hybrid"), ranked("bm25"), ranked("tfidf")
    assert fused != bm25 and fused != tfidf and bm25 != tfidf
    # the fused list takes from both: a chunk only BM25 ranks high, one only TF-IDF does
    assert set(fused) & (set(bm25) - set(tfidf)) and set(fused) & (set(tfidf) - set(bm25))


def test_query_vector_is_what_the_fitted_tfidf_vectorizer_computes(shipped_index):
    vectorizer = new_vectorizer(shipped_index.vocabulary)
    vectorizer.idf_ = shipped_index.idf
    for query in ["os.path.join", "lru cache lru cache", "How do I read a CSV file?", "zzz"]:
        tokens = tokenize(query)
        expected = vectorizer.transform([tokens]).toarray().ravel()
        columns, weights = shipped_index.query_vector(tokens)
        got = np.zeros_like(expected)
        got[columns] = weights
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-9)


def test_index_cache_is_written_on_first_start_and_reused_on_the_second(server, cache_dir):
    first = index_line(server.log_path)
    assert first.group(1) == "built and cached in"
    (entry,) = cache_dir.iterdir()
    assert Path(first.group(2)) == entry and (entry / "complete").is_file()
    log = server.log_path.with_name("second.log")
    second_proc = start(["--index-cache", str(cache_dir)], log)
    try:
        second = index_line(log)
        assert second.group(1) == "loaded from cache" and Path(second.group(2)) == entry
        assert float(second.group(3)) < float(first.group(3))
        resp = search(second_proc.url, {"query": "os.path.join", "k": 3})
        assert resp.json()["results"][0]["id"] == "os.path.join"
    finally:
        second_proc.stop()
    assert [p.name for p in cache_dir.iterdir()] == [entry.name]  # no staging left behind


def test_health_and_metrics_parse(server):
    assert httpx.get(f"{server.url}/health").json() == {"status": "ok", "chunks": 5006}
    assert search(server.url, {"query": "asyncio queue"}).status_code == 200
    assert search(server.url, {"query": ""}).status_code == 400
    families = {
        f.name: f for f in text_string_to_metric_families(httpx.get(f"{server.url}/metrics").text)
    }
    histogram = families["retriever_request_duration_seconds"]
    assert histogram.type == "histogram"
    counts = {
        (s.labels["endpoint"], s.labels["status"]): s.value
        for s in histogram.samples
        if s.name.endswith("_count")
    }
    assert counts[("/search", "200")] >= 1 and counts[("/search", "400")] >= 1
    requests = families["retriever_requests"]
    assert requests.type == "counter"
    assert any(s.labels == {"endpoint": "/health", "status": "200"} for s in requests.samples)
    assert families["retriever_index_chunks"].samples[0].value == 5006
    assert families["retriever_search_duration_seconds"].type == "histogram"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"not json", "body"),
        (b"[1, 2]", "body"),
        ({"k": 5}, "query"),
        ({"query": "   "}, "query"),
        ({"query": 5}, "query"),
        ({"query": "x" * 5000}, "query"),
        ({"query": "x", "k": 0}, "k"),
        ({"query": "x", "k": 51}, "k"),
        ({"query": "x", "k": "5"}, "k"),
        ({"query": "x", "k": True}, "k"),
        ({"query": "x", "top_k": 5}, "body"),
    ],
)
def test_bad_request_bodies_get_400_with_one_clear_message(server, body, field):
    resp = search(server.url, body)
    assert resp.status_code == 400
    payload = resp.json()
    assert list(payload) == ["error"]
    assert payload["error"].startswith(f"{field}:") and "\n" not in payload["error"]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", MODULE, "serve", "--port", "0", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def test_bad_cli_input_gives_one_line_naming_file_line_and_field(tmp_path):
    missing = tmp_path / "nope.jsonl"
    good = json.dumps({"id": "a", "title": "A", "text": "some text"})
    cases = [
        (missing, "", f"{missing}: no such corpus file"),
        (tmp_path / "no-text.jsonl", f'{good}\n{{"id": "b", "title": "B"}}\n',
         "no-text.jsonl:2: field 'text': expected a non-empty string (missing)"),
        (tmp_path / "bad-json.jsonl", f"{good}\n\n{{not json\n",
         "bad-json.jsonl:3: expected a JSON object"),
        (tmp_path / "dup.jsonl", f"{good}\n{good}\n",
         "dup.jsonl:2: field 'id': 'a' already used on line 1"),
    ]  # fmt: skip
    for path, content, message in cases:
        if content:
            path.write_text(content)
        result = run_cli("--corpus", str(path), "--index-cache", str(tmp_path / "cache"))
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
        assert lines[0].startswith("error: ") and message in lines[0], lines[0]
    assert not (tmp_path / "cache").exists()  # nothing built from a bad corpus
