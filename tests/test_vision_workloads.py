"""The vision workloads: CIFAR-10/100 and Tiny-ImageNet read from files in their real formats (tests/vision_files.py)
through torchvision and PIL, their prepare steps, epochs of a random subset (TensorTask.epoch_size), ResNet-18 and the
timm ViT, the ViT trained packed, Fig. 3's grid, and task=vit_cifar end to end through run.py."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision.datasets
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from vision_files import (
    cifar_archive,
    tiny_archive,
    tiny_expected,
    write_cifar,
    write_tiny_imagenet,
)

from surge_repro.config import CONF_DIR, build, compose, validate
from surge_repro.launch.callbacks import sweep_size
from surge_repro.point import signature
from surge_repro.run.packing import why_not_packable
from surge_repro.run.train import run, run_points
from surge_repro.store import load_grid
from surge_repro.tasks import DataError, TensorTask
from surge_repro.tasks.vision import (
    TINY_CACHE,
    _cifar_train,
    _tiny_imagenet_train,
    cifar,
    prepare_cifar10,
    prepare_tiny_imagenet,
    tiny_imagenet,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def fresh_caches():
    _cifar_train.cache_clear()
    _tiny_imagenet_train.cache_clear()
    yield
    _cifar_train.cache_clear()
    _tiny_imagenet_train.cache_clear()


def assert_normalised_per_channel(task, raw: np.ndarray):
    """take() gives (x - mean_c) / std_c with the training set's own per-channel statistics."""
    x, _ = task.take(torch.arange(len(task)))
    assert x.dtype == torch.float32
    assert x.mean((0, 2, 3)).abs().max() < 1e-4 and (x.std((0, 2, 3)) - 1).abs().max() < 1e-2
    raw = raw.astype(np.float64)
    mean, std = raw.mean((0, 2, 3)), raw.std((0, 2, 3))
    expected = (raw[5] - mean[:, None, None]) / std[:, None, None]
    assert np.allclose(x[5].numpy(), expected, atol=1e-4)


# CIFAR -----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("num_classes", [10, 100])
def test_cifar_reads_the_official_pickles_through_torchvision(tmp_path, num_classes):
    images, labels = write_cifar(tmp_path, num_classes)
    task = cifar(root=str(tmp_path), name=f"cifar{num_classes}", num_classes=num_classes, verify_md5=False,
                 size=None)
    assert task.inputs.dtype == torch.uint8 and task.inputs.shape == (100, 3, 32, 32)  # 5 x 20, or train's 100
    assert np.array_equal(task.inputs.numpy(), images)  # channel planes in place (torchvision hands out HWC)
    assert task.labels.tolist() == labels.tolist()  # CIFAR-100: the fine labels
    assert_normalised_per_channel(task, images)
    x, y = next(task.batches(16, seed=0))
    assert x.shape == (16, 3, 32, 32) and x.dtype == torch.float32 and y.shape == (16,)


def test_cifar_missing_altered_and_corrupt_files_name_the_fix(tmp_path):
    with pytest.raises(DataError, match="CIFAR-10 is missing .*prepare task=cifar10 paths.data="):
        cifar(root=str(tmp_path))
    with pytest.raises(DataError, match="CIFAR-100 is missing .*prepare task=cifar100 paths.data="):
        cifar(root=str(tmp_path), num_classes=100)
    write_cifar(tmp_path)
    # torchvision checks the md5 of the official release: generated files are not it
    with pytest.raises(DataError, match="not the official release.*force=true.*verify_md5=false"):
        cifar(root=str(tmp_path))
    batch = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:500])  # truncated mid-pickle
    with pytest.raises(DataError, match="unreadable.*prepare task=cifar10 .*force=true"):
        cifar(root=str(tmp_path), verify_md5=False)
    with pytest.raises(ValueError, match="10 or 100 classes"):
        cifar(root=str(tmp_path), num_classes=20)


def test_prepare_cifar_from_a_local_archive_and_offline(tmp_path, monkeypatch):
    images, _ = write_cifar(tmp_path / "src")
    data = tmp_path / "data"
    data.mkdir()
    cifar_archive(tmp_path / "src", data / "cifar-10-python.tar.gz")
    assert "extracted from" in prepare_cifar10(str(data), verify_md5=False)
    assert np.array_equal(cifar(root=str(data), verify_md5=False, size=None).inputs.numpy(), images)
    assert "already" in prepare_cifar10(str(data), verify_md5=False)
    # no archive, and the server unreachable (the real download code, pointed at a closed local port)
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "url", "http://127.0.0.1:9/cifar-10-python.tar.gz")
    offline = tmp_path / "offline"
    with pytest.raises(DataError, match="Without network.*cifar-10-python.tar.gz and run this again"):
        prepare_cifar10(str(offline))
    assert list(offline.iterdir()) == []  # nothing half-written


