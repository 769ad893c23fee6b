"""Flower deployment: SuperLink and SuperNodes over TLS, dropouts, clean-up of every process."""
from __future__ import annotations

import importlib
import json
import os
import time
from functools import partial

import pytest
import torch
from safetensors.torch import load_file

from medpeft.federated.config import FedConfig
from medpeft.federated.deployment import marked_processes, stop_marked
from medpeft.models.weights import shipped_foundation


def test_deployment_on_superlink_and_supernodes_leaves_no_process(collection, tmp_path,
                                                                 monkeypatch):
    """`medpeft federate CONFIG --deployment`: local SuperLink and SuperNodes over TLS with
    SuperNode authentication (a SuperNode with an unregistered key is refused and the run goes
    on); a hospital whose SuperNode dies mid-round (SIGKILL) is left out of that round, the round
    completes with the other, and the hospital rejoins with its key and trains the next round; a
    table that reads at 80 columns, Flower's lines in log.txt, no process left behind."""
    import yaml
    from typer.testing import CliRunner

    from medpeft.cli import app
    from medpeft.cli_common import console
    target = collection / "Task10_NewSite"
    sites = [{"dataset": str(target), "k": 1, "n_test": 1, "part": [i, 2]} for i in range(2)]
    config = {"foundation": str(shipped_foundation()), "hospitals": sites, "out": str(tmp_path / "dep"),
              "plan": "encoder-lora+head", "rounds": 2, "local_steps": 2, "baseline": False,
              "pooled": False, "local": ["out.*"], "heartbeat_s": 20, "evaluate_every": 2,
              # 20 s, not Flower's minimum of 10: a loaded CI machine let site0's heartbeats lapse
              # for 2 x 10 s once, and the SuperLink dropped its reply as if it had gone offline
              # a reply lost to the drill's race (the node back online before the server pulled
              # its error reply) is a dropout after 3 min, not an hour's hang
              "round_timeout_s": 180}
    (tmp_path / "fed.yaml").write_text(yaml.safe_dump(config))
    monkeypatch.setattr(console, "width", 80)
    from medpeft.federated import deployment
    # a drill: one more SuperNode, with a key nobody registered, knocks on the SuperLink
    # and a dropout: site1's SuperNode is killed once it has received round 1's training
    monkeypatch.setattr(deployment, "deploy", partial(deployment.deploy, timeout=900, uninvited=1,
                                                      drop=(1, 1)))
    result = CliRunner().invoke(app, ["federate", str(tmp_path / "fed.yaml"), "--deployment"])
    assert result.exit_code == 0, result.output
    logs = tmp_path / "dep" / "logs"
    assert "No SuperNode found with the given public key" in (logs / "superlink.log").read_text()
    assert "SuperNode ID" not in (logs / "uninvited-0.log").read_text()  # refused, never admitted
    assert all("SuperNode ID" in (logs / f"supernode-{i}.log").read_text() for i in range(2))
    credentials = tmp_path / "dep" / "credentials"
    assert (credentials / "supernodes" / "site0").stat().st_mode & 0o077 == 0  # private keys
    assert "root-certificates" in (tmp_path / "dep" / "flwr-home" / "config.toml").read_text()
    table = [line for line in result.output.splitlines() if "│" in line or "┃" in line]
    assert table and all(len(line) <= 80 for line in table)
    assert any("site0" in line for line in table) and any("site1" in line for line in table)
    assert "nan" not in result.output and "alone" not in result.output  # baseline: false
    assert (tmp_path / "dep" / "log.txt").is_file()
    report = json.loads((tmp_path / "dep" / "report.json").read_text())
    assert set(report["train"]["1"]) == {"site0"}  # site1 died mid-round: the round went on
    assert [(e["round"], e["site"], e["phase"]) for e in report["excluded"]] == [(1, "site1", "train")]
    assert "dropped out" in report["excluded"][0]["reason"]
    assert set(report["train"]["2"]) == {"site0", "site1"}  # site1 rejoined and trained
    node_id = lambda log: log.read_text().split("SuperNode ID: ")[1].split()[0]  # noqa: E731
    assert node_id(logs / "supernode-1-rejoined.log") == node_id(logs / "supernode-1.log")
    assert "| 1 | site0 | site1 |" in (tmp_path / "dep" / "report.md").read_text()
    assert report["bytes_total"]["ratio"] >= 40
    assert (tmp_path / "dep" / "global" / "adapter.safetensors").is_file()
    # the head is personalised: it never travels, and each site saved its own
    assert report["wire_tensors"] and not any(n.startswith("out.") for n in report["wire_tensors"])
    heads = [load_file(str(tmp_path / "dep" / "hospitals" / s / "adapter.safetensors"))
             for s in ("site0", "site1")]
    assert not torch.equal(heads[0]["out.conv.conv.weight"], heads[1]["out.conv.conv.weight"])
    assert marked_processes(str((tmp_path / "dep" / "flwr-home").resolve())) == []
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({**config, "roundz": 2}))
    bad = CliRunner().invoke(app, ["federate", str(tmp_path / "bad.yaml")])
    assert bad.exit_code != 0 and "unknown keys ['roundz']" in bad.output


