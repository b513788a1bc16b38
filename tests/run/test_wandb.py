"""W&B: the run mirror (offline files read back), loading W&B runs into the run table, logging fits.

No W&B server is reachable here: runs are mirrored in offline mode and their ``.wandb`` files read back;
the ``wandb.Api`` loader runs the real ``wandb.Api.runs`` code against recorded GraphQL responses served
by a fake transport (see ``RecordedTransport``).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from omegaconf import OmegaConf
from run_records import write_run

from analysis.errors import AnalysisInputError
from analysis.load import load_curves, load_runs
from analysis.result import FitResult
from analysis.wandb_log import log_fit
from analysis.wandb_source import (EXTRA_CONFIG_KEYS, WandbRun, load_offline_curves,
                                   load_offline_wandb, load_runs_wandb, read_offline_runs, wandb_filters)
from scaling.run import wandb_mirror
from scaling.config import RunConfig
from scaling.errors import ConfigError

# A planted credential: it must never appear in a run directory, a W&B file or a log line.
FAKE_KEY = "plantedfakekey" + "0123456789abcdef" * 2
CLEAN_ENV = ("WANDB_MODE", "WANDB_DISABLED", "WANDB_BASE_URL", "WANDB_ENTITY", "WANDB_PROJECT", "WANDB_DIR",
             "WANDB_IDENTITY_TOKEN_FILE", "WANDB_INIT_TIMEOUT", "WANDB_RUN_ID", "WANDB_RESUME", "WANDB_RUN_GROUP")


def wandb_env(tmp: Path) -> dict[str, str]:
    """Environment of a test: the planted key, no netrc, W&B's own folders inside ``tmp``."""
    env = {k: v for k, v in os.environ.items() if k not in CLEAN_ENV}
    env.update(WANDB_API_KEY=FAKE_KEY, NETRC=str(tmp / "no-netrc"), WANDB_CONFIG_DIR=str(tmp / "wb-config"),
               WANDB_CACHE_DIR=str(tmp / "wb-cache"), WANDB_DATA_DIR=str(tmp / "wb-data"))
    return env


@pytest.fixture
def env(tmp_path, monkeypatch):
    for key in CLEAN_ENV:
        monkeypatch.delenv(key, raising=False)
    for key, value in wandb_env(tmp_path).items():
        if os.environ.get(key) != value:
            monkeypatch.setenv(key, value)
    return tmp_path


def make_cfg(**wandb_overrides):
    cfg = OmegaConf.structured(RunConfig)
    cfg.model.width, cfg.model.depth, cfg.group, cfg.name = 32, 2, "sweep-a", "run"
    cfg.logger.wandb.mode, cfg.logger.wandb.project = "offline", "test"
    for key, value in wandb_overrides.items():
        cfg.logger.wandb[key] = value
    return cfg


INFO = {"params": {"total": 1000, "non_embedding": 600, "with_head": 1000},
        "flops_per_token": {"6nd": 3600.0, "kaplan": 4000.0, "chinchilla": 5000.0},
        "flops": {"6nd": 3600.0 * 512, "kaplan": 4000.0 * 512, "chinchilla": 5000.0 * 512},
        "tokens": 512, "shape": {"width": 32, "depth": 2, "heads": 2, "context": 64, "vocab_size": 256}}


def result_of(run_id: str, status: str = "completed", loss: float = 3.25) -> dict:
    return {"run_id": run_id, "group": "sweep-a", "status": status, "model": INFO["shape"], "params": INFO["params"],
            "tokens": 512, "flops": INFO["flops"], "val_loss": loss, "train_loss": loss + 0.1,
            "wall_time": 1.5, "tokens_per_second": 341.0, "error": None if status == "completed" else "boom"}


def rows(n: int, first: int = 1) -> list[dict]:
    return [{"step": s, "tokens": 128 * s, "flops": 3600.0 * 128 * s, "train/loss": 4.0 / s, "lr": 1e-3,
             "tokens_per_s": 1000.0 + s, **({"val/loss": 4.2 / s} if s % 2 == 0 else {})}
            for s in range(first, first + n)]


