"""The built Lambda package: built for Lambda's Python 3.12 on the functions' architecture,
holding the runtime's dependencies only, within Lambda's size quotas."""

from __future__ import annotations

import re
import sys
import zipfile
from pathlib import Path
from typing import Any

from conftest import PACKAGE, python_in_package

LAMBDA_PYTHON = (3, 12)
LAMBDA_GLIBC = (2, 34)
"""The python3.12 runtime runs on Amazon Linux 2023, whose glibc is 2.34 (Lambda Developer
Guide, "Lambda runtimes"): a manylinux wheel newer than that would not load."""
ARCHITECTURES = {"x86_64": ("x86_64", 62), "arm64": ("aarch64", 183)}
"""A Lambda architecture: its wheel platform suffix and its ELF e_machine (EM_X86_64,
EM_AARCH64)."""
UNZIPPED_LIMIT = 250 * 1024 * 1024
"""Lambda's quota on a function's unzipped code (a zip uploaded through S3, as CDK does)."""
LEGACY_MANYLINUX = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
DEVELOPMENT_TOP_LEVELS = {
    # test and bench tools, the CDK, the Chalice CLI's own dependencies, packaging tools
    "pytest",
    "_pytest",
    "xdist",
    "moto",
    "ruff",
    "cfn_lint",
    "aws_cdk",
    "jsii",
    "constructs",
    "dicomweb_client",
    "click",
    "pip",
    "setuptools",
    "wheel",
    # the Lambda runtime provides these
    "boto3",
    "botocore",
    "s3transfer",
}
APP_FUNCTIONS = ("APIHandler", "IngestUpload", "JobsWorker", "Sweep")


def _names() -> list[str]:
    with zipfile.ZipFile(PACKAGE) as archive:
        return archive.namelist()


def _architecture(template: dict[str, Any]) -> str:
    """The one architecture of the stack's functions (Lambda's default: x86_64)."""
    (architecture,) = {
        tuple(template["Resources"][f]["Properties"].get("Architectures", ["x86_64"]))
        for f in APP_FUNCTIONS
    }
    return architecture[0]


def _platform_fits(platform: str, machine: str) -> bool:
    if platform == "any":
        return True
    match = re.fullmatch(r"manylinux_(\d+)_(\d+)_(\w+)", platform)
    if match:
        glibc, arch = (int(match[1]), int(match[2])), match[3]
    else:
        legacy, _, arch = platform.partition("_")
        glibc = LEGACY_MANYLINUX.get(legacy, (99, 0))
    return arch == machine and glibc <= LAMBDA_GLIBC


def _python_fits(python: str, abi: str) -> bool:
    if python.startswith("py3") or abi == "none":
        return True
    version = int(python.removeprefix("cp")[1:])
    wanted = LAMBDA_PYTHON[1]
    return version == wanted if abi.startswith("cp") else abi == "abi3" and version <= wanted


def test_checks_run_on_lambda_s_python_with_the_package_s_modules(package_dir: Path) -> None:
    """The package's app and native modules are imported here and in subprocesses of this
    interpreter: it must be the runtime's, and they the package's, not the venv's (`app`
    itself is imported by test_packaged_handler, once its environment is set)."""
    import numpy
    import PIL.Image
    import pydicom

    import chalicelib

    assert sys.version_info[:2] == LAMBDA_PYTHON, sys.version
    for module in (chalicelib, numpy, PIL.Image, pydicom):
        assert Path(module.__file__).is_relative_to(package_dir), module


