"""Network-switch variants of nnUNetTrainerMfNSDe (issue 10 item 3, issue 14, issue 22).

Each class sets one class attribute, ``network_options`` (keyword switches of the MfNSDe constructor), and
nothing else: recipe, HF deep supervision, loss and schedule stay the paper's. The faithful build (DNANet's
Res-CBAM encoder and nodes, DNANet's widths, full-resolution side heads) is ``nnUNetTrainerMfNSDe`` itself
(empty ``network_options``). ``nnUNetTrainerMfNSDe_V1`` is the build this project trained before issue 22
(``mfns_de.V1_BUILD``); the issue-10 and issue-14 variants below keep meaning what they meant then, i.e. a
switch on top of the v1 build, so that their committed curves stay reproducible. Measurements: docs/results/
(files named ``*curve*``) and docs/results/network_benchmark.md.
"""
from nnunetv2_mfns.architectures.mfns_de import V1_BUILD
from nnunetv2_mfns.trainers.nnUNetTrainerMfNSDe import nnUNetTrainerMfNSDe


class nnUNetTrainerMfNSDe_V1(nnUNetTrainerMfNSDe):
    """The pre-issue-22 build: nnU-Net's PlainConvEncoder, conv block -> CBAM nodes without shortcut, plan widths
    capped at 256, max-pool/align_corners=False resampling, one DS head per row. Every result committed before
    issue 22 under the name nnUNetTrainerMfNSDe was made with this network."""
    network_options = dict(V1_BUILD)


class nnUNetTrainerMfNSDe_ResCBAM(nnUNetTrainerMfNSDe):
    """v1 build with its nested nodes as DNANet's Res-CBAM block: nonlin(attention(conv block) + 1x1 shortcut)."""
    network_options = {**V1_BUILD, "node_block": "res_cbam"}


class nnUNetTrainerMfNSDe_NeutralAttInit(nnUNetTrainerMfNSDe):
    """v1 build with its attention gate layers shrunk after He init, so every gate starts at ~0.5."""
    network_options = {**V1_BUILD, "attention_init": "neutral"}


class nnUNetTrainerMfNSDe_ResCBAMNeutral(nnUNetTrainerMfNSDe):
    """Both fixes of issue 10 together on the v1 build: Res-CBAM nodes and neutral gate initialisation."""
    network_options = {**V1_BUILD, "node_block": "res_cbam", "attention_init": "neutral"}


class nnUNetTrainerMfNSDe_CoarseAttention(nnUNetTrainerMfNSDe):
    """`fast` variant (issue 14) of the v1 build: attention only on the coarse rows (1 and deeper), none on the
    full-resolution row and the fusion block, where the gates cost most."""
    network_options = {**V1_BUILD, "attention_from_row": 1}


class nnUNetTrainerMfNSDe_Fast(nnUNetTrainerMfNSDe):
    """`fast` variant (issue 14) of the v1 build, not the paper's network: every node's first conv 1x1 (it reads the
    whole dense concatenation, so as 3x3 it holds most of the MACs) and attention only on the coarse rows."""
    network_options = {**V1_BUILD, "input_projection": True, "attention_from_row": 1}


class nnUNetTrainerMfNSDe_CheckpointNodes(nnUNetTrainerMfNSDe):
    """The faithful network with its nested nodes and fusion recomputed in the backward pass (activation
    checkpointing): the same outputs and gradients, less training memory, more time (issue 14)."""
    network_options = {"checkpoint_nodes": True}


NETWORK_VARIANTS = [nnUNetTrainerMfNSDe_V1, nnUNetTrainerMfNSDe_ResCBAM, nnUNetTrainerMfNSDe_NeutralAttInit,
                    nnUNetTrainerMfNSDe_ResCBAMNeutral, nnUNetTrainerMfNSDe_CoarseAttention, nnUNetTrainerMfNSDe_Fast,
                    nnUNetTrainerMfNSDe_CheckpointNodes]
