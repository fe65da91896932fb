"""mlflow's Alembic chain as a benchmark subject (bench only: never a project dependency).

mlflow-skinny ships its migrations inside the package (mlflow/store/db_migrations/), and
its revisions import mlflow's own modules, so mlflow must be importable. When it is not,
`ensure_mlflow()` installs mlflow-skinny into the private folder `.bench-deps/` at the
project root (`pip install --target`) and appends that folder to the END of sys.path, so
the project's own sqlalchemy / alembic from the virtualenv keep winning.

The chain is driven by the dashboard itself (a `Target` whose script_location is the
migrations folder); mlflow's env.py is never executed.
"""

from __future__ import annotations

import contextlib
import importlib
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic.script import ScriptDirectory

from dashboard.migrations.plan import UPGRADE, Plan, make_plan
from dashboard.migrations.scripts import load_scripts
from dashboard.targets import Target

ROOT = Path(__file__).resolve().parent.parent
BENCH_DEPS = ROOT / ".bench-deps"
PACKAGE = "mlflow-skinny"


class MlflowUnavailable(Exception):
    """mlflow could not be imported nor installed into .bench-deps/."""


def _append_bench_deps() -> None:
    if BENCH_DEPS.is_dir() and str(BENCH_DEPS) not in sys.path:
        sys.path.append(str(BENCH_DEPS))
        importlib.invalidate_caches()


def _import_mlflow() -> Any:
    module = importlib.import_module("mlflow")
    if getattr(module, "__file__", None) is None:  # a half-removed folder: a namespace package
        sys.modules.pop("mlflow", None)
        raise ImportError("mlflow is only a namespace package here (an incomplete install)")
    return module


def ensure_mlflow() -> tuple[Any, str, float]:
    """The imported mlflow module, where it came from ("environment", ".bench-deps",
    or ".bench-deps (installed now, N s)") and the seconds the install took (0: none).
    Raises MlflowUnavailable."""
    with contextlib.suppress(ImportError):
        return _import_mlflow(), "environment", 0.0
    _append_bench_deps()
    with contextlib.suppress(ImportError):
        return _import_mlflow(), ".bench-deps", 0.0
    import time

    started = time.perf_counter()
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    cmd += ["--target", str(BENCH_DEPS), PACKAGE]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
        raise MlflowUnavailable(f"pip install --target .bench-deps {PACKAGE} failed:\n{tail}")
    installed_s = time.perf_counter() - started
    _append_bench_deps()
    try:
        module = _import_mlflow()
    except ImportError as exc:
        raise MlflowUnavailable(f"mlflow installed into .bench-deps/ but: {exc}") from exc
    return module, f".bench-deps (installed now, {installed_s:.1f} s)", installed_s


@dataclass
class Chain:
    """mlflow's migration chain, loaded by the dashboard (no env.py)."""

    version: str
    origin: str
    folder: Path
    sd: ScriptDirectory
    target: Target
    load_s: float  # loading the folder (imports every revision, hence mlflow's models)
    import_s: float  # `import mlflow` (a first install into .bench-deps/ not included)

    @property
    def heads(self) -> tuple[str, ...]:
        return tuple(self.sd.get_heads())

    def plan(self, to: str = "heads") -> Plan:
        return make_plan(self.sd, (), UPGRADE, to)


def load_chain() -> Chain:
    import time

    started = time.perf_counter()
    mlflow, origin, installed_s = ensure_mlflow()
    import_s = time.perf_counter() - started - installed_s
    folder = Path(mlflow.__file__).resolve().parent / "store" / "db_migrations"
    started = time.perf_counter()
    loaded = load_scripts(folder)
    load_s = time.perf_counter() - started
    if loaded.directory is None or loaded.errors:
        errors = "; ".join(f"{e.file}: {e.error}" for e in loaded.errors)
        raise MlflowUnavailable(f"could not load {folder}: {errors}")
    return Chain(
        version=str(getattr(mlflow, "__version__", "?")),
        origin=origin,
        folder=folder,
        sd=loaded.directory,
        target=Target("mlflow", folder),
        load_s=load_s,
        import_s=import_s,
    )


@contextlib.contextmanager
def seeded(sd: ScriptDirectory) -> Iterator[str]:
    """mlflow's first revision alters tables it never creates: mlflow itself runs
    `InitialBase.metadata.create_all(engine)` (mlflow.store.db.utils._initialize_tables)
    before upgrading. While this is active, the root revision's upgrade() first creates
    those initial tables on `op.get_bind()`, in the same transaction. Yields the root
    revision. The module is restored afterwards (the scripts themselves are untouched)."""
    base = sd.get_base()
    if base is None:
        raise MlflowUnavailable("the mlflow chain has no single root revision")
    script = sd.get_revision(base)
    assert script is not None
    module: Any = script.module
    original: Callable[[], None] = module.upgrade
    initial = importlib.import_module("mlflow.store.tracking.dbmodels.initial_models")

    def upgrade() -> None:
        from alembic import op

        initial.Base.metadata.create_all(op.get_bind(), checkfirst=False)
        original()

    module.upgrade = upgrade
    try:
        yield base
    finally:
        module.upgrade = original