def test_every_wheel_is_for_the_functions_runtime_and_architecture(
    template: dict[str, Any],
) -> None:
    for function in APP_FUNCTIONS:
        assert template["Resources"][function]["Properties"]["Runtime"] == "python3.12"
    machine, _ = ARCHITECTURES[_architecture(template)]
    wheels = {}
    with zipfile.ZipFile(PACKAGE) as archive:
        for name in archive.namelist():
            if name.endswith(".dist-info/WHEEL"):
                text = archive.read(name).decode()
                wheels[name.split("/")[0]] = re.findall(r"^Tag: (\S+)$", text, re.M)
    assert {"numpy", "pillow", "pydicom", "python_gdcm"} <= {w.split("-")[0] for w in wheels}
    for wheel, tags in wheels.items():
        fitting = [
            tag
            for tag in tags
            for python, abi, platform in [tag.split("-")]
            if _python_fits(python, abi) and _platform_fits(platform, machine)
        ]
        assert fitting, (wheel, tags)


def test_every_native_library_is_for_the_functions_architecture(
    template: dict[str, Any],
) -> None:
    _, e_machine = ARCHITECTURES[_architecture(template)]
    libraries = 0
    with zipfile.ZipFile(PACKAGE) as archive:
        for info in archive.infolist():
            with archive.open(info) as file:
                header = file.read(20)
            if header[:4] == b"\x7fELF":
                libraries += 1
                assert header[4] == 2, info.filename  # ELFCLASS64
                assert int.from_bytes(header[18:20], "little") == e_machine, info.filename
    assert libraries > 50


def test_package_holds_no_development_or_runtime_provided_package() -> None:
    top_levels = {name.split("/")[0] for name in _names()}
    distributions = {n.split("-")[0].lower() for n in top_levels if n.endswith(".dist-info")}
    assert "pydicom" in distributions
    assert not (top_levels | distributions) & DEVELOPMENT_TOP_LEVELS
    chalice = {name for name in _names() if name.startswith("chalice/")}
    assert chalice and not any(n.startswith("chalice/cli/") for n in chalice)


def test_package_fits_lambda_s_code_quotas() -> None:
    with zipfile.ZipFile(PACKAGE) as archive:
        unzipped = sum(info.file_size for info in archive.infolist())
    assert PACKAGE.stat().st_size < 50 * 1024 * 1024  # direct upload (chalice deploy)
    assert unzipped < UNZIPPED_LIMIT


def test_package_leaves_out_what_the_app_never_imports(package_dir: Path) -> None:
    """Dependencies' test suites and type stubs at any depth, and Pillow's AVIF codec
    (infra/packaging.py NOT_NEEDED_ON_LAMBDA); AVIF is then reported unsupported, not
    failing, and the formats the app renders remain."""
    left = [
        name
        for name in _names()
        if not name.startswith(("app.py", "chalicelib/", "chalice/"))
        and (re.search(r"(^|/)tests?/", name) or name.endswith(".pyi") or "avif" in name.lower())
    ]
    assert left == [name for name in left if name.endswith("AvifImagePlugin.pyc")]
    probe = (
        "from PIL import features, AvifImagePlugin; "
        "print(AvifImagePlugin.SUPPORTED, features.check('jpg'), features.check('zlib'))"
    )
    result = python_in_package(package_dir, probe)
    assert result.stdout.split() == ["False", "True", "True"], result.stderr


def test_trimming_skips_matches_inside_a_folder_it_removed(tmp_path: Path) -> None:
    """`**/tests` matches `lib/tests` and `lib/tests/unit/tests`: the second is gone with the
    first, and the package is still trimmed (FileNotFoundError before)."""
    from infra.packaging import remove_not_needed

    nested = tmp_path / "lib" / "tests" / "unit" / "tests"
    nested.mkdir(parents=True)
    (nested / "test_x.py").write_text("")
    (tmp_path / "lib" / "core.py").write_text("")
    (tmp_path / "chalicelib" / "tests").mkdir(parents=True)
    remove_not_needed(tmp_path)
    assert not (tmp_path / "lib" / "tests").exists()
    assert (tmp_path / "lib" / "core.py").exists()
    assert (tmp_path / "chalicelib" / "tests").exists()  # the app's code is kept whole
