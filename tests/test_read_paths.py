"""Reading stored traces for metrics: the SQL reader (gate/_traces/span_rows.py ``sql_trace_reader``: trace infos, tags
and spans straight from MLflow's tables through its SQLAlchemy store, paged by key) and the direct SQLite reader
(gate/_traces/sqlite_direct.py: the same tables through Python's sqlite3, MLflow not imported) give the same rows as
MLflow's public ``search_traces``.

Real MLflow, real stores: a SQLite file, and a PostgreSQL database where PostgreSQL starts on this machine (skipped
otherwise). Traces are made by a script through MLflow's tracing API (sync export): two versions of an app with
AGENT, TOOL, RETRIEVER and CHAT_MODEL spans, token usage and a priced model, errored traces, a streamed answer, a
retried attempt, traces linked to an MLflow run, traces without gate tags, and non-ASCII text.
"""

from __future__ import annotations

import itertools
import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import astuple, dataclass
from pathlib import Path
from typing import Any

import pytest
from mlflow_server import Postgres, running_postgres

from gate._config.schema import PriceConfig, TraceSelector
from gate._errors import ConfigError
from gate._traces import span_rows
from gate._traces.read import fetch_session_traces
from gate._traces.rows import Call, CallResult, match_traces
from gate._traces.select import Collected, Selection, collect, pair_rows, selection_for

EXPERIMENT = "reads"
SESSION = "s-reads"
UNTIL_S = 4_102_444_800.0  # 2100-01-01: every trace made here is before it

PRODUCER = r"""
import json, sys, time
import mlflow

mlflow.set_tracking_uri(sys.argv[1])
mlflow.set_experiment(sys.argv[2])
QUESTIONS = ["How do I reset my password?", "Wo ist meine Bestellung? Ünïcödé ✓ 注文", "Can I pay by card?"]


@mlflow.trace(name="chat", span_type="CHAT_MODEL")
def chat(question, model):
    span = mlflow.get_current_active_span()
    usage = {"input_tokens": len(question), "output_tokens": 7, "total_tokens": len(question) + 7}
    span.set_attribute("mlflow.chat.tokenUsage", usage)
    span.set_attribute("mlflow.llm.model", model)
    return {"choices": [{"message": {"content": f"Answer to {question}"}}]}


@mlflow.trace(span_type="TOOL")
def lookup(question):
    return ["doc-1", "doc-2"]


@mlflow.trace(span_type="RETRIEVER")
def retrieve(question):
    return [{"page_content": question[::-1]}]


def app(version):
    @mlflow.trace(name=f"support_{version}", span_type="AGENT")
    def answer(question, tags, fail=False):
        mlflow.update_current_trace(tags=tags)
        lookup(question)
        if version == "v2":
            retrieve(question)
            chat(question, "gpt-4o")  # two LLM calls, one of them unpriced in the test's price table
        if fail:
            raise RuntimeError("the knowledge base is down")
        return chat(question, "gpt-4o-mini")["choices"][0]["message"]["content"]

    return answer


@mlflow.trace(name="support_v1", span_type="AGENT")
def streamed(question, tags):
    mlflow.update_current_trace(tags=tags)
    for word in ("Streamed", " answer"):
        yield word


versions = {"baseline": app("v1"), "candidate": app("v2")}
with mlflow.start_run(run_name="gate-run") as run:
    for repeat in range(2):
        for variant, answer in versions.items():
            for case, question in enumerate(QUESTIONS):
                tags = {"gate.session": sys.argv[3], "gate.variant": variant, "gate.case_id": f"q{case}",
                        "gate.repeat": str(repeat), "env": "prod"}
                fail = variant == "baseline" and case == 2 and repeat == 1
                try:
                    answer(question, tags, fail=fail)
                except RuntimeError:
                    pass
    retried = {"gate.session": sys.argv[3], "gate.variant": "candidate", "gate.case_id": "q0", "gate.repeat": "0",
               "gate.attempt": "1", "env": "prod"}
    versions["candidate"](QUESTIONS[0], retried)
    streamed_tags = {"gate.session": sys.argv[3], "gate.variant": "baseline", "gate.case_id": "q9", "gate.repeat": "0"}
    list(streamed("Stream it", streamed_tags))
traffic = []
for question in QUESTIONS * 2:  # production traffic: no gate tags, no run
    versions["baseline"](question, {"env": "staging"})
    traffic.append(mlflow.get_last_active_trace_id())
mlflow.flush_trace_async_logging()
linked = traffic[:2]  # linked to the run afterwards (an entity association), not recorded in it
mlflow.MlflowClient().link_traces_to_run(linked, run.info.run_id)
print(json.dumps({"run_id": run.info.run_id, "linked": linked}))
"""