def test_supernode_announces_the_configured_heartbeat_within_flowers_range(monkeypatch):

    from medpeft.federated import supernode
    readers = [importlib.import_module(name) for name in supernode._READERS]
    for module in readers:  # restored after the test
        monkeypatch.setattr(module, "HEARTBEAT_DEFAULT_INTERVAL", module.HEARTBEAT_DEFAULT_INTERVAL)
    supernode.announce(12)
    assert [module.HEARTBEAT_DEFAULT_INTERVAL for module in readers] == [12, 12]
    with pytest.raises(ValueError, match="heartbeat_s 5: Flower's SuperLink accepts 10 to 1800 s"):
        supernode.announce(5)
    with pytest.raises(ValueError, match="heartbeat_s 5: must be 10 to 1800 seconds"):
        FedConfig(foundation="f", hospitals=[{"dataset": "a"}, {"dataset": "b"}], heartbeat_s=5).check()


def test_stop_marked_finds_and_ends_processes_of_this_run_only(tmp_path):
    import subprocess
    home = str(tmp_path / "flwr-home")
    mine = subprocess.Popen(["sleep", "60"], env={**os.environ, "FLWR_HOME": home},
                            start_new_session=True)
    other = subprocess.Popen(["sleep", "60"], env={**os.environ, "FLWR_HOME": home + "-other"})
    try:
        assert marked_processes(home) == [mine.pid]
        stop_marked(home)
        assert mine.wait(timeout=5) is not None and other.poll() is None
    finally:
        other.kill()
        mine.kill()


def test_round_zero_starts_with_min_hospitals_after_its_wait_and_not_below():
    from types import SimpleNamespace

    from medpeft.federated.server import wait_for_hospitals
    cfg = FedConfig(foundation="f", hospitals=[{"dataset": d} for d in "abc"], min_hospitals=2)
    assert wait_for_hospitals(SimpleNamespace(get_node_ids=lambda: [1, 2, 3]), cfg, 60) == 3
    assert wait_for_hospitals(SimpleNamespace(get_node_ids=lambda: [1, 2]), cfg, 0.5) == 2
    with pytest.raises(RuntimeError, match="1 of 3 hospitals connected within 0 s; min_hospitals is 2"):
        wait_for_hospitals(SimpleNamespace(get_node_ids=lambda: [1]), cfg, 0.5)


def test_a_serverapp_that_failed_ends_the_wait_with_its_error(tmp_path):
    """`flwr run --stream` exits 0 even when the ServerApp raised: the wait must not go on until
    the federation's timeout, and the user reads the ServerApp's own error."""
    import subprocess

    from medpeft.federated.deployment import wait_for_result
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "flwr-run.log").write_text(
        "Traceback (most recent call last):\n  ...\nRuntimeError: round 2: 1 hospital(s) "
        "connected after waiting 30 s\nERROR :     Exit Code: 201\n")
    link = subprocess.Popen(["sleep", "60"])
    submit = subprocess.Popen(["true"])
    try:
        start = time.monotonic()
        with pytest.raises(RuntimeError, match=r"ServerApp ended without a result: RuntimeError: "
                                               r"round 2: 1 hospital\(s\) connected"):
            wait_for_result(tmp_path, link, submit, None, timeout=60, grace=1.0)
        assert time.monotonic() - start < 10
    finally:
        link.kill()


