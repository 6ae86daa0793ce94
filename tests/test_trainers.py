"""Trainer recipe checks (no data loading): hooks give the paper's recipe, DS counts match, and it learns."""
import copy

import numpy as np
import pytest
import torch

from nnunetv2_mfns.trainers import (nnUNetTrainerMfNSDe, nnUNetTrainerMfNSDe_50epochs, nnUNetTrainerMfNSDe_ci,
                                    nnUNetTrainerMfNSDe_NoAttention, nnUNetTrainerMfNSDe_NoDS,
                                    nnUNetTrainerMfNSDe_NoHF, nnUNetTrainerMfNSDe_nnUNetRecipe,
                                    nnUNetTrainerUNet2D_PaperRecipe)
from nnunetv2_mfns.transforms import DownsampleSegForDSTransformHF
from tiny_dataset import make_2d_plans

DATASET_JSON = {"channel_names": {"0": "T2"}, "labels": {"background": 0, "PVS": 1}, "numTraining": 6,
                "file_ending": ".nii.gz"}


def make_plans(n_stages=5, patch=(64, 64), strides=None, arch_class="dynamic_network_architectures.architectures.unet.PlainConvUNet"):
    return make_2d_plans([min(32 * 2 ** i, 512) for i in range(n_stages)], patch, strides, batch_size=12,
                         arch_class=arch_class)


@pytest.fixture(autouse=True)
def results_env(tmp_path, monkeypatch):
    monkeypatch.setenv("nnUNet_results", str(tmp_path / "results"))
    monkeypatch.setenv("nnUNet_preprocessed", str(tmp_path / "preprocessed"))
    torch.set_num_threads(1)


def build(trainer_cls, plans=None):
    """Runs the trainer's own hooks as initialize() would, minus data loading."""
    tr = trainer_cls(copy.deepcopy(plans or make_plans()), "2d", 0, DATASET_JSON, torch.device("cpu"))
    tr._set_batch_size_and_oversample()
    tr.network = tr.build_network_architecture(tr.plans_manager, tr.configuration_manager, 1,
                                               tr.label_manager.num_segmentation_heads, tr.enable_deep_supervision)
    tr.optimizer, tr.lr_scheduler = tr.configure_optimizers()
    tr.loss = tr._build_loss()
    return tr


def test_paper_recipe_hooks():
    tr = build(nnUNetTrainerMfNSDe)
    assert isinstance(tr.optimizer, torch.optim.Adagrad)
    assert tr.optimizer.param_groups[0]["lr"] == pytest.approx(0.05)
    assert tr.batch_size == 4
    assert tr.configuration_manager.batch_size == 12, "the plan itself must stay untouched"
    assert type(tr.network).__name__ == "MfNSDe"
    # Dice only (no CE term); DS weights: the fused output and DNANet's full-resolution side heads share scale 0's
    # weight equally, coarse row i has 1/2^i, normalised (5 rows: 4 full-resolution outputs, 4 coarse heads)
    assert type(tr.loss).__name__ == "DeepSupervisionWrapper"
    assert type(tr.loss.loss).__name__ == "MemoryEfficientSoftDiceLoss"
    w = np.array(tr.loss.weight_factors)
    scales = tr._get_deep_supervision_scales()
    assert len(w) == len(scales) == 8 and w.sum() == pytest.approx(1.0) and all(w > 0)
    assert [s[0] for s in scales] == [1, 1, 1, 1, 0.5, 0.25, 0.125, 0.0625]
    expected = np.array([1 / 4] * 4 + [1 / 2, 1 / 4, 1 / 8, 1 / 16])
    np.testing.assert_allclose(w, expected / expected.sum())
    # the v1 build: one output per row, 1/2^i
    from nnunetv2_mfns.trainers.variants_network import nnUNetTrainerMfNSDe_V1
    w1 = np.array(build(nnUNetTrainerMfNSDe_V1).loss.weight_factors)
    assert len(w1) == 5 and np.allclose(w1[:-1] / w1[1:], 2.0) and w1.sum() == pytest.approx(1.0)
    assert nnUNetTrainerMfNSDe_50epochs(make_plans(), "2d", 0, DATASET_JSON, torch.device("cpu")).num_epochs == 50
    ci = nnUNetTrainerMfNSDe_ci(make_plans(), "2d", 0, DATASET_JSON, torch.device("cpu"))
    assert (ci.num_epochs, ci.num_iterations_per_epoch) == (1, 2) and ci.initial_lr == pytest.approx(0.05)