# Tiny-ImageNet ---------------------------------------------------------------------------------------------------

def test_tiny_imagenet_decodes_the_jpeg_tree_once_into_a_cache(tmp_path):
    base = write_tiny_imagenet(tmp_path)
    task = tiny_imagenet(root=str(tmp_path), epoch_size=None, size=None)
    colors, labels = tiny_expected()
    assert task.inputs.dtype == torch.uint8 and task.inputs.shape == (36, 3, 64, 64)
    assert task.labels.tolist() == labels.tolist()  # wnids.txt order; images 0, 1, ..., 9, 10, 11 within a class
    assert np.abs(task.inputs.float().mean((2, 3)).numpy() - colors).max() <= 2  # JPEG keeps flat colours
    assert_normalised_per_channel(task, task.inputs.numpy())
    assert (tmp_path / TINY_CACHE).is_file()
    for jpeg in base.glob("train/*/images/*.JPEG"):  # the cache is what later runs read
        jpeg.unlink()
    _tiny_imagenet_train.cache_clear()
    again = tiny_imagenet(root=str(tmp_path), epoch_size=None, size=None)
    assert torch.equal(again.inputs, task.inputs) and torch.equal(again.labels, task.labels)


def test_tiny_imagenet_missing_and_corrupt_files_name_the_fix(tmp_path):
    with pytest.raises(DataError, match="Tiny-ImageNet is missing .*prepare task=tiny_imagenet paths.data="):
        tiny_imagenet(root=str(tmp_path))
    base = write_tiny_imagenet(tmp_path)
    jpeg = base / "train" / "n01629819" / "images" / "n01629819_5.JPEG"
    jpeg.write_bytes(jpeg.read_bytes()[:200])  # truncated
    with pytest.raises(DataError, match="n01629819_5.JPEG is unreadable.*prepare task=tiny_imagenet .*force=true"):
        tiny_imagenet(root=str(tmp_path))
    from PIL import Image

    Image.new("RGB", (32, 32)).save(jpeg, "JPEG")
    with pytest.raises(DataError, match="32x32 pixels, not 64x64"):
        tiny_imagenet(root=str(tmp_path))
    (tmp_path / TINY_CACHE).write_bytes(b"not a tensor file")
    with pytest.raises(DataError, match="cache .* is unreadable.*force=true"):
        tiny_imagenet(root=str(tmp_path))


def test_prepare_tiny_imagenet_from_a_local_archive_and_offline(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    tiny_archive(write_tiny_imagenet(tmp_path / "src"), data / "tiny-imagenet-200.zip")
    said = prepare_tiny_imagenet(str(data))
    assert "extracted from" in said and (data / TINY_CACHE).is_file()
    assert (data / "tiny-imagenet-200" / "val" / "val_annotations.txt").is_file()
    assert len(tiny_imagenet(root=str(data), epoch_size=None, size=None)) == 36
    assert "already" in prepare_tiny_imagenet(str(data))
    offline = tmp_path / "offline"
    with pytest.raises(DataError, match="Without network.*tiny-imagenet-200.zip and run this again"):
        prepare_tiny_imagenet(str(offline), url="http://127.0.0.1:9/tiny-imagenet-200.zip")
    assert list(offline.iterdir()) == []


# epochs of a random subset ---------------------------------------------------------------------------------------

def small_task(epoch_size=20, n=50):
    return TensorTask("t", torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1), torch.arange(n),
                      epoch_size=epoch_size)


def test_epoch_size_draws_a_fresh_seeded_subset_each_epoch_and_resumes_exactly():
    task = small_task()
    assert task.epoch_length(6) == 3  # 18 of an epoch's 20 examples; the 2 left over are skipped
    orders = task.epoch_orders(seed=1)
    epochs = [next(orders) for _ in range(6)]
    assert all(len(e) == 20 and len(set(e.tolist())) == 20 for e in epochs)  # without replacement
    assert len({tuple(e.tolist()) for e in epochs}) == 6 and len(set(torch.cat(epochs).tolist())) > 40
    same, other = task.epoch_orders(seed=1), task.epoch_orders(seed=2)
    assert all(torch.equal(e, next(same)) for e in epochs) and not torch.equal(epochs[0], next(other))
    for start in (1, 4):
        assert torch.equal(next(task.epoch_orders(seed=1, start=start)), epochs[start])

    stream = task.batches(6, seed=1)
    labels = [next(stream)[1] for _ in range(12)]
    for e in range(4):  # each epoch's batches are that epoch's subset, in its order
        assert torch.equal(torch.cat(labels[3 * e:3 * e + 3]), epochs[e][:18])
    for start in range(12):  # a resumed run goes on with the batch an uninterrupted one takes
        resumed = task.batches(6, seed=1, start=start)
        assert all(torch.equal(y, next(resumed)[1]) for y in labels[start:])
    with pytest.raises(ValueError, match="exceeds the 20 examples of an epoch"):
        next(task.batches(21, seed=0))
    with pytest.raises(ValueError, match="epoch_size=60 must be in 1..50"):
        small_task(epoch_size=60)