def test_sigterm_stops_the_processes_of_a_deployment(tmp_path):
    """`kill` or a scheduler's SIGTERM on `medpeft federate --deployment` leaves no Flower
    process behind: the signal ends the run through the same clean-up as Ctrl-C."""
    import signal

    from medpeft.federated.deployment import Processes
    env = {**os.environ, "FLWR_HOME": str(tmp_path / "home")}
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(SystemExit) as stopped:
        with Processes(env, tmp_path / "logs") as procs:
            child = procs.start("sleeper", ["sleep", "60"])
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler interrupts this
    assert stopped.value.code == 128 + signal.SIGTERM
    assert child.poll() is not None and signal.getsignal(signal.SIGTERM) == before


def test_a_deployment_refuses_an_expired_or_mismatched_certificate_by_name(collection, tmp_path):
    """`tls: {ca, certificate, key}` (the hospital network's own PKI) is checked before any
    Flower process starts: each problem names its file, and no global adapter is written."""
    import yaml
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import Encoding
    from typer.testing import CliRunner

    from medpeft.cli import app
    from medpeft.federated.credentials import _certificate, _name, _pem_key, hospital_credentials

    def pki(tag: str, *, days: float = 7, days_ago: float = 0, signer_tag: str | None = None):
        ca_key, cert_key = ec.generate_private_key(ec.SECP384R1()), ec.generate_private_key(ec.SECP384R1())
        ca = _certificate(_name("ca"), _name("ca"), ca_key.public_key(), ca_key, ca=True)
        signer = ec.generate_private_key(ec.SECP384R1()) if signer_tag else ca_key
        cert = _certificate(_name("127.0.0.1"), _name("ca"), cert_key.public_key(), signer, ca=False,
                            days=days, days_ago=days_ago)
        paths = {k: tmp_path / f"{tag}-{k}.pem" for k in ("ca", "certificate", "key")}
        paths["ca"].write_bytes(ca.public_bytes(Encoding.PEM))
        paths["certificate"].write_bytes(cert.public_bytes(Encoding.PEM))
        paths["key"].write_bytes(_pem_key(cert_key))
        return {k: str(v) for k, v in paths.items()}

    good = pki("good")
    assert str(hospital_credentials(good, tmp_path / "c", ["a"]).server_cert) == good["certificate"]
    expired = pki("expired", days=1, days_ago=10)
    with pytest.raises(ValueError, match=f"tls certificate {expired['certificate']} is not valid now"):
        hospital_credentials(expired, tmp_path / "c", ["a"])
    stranger = pki("stranger", signer_tag="other")
    with pytest.raises(ValueError, match="was not issued by the CA .*stranger-ca.pem"):
        hospital_credentials(stranger, tmp_path / "c", ["a"])
    with pytest.raises(ValueError, match="other-key.pem does not belong to the certificate .*good"):
        hospital_credentials({**good, "key": pki("other")["key"]}, tmp_path / "c", ["a"])
    sites = [{"dataset": str(collection / "Task10_NewSite"), "k": 1, "n_test": 1, "part": [i, 2]}
             for i in range(2)]
    config = {"foundation": str(shipped_foundation()), "hospitals": sites, "out": str(tmp_path / "dep"),
              "rounds": 1, "local_steps": 1, "baseline": False, "pooled": False, "tls": expired}
    (tmp_path / "fed.yaml").write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(app, ["federate", str(tmp_path / "fed.yaml"), "--deployment"])
    said = " ".join(result.output.split())
    assert result.exit_code != 0 and "expired-certificate.pem is not valid now" in said
    assert not (tmp_path / "dep" / "global").exists() and not (tmp_path / "dep" / "logs").exists()
