"""The README's security promises, attacked: logged configs, spool lines, secrets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path
from urllib.parse import quote, urlparse

import pytest
import yaml
from mlflow.tracking import MlflowClient
from psycopg import sql

from satsweep.cli import run
from satsweep.errors import UserError
from satsweep.redact import redact
from tests.conftest import (
    ALIAS_BOMB,
    REPO,
    run_in_process,
    run_satsweep,
    start_satsweep,
    wait_until,
)
from tests.servers import MlflowServer

PASSWORDS = ["s3cr/et", "with space", "p@ss:w0rd", "50%off"]


@pytest.mark.parametrize("password", PASSWORDS)
@pytest.mark.parametrize(
    "template",
    [
        "postgresql://user:{}@127.0.0.1:5432/db",
        "postgresql+psycopg://user:{}@db.example:5432/db?sslmode=require",
        "http://user:{}@127.0.0.1:5000",
        "error: cannot reach postgresql://user:{}@host:5432/db (timed out)",
    ],
)
def test_redact_masks_any_password(template: str, password: str) -> None:
    masked = redact(template.format(password))
    assert password not in masked and "***" in masked and "user" in masked


@pytest.mark.parametrize(
    "text, secret",
    [
        ("postgresql://u@h/db?sslpassword=Qx9-secret&sslmode=require", "Qx9-secret"),
        ("http://h:5000/api?token=abc123def", "abc123def"),
        ("https://ghp_tok3n@example.com/x", "ghp_tok3n"),
        ("see https://ghp_tok3n@example.com/x now", "ghp_tok3n"),
    ],
)
def test_redact_masks_tokens_and_secret_query_parameters(text: str, secret: str) -> None:
    assert secret not in redact(text)


def test_redact_keeps_urls_without_secrets() -> None:
    for text in ("sqlite:////tmp/o/mlflow.db", "http://127.0.0.1:5000", "/tmp/o/optuna.journal"):
        assert redact(text) == text


def _artifact_dir(client: MlflowClient, run_id: str) -> Path:
    uri = client.get_run(run_id).info.artifact_uri
    return Path(urlparse(uri).path if uri.startswith("file:") else uri)


def _logged_config(outputs: Path, tiny: list[str]) -> tuple[str, Path]:
    """A real train run's id and its logged config.yaml in the artifact store, to tamper with."""
    assert run(["train", *tiny, "tracking.log_model=false"]) == 0
    client = MlflowClient(f"sqlite:///{outputs}/mlflow.db")
    experiment = client.get_experiment_by_name("satsweep").experiment_id
    run_id = client.search_runs([experiment])[0].info.run_id
    return run_id, _artifact_dir(client, run_id) / "config.yaml"


def _one_line_error(said: tuple[int, str, str], words: str) -> None:
    code, _, stderr = said
    assert code == 2, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and words in lines[0], stderr


@pytest.mark.slow
@pytest.mark.faults
def test_an_edited_logged_config_cannot_make_satsweep_write(
    outputs, tiny, tmp_path, capfd, caplog
) -> None:
    run_id, config_file = _logged_config(outputs, tiny)
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("2750/Beach/a.txt", "x")
    victim = tmp_path / "victim"
    config = yaml.safe_load(config_file.read_text())
    config["data"]["path"] = str(victim / "2750")
    config["data"]["download"] = {
        "enabled": True,
        "url": archive.as_uri(),
        "checksum": "md5:00",
        "filename": "EuroSAT.zip",
        "subdir": "2750",
    }
    config_file.write_text(yaml.safe_dump(config))

    for command in (["reproduce", run_id], ["train", "--from-run", run_id]):
        _one_line_error(run_in_process(capfd, caplog, *command), "cannot start a download")
    config["data"]["download"]["enabled"] = False
    config_file.write_text(yaml.safe_dump(config))
    _one_line_error(run_in_process(capfd, caplog, "reproduce", run_id), "outside the data folder")

    config["data"]["download"].update(enabled=True, filename=str(tmp_path / "pwned.zip"))
    config_file.write_text(yaml.safe_dump(config))
    consent = ["data.download.enabled=true", f"data.path={victim / '2750'}"]
    refused = run_in_process(capfd, caplog, "reproduce", run_id, *consent)
    _one_line_error(refused, "plain file or folder name")
    assert not victim.exists() and not (tmp_path / "pwned.zip").exists()