def test_lr_schedule_cosine_from_paper_lr():
    tr = build(nnUNetTrainerMfNSDe)
    tr.lr_scheduler.step(0)
    assert tr.optimizer.param_groups[0]["lr"] == pytest.approx(0.05)
    tr.lr_scheduler.step(tr.num_epochs // 2)
    assert tr.optimizer.param_groups[0]["lr"] == pytest.approx((0.05 + 1e-5) / 2, rel=1e-3)
    tr.lr_scheduler.step(tr.num_epochs)
    assert tr.optimizer.param_groups[0]["lr"] == pytest.approx(1e-5)


@pytest.mark.parametrize("n_stages,patch", [(5, (64, 64)), (7, (128, 96)), (4, (48, 40))])
def test_ds_outputs_match_targets_count_and_shapes(n_stages, patch):
    tr = build(nnUNetTrainerMfNSDe, make_plans(n_stages, patch))
    scales = tr._get_deep_supervision_scales()
    n_rows = min(n_stages, 5)  # the fused output + DNANet's side heads on X(0, 1..L-2), then one head per coarse row
    assert len(scales) == (n_rows - 1) + (n_rows - 1)
    seg = torch.zeros((1, *patch), dtype=torch.int16)
    seg[0, 5, 7] = 1
    tf = tr.get_validation_transforms(scales, foreground_labels=[1])
    targets = tf(image=torch.zeros((1, *patch)), segmentation=seg)["segmentation"]
    out = tr.network(torch.zeros((2, 1, *patch)))
    # DeepSupervisionWrapper zips outputs and targets: a count mismatch would be truncated silently
    assert len(out) == len(targets) == len(scales)
    for o, t in zip(out, targets):
        assert tuple(o.shape[2:]) == tuple(t.shape[1:])
    assert all(int(t.sum()) == 1 for t in targets), "HF keeps the one-voxel PVS at every scale"
    assert any(isinstance(t, DownsampleSegForDSTransformHF) for t in tf.transforms)


def test_variants_change_one_thing():
    base, nohf = build(nnUNetTrainerMfNSDe), build(nnUNetTrainerMfNSDe_NoHF)
    assert nohf.hf_mode == "nearest" and base.hf_mode == "max"
    noatt = build(nnUNetTrainerMfNSDe_NoAttention)
    from nnunetv2_mfns.architectures.attention import CBAM
    n_att = lambda net: sum(p.numel() for m in net.modules() if isinstance(m, CBAM) for p in m.parameters())
    assert n_att(base.network) > 0 and n_att(noatt.network) == 0
    nods = build(nnUNetTrainerMfNSDe_NoDS)
    assert nods._get_deep_supervision_scales() is None
    assert isinstance(nods.network(torch.zeros((1, 1, 64, 64))), torch.Tensor)
    rec = build(nnUNetTrainerMfNSDe_nnUNetRecipe)
    assert isinstance(rec.optimizer, torch.optim.SGD) and rec.batch_size == 12
    assert type(rec.loss.loss).__name__ == "DC_and_CE_loss" and type(rec.network).__name__ == "MfNSDe"
    unet = build(nnUNetTrainerUNet2D_PaperRecipe)
    assert type(unet.network).__name__ == "PlainConvUNet" and isinstance(unet.optimizer, torch.optim.Adagrad)
    assert len(unet.network(torch.zeros((1, 1, 64, 64)))) == len(unet._get_deep_supervision_scales()) == 4


def test_inference_network_loads_training_weights_strictly():
    tr = build(nnUNetTrainerMfNSDe)
    inference_net = nnUNetTrainerMfNSDe.build_network_architecture(tr.plans_manager, tr.configuration_manager, 1, 2,
                                                                   enable_deep_supervision=False)
    inference_net.load_state_dict(tr.network.state_dict(), strict=True)
    tr.set_deep_supervision_enabled(False)
    assert isinstance(tr.network(torch.zeros((1, 1, 64, 64))), torch.Tensor)


def test_unsupported_plan_fails_at_construction():
    plans = make_plans()
    del plans["configurations"]["2d"]["architecture"]["arch_kwargs"]["strides"]
    with pytest.raises(ValueError, match="lacks"):
        nnUNetTrainerMfNSDe(plans, "2d", 0, DATASET_JSON, torch.device("cpu"))
    plans = make_plans()
    plans["configurations"]["2d"]["architecture"]["arch_kwargs"]["conv_op"] = "torch.nn.modules.conv.Conv1d"
    with pytest.raises(ValueError, match="Conv1d"):
        nnUNetTrainerMfNSDe(plans, "2d", 0, DATASET_JSON, torch.device("cpu"))


def fixed_batch_losses(trainer_cls, size: int, pvs_per_image: int, steps: int) -> list:
    """Recipe training steps on one synthetic batch of 4 images with short bright bars (2-pixel PVS)."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    tr = build(trainer_cls, make_plans(4, (size, size)))
    seg = np.zeros((4, 1, size, size), dtype=np.int16)
    for b in range(4):
        for _ in range(pvs_per_image):
            y, x = rng.integers(2, size - 2, size=2)
            seg[b, 0, y:y + 2, x] = 1
    img = (rng.normal(0, 0.3, size=seg.shape) + 2.5 * seg).astype(np.float32)
    tf = tr.get_validation_transforms(tr._get_deep_supervision_scales(), foreground_labels=[1])
    targets = [tf(image=torch.from_numpy(img[b]), segmentation=torch.from_numpy(seg[b]))["segmentation"]
               for b in range(4)]
    batch = {"data": torch.from_numpy(img),
             "target": [torch.stack([t[s] for t in targets]) for s in range(len(targets[0]))]}
    tr.network.train()
    return [tr.train_step(batch)["loss"] for _ in range(steps)]


def assert_loss_dropped(losses: list, by: float = 0.3) -> None:
    first, last = float(np.mean(losses[:3])), float(np.mean(losses[-3:]))
    assert last < first - by, f"loss did not drop clearly: {first:.3f} -> {last:.3f}"


@pytest.mark.parametrize("trainer_name", ["nnUNetTrainerMfNSDe", "nnUNetTrainerTriSegNet"])
def test_overfits_fixed_batch_on_cpu(trainer_name):
    """A few dozen Adagrad steps on one synthetic batch must lower the Dice loss clearly (this can fail)."""
    import nnunetv2_mfns.trainers as trainers
    assert_loss_dropped(fixed_batch_losses(getattr(trainers, trainer_name), size=48, pvs_per_image=8, steps=40))


def test_short_budgets_keep_training_mirroring_but_skip_validation_tta():
    from nnunetv2_mfns.trainers import nnUNetTrainer_demo, nnUNetTrainerMfNSDe_short
    demo = nnUNetTrainer_demo(make_plans(), "2d", 0, DATASET_JSON, torch.device("cpu"))
    _, _, _, mirror_axes = demo.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
    assert mirror_axes == (0, 1) and demo.inference_allowed_mirroring_axes is None
    assert (demo.num_epochs, demo.num_iterations_per_epoch, demo.save_every) == (3, 8, 1)
    short = nnUNetTrainerMfNSDe_short(make_plans(), "2d", 0, DATASET_JSON, torch.device("cpu"))
    short.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
    assert short.inference_allowed_mirroring_axes == (0, 1)


def test_epoch50_model_keeps_the_1000_epoch_schedule_and_stops_at_50():
    """Issue 11 item 5: the paper tested the epoch-50 model of a 1000-epoch run, not a 50-epoch anneal."""
    full, pick = build(nnUNetTrainerMfNSDe), build(nnUNetTrainerMfNSDe_50epochs)
    assert full.num_epochs == 1000 and pick.num_epochs == 50
    for epoch in (0, 25, 49):
        full.lr_scheduler.step(epoch)
        pick.lr_scheduler.step(epoch)
        assert pick.optimizer.param_groups[0]["lr"] == pytest.approx(full.optimizer.param_groups[0]["lr"], rel=1e-12)
    assert pick.optimizer.param_groups[0]["lr"] > 0.049  # 1000-epoch cosine barely moved by epoch 49
    # nnU-Net's run_training loops `range(current_epoch, num_epochs)` and then saves checkpoint_final.pth
    pick.current_epoch = 0
    assert len(range(pick.current_epoch, pick.num_epochs)) == 50
    from nnunetv2_mfns.trainers import nnUNetTrainerMfNSDe_50epochs_ci
    ci = build(nnUNetTrainerMfNSDe_50epochs_ci)
    assert ci.num_epochs == 1 and ci.lr_scheduler.max_steps == 1000


def test_one_shared_recipe_only_the_network_differs():
    from nnunetv2_mfns.trainers.paper_recipe import nnUNetTrainerPaperRecipe
    recipe_hooks = ("configure_optimizers", "_build_loss", "_set_batch_size_and_oversample",
                    "get_training_transforms", "get_validation_transforms")
    from nnunetv2_mfns.trainers import nnUNetTrainerIAANet, nnUNetTrainerTriSegNet
    for cls in (nnUNetTrainerMfNSDe, nnUNetTrainerUNet2D_PaperRecipe, nnUNetTrainerIAANet, nnUNetTrainerTriSegNet):
        assert issubclass(cls, nnUNetTrainerPaperRecipe)
        for hook in recipe_hooks:  # the recipe is inherited, never redefined per network
            assert all(hook not in vars(k) for k in cls.__mro__[:cls.__mro__.index(nnUNetTrainerPaperRecipe)]), \
                (cls.__name__, hook)
    assert not issubclass(nnUNetTrainerUNet2D_PaperRecipe, nnUNetTrainerMfNSDe)


@pytest.mark.parametrize("n_stages,patch,channels,classes", [(5, (64, 64), 1, 2), (6, (45, 53), 3, 3), (3, (40, 24), 1, 2)])
def test_trisegnet_trainer_recipe_and_ds_pairing(n_stages, patch, channels, classes):
    from nnunetv2_mfns.trainers import nnUNetTrainerTriSegNet, nnUNetTrainerTriSegNet_ci
    from nnunetv2_mfns.trainers.paper_recipe import nnUNetTrainerPaperRecipe
    dataset_json = dict(DATASET_JSON, channel_names={str(i): f"c{i}" for i in range(channels)},
                        labels={"background": 0, **{f"l{i}": i for i in range(1, classes)}})
    tr = nnUNetTrainerTriSegNet(make_plans(n_stages, patch), "2d", 0, dataset_json, torch.device("cpu"))
    assert isinstance(tr, nnUNetTrainerPaperRecipe)
    tr._set_batch_size_and_oversample()
    tr.network = tr.build_network_architecture(tr.plans_manager, tr.configuration_manager, channels, classes, True)
    tr.optimizer, tr.lr_scheduler = tr.configure_optimizers()
    tr.loss = tr._build_loss()
    assert type(tr.network).__name__ == "TriSegNet" and isinstance(tr.optimizer, torch.optim.Adagrad)
    assert tr.batch_size == 4 and type(tr.loss.loss).__name__ == "MemoryEfficientSoftDiceLoss"
    scales = tr._get_deep_supervision_scales()
    assert len(scales) == min(n_stages, 4) == len(tr.loss.weight_factors)
    targets = tr.get_validation_transforms(scales, foreground_labels=list(range(1, classes)))(
        image=torch.zeros((channels, *patch)), segmentation=torch.zeros((1, *patch), dtype=torch.int16))["segmentation"]
    out = tr.network(torch.zeros((1, channels, *patch)))
    assert [tuple(o.shape[1:]) for o in out] == [(classes, *t.shape[1:]) for t in targets]
    inference = nnUNetTrainerTriSegNet.build_network_architecture(tr.plans_manager, tr.configuration_manager,
                                                                  channels, classes, enable_deep_supervision=False)
    inference.load_state_dict(tr.network.state_dict(), strict=True)
    assert nnUNetTrainerTriSegNet_ci(make_plans(), "2d", 0, DATASET_JSON, torch.device("cpu")).num_epochs == 1


def test_checkpoints_from_before_the_shared_recipe_still_resume():
    """Optimizer states saved before param groups carried `lr_scale` load and follow the same schedule."""
    old, new = build(nnUNetTrainerMfNSDe), build(nnUNetTrainerMfNSDe)
    state = old.optimizer.state_dict()
    for group in state["param_groups"]:
        del group["lr_scale"]
    new.optimizer.load_state_dict(state)
    new.network.load_state_dict(old.network.state_dict(), strict=True)
    new.lr_scheduler.step(500)
    assert new.optimizer.param_groups[0]["lr"] == pytest.approx((0.05 + 1e-5) / 2, rel=1e-3)


def test_training_seed_from_environment_makes_initialisation_reproducible(monkeypatch):
    # mfns-compare --seeds passes MFNS_TRAINING_SEED=k; the same k gives the same initial network, another k not
    def first_weights(seed):
        monkeypatch.setenv("MFNS_TRAINING_SEED", str(seed))
        tr = build(nnUNetTrainerMfNSDe)
        assert tr.training_seed == seed
        return next(tr.network.parameters()).detach().clone()
    a, b, c = first_weights(3), first_weights(3), first_weights(4)
    assert torch.equal(a, b) and not torch.equal(a, c)
    monkeypatch.setenv("MFNS_TRAINING_SEED", "-1")
    with pytest.raises(ValueError, match="MFNS_TRAINING_SEED='-1'"):
        build(nnUNetTrainerMfNSDe)
