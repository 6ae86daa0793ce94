"""Network-switch variants of nnUNetTrainerMfNSDe (issue 10 item 3, issue 14).

Each class sets one class attribute, ``network_options`` (keyword switches of the MfNSDe constructor), and
nothing else: recipe, HF deep supervision, loss and schedule stay the paper's. The faithful build is
``nnUNetTrainerMfNSDe`` itself (empty ``network_options``). Measurements: docs/results/ (files named
``*curve*``) and docs/results/network_benchmark.md.
"""
from nnunetv2_mfns.trainers.nnUNetTrainerMfNSDe import nnUNetTrainerMfNSDe


class nnUNetTrainerMfNSDe_ResCBAM(nnUNetTrainerMfNSDe):
    """Nested nodes as DNANet's Res-CBAM block: nonlin(attention(conv block) + 1x1 shortcut)."""
    network_options = {"node_block": "res_cbam"}


class nnUNetTrainerMfNSDe_NeutralAttInit(nnUNetTrainerMfNSDe):
    """Attention gate layers shrunk after He init, so every gate starts at ~0.5 instead of saturated."""
    network_options = {"attention_init": "neutral"}


class nnUNetTrainerMfNSDe_ResCBAMNeutral(nnUNetTrainerMfNSDe):
    """Both fixes of issue 10 together: Res-CBAM nodes and neutral gate initialisation."""
    network_options = {"node_block": "res_cbam", "attention_init": "neutral"}


class nnUNetTrainerMfNSDe_CoarseAttention(nnUNetTrainerMfNSDe):
    """`fast` variant (issue 14): attention only on the coarse rows (1 and deeper), none on the full-resolution row and
    the fusion block, where the gates cost most (the spatial 7x7 gate and the gated copies of row 0)."""
    network_options = {"attention_from_row": 1}


class nnUNetTrainerMfNSDe_Fast(nnUNetTrainerMfNSDe):
    """`fast` variant (issue 14), not the paper's network: every node's first conv 1x1 (it reads the whole dense
    concatenation, so as 3x3 it holds most of the MACs) and attention only on the coarse rows."""
    network_options = {"input_projection": True, "attention_from_row": 1}


class nnUNetTrainerMfNSDe_CheckpointNodes(nnUNetTrainerMfNSDe):
    """The faithful network with its nested nodes and fusion recomputed in the backward pass (activation
    checkpointing): the same outputs and gradients, less training memory, more time (issue 14)."""
    network_options = {"checkpoint_nodes": True}


NETWORK_VARIANTS = [nnUNetTrainerMfNSDe_ResCBAM, nnUNetTrainerMfNSDe_NeutralAttInit,
                    nnUNetTrainerMfNSDe_ResCBAMNeutral, nnUNetTrainerMfNSDe_CoarseAttention, nnUNetTrainerMfNSDe_Fast,
                    nnUNetTrainerMfNSDe_CheckpointNodes]
