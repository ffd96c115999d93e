"""A point's signature depends on what it measures, not on how it was written down or where its files go."""

from surge_repro.point import identity, signature


def test_signature_ignores_override_order_and_nuisance_keys(make_cfg, tmp_path):
    a = make_cfg("batch=8", "optimizer.lr=3e-4", "seed=2")
    b = make_cfg("seed=2", "optimizer.lr=3e-4", "batch=8", f"paths.store={tmp_path}/elsewhere",
                 "logger=wandb", "threads=2", "device=auto", "experiment_name=other", "progress.every_s=1",
                 "rounds=7", f"paths.data={tmp_path}/d")
    assert signature(a) == signature(b)
    assert signature(a).startswith("b8-lr0.0003-s2-")


def test_signature_changes_with_what_is_measured(make_cfg):
    base = signature(make_cfg("optimizer.lr=2e-4"))
    for override in ["optimizer.lr=3e-4", "batch=17", "seed=1", "optimizer=adam_sign", "protocol.k=4",
                     "protocol.targets=[1.0]", "model.hidden=33", "lr=warmup_constant"]:
        assert signature(make_cfg("optimizer.lr=2e-4", override)) != base, override


def test_lattice_floats_are_canonical(make_cfg):
    drifted = 1e-4 + 2 * 1e-4  # 0.00030000000000000003, as a float range would make it
    assert signature(make_cfg(f"optimizer.lr={drifted!r}")) == signature(make_cfg("optimizer.lr=3e-4"))
    assert signature(make_cfg("optimizer.lr=0.0003")) == signature(make_cfg("optimizer.lr=3.0e-4"))


def test_identity_has_no_paths_or_logger(make_cfg):
    ident = identity(make_cfg())
    assert "paths" not in ident and "logger" not in ident and "root" not in ident["task"]
    assert ident["optimizer"]["lr"] == "0.01"
