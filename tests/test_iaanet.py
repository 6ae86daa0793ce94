"""IAANet (dense 2D re-implementation) and its trainer: shapes, gradients, strict loading, region step, overfit."""
import numpy as np
import pytest
import torch
from torch import nn

from nnunetv2_mfns.architectures.iaanet import IAANet, rpn_stages, sine_positions_2d
from nnunetv2_mfns.architectures.iaanet_regions import select_cells, select_token_pixels
from test_trainers import (DATASET_JSON, assert_loss_dropped, build, fixed_batch_losses,  # noqa: F401
                           make_plans, results_env)  # results_env: autouse fixture


def make_net(input_channels=1, num_classes=2, n_stages=5, strides=None, deep_supervision=True, **kw):
    torch.manual_seed(0)
    strides = strides or [[1, 1]] + [[2, 2]] * (n_stages - 1)
    net = IAANet(input_channels, n_stages, [min(32 * 2 ** i, 512) for i in range(n_stages)], nn.Conv2d, 3, strides,
                 2, num_classes, 2, True, nn.InstanceNorm2d, {"eps": 1e-5, "affine": True}, None, None,
                 nn.LeakyReLU, {"inplace": True}, deep_supervision=deep_supervision, **kw)
    net.apply(net.initialize)
    return net


@pytest.mark.parametrize("channels,classes,shape,n_stages,strides", [
    (1, 2, (33, 47), 5, None),                                     # odd sizes, not divisible by the stride
    (3, 3, (40, 24), 4, None),                                     # 3 channels, 3 classes
    (1, 2, (20, 64), 6, [[1, 1], [1, 2], [2, 2], [2, 2], [2, 2], [2, 2]]),  # anisotropic strides
])
def test_output_shapes_over_plans(channels, classes, shape, n_stages, strides):
    net = make_net(channels, classes, n_stages, strides)
    seg, obj = net(torch.randn(2, channels, *shape))
    assert seg.shape == (2, classes, *shape)
    scale = net.get_deep_supervision_scales()[1]
    assert obj.shape == (2, classes, *[int(round(s * f)) for s, f in zip(shape, scale)])
    net.decoder.deep_supervision = False
    assert net(torch.randn(1, channels, *shape)).shape == (1, classes, *shape)


def test_rpn_trunk_takes_plan_stages_up_to_stride_8():
    assert rpn_stages([[1, 1], [2, 2], [2, 2], [2, 2], [2, 2]]) == (4, [8, 8])
    assert rpn_stages([[1, 1], [1, 2], [2, 2], [2, 2], [2, 2]]) == (5, [8, 16])
    assert rpn_stages([[1, 1], [2, 2]]) == (2, [2, 2])  # shallow plan: every stage


