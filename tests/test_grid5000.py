"""Grid'5000 without a Grid'5000: the node catalog, its refresh from (recorded) Reference API answers, and the
OAR launcher's command lines, options, checks and state handling on recorded OAR outputs."""
from __future__ import annotations

import json
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from grid5000 import launcher as oar
from grid5000 import make_node_types, refresh_catalog
from jobs.records import atomic_write_json, now_iso, read_status
from orchestrator.errors import UserError
from orchestrator.matrix import expand
from orchestrator.nodes import node_types
from orchestrator.spec import parse_sweep
from orchestrator.store import Campaign

DATA = Path(__file__).parent / "data"
CLUSTERS = Path("/work/shared/data/g5k_gpu_clusters.json")
for candidate in (Path(__file__).resolve().parents[2] / "shared" / "data" / "g5k_gpu_clusters.json",
                  Path(__file__).resolve().parents[1] / "shared" / "data" / "g5k_gpu_clusters.json"):
    if candidate.exists():
        CLUSTERS = candidate


def sweep_spec(tmp_path, node_types_list="[grele]", oar_section="", timeout=3600):
    text = f"""
name: g5k
matrix:
  tests: [mobilenet_v2]
  phases: [inference]
  node_types: {node_types_list}
defaults: {{batch_size: 2, input_size: [32, 32], iterations: 3}}
launcher: oar
timeout_s: {timeout}
{oar_section}
"""
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    return parse_sweep(text, path)


def launcher_for(spec):
    return oar.OarLauncher(spec, spec.launcher_options("oar", oar.OarOptions))


# --- catalog --------------------------------------------------------------------------------

def test_every_gpu_cluster_is_a_node_type_with_its_hardware_queue_and_power_metrics():
    data = json.loads(CLUSTERS.read_text())
    types = node_types()
    for cluster in data["clusters"]:
        node = types[cluster["cluster"]]
        assert node.extra["site"] == cluster["site"] and node.extra["queue"] == cluster["queue"]
        assert node.extra["exotic"] == cluster["exotic"]
        assert node.gpu_count == cluster["gpu"]["count"] and node.gpu_model == cluster["gpu"]["oar_gpu_model"]
        assert node.extra["memory_mib"] == cluster["oar_memnode_MiB"]
        assert node.extra["wattmeter"] == (cluster["oar_wattmeter"] == "YES")
        assert set(node.extra["kwollect_metrics"]) == set(cluster["kwollect_power_metrics"])
        assert node.matches_host(f"{cluster['cluster']}-3.{cluster['site']}.grid5000.fr")
    grele, sirius = types["grele"], types["sirius"]
    assert grele.extra["queue"] == "abaca" and grele.extra["max_walltime_s"] == 86400
    assert sirius.extra["exotic"] and sirius.extra["wattmeter"]
    assert [m for m, _, _ in oar.power_metrics(sirius)] == ["wattmetre_power_watt", "bmc_node_power_watt"]


def test_chifflet_is_kept_as_retired_with_its_last_description():
    chifflet = node_types()["chifflet"]
    assert chifflet.extra["retired"] == "2023-07-24" and chifflet.extra["replacement"] == "grele"
    assert chifflet.gpu_count == 2 and chifflet.gpu_model == "GeForce GTX 1080 Ti"
    assert chifflet.extra["memory_mib"] == 786432 and not chifflet.extra["wattmeter"]


def test_the_committed_catalog_is_what_the_generator_makes():
    data = json.loads(CLUSTERS.read_text())
    assert make_node_types.render(data) == make_node_types.OUT.read_text(), \
        "grid5000/node_types.yaml is stale: run python -m grid5000.make_node_types <g5k_gpu_clusters.json>"


@pytest.fixture
def recorded_api():
    handler = partial(RecordedApi, directory=str(DATA / "g5k_api"))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/stable/"
    server.shutdown()
    server.server_close()


class RecordedApi(SimpleHTTPRequestHandler):
    """/stable/<path>?limit=... -> tests/data/g5k_api/<path>.json"""

    def log_message(self, *args):
        pass

    def translate_path(self, path):
        path = path.split("?")[0].removeprefix("/stable/").strip("/")
        return super().translate_path("/" + path + ".json")


