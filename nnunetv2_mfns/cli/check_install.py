"""`mfns-check-install`: shows whether nnU-Net's stock CLI will find the plugin's trainers, and repairs it.

`pip install .` places `nnunetv2_mfns_discovery.pth` in site-packages. An editable install
(`pip install -e .`) does not carry that file (setuptools builds editable wheels without custom build
steps); `mfns-check-install --write-pth` writes it into the active environment's site-packages.
"""
import argparse
import os
import subprocess
import sys
import sysconfig
from typing import List, Optional

from nnunetv2_mfns import _discovery

PTH_NAME = "nnunetv2_mfns_discovery.pth"


def pth_source() -> str:
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), PTH_NAME)


def installed_pth_path() -> str:
    return os.path.join(sysconfig.get_paths()["purelib"], PTH_NAME)


def trainer_visible_in_fresh_interpreter(trainer: str = "nnUNetTrainerMfNSDe") -> bool:
    """Asks a new interpreter (as the stock CLI would start) to find the trainer the way nnU-Net does."""
    code = ("from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name as f; "
            f"print(f('{trainer}').__name__)")
    env = {k: v for k, v in os.environ.items() if k != "nnUNet_extTrainer"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    return proc.returncode == 0 and proc.stdout.strip().endswith(trainer)


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="Check (and repair) discovery of the plugin's trainers by the "
                                                 "stock nnU-Net command-line tools.")
    parser.add_argument("--write-pth", action="store_true",
                        help=f"write {PTH_NAME} into this environment's site-packages (needed after pip install -e)")
    args = parser.parse_args(argv)

    if args.write_pth:
        target = installed_pth_path()
        with open(pth_source()) as src, open(target, "w") as dst:
            dst.write(src.read())
        print(f"wrote {target}")

    target = installed_pth_path()
    print(f"plugin trainer folder: {_discovery.EXT_TRAINER_DIR}")
    print(f"discovery file {target}: {'present' if os.path.isfile(target) else 'MISSING'}")
    ok = trainer_visible_in_fresh_interpreter()
    print(f"nnUNetv2_train -tr nnUNetTrainerMfNSDe in a fresh shell: {'found' if ok else 'NOT FOUND'}")
    if not ok:
        print("fix: run `mfns-check-install --write-pth` (editable installs), or reinstall with `pip install .`",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