def test_gradients_reach_every_parameter():
    net = make_net()
    seg, obj = net(torch.randn(2, 1, 32, 40))
    (seg.square().mean() + obj.square().mean()).backward()
    dead = [n for n, p in net.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not dead, f"no gradient: {dead}"


def test_deep_supervision_off_loads_the_same_weights_strictly():
    train_net, infer_net = make_net(deep_supervision=True), make_net(deep_supervision=False)
    infer_net.load_state_dict(train_net.state_dict(), strict=True)
    train_net.eval(), infer_net.eval()
    x = torch.randn(1, 1, 40, 40)
    with torch.no_grad():
        assert torch.equal(train_net(x)[0], infer_net(x))


def test_pixels_outside_kept_boxes_are_background():
    net = make_net(max_tokens=64).eval()
    with torch.no_grad():
        seg = net(torch.randn(1, 1, 48, 48))[0]
    prob_fg = torch.softmax(seg, 1)[0, 1]
    outside = seg[0, 0] == net.outside_logit
    assert int((~outside).sum()) == 64 and float(prob_fg[outside].max()) < 1e-4


def test_region_step_confidence_growth_fallback_budget():
    scores = torch.zeros(1, 4, 4)
    scores[0, 1, 2] = 0.9  # one confident cell of 8 x 8 pixels at rows 8..15, cols 16..23
    (idx,) = select_token_pixels(scores, (32, 32), (8, 8), 4, 0.2, 5, 0, 10_000)
    rows, cols = idx // 32, idx % 32
    assert len(idx) == 16 * 16 and (int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max())) == (4, 19, 12, 27)
    # nothing above the threshold (an empty slice): the top-5 cells, as the original, also at inference
    keep = select_cells(torch.linspace(0, 0.1, 16), 0.2, 5, 0)
    assert keep.tolist() == [False] * 11 + [True] * 5
    # training tops up with random cells (the original's negatives), seeded by torch's generator
    torch.manual_seed(1)
    keep = select_cells(torch.tensor([0.9] + [0.0] * 15), 0.2, 1, 5)
    assert int(keep.sum()) == 5 and bool(keep[0])
    # the token budget keeps the best box's pixels first, deterministically
    scores[0, 3, 0] = 0.5
    a = select_token_pixels(scores, (32, 32), (8, 8), 0, 0.2, 5, 0, 70)[0]
    b = select_token_pixels(scores, (32, 32), (8, 8), 0, 0.2, 5, 0, 70)[0]
    assert torch.equal(a, b) and len(a) == 70
    assert int(((a // 32 >= 8) & (a // 32 < 16) & (a % 32 >= 16) & (a % 32 < 24)).sum()) == 64


def test_sine_positions_follow_detr():
    pos = sine_positions_2d(5, 7, 16, torch.device("cpu"))
    assert pos.shape == (35, 16) and float(pos.abs().max()) <= 1.0
    # first half encodes y only, second half x only
    grid = pos.view(5, 7, 16)
    assert torch.allclose(grid[:, 0, :8], grid[:, 6, :8]) and torch.allclose(grid[0, :, 8:], grid[4, :, 8:])


def test_trainer_uses_the_shared_recipe_and_two_ds_outputs():
    from nnunetv2_mfns.trainers import nnUNetTrainerIAANet, nnUNetTrainerIAANet_ci
    from nnunetv2_mfns.trainers.paper_recipe import nnUNetTrainerPaperRecipe
    tr = build(nnUNetTrainerIAANet, make_plans(5, (48, 40)))
    assert isinstance(tr, nnUNetTrainerPaperRecipe) and type(tr.network).__name__ == "IAANet"
    assert isinstance(tr.optimizer, torch.optim.Adagrad) and tr.batch_size == 4
    assert type(tr.loss.loss).__name__ == "MemoryEfficientSoftDiceLoss"
    scales = tr._get_deep_supervision_scales()
    assert scales == [[1.0, 1.0], [0.125, 0.125]] == tr.network.get_deep_supervision_scales()
    targets = tr.get_validation_transforms(scales, foreground_labels=[1])(
        image=torch.zeros((1, 48, 40)), segmentation=torch.zeros((1, 48, 40), dtype=torch.int16))["segmentation"]
    out = tr.network(torch.zeros((1, 1, 48, 40)))
    assert [tuple(o.shape[2:]) for o in out] == [tuple(t.shape[1:]) for t in targets]
    ci = nnUNetTrainerIAANet_ci(make_plans(), "2d", 0, DATASET_JSON, torch.device("cpu"))
    assert (ci.num_epochs, ci.num_iterations_per_epoch) == (1, 2)
    plans = make_plans()
    plans["configurations"]["2d"]["architecture"]["arch_kwargs"]["conv_op"] = "torch.nn.modules.conv.Conv3d"
    with pytest.raises(ValueError, match="IAANet supports Conv2d"):
        nnUNetTrainerIAANet(plans, "2d", 0, DATASET_JSON, torch.device("cpu"))


def test_trainer_overfits_fixed_batch_on_cpu():
    """Adagrad steps of the shared recipe on one synthetic batch must lower the DS Dice loss (can fail)."""
    from nnunetv2_mfns.trainers import nnUNetTrainerIAANet
    assert_loss_dropped(fixed_batch_losses(nnUNetTrainerIAANet, size=32, pvs_per_image=5, steps=20))


def test_transformer_runs_at_a_fixed_fraction_of_the_recipe_schedule():
    from nnunetv2_mfns.trainers import nnUNetTrainerIAANet
    tr = build(nnUNetTrainerIAANet, make_plans(4, (32, 32)))
    trunks, transformer = tr.optimizer.param_groups
    assert {id(p) for p in transformer["params"]} == {id(p) for p in tr.network.decoder.parameters()}
    assert len(trunks["params"]) + len(transformer["params"]) == len(list(tr.network.parameters()))
    for epoch in (0, 500):
        tr.lr_scheduler.step(epoch)
        assert transformer["lr"] == pytest.approx(trunks["lr"] * 0.01)
    assert trunks["lr"] == pytest.approx((0.05 + 1e-5) / 2, rel=1e-3)
