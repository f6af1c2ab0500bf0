"""The Lambda package: `chalice package` run in-process with Python 3.12, then precompiled.

Used by `make package` (`python -m infra.packaging`) and by the stack's Chalice construct, so
that the zip that is tested is the zip that is deployed. Chalice's packager only warns when a
dependency has no wheel for Lambda ("Could not install dependencies") and ships a package that
fails at import on Lambda: here that warning is an error. The package gets `.pyc` files
(unchecked-hash, PEP 552) because Lambda's `/var/task` is read-only: without them every cold
start compiles every module it imports. To stay under Lambda's 50 MB direct upload, the
dependencies' test suites, type stubs and numpy's f2py are left out, shared libraries that a
wheel holds under several names (no symlinks in wheels: python-gdcm ships each three times)
are kept under the name the loader asks for, and the dependencies ship as `.pyc` only
(sourceless, PEP 3147's legacy layout); the app (`app.py`, `chalicelib/`, Chalice's runtime)
keeps its sources for readable tracebacks.
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import hashlib
import io
import os
import py_compile
import shutil
import struct
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PRECOMPILED_CACHE = ROOT / "build" / "precompiled"
"""Precompiled zips by content digest: `make package` and `make synth` compile once."""
LAMBDA_PYTHON = (3, 12)
DIRECT_UPLOAD_LIMIT = 50 * 1024 * 1024
"""Lambda's limit on a zip uploaded directly (what `chalice deploy` does)."""
MISSING_DEPENDENCIES = "Could not install dependencies"
APP_CODE = ("app.py", "chalicelib", "chalice")
"""Shipped with sources beside their `.pyc`; everything else is a dependency."""
NOT_NEEDED_ON_LAMBDA = (
    "**/tests",
    "**/test",
    "**/*.pyi",
    "numpy/f2py",
    "pydicom/data/test_files",
    "PIL/_avif.*",
    "pillow.libs/libavif-*",
)
"""Parts of the dependencies that the app never imports (globs from the package root, `**`
for any depth): test suites, type stubs, f2py, and Pillow's AVIF codec (2.2 MB zipped; the
app renders PNG and JPEG, and Pillow's AVIF plugin is optional: without `_avif` it reports
AVIF unsupported)."""


class PackagingError(RuntimeError):
    """The package would not load on Lambda, or could not be uploaded."""


def package(output_dir: Path, stage: str, chalice_config: dict[str, Any] | None = None) -> Path:
    """Write `deployment.zip` and `sam.json` for `stage` into `output_dir`; return the zip."""
    if sys.version_info[:2] != LAMBDA_PYTHON:
        raise PackagingError(
            f"packaging needs Python {'.'.join(map(str, LAMBDA_PYTHON))} (the Lambda runtime's), "
            f"not {sys.version.split()[0]}: wheels are chosen for the packaging interpreter"
        )
    from chalice import api

    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")  # the packager wants one, any
    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        api.package_app(str(ROOT), str(output_dir), stage, chalice_config=chalice_config)
    if MISSING_DEPENDENCIES in log.getvalue():
        _forget_cached_dependencies()
        raise PackagingError(log.getvalue().strip())
    zip_path = output_dir / "deployment.zip"
    precompile(zip_path)
    size = zip_path.stat().st_size
    if size >= DIRECT_UPLOAD_LIMIT:
        raise PackagingError(
            f"{zip_path} is {size:,} bytes, over Lambda's {DIRECT_UPLOAD_LIMIT:,}-byte direct "
            f"upload: move what the Lambda does not need out of requirements.txt"
        )
    return zip_path


def _forget_cached_dependencies() -> None:
    """Chalice reuses its dependency zip by requirements hash: drop a broken one."""
    for cached in (ROOT / ".chalice" / "deployments").glob("*.zip"):
        cached.unlink()


def precompile(zip_path: Path) -> None:
    """Add unchecked-hash `.pyc` files beside every module of the zip, in place (or take the
    result of an earlier run on the same content)."""
    cached = PRECOMPILED_CACHE / f"{_content_digest(zip_path)}.zip"
    if not cached.exists():
        _compile_into(zip_path)
        PRECOMPILED_CACHE.mkdir(parents=True, exist_ok=True)
        for stale in PRECOMPILED_CACHE.glob("*.zip"):
            stale.unlink()
        shutil.copyfile(zip_path, cached)
    shutil.copyfile(cached, zip_path)