def test_refresh_rebuilds_the_catalog_from_reference_api_answers(recorded_api, tmp_path, capsys):
    out, data_out = tmp_path / "node_types.yaml", tmp_path / "clusters.json"
    assert refresh_catalog.main(["--api", recorded_api, "--out", str(out), "--data-out", str(data_out)]) == 0
    assert "2 GPU clusters" in capsys.readouterr().out
    catalog = yaml.safe_load(out.read_text())
    assert "gros" not in catalog  # no GPU
    grele, sirius = catalog["grele"], catalog["sirius"]
    assert grele["queue"] == "abaca" and not grele["exotic"] and grele["memory_mib"] == 131072
    assert grele["gpus"] == {"count": 2, "model": "GeForce GTX 1080 Ti", "compute_capability": "6.1",
                             "memory_mib": 11178, "vendor": "Nvidia", "power_default_limit": "250.00 W"}
    assert grele["cpu_model"] == "Intel Xeon E5-2650 v4" and grele["nodes"] == 2 and grele["max_walltime_s"] == 86400
    assert not grele["wattmeter"] and grele["kwollect_metrics"]["bmc_node_power_watt"]["period_ms"] == 5000
    assert "bmc_psu_voltage_volt" not in grele["kwollect_metrics"]
    assert sirius["exotic"] and sirius["wattmeter"] and sirius["gpus"]["count"] == 8 and sirius["queue"] == "default"
    assert sirius["kwollect_metrics"]["wattmetre_power_watt"] == {"period_ms": 1000, "optional_period_ms": 10}
    assert catalog["chifflet"]["retired"] == "2023-07-24"
    assert json.loads(data_out.read_text())["clusters"][0]["cluster"] == "sirius"


def test_refresh_reports_an_unreachable_api_without_writing(tmp_path, capsys):
    out = tmp_path / "node_types.yaml"
    assert refresh_catalog.main(["--api", "http://127.0.0.1:9/stable/", "--out", str(out)]) == 1
    assert "cannot reach" in capsys.readouterr().err and not out.exists()


# --- the OAR command line -------------------------------------------------------------------

def oarsub_line(launcher, cell, folder=Path("/home/u/results/g5k/cells/abc")):
    from execo_g5k.oar import get_oarsub_commandline

    return get_oarsub_commandline(launcher.submission(cell, folder))


def test_grele_goes_to_abaca_on_a_whole_node_with_its_walltime(tmp_path):
    spec = sweep_spec(tmp_path)
    launcher = launcher_for(spec)
    cell = expand(spec).cells[0]
    line = oarsub_line(launcher, cell)
    assert '-l "host=1,walltime=1:2:30"' in line  # timeout_s + the Kwollect step + the guard's margin (90 s)
    assert "-p \"cluster='grele'\"" in line and '-q "abaca"' in line and "exotic" not in line
    # SIGTERM before the walltime's SIGKILL, 45 s after the guard's own timeout: 3750 - 105 = 3600 + 45
    assert "--checkpoint=105 --signal=15" in line
    assert line.endswith('"/home/u/results/g5k/cells/abc/oar_job.sh"') and '-n "bt-' in line


def test_exotic_clusters_get_the_type_and_on_demand_power_gets_a_monitor(tmp_path):
    spec = sweep_spec(tmp_path, "[sirius, gres]", "oar: {job_types: [night], properties: {gpu_mem: 40960}}")
    launcher = launcher_for(spec)
    by_type = {c.node_type: c for c in expand(spec).cells}
    sirius = oarsub_line(launcher, by_type["sirius"])
    assert '-t "exotic"' in sirius and '-t "night"' in sirius and "-q" not in sirius  # default queue
    assert "-p \"cluster='sirius' AND gpu_mem=40960\"" in sirius and "monitor=" not in sirius
    gres = oarsub_line(launcher, by_type["gres"])
    assert '-t "monitor=bmc_node_power_watt"' in gres and '-q "abaca"' in gres


def test_job_script_quotes_every_path_and_runs_kwollect_after_a_success(tmp_path):
    spec = sweep_spec(tmp_path, oar_section="oar: {python: /opt/venv/bin/python, kwollect_url: 'http://127.0.0.1:8/x/'}")
    launcher = launcher_for(spec)
    script = launcher.job_script(expand(spec).cells[0], Path("/home/u/it's here"))
    assert "cd '/home/u/it'\"'\"'s here' || exit 97" in script
    # The same guard as every launcher: OAR's explainer, the Kwollect step as its post-step (after a success).
    guard = "/opt/venv/bin/python -m jobs.guard '/home/u/it'\"'\"'s here' --explain grid5000.oar_job --post "
    assert guard in script and "jobs.run" not in script
    line = next(line for line in script.splitlines() if line.startswith("/opt/venv/bin/python -m jobs.guard"))
    import shlex

    post = shlex.split(shlex.split(line)[7])
    assert post[:3] == ["grid5000.kwollect", "annotate", "/home/u/it's here"]
    assert post[3:] == ["--site", "nancy", "--metrics", "bmc_node_power_watt", "--wait", "50", "--url",
                        "http://127.0.0.1:8/x/"]
    assert line.endswith(">> job.log 2>&1 &") and "trap 'kill -TERM $pid" in script