def read_back(path: Path, runs: int = 1, timeout: float = 15.0) -> list:
    """The offline runs under ``path`` once all are closed: W&B's writer flushes the file just after finish()."""
    deadline = time.monotonic() + timeout
    while True:
        found = read_offline_runs(path)
        if (len(found) == runs and all(r.exit_code is not None for r in found)) or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def grep_tree(root: Path, secret: str) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and not p.is_symlink()
            and secret.encode() in p.read_bytes()]


# ----------------------------------------------------------------------------- the mirror, directly


def test_mirror_offline_files_hold_config_history_and_final_record(env):
    cfg = make_cfg(group="custom-group", tags=["x", "y"])
    run_dir = env / "runs" / "run-abc"
    mirror = wandb_mirror.start(cfg, run_dir, "run-abc", None, INFO)
    assert mirror.active and mirror.wandb_id
    logged = rows(4)
    for row in logged:
        mirror.log(row, row["step"])
    mirror.finish(result_of("run-abc"))

    (run,) = read_back(run_dir)  # default wandb dir: the run directory
    assert (run.id, run.name, run.group, run.job_type, run.tags) == (mirror.wandb_id, "run-abc", "custom-group",
                                                                     "train", ["x", "y"])
    assert run.state == "finished"
    assert {k: v for k, v in run.config.items() if k not in EXTRA_CONFIG_KEYS} == \
        yaml.safe_load(OmegaConf.to_yaml(cfg, resolve=True))
    assert (run.config["N"], run.config["D"], run.config["C"], run.config["shape"]) == \
        (INFO["params"], 512, INFO["flops"], INFO["shape"])
    assert run.history == logged
    assert {k: run.summary[k] for k in result_of("run-abc")} == result_of("run-abc")
    assert grep_tree(env, FAKE_KEY) == []


def test_two_jobs_in_one_process_make_two_runs(env):
    cfg = make_cfg()
    a = wandb_mirror.start(cfg, env / "a", "run-a", None, INFO)
    b = wandb_mirror.start(cfg, env / "b", "run-b", None, INFO)  # a is still open: no merging into it
    assert a.wandb_id != b.wandb_id
    a.log(rows(1)[0], 1)
    b.log(rows(2)[1], 2)
    a.finish(result_of("run-a"))
    b.finish(result_of("run-b"))
    runs = {r.name: r for r in read_back(env, runs=2)}
    assert set(runs) == {"run-a", "run-b"}
    assert [h["step"] for h in runs["run-a"].history] == [1]
    assert [h["step"] for h in runs["run-b"].history] == [2]


def _requirements(run_folder: Path, timeout: float = 15.0) -> str:
    """``files/requirements.txt`` of an offline run, once W&B's service has written it."""
    path = run_folder / "files" / "requirements.txt"
    deadline = time.monotonic() + timeout
    while not path.is_file() and time.monotonic() < deadline:
        time.sleep(0.1)
    return path.read_text()


def test_every_run_of_a_process_saves_the_installed_packages(env):
    """The package list is read once per process, yet each run still saves all of it (``requirements.txt``,
    the W&B Files tab after ``wandb sync``), and W&B's own listing is left as it was."""
    import wandb.util

    listing = wandb.util.working_set
    for rid in ("run-p", "run-q"):
        m = wandb_mirror.start(make_cfg(), env / rid, rid, None, INFO)
        m.log(rows(1)[0], 1)
        m.finish(result_of(rid))
    assert wandb.util.working_set is listing
    texts = [_requirements(folder) for rid in ("run-p", "run-q")
             for folder in (env / rid / "wandb").glob("offline-run-*")]
    installed = {f"{d.key}=={d.version}" for d in listing()}
    assert len(texts) == 2 and all(set(t.split()) == installed for t in texts)


def _record_kind(record_type, data: bytes) -> str:
    record = record_type()
    record.ParseFromString(data)
    return record.WhichOneof("record_type")


