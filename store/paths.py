"""Which run-store files a browser may choose: `*.duckdb` files inside one configured directory.

The operator's own choice ($COMPRESSION_LAB_DB, or the default) is trusted; a path typed in the app
is not: it must name a `.duckdb` file in $COMPRESSION_LAB_STORE_DIR (default: the working directory)
or in a folder that already exists below it, so the server never creates folders or files elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

from store.errors import StoreError

STORE_DIR_ENV = "COMPRESSION_LAB_STORE_DIR"
SUFFIX = ".duckdb"


def store_dir() -> Path:
    """The directory app users may pick run stores in."""
    return Path(os.environ.get(STORE_DIR_ENV) or os.getcwd()).expanduser().resolve()


def store_files(base: Path | None = None) -> list[str]:
    """The run-store files already in the directory, by name."""
    base = base or store_dir()
    return sorted(p.name for p in base.glob(f"*{SUFFIX}") if p.is_file())


def choose_store_file(text: str, base: Path | None = None) -> str:
    """The resolved path of a store file typed in the browser, or a StoreError saying why it is refused."""
    base = base or store_dir()
    text = (text or "").strip()
    if not text:
        raise StoreError("the run store needs a file name, e.g. compression_lab.duckdb")
    target = (base / text).resolve() if not Path(text).is_absolute() else Path(text).resolve()
    if target.suffix != SUFFIX:
        raise StoreError(f"a run store is a {SUFFIX} file; got '{text}'")
    if base != target.parent and base not in target.parents:
        raise StoreError(f"the app opens run stores only inside {base} (set ${STORE_DIR_ENV} to change it); "
                         f"'{text}' is outside it")
    if not target.parent.is_dir():
        raise StoreError(f"the folder {target.parent} does not exist; the app does not create folders")
    if target.exists() and not target.is_file():
        raise StoreError(f"{target} is not a file")
    return str(target)


def checkpoints_dir(base: Path | None = None) -> Path:
    """Where checkpoints made from the app go: checkpoints/ in the store directory."""
    return (base or store_dir()) / "checkpoints"


def confine_output(text: str, what: str = "out", base: Path | None = None) -> str:
    """The resolved path of an output folder that came from a browser (a recipe's `out`, a form's), or a
    StoreError naming it and the directory it must lie in. A relative path is taken inside that directory."""
    base = base or store_dir()
    text = str(text or "").strip()
    if not text:
        raise StoreError(f"{what} needs a folder name inside {base}")
    given = Path(text).expanduser()
    target = (given if given.is_absolute() else base / given).resolve()
    if target != base and base not in target.parents:
        raise StoreError(f"{what} '{text}' is outside {base}: the app writes only inside that directory "
                         f"(${STORE_DIR_ENV} sets it); use a relative path such as checkpoints/my-run")
    return str(target)
