"""Suite-wide settings, applied before any test module imports torch.

On a 2-core machine nnU-Net runs torch with one thread per core next to its augmentation and export
worker processes. GNU OpenMP's default busy-waiting then makes every waiting thread spin on a core that
another process needs: a MfNS_De forward pass measured 3-5 s instead of 0.23 s. Passive waiting removes
that (measured in the same run), and it is inherited by the nnU-Net subprocesses the tests start.
"""
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402 (after the environment setting above, which must precede any torch import)


@pytest.fixture
def nnunet_dirs(tmp_path, monkeypatch):
    """nnU-Net's three folders under tmp_path, exported for the test and the console scripts it starts."""
    from tiny_dataset import nnunet_env
    env = nnunet_env(tmp_path)
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(var, env[var])
    return env