@pytest.mark.parametrize("section, message", [
    ("oar: {properties: {gpu_model: \"x' OR 1=1; $(rm -rf ~)\"}}", "contains a quote, $, ` or \\"),
    ("oar: {properties: {'bad name': 1}}", "lower-case letters, digits and _ only"),
    ("oar: {job_types: ['night; rm -rf ~']}", "must match pattern"),
    ("oar: {queue: 'abaca\"'}", "must match pattern"),
    ("oar: {python: 'python3 -c evil'}", "an absolute path"),
    ("oar: {walltime: '1:xx'}", "walltime '1:xx'"),
    ("oar: {wallclock: 10}", "unknown key"),
])
def test_bad_oar_options_point_at_the_sweep_line(tmp_path, section, message):
    with pytest.raises(UserError) as error:
        sweep_spec(tmp_path, oar_section=section)
    text = str(error.value)
    assert message in text and f"{tmp_path / 'sweep.yaml'}:10: oar" in text


def test_sql_values_are_quoted_and_shell_characters_refused():
    assert oar.sql_quote("A100-SXM4-40GB") == "'A100-SXM4-40GB'"
    assert oar.sql_quote("O'Brien") == "'O''Brien'"
    assert oar.sql_quote(2) == "2"
    for bad in ('a"b', "a$b", "a`b", "a\\b"):
        with pytest.raises(UserError):
            oar.sql_quote(bad)


def test_check_refuses_retired_unknown_and_too_long_and_lists_known_clusters(tmp_path):
    launcher = launcher_for(sweep_spec(tmp_path, "[chifflet]"))
    with pytest.raises(UserError, match="retired on 2023-07-24; closest current match: grele"):
        launcher.check(expand(launcher.spec).cells)
    launcher = launcher_for(sweep_spec(tmp_path, "[local]"))
    with pytest.raises(UserError, match=r"not an OAR cluster; known clusters: .*grele.*sirius"):
        launcher.check(expand(launcher.spec).cells)
    launcher = launcher_for(sweep_spec(tmp_path, "[grele]", timeout=200000))
    with pytest.raises(UserError, match="exceeds the 24:00:00 allowed on grele"):
        launcher.check(expand(launcher.spec).cells)


def test_unknown_node_type_in_a_sweep_lists_the_known_ones(tmp_path):
    with pytest.raises(UserError) as error:
        sweep_spec(tmp_path, "[grelle]")
    assert "did you mean 'grele'" in str(error.value) and "sirius" in str(error.value)


def test_a_frontend_submits_only_its_own_sites_clusters(tmp_path, monkeypatch):
    monkeypatch.setattr(oar, "local_site", lambda: "nancy")
    launcher = launcher_for(sweep_spec(tmp_path, "[grele, sirius]"))
    with pytest.raises(UserError, match="sirius' is at site lyon, but this is the nancy frontend: run this sweep "
                                        "from flyon"):
        launcher.check(expand(launcher.spec).cells)


def test_execo_never_ssh_es_to_the_frontend(monkeypatch):
    from execo_g5k.config import g5k_configuration
    from execo_g5k.utils import get_frontend_host

    oar._execo()
    assert g5k_configuration["no_ssh_for_local_frontend"] is True
    assert get_frontend_host(None) is None


# --- recorded OAR outputs -------------------------------------------------------------------

def test_oarsub_outputs_are_read_by_exit_code():
    assert oar.parse_oarsub(0, "[ADMISSION RULE] Modify resource description\nOAR_JOB_ID=42\n", "") == (42, None)
    job, reason = oar.parse_oarsub(8, "[ADMISSION RULE] Modify resource description with type constraints\n"
                                   "OAR_JOB_ID=-5\n", "There are not enough resources for your request\n"
                                   "[ERROR] Oarsub failed, please verify your request syntax.\n")
    assert job is None and "not enough resources" in reason
    job, reason = oar.parse_oarsub(10, "OAR_JOB_ID=17\nReservation not valid --> KO (This reservation could run "
                                   "at 2026-11-27 03:00:00)\n", "")
    assert job is None and reason.startswith("reservation refused")  # an id, but refused
    job, reason = oar.parse_oarsub(254, "", "[ADMISSION RULE] Error: unknown job type: bogus\n")
    assert job is None and "code 254" in reason and "unknown job type" in reason