def test_system_metrics_are_recorded_offline_when_the_user_turns_them_on(env):
    """Offline runs skip system metrics unless ``WANDB_X_DISABLE_STATS=false`` (W&B's own variable, read when
    a process starts its first run): then the ``.wandb`` file holds stats records, as an online run's would."""
    from analysis.wandb_files import _records
    from wandb.proto import wandb_internal_pb2 as pb

    script = ("import sys, time\nfrom omegaconf import OmegaConf\nfrom scaling.config import RunConfig\n"
              "from scaling.run import wandb_mirror\ncfg = OmegaConf.structured(RunConfig)\n"
              "cfg.logger.wandb.mode, cfg.logger.wandb.project = 'offline', 'test'\n"
              "m = wandb_mirror.start(cfg, sys.argv[1], 'run-s', None, {})\n"
              "for s in range(1, 6):\n    m.log({'step': s, 'train/loss': 1.0 / s}, s)\n    time.sleep(0.3)\n"
              "m.finish({'status': 'completed'})\n")
    kinds = {}
    for flag in ("", "false"):
        run_dir = env / f"stats-{flag or 'default'}"
        extra = {"WANDB_X_DISABLE_STATS": flag} if flag else {}
        subprocess.run([sys.executable, "-c", script, str(run_dir)], check=True, timeout=120,
                       env={**wandb_env(env), "WANDB_X_STATS_SAMPLING_INTERVAL": "0.2", **extra})
        assert len(read_back(run_dir)) == 1
        kinds[flag] = [_record_kind(pb.Record, data) for f in run_dir.rglob("run-*.wandb") for data in _records(f)]
    assert "stats" not in kinds[""] and "stats" in kinds["false"]
    assert kinds[""].count("history") == kinds["false"].count("history") == 5


def test_resumed_mirror_continues_the_same_wandb_run(env):
    cfg = make_cfg()
    first = wandb_mirror.start(cfg, env / "r", "run-r", None, INFO)
    for row in rows(3):
        first.log(row, row["step"])
    first.finish({})  # preempted: no result.json yet; the checkpoint kept the W&B id
    (stopped,) = read_back(env / "r")
    assert stopped.state == "failed"  # never shown as finished while it waits for its requeue
    second = wandb_mirror.start(cfg, env / "r", "run-r", first.wandb_id, INFO)
    assert second.wandb_id == first.wandb_id
    for row in rows(3, first=3):  # steps after the checkpoint are logged again
        second.log(row, row["step"])
    second.finish(result_of("run-r"))
    (run,) = read_back(env / "r")
    assert run.segments == 2 and run.state == "finished"
    assert run.history == rows(5)


def test_a_run_stopped_where_asked_closes_as_finished_with_its_status(env):
    mirror = wandb_mirror.start(make_cfg(), env / "t", "run-t", None, INFO)
    for row in rows(2):
        mirror.log(row, row["step"])
    mirror.finish({"run_id": "run-t", "status": "stopped", "step": 2, "tokens_trained": 256})  # train.stop_at_tokens
    (run,) = read_back(env / "t")
    assert run.state == "finished" and run.summary["status"] == "stopped" and run.summary["tokens_trained"] == 256
    with pytest.raises(AnalysisInputError, match="none of the 1 runs completed \\(stopped\\)"):
        load_offline_wandb(env / "t")  # finished in W&B, but not a completed run: no point of a fit


def test_failed_run_is_kept_out_unless_asked(env):
    cfg = make_cfg()
    for seed, (rid, status) in enumerate((("run-ok", "completed"), ("run-bad", "failed"))):
        cfg.train.seed = seed  # two distinct runs (the same config twice would be one run, deduplicated)
        m = wandb_mirror.start(cfg, env / rid, rid, None, INFO)
        m.log(rows(1)[0], 1)
        m.finish(result_of(rid, status))
    assert {r.name: r.state for r in read_back(env, runs=2)} == {"run-ok": "finished", "run-bad": "failed"}
    with pytest.warns(UserWarning, match="did not complete"):
        assert load_offline_wandb(env)["run_id"].tolist() == ["run-ok"]
    assert sorted(load_offline_wandb(env, keep_failed=True)["run_id"]) == ["run-bad", "run-ok"]


