"""Two CPU ranks on gloo train one model (DDP); the checkpoint resumes on a single process."""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from medpeft.data.msd import load_msd
from medpeft.data.ontology import class_mapping
from medpeft.data.transforms import Preprocessing, cached_dataset, case_dicts
from medpeft.device import supports_bf16
from medpeft.federated.deployment import marked_processes
from medpeft.methods import apply_method, trainable_state
from medpeft.models.backbones import PRESETS, build_backbone
from medpeft.models.weights import save_state
from medpeft.train import distributed
from medpeft.train.loop import (
    LoopConfig,
    batches,
    channels_last_pays,
    load_checkpoint,
    train_loop,
)
from medpeft.train.losses import MarginalDiceCELoss

LOOP = LoopConfig(steps=6, lr=1e-2, checkpoint_every=3, log_every=1, warmup=1)


def _setting(data_root: Path):
    ds = load_msd(data_root)
    mapping = class_mapping(ds.labels, ("liver",))
    data = cached_dataset(case_dicts(ds, mapping), Preprocessing(), {ds.name: mapping})
    torch.manual_seed(0)
    model = build_backbone(PRESETS["swin-fast"], 2)
    apply_method(model, "decoder")
    return data, model


def _rank(rank: int, world: int, port: int, data_root: str, run_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    with distributed.process_group("cpu"):
        data, model = _setting(Path(data_root))
        if rank == 1:  # a different start on rank 1: DDP must broadcast rank 0's weights
            torch.nn.init.normal_(model.out.conv.conv.weight)
        out = train_loop(model, data, MarginalDiceCELoss(), LOOP, run_dir=Path(run_dir), stop_after=3,
                         device="cpu")
        assert out["stopped"]
        first = next(batches(data, 1, 0, distributed.rank(), world=distributed.world_size()))
        save_state(Path(run_dir) / f"rank{rank}.safetensors",
                   {**trainable_state(model), "first_image": torch.as_tensor(first["image"]).contiguous()})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_ranks_agree_and_their_checkpoint_resumes_on_one_process(collection, tmp_path):
    data_root = collection / "Task02_Liver"
    mp.spawn(_rank, args=(2, _free_port(), str(data_root), str(tmp_path)), nprocs=2, join=True)
    ranks = [load_file(str(tmp_path / f"rank{r}.safetensors")) for r in (0, 1)]
    images = [r.pop("first_image") for r in ranks]
    assert not torch.equal(images[0], images[1])  # each rank draws its own crops
    assert ranks[0].keys() == ranks[1].keys() and len(ranks[0]) > 2
    assert all(torch.equal(ranks[0][n], ranks[1][n]) for n in ranks[0])  # identical weights
    # only rank 0 wrote: one log line per step, one checkpoint (step 3)
    steps = [json.loads(x)["step"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]
    data, model = _setting(data_root)
    assert load_checkpoint(tmp_path / "checkpoints", model) == 3
    assert all(torch.equal(t, ranks[0][n]) for n, t in trainable_state(model).items())
    resumed = train_loop(model, data, MarginalDiceCELoss(), LOOP, run_dir=tmp_path, resume=True,
                         device="cpu")
    assert resumed["resumed_from"] == 3 and resumed["steps"] == 6 and resumed["ranks"] == 1
    assert any(not torch.equal(t, ranks[0][n]) for n, t in trainable_state(model).items())


def test_torchrun_pretraining_killed_mid_run_resumes_on_one_process(collection, tmp_path):
    """`medpeft pretrain` on 2 gloo ranks under torchrun is killed (SIGKILL, every process, as
    in a power cut) after its first checkpoint; `--resume` on a single process loses at most one interval."""
    import signal
    import subprocess
    import sys
    import time
    medpeft = str(Path(sys.executable).with_name("medpeft"))
    out = tmp_path / "foundation"
    args = ["pretrain", "--source", str(collection / "Task02_Liver"), "--source",
            str(collection / "Task04_Spleen"), "--out", str(out), "--steps", "6",
            "--checkpoint-every", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200", "MEDPEFT_TEST_RUN": str(tmp_path)}
    run = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone",
                            "--nproc-per-node", "2", medpeft, *args], env=env,
                           start_new_session=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
    latest = out / "checkpoints" / "latest.json"
    deadline = time.monotonic() + 240
    while not latest.exists() and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert latest.exists(), f"no checkpoint before the kill: {run.poll()} {run.stderr.read()[-2000:]}"
    # torchrun and its ranks (in their own sessions)
    for pid in marked_processes(str(tmp_path), "MEDPEFT_TEST_RUN"):
        os.kill(pid, signal.SIGKILL)
    run.wait(timeout=30)
    time.sleep(0.5)
    assert marked_processes(str(tmp_path), "MEDPEFT_TEST_RUN") == []
    saved = json.loads(latest.read_text())["step"]
    logged = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert saved >= 2 and max(logged) - saved <= 2  # logged every 2 steps: at most one interval lost
    assert not (out / "foundation.json").exists()
    done = subprocess.run([medpeft, *args, "--resume"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    train = json.loads((out / "foundation.json").read_text())["train"]
    assert train["resumed_from"] == saved and train["steps"] == 6 and train["ranks"] == 1
    logged = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert set(logged) == {2, 4, 6}  # every interval trained and logged, none lost


def test_gradient_checkpointing_gives_the_same_gradients_and_is_switched_off_after():
    from medpeft.models.backbones import set_gradient_checkpointing
    torch.manual_seed(0)
    model = build_backbone(PRESETS["swin-fast"], 2)
    x = torch.randn(1, 1, 64, 64, 64)

    def grads() -> dict:
        model.zero_grad()
        model(x).square().mean().backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if n.startswith("swinViT")}
    plain = grads()
    assert set_gradient_checkpointing(model) == 8  # every Swin block
    checkpointed = grads()
    assert all(torch.allclose(plain[n], checkpointed[n], atol=1e-6) for n in plain)
    set_gradient_checkpointing(model, False)
    assert not any(getattr(m, "use_checkpoint", False) for m in model.modules())


def test_each_rank_takes_the_gpu_of_its_local_rank_and_nccl(monkeypatch):
    """The CUDA path's choices, checked without a GPU (none is available to the test machines)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.rank_device("cuda") == torch.device("cuda", 1)
    assert distributed.rank_device("cuda:0") == torch.device("cuda", 0)  # an explicit choice wins
    assert distributed.rank_device("cpu") == torch.device("cpu")
    assert distributed.backend_for(torch.device("cuda", 1)) == "nccl"
    assert distributed.backend_for(torch.device("cpu")) == "gloo"
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert distributed.rank_device("cuda") == torch.device("cuda")


@pytest.mark.skipif(not supports_bf16(torch.device("cpu")),
                    reason="this CPU has no native bf16: the loop would train float32, not bf16")
def test_channels_last_bf16_training_runs_and_leaves_a_plain_model(collection, tmp_path):
    data, model = _setting(collection / "Task02_Liver")
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    cfg = LoopConfig(steps=2, lr=1e-2, warmup=1, bf16=True, channels_last=True)
    out = train_loop(model, data, MarginalDiceCELoss(), cfg, run_dir=tmp_path, device="cpu")
    assert out["steps"] == 2 and torch.isfinite(torch.tensor(out["loss"]))
    assert any(not torch.equal(p, before[n]) for n, p in model.named_parameters() if n in before)
    conv = model.decoder1.conv_block.conv1.conv.weight  # 3x3x3: channels-last differs
    assert conv.is_contiguous() and not conv.is_contiguous(memory_format=torch.channels_last_3d)


@pytest.mark.parametrize(("method", "convolutions_train"), [
    ("decoder-skips", True), ("decoder", True), ("full", True), ("conv-adapter", True),
    ("lora", False), ("affine", False), ("adaptformer", False)])
def test_channels_last_is_chosen_where_convolution_weights_train_under_native_bf16(
        method, convolutions_train):
    """The loop's default layout (docs/scaling-up.md: channels-last pays 1.2-1.3x where a
    convolution's own weights train under bf16, and costs 3-7% where none do)."""
    model = build_backbone(PRESETS["swin-fast"], 3)
    apply_method(model, method)
    cpu = torch.device("cpu")
    native = supports_bf16(cpu)
    assert channels_last_pays(model, bf16=True, device=cpu) == (convolutions_train and native)
    assert not channels_last_pays(model, bf16=False, device=cpu)


@pytest.mark.skipif(not supports_bf16(torch.device("cpu")),
                    reason="this CPU has no native bf16: the loop would train float32, not bf16")
def test_the_loop_trains_a_decoder_channels_last_by_default_and_says_so(collection, tmp_path):
    data, model = _setting(collection / "Task02_Liver")
    cfg = LoopConfig(steps=1, lr=1e-2, warmup=1, bf16=True)
    assert train_loop(model, data, MarginalDiceCELoss(), cfg, run_dir=tmp_path,
                      device="cpu")["channels_last"]
    cfg = LoopConfig(steps=1, lr=1e-2, warmup=1, bf16=False)
    assert not train_loop(model, data, MarginalDiceCELoss(), cfg, run_dir=tmp_path / "fp32",
                          device="cpu")["channels_last"]


def test_the_loop_records_the_precision_it_trained_in_and_the_user_is_told_about_float32(
        collection, tmp_path, monkeypatch):
    """bf16 is asked for by default, but runs only where native: the summary says what the steps
    computed in, and the CLI's notice appears exactly when bf16 was asked for and is not native."""
    import medpeft.device as device_module
    from medpeft.device import float32_notice
    data, model = _setting(collection / "Task02_Liver")
    cpu = torch.device("cpu")
    for native, expected in ((False, "float32"), (True, "bf16")):
        monkeypatch.setattr(device_module, "supports_bf16", lambda device, native=native: native)
        cfg = LoopConfig(steps=1, lr=1e-2, warmup=1, bf16=True, channels_last=False)
        summary = train_loop(model, data, MarginalDiceCELoss(), cfg, run_dir=tmp_path / expected,
                             device="cpu")
        assert summary["precision"] == expected
        notice = float32_notice(cpu, bf16=True)
        assert (notice is None) == native and (native or "float32" in notice)
        assert float32_notice(cpu, bf16=False) is None