def _content_digest(zip_path: Path) -> str:
    """The digest of the zip's names and contents (CRC-32s), not of its timestamps, and of
    this module (how the zip is precompiled)."""
    with zipfile.ZipFile(zip_path) as archive:
        entries = sorted((i.filename, i.CRC, i.file_size) for i in archive.infolist())
    digest = hashlib.sha256(repr(entries).encode())
    digest.update(Path(__file__).read_bytes())
    return digest.hexdigest()[:32]


def _compile_into(zip_path: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "tree"
        with zipfile.ZipFile(zip_path) as archive:
            archive.extractall(tree)
        remove_not_needed(tree)
        _drop_library_copies(tree)
        unchecked = py_compile.PycInvalidationMode.UNCHECKED_HASH
        for top in sorted(tree.iterdir()):
            if top.name in APP_CODE:
                compile_path = compileall.compile_file if top.is_file() else compileall.compile_dir
                compile_path(top, quiet=2, invalidation_mode=unchecked)
            elif top.is_dir() or top.suffix == ".py":
                compile_path = compileall.compile_file if top.is_file() else compileall.compile_dir
                compile_path(top, quiet=2, legacy=True, invalidation_mode=unchecked)
                for source in [top] if top.is_file() else top.rglob("*.py"):
                    if source.with_suffix(".pyc").exists():
                        source.unlink()
        rebuilt = Path(tmp) / "deployment.zip"
        with zipfile.ZipFile(rebuilt, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
            for path in sorted(tree.rglob("*")):
                if path.is_file():
                    archive.write(path, path.relative_to(tree).as_posix())
        rebuilt.replace(zip_path)


def remove_not_needed(tree: Path) -> None:
    """Remove what `NOT_NEEDED_ON_LAMBDA` matches in the unpacked package `tree`, the app's
    code excepted."""
    for pattern in NOT_NEEDED_ON_LAMBDA:
        for path in list(tree.glob(pattern)):
            # skip a match inside a folder removed before it (`a/tests/b/tests`)
            if path.relative_to(tree).parts[0] not in APP_CODE and path.exists():
                shutil.rmtree(path) if path.is_dir() else path.unlink()


def _drop_library_copies(tree: Path) -> None:
    """Of byte-identical shared libraries in one folder, keep the names some library of the
    package needs (ELF DT_NEEDED); the others are copies a symlink would have been."""
    libraries = [p for p in tree.rglob("*.so*") if p.is_file() and _is_elf(p)]
    needed = set().union(*(_needed_libraries(p) for p in libraries))
    groups: dict[tuple[Path, str], list[Path]] = {}
    for path in libraries:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        groups.setdefault((path.parent, digest), []).append(path)
    for copies in groups.values():
        kept = [p for p in copies if p.name in needed]
        if len(copies) > 1 and kept:
            for path in set(copies) - set(kept):
                path.unlink()


def _is_elf(path: Path) -> bool:
    with path.open("rb") as f:
        return f.read(4) == b"\x7fELF"


def _needed_libraries(path: Path) -> set[str]:
    """DT_NEEDED names of a little-endian ELF64 file (what the loader will look up)."""
    data = path.read_bytes()
    if data[4] != 2 or data[5] != 1:  # ELFCLASS64, ELFDATA2LSB: all Lambda x86_64 wheels
        return set()
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [
        struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)
    ]
    names: set[str] = set()
    for _, kind, _, _, offset, size, link, _, _, _ in sections:
        if kind != 6:  # SHT_DYNAMIC
            continue
        strtab = sections[link][4]
        for position in range(offset, offset + size, 16):
            tag, value = struct.unpack_from("<qQ", data, position)
            if tag == 0:
                break
            if tag == 1:  # DT_NEEDED
                end = data.index(b"\0", strtab + value)
                names.add(data[strtab + value : end].decode())
    return names


def sizes(zip_path: Path) -> tuple[int, int]:
    """(zipped, unzipped) bytes."""
    with zipfile.ZipFile(zip_path) as archive:
        return zip_path.stat().st_size, sum(i.file_size for i in archive.infolist())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", default="dev")
    parser.add_argument("--out", type=Path, help="default: build/lambda/{stage}")
    args = parser.parse_args()
    try:
        zip_path = package(args.out or ROOT / "build" / "lambda" / args.stage, args.stage)
    except PackagingError as error:
        sys.exit(f"make package failed: {error}")
    zipped, unzipped = sizes(zip_path)
    print(f"{zip_path}: {zipped / 1e6:.1f} MB zipped, {unzipped / 1e6:.1f} MB unzipped")


if __name__ == "__main__":
    main()