def test_disabled_mirror_does_nothing(env):
    for cfg in (make_cfg(enabled=False), make_cfg(mode="disabled")):
        mirror = wandb_mirror.start(cfg, env / "d", "run-d", "keepme", INFO)
        mirror.log(rows(1)[0], 1)
        mirror.finish(result_of("run-d"))
        assert not mirror.active and mirror.wandb_id == "keepme"
    assert not (env / "d").exists()


def test_auto_mode_is_online_only_with_credentials(env, monkeypatch):
    auto = make_cfg(mode="auto").logger.wandb
    assert wandb_mirror.resolve_mode(auto) == "online"  # the planted WANDB_API_KEY
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert wandb_mirror.resolve_mode(auto) == "offline"  # a cluster's WANDB_MODE wins in auto
    assert wandb_mirror.resolve_mode(make_cfg(mode="online").logger.wandb) == "online"  # explicit wins
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.delenv("WANDB_API_KEY")
    assert wandb_mirror.resolve_mode(auto) == "offline"
    import wandb

    host = wandb.Settings().base_url.split("://")[-1].rstrip("/")
    netrc = env / "netrc"
    netrc.write_text(f"machine {host}\n  login user\n  password {FAKE_KEY}\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    assert wandb_mirror.resolve_mode(auto) == "online"  # `wandb login` wrote a netrc entry


@pytest.mark.parametrize("field,value,match", [("mode", "onlin", "logger.wandb.mode"),
                                               ("project", "a/b", "logger.wandb.project"),
                                               ("tags", ["x" * 65], "logger.wandb.tags")])
def test_bad_wandb_config_is_a_config_error(env, field, value, match):
    with pytest.raises(ConfigError, match=match):
        wandb_mirror.start(make_cfg(**{field: value}), env / "x", "run-x", None, INFO)


def test_unreachable_server_is_a_warning_not_a_failure(env, monkeypatch, caplog):
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # nothing listens on the loopback discard port
    monkeypatch.setenv("WANDB_INIT_TIMEOUT", "3")
    with caplog.at_level(logging.WARNING, logger="scaling.run.wandb_mirror"):
        mirror = wandb_mirror.start(make_cfg(mode="online"), env / "u", "run-u", "wid123", INFO)
    assert not mirror.active and mirror.wandb_id == "wid123"
    mirror.log(rows(1)[0], 1)
    mirror.finish(result_of("run-u"))
    assert "W&B init failed" in caplog.text and FAKE_KEY not in caplog.text


def test_torn_wandb_file_is_read_up_to_the_tear(env):
    mirror = wandb_mirror.start(make_cfg(), env / "t", "run-t", None, INFO)
    for row in rows(3):
        mirror.log(row, row["step"])
    mirror.finish(result_of("run-t"))
    read_back(env / "t")
    (path,) = (env / "t").rglob("*.wandb")
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) * 2 // 3])  # a writer killed mid-record
    with pytest.warns(UserWarning, match="unreadable record"):
        (run,) = read_offline_runs(path)
    assert run.id == mirror.wandb_id and run.state == "running"


# ----------------------------------------------------------------------------- the W&B API loader


class RecordedTransport:
    """Stands in for wandb-core's GraphQL transport (``ServiceApi``): serves recorded ``Runs`` responses.

    The real ``wandb.Api.runs`` / ``Runs`` / ``Run`` code parses them; the filters it sends are recorded.
    """

    def __init__(self, pages: list[dict]):
        self.pages, self.requests = pages, []

    def execute_graphql(self, query, variables):
        assert "query Runs(" in query, "only the Runs query is recorded"
        self.requests.append(dict(variables))
        return self.pages[0 if variables.get("cursor") is None else int(variables["cursor"])]