def _spool_line(op: str, run_id: str, **args: object) -> str:
    return json.dumps({"op": op, "run_id": run_id, "args": args}) + "\n"


def _experiment(outputs: Path) -> tuple[MlflowClient, str]:
    """An experiment whose artifacts stay in ``outputs``, for spooled runs."""
    client = MlflowClient(f"sqlite:///{outputs}/mlflow.db")
    return client, client.create_experiment("spooled", str(outputs / "mlartifacts"))


@pytest.mark.slow
@pytest.mark.faults
def test_sync_sets_bad_writes_aside_and_delivers_the_rest(outputs, tmp_path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    spool = outputs / "spool"
    (spool / "files").mkdir(parents=True)
    (spool / "files" / "good.bin").write_text("hello")
    (spool / "files" / "model.keras").write_bytes(b"not a model, or one with a Lambda")
    offline = "offline-0123"
    client, experiment = _experiment(outputs)
    lines = [
        _spool_line("create_run", offline, experiment_id=experiment, name="r", tags={}),
        _spool_line(
            "log_artifact", offline, artifact_file="a.txt", blob_file="../../../victim.txt"
        ),
        _spool_line("log_artifact", offline, artifact_file="b.txt", blob_file=str(victim)),
        '{"op": "log_metrics", "run_id": "offline-0123", "args": {"metr\n',  # cut short
        _spool_line("drop_table", offline),  # an op no satsweep writes
        _spool_line("set_tags", "0" * 32, tags={"a": "b"}),  # a run the store does not have
        _spool_line(
            "log_artifact", offline, artifact_file="../../escape.txt", blob_file="good.bin"
        ),
        _spool_line("log_model", offline, model_file="model.keras", artifact_path="model"),
        _spool_line("log_artifact", offline, artifact_file="good.txt", blob_file="good.bin"),
        _spool_line("end_run", offline, status="FINISHED"),
    ]
    (spool / "w-1.jsonl").write_text("".join(lines))

    synced = run_satsweep("sync")
    assert synced.returncode == 1 and "Traceback" not in synced.stderr, synced.stderr
    assert "set aside 7 write(s)" in synced.stderr and "rejected/writes.jsonl" in synced.stderr
    rejected = [json.loads(line) for line in (spool / "rejected" / "writes.jsonl").open()]
    assert [entry["line"] for entry in rejected] == [2, 3, 4, 5, 6, 7, 8]
    assert all(entry["reason"] and entry["write"] for entry in rejected)
    assert victim.read_text() == "keep me" and not (outputs.parent / "escape.txt").exists()
    (run,) = client.search_runs([experiment])
    assert run.info.status == "FINISHED"  # what came after the bad writes was delivered
    assert {a.path for a in client.list_artifacts(run.info.run_id)} == {"good.txt"}
    again = run_satsweep("sync")  # nothing left to stick on
    assert again.returncode == 0 and len(client.search_runs([experiment])) == 1

    (spool / "state.json").write_text('{"ids": {"offline-1": ')  # a damaged sync state
    damaged = run_satsweep("sync")
    assert damaged.returncode == 2 and "Traceback" not in damaged.stderr
    lines_said = [line for line in damaged.stderr.splitlines() if line.strip()]
    assert len(lines_said) == 1 and "the sync state" in lines_said[0], damaged.stderr


WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from satsweep.spool import Spool, Write

    spool, stop, experiment = Spool(Path(sys.argv[1])), Path(sys.argv[2]), sys.argv[3]
    tags = {"experiment_id": experiment, "name": "w", "tags": {}}
    spool.record(Write("create_run", "offline-w", tags))
    step = 0
    while not stop.exists() or step < 40:
        spool.record(Write("log_metrics", "offline-w",
                           {"metrics": {"loss": 1.0 / (step + 1)}, "step": step, "timestamp": 0}))
        step += 1
        time.sleep(0.1)  # 10 writes a second: each sync has new ones, none drowns in them
    spool.record(Write("end_run", "offline-w", {"status": "FINISHED"}))
    print(step)
    """
)


@pytest.mark.slow
@pytest.mark.faults
def test_sync_while_a_worker_spools_keeps_every_epoch(outputs, tmp_path) -> None:
    stop = tmp_path / "stop"
    client, experiment = _experiment(outputs)
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(outputs / "spool"), str(stop), experiment],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    wait_until(lambda: list((outputs / "spool").glob("*.jsonl")), "the writer's first spool file")
    for _ in range(3):  # each sync takes what is spooled so far; the writer goes on
        synced = run_satsweep("sync")
        assert synced.returncode == 0, synced.stderr
    stop.touch()
    steps = int(writer.communicate(timeout=120)[0])
    assert run_satsweep("sync").returncode == 0

    (run,) = client.search_runs([experiment])
    history = client.get_metric_history(run.info.run_id, "loss")
    assert sorted(m.step for m in history) == list(range(steps))
    assert run.info.status == "FINISHED"


@pytest.mark.slow
@pytest.mark.faults
def test_a_truncated_cache_file_is_decoded_again(outputs, tiny, capfd, caplog) -> None:
    assert run(["train", *tiny, "tracking.log_model=false"]) == 0
    cache = Path(next(o for o in tiny if o.startswith("paths.cache=")).split("=", 1)[1])
    for entry in cache.glob("*-16px.npz"):
        entry.write_bytes(entry.read_bytes()[:1000])
    code, stdout, stderr = run_in_process(capfd, caplog, "train", *tiny, "tracking.log_model=false")
    assert code == 0, stderr
    said = stdout + stderr
    assert "damaged" in said and "Traceback" not in said


def _command_lines() -> list[str]:
    """Every process's argv, as ``ps`` shows it to any user of the machine."""
    lines = []
    for proc in Path("/proc").iterdir():
        try:
            lines.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:  # not a process, or gone
            continue
    return lines


def _database_text(url: str) -> str:
    """Every row of every table of a PostgreSQL database, as text: what a dump would hold."""
    import psycopg

    with psycopg.connect(url) as connection:
        tables = connection.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        ).fetchall()
        return "\n".join(
            str(row[0])
            for (table,) in tables
            for row in connection.execute(
                sql.SQL("SELECT t::text FROM {} t").format(sql.Identifier(table))
            )
        )