@dataclass(frozen=True)
class Stored:
    """A store holding the producer's traces."""

    uri: str
    backend: str
    run_id: str
    experiment_id: str
    linked: tuple[str, ...] = ()  # traffic traces linked to the run after the fact

    def client(self) -> Any:
        from mlflow import MlflowClient

        return MlflowClient(self.uri)


def _produce(uri: str, folder: Path, backend: str) -> Stored:
    script = folder / "producer.py"
    script.write_text(PRODUCER, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "OPENAI_", "GATE_"))}
    env.update(MLFLOW_DISABLE_TELEMETRY="true", MLFLOW_ENABLE_ASYNC_TRACE_LOGGING="false")
    proc = subprocess.run(
        [sys.executable, str(script), uri, EXPERIMENT, SESSION],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    produced = json.loads(proc.stdout.strip().splitlines()[-1])
    stored = Stored(uri, backend, produced["run_id"], "")
    experiment = stored.client().get_experiment_by_name(EXPERIMENT)
    return Stored(uri, backend, produced["run_id"], str(experiment.experiment_id), tuple(produced["linked"]))


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres | str]:
    with running_postgres() as found:
        yield found


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def stored(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Stored:
    folder = tmp_path_factory.mktemp(f"reads-{request.param}")
    if request.param == "sqlite":
        return _produce(f"sqlite:///{folder / 'mlflow.db'}", folder, "sqlite")
    postgres = request.getfixturevalue("postgres")
    if isinstance(postgres, str):
        pytest.skip(f"PostgreSQL is not available here: {postgres}")
    import psycopg

    with psycopg.connect(
        host=str(postgres.socket_dir), port=postgres.port, user=postgres.user, dbname="postgres", autocommit=True
    ) as conn:
        conn.execute('CREATE DATABASE "reads"')
    return _produce(postgres.sqlalchemy_uri("reads"), folder, "postgresql")


PRICES = {"gpt-4o-mini": PriceConfig(input_per_mtok=0.15, output_per_mtok=0.6)}  # v2's gpt-4o: MLflow's cost
EVERY_PRICE = {**PRICES, "gpt-4o": PriceConfig(input_per_mtok=2.5, output_per_mtok=10)}  # v2's two calls summed


def _read(
    stored: Stored,
    selection: Selection,
    monkeypatch: pytest.MonkeyPatch,
    reader: str | None,
    prices: dict[str, PriceConfig] = PRICES,
) -> Collected:
    """``collect`` one selection with the reader forced (``public``/``sql``/``sqlite``) or chosen (None)."""
    if reader is None:
        monkeypatch.delenv(span_rows.READER_ENV, raising=False)
    else:
        monkeypatch.setenv(span_rows.READER_ENV, reader)
    into = Collected()
    collect(stored.client(), selection, stored.uri, prices, into, lambda rows, traces, cases: rows, need_traces=False)
    return into


def _rows(into: Collected) -> list[tuple[Any, ...]]:
    """Everything ``collect`` kept of each trace, in the order read (values compared exactly, NaN-free)."""
    return [
        (*astuple(s.row)[:4], sorted(s.row.values.items()), s.row.output, *astuple(s)[1:])
        for s in into.seen
        if s.row is not None
    ]


def _selections(stored: Stored) -> dict[str, Selection]:
    def select(variant: str, **fields: Any) -> Selection:
        return selection_for(TraceSelector.model_validate(fields), variant, stored.experiment_id, UNTIL_S)

    return {
        "session baseline": select("baseline", session=SESSION),
        "session candidate": select("candidate", session=SESSION),
        "trace name": select("baseline", trace_name="support_v1"),
        "tag and run": select("candidate", tags={"env": "prod"}, run_id=stored.run_id),
        "run, linked traces too": select("baseline", run_id=stored.run_id),
        "time window": select("baseline", trace_name="support_v1", since="2000-01-01T00:00:00Z"),
        "traffic without gate tags": select("baseline", tags={"env": "staging"}),
        "capped": select("baseline", trace_name="support_v1", max_traces=4),
        "nothing": select("baseline", trace_name="no_such_app"),
    }


def _fastest(stored: Stored) -> str:
    """The reader chosen by default: Python's sqlite3 on a SQLite file, the SQL reader on PostgreSQL."""
    return "sqlite" if stored.backend == "sqlite" else "sql"


def test_the_fast_readers_give_the_rows_mlflows_search_gives(stored: Stored, monkeypatch: pytest.MonkeyPatch) -> None:
    for (name, selection), prices in itertools.product(_selections(stored).items(), (PRICES, EVERY_PRICE)):
        chosen = _read(stored, selection, monkeypatch, None, prices)
        public = _read(stored, selection, monkeypatch, "public", prices)
        assert chosen.readers == {selection.variant: _fastest(stored)}, name
        assert public.readers == {selection.variant: "public"}, name
        fast_ones = [chosen]
        if _fastest(stored) != "sql":
            fast_ones.append(_read(stored, selection, monkeypatch, "sql", prices))
        for fast in fast_ones:
            assert _rows(fast) == _rows(public), (name, fast.readers)
            assert fast.found == public.found, name
            assert fast.more_than_max == public.more_than_max, name
            assert fast.runs == public.runs, name
            assert fast.inputs == public.inputs, name
            assert pair_rows(fast.seen, "auto") == pair_rows(public.seen, "auto"), name
    # what the selections hold, so that "the same" is not "both empty"
    session = _read(stored, _selections(stored)["session baseline"], monkeypatch, None)
    values = [s.row.values for s in session.seen]
    assert len(values) == 7  # 3 cases x 2 repeats + the streamed one
    assert sum(v["error"] or 0 for v in values) == 1
    assert {v["span_count"] for v in values} == {1.0, 3.0, None}  # streamed; answered; errored (no answer metrics)
    assert any(v["ttft_ms"] is not None for v in values)  # the streamed answer's first chunk
    assert all(v["total_tokens"] for v in values if v["llm_calls"])
    assert any(v["cost_usd"] for v in values)
    candidate = _read(stored, _selections(stored)["session candidate"], monkeypatch, None)
    assert {s.attempt for s in candidate.seen} == {0, 1}
    assert {v["llm_calls"] for v in (s.row.values for s in candidate.seen)} == {2.0}
    assert len({s.run_id for s in candidate.seen}) == 1
    capped = _read(stored, _selections(stored)["capped"], monkeypatch, None)
    assert capped.found == {"baseline": 4} and capped.more_than_max == {"baseline": True}
    in_run = _read(stored, _selections(stored)["run, linked traces too"], monkeypatch, None)
    assert set(stored.linked) <= {s.row.trace_id for s in in_run.seen}  # linked, not recorded in the run
    assert len(in_run.seen) == 16  # 7 baseline + 7 candidate traces recorded in the run, 2 linked to it
    assert any("Ünïcödé" in (s.row.output or "") for s in session.seen)


def test_every_page_size_reads_the_same_rows(stored: Stored, monkeypatch: pytest.MonkeyPatch) -> None:
    selection = _selections(stored)["trace name"]
    whole = _read(stored, selection, monkeypatch, None)
    monkeypatch.setenv("GATE_SEARCH_PAGE", "2")
    fast = _read(stored, selection, monkeypatch, None)
    sql = _read(stored, selection, monkeypatch, "sql")
    public = _read(stored, selection, monkeypatch, "public")
    assert _rows(fast) == _rows(sql) == _rows(public) == _rows(whole)
    assert len(fast.seen) == 13  # support_v1: 6 of the session, the streamed one, 6 of traffic


def test_traces_at_the_same_millisecond_are_paged_in_mlflows_order(
    stored: Stored, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Keys, not offsets: a page boundary inside a run of equal timestamps loses and repeats nothing."""
    if stored.backend != "sqlite":
        pytest.skip("the store is changed in place: done on a copy of the SQLite file")
    source = Path(stored.uri.removeprefix("sqlite:///"))
    copy = tmp_path / "mlflow.db"
    with sqlite3.connect(source) as src, sqlite3.connect(copy) as dst:
        src.backup(dst)
    with sqlite3.connect(copy) as conn:  # every trace at one of three instants
        conn.execute("UPDATE trace_info SET timestamp_ms = 1790000000000 + (rowid % 3)")
    tied = Stored(f"sqlite:///{copy}", "sqlite", stored.run_id, stored.experiment_id)
    for name in ("trace name", "session candidate"):
        selection = _selections(tied)[name]
        whole = _read(tied, selection, monkeypatch, "public")
        for size, reader in itertools.product(("1", "3"), ("sql", "sqlite")):
            monkeypatch.setenv("GATE_SEARCH_PAGE", size)
            fast = _read(tied, selection, monkeypatch, reader)
            assert fast.readers == {selection.variant: reader}
            assert _rows(fast) == _rows(whole), (name, size, reader)
            assert len({s.row.trace_id for s in fast.seen}) == len(fast.seen)


def test_a_sessions_traces_read_back_match_the_calls_the_same_way(
    stored: Stored, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    @dataclass
    class _Store:  # what fetch_session_traces reads of gate._store.store.Store
        client: Any
        experiment_id: str
        tracking_uri: str

    store = _Store(stored.client(), stored.experiment_id, stored.uri)
    saved = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    mlflow.set_tracking_uri(stored.uri)  # MLflow's public read (mlflow.search_traces) reads the global store
    try:
        monkeypatch.delenv(span_rows.READER_ENV, raising=False)
        fast = fetch_session_traces(store, SESSION, spans_as_dicts=True)
        monkeypatch.setenv(span_rows.READER_ENV, "public")
        public = fetch_session_traces(store, SESSION, spans_as_dicts=True)
    finally:
        mlflow.set_tracking_uri(saved)
    assert all(isinstance(t.info, span_rows.LiteInfo) for t in fast)
    assert not any(isinstance(t.info, span_rows.LiteInfo) for t in public)
    from gate._config.dataset import Case

    results = []
    for t in public:
        tags = t.info.tags
        case = Case(tags["gate.case_id"], {})
        results.append(CallResult(Call(tags["gate.variant"], case, int(tags["gate.repeat"])), None))
    fast_rows, fast_problems = match_traces(fast, results, PRICES)
    public_rows, public_problems = match_traces(public, results, PRICES)
    assert sorted(fast_rows, key=lambda r: r.trace_id or "") == sorted(public_rows, key=lambda r: r.trace_id or "")
    assert fast_problems == public_problems


def test_the_sql_reader_steps_aside_where_it_is_not_verified(stored: Stored, monkeypatch: pytest.MonkeyPatch) -> None:
    from gate._traces import sqlite_direct

    selection = _selections(stored)["trace name"]
    monkeypatch.setattr(span_rows, "TESTED_MLFLOW", ((2, 0),))
    monkeypatch.setattr(sqlite_direct, "TESTED_SCHEMAS", {})  # nor the direct reader
    untested = _read(stored, selection, monkeypatch, None)
    assert untested.readers == {"baseline": "public"}  # MLflow's search, spans as dicts
    with pytest.raises(ConfigError, match="GATE_TRACE_READER=sql, but the SQL trace reader cannot be used: MLflow"):
        _read(stored, selection, monkeypatch, "sql")


def test_a_store_that_is_not_mlflows_sql_store_is_read_through_mlflow(monkeypatch: pytest.MonkeyPatch) -> None:
    class Client:  # what an http tracking store's client looks like here: no SqlAlchemyStore behind it
        class _tracking_client:  # noqa: N801
            store = object()

    monkeypatch.delenv(span_rows.READER_ENV, raising=False)
    assert span_rows.sql_trace_reader(Client()) is None
    assert span_rows.span_reader(Client()) is None
    monkeypatch.setenv(span_rows.READER_ENV, "sql")
    with pytest.raises(ConfigError, match="not MLflow's SqlAlchemyStore"):
        span_rows.sql_trace_reader(Client())
    monkeypatch.setenv(span_rows.READER_ENV, "fast")
    with pytest.raises(ConfigError, match="GATE_TRACE_READER='fast': use 'public'"):
        span_rows.sql_trace_reader(Client())


def test_the_direct_reader_steps_aside_where_it_is_not_verified(
    stored: Stored, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gate._traces import sqlite_direct

    selection = _selections(stored)["trace name"]
    if stored.backend != "sqlite":
        assert _read(stored, selection, monkeypatch, None).readers == {"baseline": "sql"}
        with pytest.raises(ConfigError, match="SQLite reader cannot be used: the tracking URI is not an existing"):
            _read(stored, selection, monkeypatch, "sqlite")
        return
    # A schema revision it was not verified on: MLflow's SQL store reads it (which checks the schema itself).
    monkeypatch.setattr(sqlite_direct, "TESTED_SCHEMAS", {"0123456789ab": "MLflow 9.9"})
    assert _read(stored, selection, monkeypatch, None).readers == {"baseline": "sql"}
    with pytest.raises(ConfigError, match=r"schema revision is \w+; verified on 0123456789ab \(MLflow 9\.9\)"):
        _read(stored, selection, monkeypatch, "sqlite")
    monkeypatch.undo()
    # A filter MLflow applies in its own way (linked prompts): not translated, so read through MLflow.
    linked = (("tag", "mlflow.linkedPrompts", "support/1"),)
    monkeypatch.delenv(span_rows.READER_ENV, raising=False)
    assert sqlite_direct.direct_reader(stored.uri, [selection.terms]) is not None
    assert sqlite_direct.direct_reader(stored.uri, [selection.terms, linked]) is None
    assert sqlite_direct.direct_reader(stored.uri, [None]) is None  # a bare filter string (gate run --baseline-from)
    monkeypatch.setenv(span_rows.READER_ENV, "sqlite")
    with pytest.raises(ConfigError, match=r"MLflow filters tag 'mlflow\.linkedPrompts' in its own way"):
        sqlite_direct.direct_reader(stored.uri, [linked])
    with pytest.raises(ConfigError, match="the tracking URI is not an existing SQLite file"):
        sqlite_direct.direct_reader(stored.uri + ".missing", [selection.terms])
    # Read-only: the reader never creates a database (a misspelt path stays missing).
    assert not Path(stored.uri.removeprefix("sqlite:///") + ".missing").exists()