class HistoryTransport(RecordedTransport):
    """Also serves run histories: ``Run.scan_history()`` asks for the last step (GraphQL ``RunHistoryKeys``),
    then pages of rows through wandb-core's ``ReadRunHistoryRequest``, answered here from ``histories``
    (run id -> W&B history rows as the server keeps them: ``_step``, ``_runtime``, the logged keys)."""

    def __init__(self, pages: list[dict], histories: dict[str, list[dict]]):
        super().__init__(pages)
        self.histories, self.scans = histories, {}

    def execute_graphql(self, query, variables):
        if "query RunHistoryKeys(" in query:
            steps = [row["_step"] for row in self.histories[variables["name"]]]
            return {"project": {"run": {"historyKeys": {"lastStep": max(steps, default=-1)}}}}
        return super().execute_graphql(query, variables)

    def send_api_request(self, request):
        from wandb.proto import wandb_api_pb2 as pb

        read = request.read_run_history_request
        response = pb.ApiResponse()
        if read.HasField("scan_run_history_init"):
            request_id = len(self.scans) + 1
            self.scans[request_id] = read.scan_run_history_init.run_id
            response.read_run_history_response.scan_run_history_init.request_id = request_id
        elif read.HasField("scan_run_history"):
            page = read.scan_run_history
            for row in self.histories[self.scans[page.request_id]]:
                if page.min_step <= row["_step"] < page.max_step:
                    out = response.read_run_history_response.run_history.history_rows.add()
                    for key, value in row.items():
                        out.history_items.add(key=key, value_json=json.dumps(value))
        return response

    def finalize(self, obj, request):
        pass


def recorded_api(pages: list[dict], histories: dict[str, list[dict]] | None = None):
    import wandb

    api = wandb.Api.__new__(wandb.Api)  # no login: every request goes to the recorded transport
    api.settings, api._runs, api.api_key = {"entity": "ent", "project": "test", "base_url": ""}, {}, None
    api._service_api = HistoryTransport(pages, histories or {})
    return api


def server_history(run) -> list[dict]:
    """A run's history as the W&B server returns it (``_step`` and W&B's own ``_runtime`` beside the keys)."""
    return [{"_step": row["step"], "_runtime": 1.0 + i, **{k: v for k, v in row.items() if k != "step"}}
            for i, row in enumerate(run.history)]


def graphql_node(run) -> dict:
    """A run as the W&B server returns it in a ``Runs`` page (config values wrapped as ``{"value": ...}``)."""
    config = {k: {"value": v, "desc": None} for k, v in run.config.items()}
    config["_wandb"] = {"value": {"cli_version": "0.31.0"}, "desc": None}
    return {"id": f"UnVuOnYx{run.id}", "name": run.id, "displayName": run.name, "sweepName": None,
            "state": run.state, "config": json.dumps(config), "group": run.group, "jobType": run.job_type,
            "tags": run.tags, "summaryMetrics": json.dumps(run.summary), "systemMetrics": "{}",
            "projectId": 7, "user": {"name": "u", "username": "u"}, "historyLineCount": len(run.history)}


def runs_pages(nodes: list[dict]) -> list[dict]:
    """One page per run, linked by cursors, as the server pages them."""
    return [{"project": {"internalId": "p7", "runCount": len(nodes), "readOnly": False, "runs": {
        "edges": [{"node": node, "cursor": str(i + 1)}],
        "pageInfo": {"endCursor": str(i + 1), "hasNextPage": i + 1 < len(nodes)}}}} for i, node in enumerate(nodes)]


def test_api_loader_errors_are_one_line(env):
    api = recorded_api([{"project": None}])  # the server's answer for a project that does not exist
    with pytest.raises(AnalysisInputError, match="W&B API request failed"):
        load_runs_wandb("wandb:ent/nope", api=api)
    with pytest.raises(AnalysisInputError, match="ENTITY/PROJECT"):
        load_runs_wandb("wandb:just-a-project", api=api)
    with pytest.raises(AnalysisInputError, match="state: 'done'"):
        load_runs_wandb("wandb:ent/test", state="done", api=api)
    with pytest.raises(AnalysisInputError, match="'grup' not known"):
        load_runs("wandb:ent/test", grup="g")


def test_wandb_source_without_history_is_a_one_line_error(env):
    """Over the recorded transport (no W&B server is reachable here)."""
    run = WandbRun(id="r1", name="run-r1", group="sweep-a", job_type="train", summary=result_of("run-r1"),
                   exit_code=0)  # a finished run whose history never reached the server
    api = recorded_api(runs_pages([graphql_node(run)]), {"r1": []})
    assert len(load_runs_wandb("wandb:ent/test", api=api)) == 1
    with pytest.warns(UserWarning, match="run run-r1: no W&B history"):
        with pytest.raises(AnalysisInputError) as err:
            load_curves("wandb:ent/test", api=api)
    assert str(err.value) == "source: 'wandb:ent/test'; no run has a readable W&B history (per-step metrics)"