def test_without_epoch_size_epochs_are_the_whole_set_as_before():
    task, gen = small_task(epoch_size=None), torch.Generator().manual_seed(3)
    orders = task.epoch_orders(seed=3)
    assert all(torch.equal(next(orders), torch.randperm(50, generator=gen)) for _ in range(3))
    assert task.epoch_length(6) == 8


def test_packed_points_with_epoch_size_equal_the_same_points_one_by_one(make_cfg, tmp_path):
    # 200 examples, epochs of 96 (6 batches of 16): the pack draws subsets exactly as task.batches does alone
    overrides = ["task.size=200", "+task.epoch_size=96", "protocol.max_steps=40"]
    tables = []
    for mode in ("packed", "alone"):
        cfgs = [make_cfg(f"paths.store={tmp_path / mode}", f"optimizer.lr={lr}", *overrides) for lr in (0.01, 0.03)]
        summaries = run_points(cfgs) if mode == "packed" else [run(c) for c in cfgs]
        assert all(s["steps"] > 12 for s in summaries)  # several epochs
        if mode == "packed":
            assert {s["pack"]["points"] for s in summaries} == {2}
        tables.append(load_grid(tmp_path / mode, "manual").sort_values(["lr", "target_loss"]).reset_index(drop=True))
    compared = ["status", "steps", "reached", "steps_to_target", "loss_after_k"]
    pd.testing.assert_frame_equal(tables[0][compared], tables[1][compared], check_exact=False, rtol=0, atol=1e-5)


# models ----------------------------------------------------------------------------------------------------------

def one_step(model, x, y, optimizer):
    before = [p.detach().clone() for p in model.parameters()]
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))


def test_resnet18_for_64x64_builds_and_takes_a_step(make_cfg):
    cfg = make_cfg("task=tiny_imagenet", "model=resnet18", "optimizer=adam_sign", "batch=2", "optimizer.lr=1e-4",
                   tiny=False)
    torch.manual_seed(0)
    model = build(cfg.model)
    assert sum(p.numel() for p in model.parameters()) == 11_271_432  # as conf/model/resnet18.yaml says
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert isinstance(model.maxpool, torch.nn.MaxPool2d) and model.fc.out_features == 200
    one_step(model, torch.randn(2, 3, 64, 64), torch.tensor([0, 199]), build(cfg.optimizer)(model.parameters()))
    assert "BatchNorm" in why_not_packable(cfg, model)  # trains one point at a time
    plain = build(make_cfg("task=tiny_imagenet", "model=resnet18", "model.stem=conv3x3", tiny=False).model)
    assert isinstance(plain.maxpool, torch.nn.Identity)
    with pytest.raises(ValueError, match="model.stem=conv3x3_maxpool"):
        build(make_cfg("task=tiny_imagenet", "model=resnet18", "model.stem=big", tiny=False).model)


def test_vit_for_32x32_builds_and_takes_a_step(make_cfg):
    cfg = make_cfg("task=vit_cifar", "batch=2", "optimizer.lr=1e-4", tiny=False)
    assert (cfg.model.name, cfg.optimizer.name, cfg.task.name) == ("vit_tiny", "adam", "cifar10")
    torch.manual_seed(0)
    model = build(cfg.model)
    assert sum(p.numel() for p in model.parameters()) == 5_362_762 and model.patch_embed.num_patches == 64
    one_step(model, torch.randn(2, 3, 32, 32), torch.tensor([0, 9]), build(cfg.optimizer)(model.parameters()))
    assert why_not_packable(cfg, model) is None  # no buffers, Adam: packs


# a small ViT on 3-channel synthetic images: 4 patches of 4x4, one block
VIT = ["model=vit_tiny", "task.in_chans=3", "task.img_size=8", "task.size=256", "+model.depth=1",
       "protocol.targets=[1.2,1.0]", "protocol.max_steps=40"]


