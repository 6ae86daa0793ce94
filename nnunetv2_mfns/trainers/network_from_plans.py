"""Plans -> constructor kwargs for the plugin's networks, which all mirror PlainConvUNet's constructor."""
from typing import Sequence, Tuple

from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager

# constructor arguments of PlainConvUNet that the plans must provide for our networks to honour them
REQUIRED_ARCH_KWARGS = ("n_stages", "features_per_stage", "conv_op", "kernel_sizes", "strides")
PLAIN_CONV_UNET_KWARGS = {"n_stages", "features_per_stage", "conv_op", "kernel_sizes", "strides", "n_conv_per_stage",
                          "n_conv_per_stage_decoder", "conv_bias", "norm_op", "norm_op_kwargs", "dropout_op",
                          "dropout_op_kwargs", "nonlin", "nonlin_kwargs"}


def plain_conv_arch_kwargs(configuration_manager: ConfigurationManager, network: str,
                           conv_ops: Sequence[str] = ("Conv2d",)) -> Tuple[dict, Tuple[str, ...]]:
    """The plans' architecture kwargs mapped onto a PlainConvUNet-like constructor (kwargs, req_import).

    Raises ValueError (at trainer construction, not in the first forward pass) when the configuration
    cannot drive `network`, e.g. a plan for an architecture without per-stage strides, or a 3d plan for a
    2D network.
    """
    kwargs = dict(configuration_manager.network_arch_init_kwargs)
    req_import = tuple(configuration_manager.network_arch_init_kwargs_req_import)
    missing = [k for k in REQUIRED_ARCH_KWARGS if k not in kwargs]
    if missing:
        raise ValueError(f"{network} cannot be built from configuration '{configuration_manager.configuration}' "
                         f"of architecture {configuration_manager.network_arch_class_name}: its plan lacks "
                         f"{missing}. Use a plan made by nnU-Net's default planner (PlainConvUNet).")
    if "n_conv_per_stage" not in kwargs:
        if "n_blocks_per_stage" in kwargs:  # residual-encoder plans: keep the encoder depth they ask for
            kwargs["n_conv_per_stage"] = kwargs.pop("n_blocks_per_stage")
        else:
            raise ValueError(f"{network} needs 'n_conv_per_stage' (or 'n_blocks_per_stage') in the plan")
    kwargs.setdefault("n_conv_per_stage_decoder", kwargs["n_conv_per_stage"][:-1])
    kwargs = {k: v for k, v in kwargs.items() if k in PLAIN_CONV_UNET_KWARGS}
    req_import = tuple(k for k in req_import if k in kwargs)
    conv_op = str(kwargs["conv_op"])
    if not any(conv_op.endswith(c) for c in conv_ops):
        raise ValueError(f"{network} supports {' and '.join(conv_ops)} plans (configuration "
                         f"'{configuration_manager.configuration}'), the plan asks for {conv_op}")
    return kwargs, req_import