@pytest.mark.slow
@pytest.mark.faults
@pytest.mark.postgres
def test_passwords_stay_out_of_argv_logs_and_stores(
    outputs, tiny, postgres_databases, tmp_path
) -> None:
    # Raw '/' and ' ' in database URLs (SQLAlchemy takes them); encoded in the HTTP one.
    plain_storage, plain_backend = postgres_databases(), postgres_databases()
    storage_url = plain_storage.replace("postgres@", "postgres:st0re/pa ss@")
    storage_url += "?sslpassword=qu3ry-s3cret"
    backend = plain_backend.replace("postgres@", "postgres:b4ckend/pa ss@")
    server = MlflowServer(backend, tmp_path / "artifacts", through_satsweep=True).start()
    secrets = ("st0re", "b4ckend", "tr4ck", "qu3ry-s3cret")
    storage = ["storage=postgres", f"storage.url='{storage_url}'", "tracking=server"]
    try:
        tracking_uri = server.uri.replace("://", "://user:tr4ck%2Fpa%20ss@")
        data_and_trainer = [o for o in tiny if not o.startswith("model.")]
        os.environ["MLFLOW_TRACKING_URI"] = tracking_uri  # the tracking URL from the environment
        try:  # the storage URL on the command line: the user's own argv shows it, no other
            sweep = start_satsweep(
                "sweep", "sweep=smoke", *data_and_trainer, *storage, "sweep.n_trials=2",
                "trainer.epochs=1",
            )  # fmt: skip
            seen: set[str] = set()
            deadline = time.monotonic() + 600
            while sweep.poll() is None:
                assert time.monotonic() < deadline, "the sweep did not end within 600 s"
                seen.update(line for line in _command_lines() if "satsweep sweep" not in line)
                time.sleep(0.2)
            console = sweep.communicate()[0]
            # the commands that read the study print no password either, an error included
            compared = run_satsweep("compare", "smoke", *storage)
            missing = run_satsweep("compare", "nope", *storage)
        finally:
            del os.environ["MLFLOW_TRACKING_URI"]
        assert sweep.returncode == 0, console
        assert compared.returncode == 0, compared.stderr
        assert missing.returncode == 2 and "***" in missing.stderr, missing.stderr
        assert any("satsweep worker" in line for line in seen), "no worker was seen running"
        assert any("mlflow" in line for line in seen)
        shown = "".join(seen) + console + server.log.read_text()
        shown += "".join(r.stdout + r.stderr for r in (compared, missing))
        # every file (worker logs, artifacts) and every row of both databases
        for folder in (outputs, tmp_path / "artifacts"):
            for path in folder.rglob("*"):
                if path.is_file():
                    shown += path.read_bytes().decode(errors="replace")
        rows = [_database_text(url) for url in (plain_storage, plain_backend)]
        assert all("smoke" in text for text in rows)  # the study and the experiment are there
        shown += "".join(rows)
        for secret in secrets:
            assert secret not in shown, secret
        client = MlflowClient(server.uri)
        runs = client.search_runs([client.get_experiment_by_name("smoke").experiment_id])
        trial = next(r for r in runs if r.data.tags.get("satsweep.role") == "trial")
        assert not any(key.startswith("storage.") for key in trial.data.params)  # config.yaml only
        config = client.download_artifacts(trial.info.run_id, "config.yaml", str(tmp_path))
        logged = yaml.safe_load(Path(config).read_text())["storage"]["url"]
        assert logged.startswith("postgresql://postgres:***@127.0.0.1:5432/"), logged
        assert logged.split("?")[0].endswith(plain_storage.rsplit("/", 1)[1]), logged
    finally:
        server.stop()


