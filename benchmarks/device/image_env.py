"""An interpreter that sees only the GPU image's packages, to prove the device kit on a CPU machine.

    .venv/bin/python benchmarks/device/image_env.py /tmp/imgenv
    bash benchmarks/device/prepare.sh --python-version 3.11 --out /tmp/kit311
    PYTHON=/tmp/imgenv/bin/python bash benchmarks/device/check.sh --cpu --quick --wheels /tmp/kit311

Creates a venv at DEST (same base Python as the running one, no packages of its own) whose only extra
search path is DEST/image_site: symbolic links to the installed files of exactly those distributions of the
running interpreter that benchmarks/device/image_packages.txt lists (torch, numpy, scipy, pandas, ...).
What the image has but this interpreter lacks is reported and left out. check.sh then installs the kit
into it as it would on the node: if the kit missed a package the project imports, the check fails here.
"""
import argparse
import importlib.metadata as md
import os
import re
import subprocess
import sys
from pathlib import Path

IMAGE_LIST = Path(__file__).with_name("image_packages.txt")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name.strip().lower())


def image_packages() -> set:
    return {_norm(line) for line in IMAGE_LIST.read_text().splitlines() if line.strip() and not line.startswith("#")}


def link_distributions(dest: Path, wanted: set) -> tuple:
    """Links every top-level file or folder of each wanted installed distribution into dest."""
    dest.mkdir(parents=True, exist_ok=True)
    found = set()
    for dist in md.distributions():
        name = _norm(dist.metadata["Name"])
        if name not in wanted or name in found:
            continue
        found.add(name)
        for top in {f.parts[0] for f in dist.files or [] if f.parts[0] not in ("..", "__pycache__")}:
            src, dst = Path(dist.locate_file(top)), dest / top
            if top.endswith(".pth") or not src.exists() or dst.exists():
                continue
            os.symlink(src, dst)
    return found, wanted - found


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dest", type=Path, help="new venv folder (must not exist)")
    args = p.parse_args(argv)
    if args.dest.exists():
        print(f"error: {args.dest} exists", file=sys.stderr)
        return 2
    subprocess.run([os.path.join(sys.base_prefix, "bin", f"python{sys.version_info.major}.{sys.version_info.minor}"),
                    "-m", "venv", "--without-pip", str(args.dest)], check=True)
    site = args.dest / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"
    found, missing = link_distributions(args.dest / "image_site", image_packages())
    (site / "image_site.pth").write_text(str((args.dest / "image_site").resolve()) + "\n")
    print(f"{args.dest}: {len(found)} of the image's packages linked from {sys.prefix}; not installed here, so "
          f"left out: {', '.join(sorted(missing))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