# vmap has no batching rule for the CPU's fused attention kernel and loops over the points there (torch warns)
@pytest.mark.filterwarnings("ignore:There is a performance drop")
def test_the_vit_trains_packed_equal_to_one_by_one(make_cfg, tmp_path):
    grid = [(3e-4, 0), (3e-3, 1)]
    tables = {}
    for mode in ("packed", "alone"):
        cfgs = [make_cfg(f"paths.store={tmp_path / mode}", f"optimizer.lr={lr}", f"seed={seed}", *VIT)
                for lr, seed in grid]
        summaries = run_points(cfgs) if mode == "packed" else [run(c) for c in cfgs]
        if mode == "packed":
            assert {s["pack"]["points"] for s in summaries} == {2}  # vmap over timm's ViT works
        tables[mode] = load_grid(tmp_path / mode, "manual").sort_values(["lr", "seed", "target_loss"]) \
            .reset_index(drop=True)
    assert set(tables["packed"].status) >= {"done"}
    compared = ["status", "steps", "reached", "steps_to_target", "loss_at_target", "loss_drop_after_k"]
    pd.testing.assert_frame_equal(tables["packed"][compared], tables["alone"][compared], check_exact=False, rtol=0,
                                  atol=1e-5)


# configs ---------------------------------------------------------------------------------------------------------

def experiment(name, *overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose("config", overrides=[f"+experiment={name}", *overrides], return_hydra_config=True)


def sweep_values(cfg, key):
    return [float(v) for v in str(cfg.hydra.sweeper.params[key]).split(",")]


def test_fig3_grid_is_table1s_resnet18_row():
    cfg = experiment("fig3_resnet18_tinyimagenet")
    assert sweep_values(cfg, "optimizer.lr") == pytest.approx([1e-4 + k * 7.65e-5 for k in range(9)])
    assert sweep_values(cfg, "batch") == list(range(16, 347, 33)) and len(range(16, 347, 33)) == 11
    assert (cfg.task.name, cfg.model.name, cfg.model.stem) == ("tiny_imagenet", "resnet18", "conv3x3_maxpool")
    assert cfg.task.epoch_size == 10_000 and cfg.optimizer.betas == [0.0, 0.0] and cfg.optimizer.weight_decay == 0
    assert list(cfg.protocol.targets) == [5.213, 5.146, 5.113, 4.863, 4.741, 4.633] and cfg.protocol.k == 50
    assert sweep_size(cfg) == 99 * 100 and sweep_size(experiment("fig3_resnet18_tinyimagenet", "rounds=2")) == 198


@pytest.mark.parametrize("name", ["fig3_resnet18_tinyimagenet", "vit_cifar"])
def test_experiments_carry_the_header_and_validate(name):
    text = (CONF_DIR / "experiment" / f"{name}.yaml").read_text()
    assert all(field in text for field in ("command:", "report:", "points:", "cost:", "outcome:"))
    assert (ROOT / "reports" / f"{name}.py").is_file()
    cfg = experiment(name, "batch=8", "optimizer.lr=1e-3")
    validate(cfg)
    assert cfg.experiment_name == name and "seed" in cfg.hydra.sweeper.params


def test_vit_cifar_picks_its_model_and_is_the_same_point_as_spelled_out(tmp_path):
    write_cifar(tmp_path)  # a point's identity includes its data's fingerprint: the data must be there
    base = ["batch=8", "optimizer.lr=1e-4", f"paths.data={tmp_path}", "task.verify_md5=false"]
    short = compose(["task=vit_cifar", *base])
    assert signature(short) == signature(compose(["task=cifar10", "model=vit_tiny", "optimizer=adam", *base]))
    assert compose(["task=vit_cifar", "model=tiny_mlp", *base]).model.name == "tiny_mlp"  # the command line wins
    assert sweep_size(experiment("vit_cifar")) == 72 and experiment("vit_cifar").model.name == "vit_tiny"
    assert compose(["task=cifar100", *base]).task.num_classes == 100


@pytest.mark.slow
def test_run_py_multirun_of_vit_cifar_fills_the_store(tmp_path):
    data, store = tmp_path / "data", tmp_path / "store"
    write_cifar(data)
    out = subprocess.run(
        [sys.executable, "run.py", "-m", "task=vit_cifar", "batch=4,8", "optimizer.lr=1e-4,3e-4",
         f"paths.data={data}", f"paths.store={store}", "protocol.max_steps=3", "task.verify_md5=false", "task.size=100",
         "protocol.probe.size=16", "threads=1", "device=cpu", f"hydra.sweep.dir={tmp_path / 'multirun'}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    summaries = [json.loads(p.read_text()) for p in (store / "manual").glob("*/summary.json")]
    assert sorted((s["point"]["batch_size"], s["point"]["lr"]) for s in summaries) == \
        [(4, 1e-4), (4, 3e-4), (8, 1e-4), (8, 3e-4)]
    assert all(s["status"] == "capped" and s["steps"] == 3 and s["point"]["model"] == "vit_tiny" for s in summaries)
    assert all(s["pack"]["points"] == 2 for s in summaries)  # each batch size's two LRs trained as one pack