@pytest.mark.slow
@pytest.mark.faults
def test_a_tampered_logged_config_is_one_line_and_never_hangs(outputs, tiny, capsys) -> None:
    run_id, config_file = _logged_config(outputs, tiny)
    tampered = {
        "a Python tag": b"seed: !!python/object/apply:os.system ['touch /tmp/pwned']\n",
        "binary data": bytes(range(256)) * 4,
        "a list": b"- seed\n- data\n",
        "an alias bomb": ALIAS_BOMB.encode(),
        "72 MB": b"seed: " + b"1" * (72 << 20) + b"\n",
    }
    for case, content in tampered.items():
        config_file.write_bytes(content)
        for command in (["reproduce", run_id], ["train", "--from-run", run_id]):
            assert run(command) == 2, case
            error = capsys.readouterr().err.strip()
            assert "\n" not in error and len(error) < 500, (case, error[:500])
            assert error.startswith("satsweep: error: ") and run_id in error, (case, error)
    assert not Path("/tmp/pwned").exists()


@pytest.mark.faults
def test_a_log_planted_as_a_link_is_never_written_through(outputs, tmp_path, capsys) -> None:
    from satsweep.search.crew import _open_log

    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    logs = outputs / "sweeps" / "smoke"
    logs.mkdir(parents=True)
    (logs / "worker-0.log").symlink_to(victim)
    assert run(["sweep", "sweep=smoke", "sweep.n_trials=1"]) == 2
    assert "worker-0.log is a symbolic link" in capsys.readouterr().err
    (logs / "late.log").symlink_to(victim)  # planted once the sweep runs
    with pytest.raises(UserError, match=r"late\.log is a symbolic link"):
        _open_log(logs / "late.log")
    assert victim.read_text() == "precious\n"


@pytest.mark.faults
def test_the_servers_database_name_is_quoted_and_checked(postgres_url) -> None:
    import psycopg

    from satsweep.server import ensure_database

    hostile = f'{postgres_url.rsplit("/", 1)[1]}_x"; DROP DATABASE "test'
    admin = "postgresql://postgres@127.0.0.1:5432/postgres"
    try:
        ensure_database(f"postgresql://postgres@127.0.0.1:5432/{quote(hostile)}")
        with psycopg.connect(admin, autocommit=True) as connection:
            names = {row[0] for row in connection.execute("SELECT datname FROM pg_database")}
        assert hostile in names and "test" in names  # the name as given, and nothing dropped
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(
                sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(hostile))
            )
    with pytest.raises(UserError, match="give a name of 1 to 63 bytes"):
        ensure_database(f"postgresql://postgres@127.0.0.1:5432/{'d' * 64}")