def test_a_deleted_job_is_described_from_its_oar_events():
    record = json.loads((DATA / "oar" / "oarstat-fJ-deleted.json").read_text())["3"]
    text = oar.describe_end(3, record)
    assert "deleted" in text and "requested to frag the job 3" in text and "Error" in text
    done = json.loads((DATA / "oar" / "oarstat-fJ-terminated.json").read_text())["1"]
    assert "ended in Terminated, exit code 0 without a final status" in oar.describe_end(1, done)


@pytest.fixture
def campaign(tmp_path):
    spec = sweep_spec(tmp_path, "[grele]")
    cells = expand(spec).cells
    camp = Campaign(tmp_path / "results" / "g5k")
    for cell in cells:
        camp.write_cell(cell, {})
    return launcher_for(spec), camp, cells


def submitted(camp, cell, job_id, attempts=1, long_ago=True):
    """A cell as the lifecycle leaves it after a submission: `submitted`, and its attempt's job.json."""
    from orchestrator import lifecycle

    folder = camp.cell_dir(cell.id)
    lifecycle.write_submitted(folder, read_status(folder), "2026-01-01T00:00:00+00:00" if long_ago else now_iso(),
                              attempts=attempts, launcher="oar")
    atomic_write_json(folder / "job.json", {"launcher": "oar", "attempt": attempts, "job_id": str(job_id)})
    return folder


def test_refresh_fails_deleted_and_unknown_jobs_and_leaves_live_ones(campaign, monkeypatch):
    from orchestrator import lifecycle

    launcher, camp, cells = campaign
    cell = cells[0]
    deleted = json.loads((DATA / "oar" / "oarstat-fJ-deleted.json").read_text())
    folder = submitted(camp, cell, 3)
    monkeypatch.setattr(oar, "oarstat", lambda ids: {"3": dict(deleted["3"], state="Running")})
    lifecycle.refresh(camp, launcher, cells)
    assert read_status(folder)["state"] == "submitted"
    monkeypatch.setattr(oar, "oarstat", lambda ids: deleted)  # recorded: stopTime long ago
    lifecycle.refresh(camp, launcher, cells)
    status = read_status(folder)
    assert status["state"] == "failed" and "OAR job 3 was deleted" in status["reason"]
    assert status["oar_state"] == "Error" and status["job_id"] == "3"
    submitted(camp, cell, 99, attempts=2)
    monkeypatch.setattr(oar, "oarstat", lambda ids: {})
    lifecycle.refresh(camp, launcher, cells)
    status = read_status(folder)
    assert status["reason"] == ("its job 99 left oar without a final status, and oar has no record of how it "
                                "ended") and status["attempts"] == 2


def test_a_job_that_just_ended_gets_the_grace_period_before_it_is_judged(campaign, monkeypatch):
    from orchestrator import lifecycle

    launcher, camp, cells = campaign
    deleted = json.loads((DATA / "oar" / "oarstat-fJ-deleted.json").read_text())
    folder = submitted(camp, cells[0], 3)
    import time as clock

    monkeypatch.setattr(oar, "oarstat", lambda ids: {"3": dict(deleted["3"], stopTime=int(clock.time()))})
    lifecycle.refresh(camp, launcher, cells)
    assert read_status(folder)["state"] == "submitted"  # its guard's last word may still be on its way
    monkeypatch.setattr(lifecycle, "GRACE_S", 0.0)
    lifecycle.refresh(camp, launcher, cells)
    assert read_status(folder)["state"] == "failed"


def test_refresh_gives_up_after_oar_stops_answering(campaign, monkeypatch, capsys):
    from orchestrator import lifecycle

    launcher, camp, cells = campaign
    folder = submitted(camp, cells[0], 5)

    def broken(ids):
        raise oar.OarError("oarstat failed: could not start")

    monkeypatch.setattr(oar, "oarstat", broken)
    lifecycle.refresh(camp, launcher, cells)
    assert read_status(folder)["state"] == "submitted"  # not judged on a failed query
    assert "warning: cannot ask OAR about the jobs (oarstat failed: could not start); cell states not refreshed" \
        in capsys.readouterr().err
    launcher.unanswered_since -= lifecycle.SCHEDULER_DOWN_LIMIT_S + 1  # the same rule as every scheduler's
    with pytest.raises(UserError, match="oar has not answered for 60[0-9] s"):
        lifecycle.refresh(camp, launcher, cells)


def test_launch_refuses_a_campaign_path_with_shell_characters(tmp_path):
    spec = sweep_spec(tmp_path)
    launcher = launcher_for(spec)
    with pytest.raises(UserError, match="cannot go into an OAR command line"):
        launcher.submit(Campaign(tmp_path / "a b;$(x)" / "g5k"), expand(spec).cells, None)