def test_filters_select_group_tags_state_and_training_runs():
    assert wandb_filters() == {"jobType": "train"}
    assert wandb_filters(group="g", tags=["a", "b"], state=["finished", "crashed"]) == {"$and": [
        {"jobType": "train"}, {"group": "g"}, {"state": {"$in": ["finished", "crashed"]}},
        {"tags": {"$in": ["a"]}}, {"tags": {"$in": ["b"]}}]}


# ----------------------------------------------------------------------------- fits to W&B


def test_log_fit_makes_an_analysis_run_with_tables_and_plots(env):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.loglog([1e6, 1e7], [3.5, 3.0])
    fig.savefig(env / "law.png")
    fig.savefig(env / "law.svg")
    plt.close(fig)
    fit = FitResult("kaplan", "L = (Nc/N)^alpha", {"alpha": 0.076, "Nc": 8.8e13}, {"alpha": 0.01, "Nc": 1e12},
                    {"alpha": (0.06, 0.09), "Nc": (7e13, 9e13)})
    points = pd.DataFrame({"run_id": ["a", "b", "c"], "N": [1e6, 3e6, 1e7], "loss": [3.5, 3.2, 3.0]})
    rid = log_fit({"kaplan_N": fit}, points, [env / "law.png", env / "law.svg"], project="test", mode="offline",
                  group="sweep-a", dir=env / "fit")
    (run,) = read_back(env / "fit")
    assert (run.id, run.job_type, run.group, run.state) == (rid, "analysis", "sweep-a", "finished")
    assert run.summary["kaplan_N/alpha"] == 0.076 and run.summary["kaplan_N/Nc"] == 8.8e13
    files = Path(run.path) / "files"
    table = json.loads((files / run.summary["points"]["path"]).read_text())
    assert table["columns"] == ["run_id", "N", "loss"] and len(table["data"]) == 3
    estimates = json.loads((files / run.summary["estimates"]["path"]).read_text())
    assert [row[3] for row in estimates["data"]] == ["alpha", "Nc"]
    assert (files / run.summary["plots/law"]["path"]).is_file() and (files / "plots" / "law.svg").is_file()
    with pytest.raises(AnalysisInputError, match="mode"):
        log_fit({"k": fit}, points, [], mode="sometimes")
    # A training-run loader never takes the analysis run for a data point.
    with pytest.raises(AnalysisInputError, match="no W&B training run"):
        load_offline_wandb(env / "fit")


def test_scaling_fit_logs_its_fit_as_an_analysis_run(env, shared_data):
    """`scaling-fit --wandb PROJECT --out DIR`: the fit's estimates and plots land in an offline analysis run."""
    out = env / "fit-out"
    cmd = [str(Path(sys.executable).parent / "scaling-fit"), str(shared_data / "chinchilla_epoch" / "svg_extracted_data.csv"),
           "--params-col", "Model Size", "--flops-col", "Training FLOP", "--loss-col", "loss", "--drop-highest", "5",
           "--approach", "parametric", "--grid", "coarse", "--out", str(out), "--wandb", "scaling-test",
           "--wandb-mode", "offline"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ}, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "logged the fit to W&B run" in proc.stderr
    (run,) = read_back(out)
    assert run.job_type == "analysis"
    assert abs(run.summary["parametric/alpha"] - 0.3473) < 0.01
    assert any(k.startswith("plots/") for k in run.summary)


# ----------------------------------------------------------------------------- real training, offline


TRAIN = ["model=tiny", "data.source=stdlib", "data.max_bytes=300000", "train.tokens=10240", "train.batch_size=4",
         "train.log_every=5", "train.eval_every=20", "train.eval_tokens=1024", "train.final_eval_tokens=2048",
         "train.checkpoint_every=20", "train.keep_checkpoints=2", "train.device=cpu", "train.threads=1",
         "group=wbtest", "logger.wandb.mode=offline", "logger.wandb.project=test", "logger.wandb.tags=[a,b]"]


