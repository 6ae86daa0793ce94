"""Planted bugs for tests/test_gpu_proxies.py (issue 24), applied at interpreter start when PLANT is set.
Each plant rewrites one line of a method's source in memory (the repository is not touched)."""
import os
PLANT = os.environ.get("PLANT", "")

def _patch(cls, meth, old, new, *more):
    import inspect, textwrap, sys
    src = textwrap.dedent(inspect.getsource(getattr(cls, meth)))
    pairs = [(old, new)] + list(zip(more[::2], more[1::2]))
    for o, n in pairs:
        assert o in src, f"plant {PLANT}: {o!r} not in {cls.__name__}.{meth}"
        src = src.replace(o, n)
    ns = dict(vars(sys.modules[cls.__module__]))
    exec(compile(src, f"<plant {PLANT}>", "exec"), ns)
    setattr(cls, meth, ns[meth])
    print(f"[plant {PLANT}] {cls.__name__}.{meth}: {old!r} -> {new!r}", file=sys.stderr)

if PLANT:
    import torch  # noqa
    if PLANT == "fp16exp":  # a gate written as exp(z) / (1 + exp(z)): fine in fp32, overflows fp16 at z > 11
        from nnunetv2_mfns.architectures.attention import ChannelAttention
        _patch(ChannelAttention, "forward", "return torch.sigmoid(a + m)",
               "return torch.exp(a + m) / (1 + torch.exp(a + m))")
    elif PLANT == "bf16cast":  # IAANet: token logits written in place into an fp32 map, without a cast
        from nnunetv2_mfns.architectures.iaanet import IAANet
        _patch(IAANet, "forward", "rows.append(background.index_copy(1, idx, logits.t().to(background.dtype)))",
               "row = background.float().clone(); row[:, idx] = logits.t(); rows.append(row)")
    elif PLANT == "compile_rand":  # a random op left in the spatial gate's forward
        from nnunetv2_mfns.architectures.attention import SpatialAttention
        _patch(SpatialAttention, "forward", "return torch.sigmoid(self.conv(desc))",
               "return torch.sigmoid(self.conv(desc)) * (1 + 0.01 * torch.rand_like(desc[:, :1]))")
    elif PLANT == "ddp_rank_dice":  # the recipe's Dice not told about DDP: batch Dice per rank, not global
        from nnunetv2_mfns.trainers.paper_recipe import nnUNetTrainerPaperRecipe
        _patch(nnUNetTrainerPaperRecipe, "_build_loss", "ddp=self.is_ddp", "ddp=False")
    elif PLANT == "ddp_scaled":  # the loss multiplied by the world size under DDP (as if DDP summed gradients)
        from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
        _patch(nnUNetTrainer, "train_step", "l = self.loss(output, target)",
               "l = self.loss(output, target) * (torch.distributed.get_world_size() if self.is_ddp else 1)")