def scaling_train(tmp: Path, *args: str, multirun: bool = False) -> None:
    cmd = [sys.executable, "-m", "scaling.cli.train", *(["--multirun"] if multirun else []), *TRAIN, f"runs_dir={tmp / 'runs'}",
           f"data.cache_dir={tmp / 'cache'}", *args]
    done = subprocess.run(cmd, env=wandb_env(tmp), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert FAKE_KEY not in done.stdout + done.stderr


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """Two tiny runs in one process (Hydra's basic launcher), then run 0 resumed from its middle checkpoint."""
    tmp = tmp_path_factory.mktemp("wandb_sweep")
    scaling_train(tmp, "train.seed=0,1", multirun=True)
    run_dirs = sorted(p.parent for p in (tmp / "runs").rglob("result.json"))
    assert len(run_dirs) == 2
    seeds = {yaml.safe_load((d / "config.yaml").read_text())["train"]["seed"]: d for d in run_dirs}
    resumed = seeds[0]
    first_id = [r.id for r in read_offline_runs(resumed)]
    (resumed / "result.json").unlink()  # as if the job died after its step-20 checkpoint
    (resumed / "checkpoints" / "step_00000040.pt").unlink()
    scaling_train(tmp, "train.seed=0")
    return {"tmp": tmp, "runs": tmp / "runs", "dirs": run_dirs, "resumed": resumed, "first_id": first_id}


@pytest.mark.slow
def test_training_mirror_equals_the_run_record(sweep):
    wandb_ids = set()
    for run_dir in sweep["dirs"]:
        (run,) = read_offline_runs(run_dir)
        wandb_ids.add(run.id)
        lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert run.history == [{k: v for k, v in line.items() if v is not None} for line in lines]
        assert {k: v for k, v in run.config.items() if k not in EXTRA_CONFIG_KEYS} == \
            yaml.safe_load((run_dir / "config.yaml").read_text())
        record = json.loads((run_dir / "result.json").read_text())
        assert {k: run.summary[k] for k in record} == record
        assert (run.config["N"], run.config["D"], run.config["C"]) == (record["params"], record["tokens"],
                                                                       record["flops"])
        assert (run.name, run.group, run.job_type, run.tags) == (record["run_id"], "wbtest", "train", ["a", "b"])
    assert len(wandb_ids) == 2  # several jobs in one process: several W&B runs


@pytest.mark.slow
def test_resumed_training_keeps_its_wandb_id(sweep):
    (run,) = read_offline_runs(sweep["resumed"])
    assert [run.id] == sweep["first_id"] and run.segments == 2
    assert len(list(sweep["resumed"].rglob("*.wandb"))) == 2


@pytest.mark.slow
def test_planted_api_key_never_lands_on_disk(sweep):
    assert grep_tree(sweep["tmp"], FAKE_KEY) == []


@pytest.mark.slow
def test_offline_wandb_loads_like_the_run_records(sweep):
    records = load_runs(sweep["runs"]).sort_values("run_id").reset_index(drop=True)
    offline = load_offline_wandb(sweep["runs"]).sort_values("run_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(offline.drop(columns="path"), records.drop(columns="path"))
    wandb_dir = sweep["resumed"] / "wandb"  # load_runs dispatches a folder of offline runs to the W&B reader
    assert load_runs(wandb_dir)["run_id"].tolist() == [sweep["resumed"].name]


@pytest.mark.slow
def test_api_loader_gives_the_run_record_frame(sweep):
    runs = read_offline_runs(sweep["runs"])
    api = recorded_api(runs_pages([graphql_node(r) for r in runs]))
    frame = load_runs_wandb("wandb:ent/test", group="wbtest", tags=["a"], api=api)
    records = load_runs(sweep["runs"]).sort_values("run_id").reset_index(drop=True)
    frame = frame.sort_values("run_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(frame.drop(columns="path"), records.drop(columns="path"))
    assert set(frame["path"]) == {f"wandb:ent/test/{r.id}" for r in runs}
    sent = api._service_api.requests
    assert len(sent) == 2 and json.loads(sent[0]["filters"]) == wandb_filters(group="wbtest", tags=["a"])


def sorted_curves(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.drop(columns="path").sort_values(["run_id", "step"]).reset_index(drop=True)


@pytest.mark.slow
def test_offline_wandb_curves_equal_the_run_folder_curves(sweep):
    folders = load_curves(sweep["runs"])  # result.json present: the run folders' metrics.jsonl
    offline = load_offline_curves(sweep["runs"])
    pd.testing.assert_frame_equal(sorted_curves(offline), sorted_curves(folders))
    assert {"train/loss", "val/loss", "lr", "flops_6nd", "N_non_embedding"} <= set(offline.columns)
    resumed = load_curves(sweep["resumed"] / "wandb")  # a folder of offline runs dispatches to the W&B reader
    assert resumed["step"].tolist() == folders.loc[folders["run_id"] == sweep["resumed"].name, "step"].tolist()


@pytest.mark.slow
def test_api_curves_equal_the_run_folder_curves(sweep):
    """``Run.scan_history()`` of the real ``wandb.Api`` over the recorded transport (no W&B server here)."""
    runs = read_offline_runs(sweep["runs"])
    api = recorded_api(runs_pages([graphql_node(r) for r in runs]), {r.id: server_history(r) for r in runs})
    frame = load_curves("wandb:ent/test", group="wbtest", tags=["a"], api=api, loss="val/loss")
    folders = load_curves(sweep["runs"], loss="val/loss")
    pd.testing.assert_frame_equal(sorted_curves(frame), sorted_curves(folders))
    assert set(frame["path"]) == {f"wandb:ent/test/{r.id}" for r in runs}
    with pytest.raises(AnalysisInputError, match="filters: grup apply to W&B sources only"):
        load_curves(sweep["runs"], grup="g")


def mirror_folders(records: Path, wandb_dir: Path) -> None:
    """Mirror every run folder under ``records`` into offline W&B files under ``wandb_dir``, as training does."""
    for result in sorted(records.rglob("result.json")):
        run_dir, record = result.parent, json.loads(result.read_text())
        cfg = OmegaConf.merge(OmegaConf.structured(RunConfig), yaml.safe_load((run_dir / "config.yaml").read_text()))
        cfg.logger.wandb.enabled, cfg.logger.wandb.mode, cfg.logger.wandb.project = True, "offline", "test"
        cfg.logger.wandb.dir = str(wandb_dir / run_dir.name)
        per_token = {k: v / record["tokens"] for k, v in record["flops"].items()}
        mirror = wandb_mirror.start(cfg, run_dir, record["run_id"], None, {
            "params": record["params"], "flops_per_token": per_token, "flops": record["flops"],
            "tokens": record["tokens"], "shape": record["model"]})
        for line in (run_dir / "metrics.jsonl").read_text().splitlines():
            mirror.log(json.loads(line), json.loads(line)["step"])
        mirror.finish(record)
    read_back(wandb_dir, runs=len(list(records.rglob("result.json"))))


def test_scaling_fit_envelope_reads_wandb_curves(env, monkeypatch, capsys):
    """`scaling-fit SOURCE --approach envelope` on run folders, their offline W&B files and the W&B API
    (served by the recorded transport: no W&B server is reachable here) gives one fit."""
    from analysis import cli, wandb_source

    for i, w in enumerate([16, 24, 32, 48, 64, 96, 128, 192, 256]):
        write_run(env / "records", f"r{i}", width=w, depth=2, tokens=60_000_000, n_steps=40)
    mirror_folders(env / "records", env / "wb")
    runs = read_offline_runs(env / "wb")
    api = recorded_api(runs_pages([graphql_node(r) for r in runs]), {r.id: server_history(r) for r in runs})
    monkeypatch.setattr(wandb_source, "_default_api", lambda timeout: api)
    fits = []
    for source in (env / "records", env / "wb", "wandb:ent/test"):
        code = cli.main([str(source), "--approach", "envelope", "--json"])
        out, err = capsys.readouterr()
        assert code == 0, err
        fits.append(json.loads(out)["envelope"]["estimates"])
    assert fits[0] == fits[1] == fits[2] and 0.2 < fits[0]["a"] < 0.8
