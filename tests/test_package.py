"""The project as a package: what its wheel holds, which way its imports run, where it looks for files,
and how its commands name themselves."""
import argparse
import ast
import importlib
import shutil
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import pytest

from conftest import REPO_ROOT, assert_one_line_error, run_script
from mnistgen import data, paths
from mnistgen.checkpoint import CheckpointError, load_checkpoint
from mnistgen.training import add_run_args
from mnistgen.utils import add_common_args, program_name

PACKAGES = ["mnistgen", "classifier", "ebm", "realnvp", "vae", "gan", "report"]
ABOVE_MNISTGEN = set(PACKAGES) - {"mnistgen"}


def test_wheel_holds_every_package_and_the_checksums(tmp_path):
    """`pip install .` installs what the code reads: the packages and mnistgen/MNIST_SHA256SUMS (package data),
    no checkpoints. Built from a copy of the sources, so the repository gets no build/ folder."""
    source = tmp_path / "src"
    source.mkdir()
    shutil.copy(REPO_ROOT / "pyproject.toml", source)
    for package in PACKAGES:
        shutil.copytree(REPO_ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
                           "--quiet", "-w", str(tmp_path / "wheel")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    wheel, = (tmp_path / "wheel").glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "mnistgen/MNIST_SHA256SUMS" in names
    assert {f"{package}/__init__.py" for package in PACKAGES} <= names
    assert "report/__main__.py" in names
    assert not [name for name in names if name.endswith(".pt")]


def _imports(path):
    """(module imported, inside a function?) for every import statement of a source file."""
    found = []

    def visit(node, in_function):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                found.extend((alias.name, in_function) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0:
                found.append((child.module, in_function))
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))
    visit(ast.parse(path.read_text()), False)
    return found


def test_mnistgen_imports_run_one_way():
    """mnistgen imports nothing above it, imports its own modules at the top only, and has no cycle."""
    edges = {}
    for path in sorted((REPO_ROOT / "mnistgen").glob("*.py")):
        name = f"mnistgen.{path.stem}"
        imports = _imports(path)
        above = [module for module, _ in imports if module.split(".")[0] in ABOVE_MNISTGEN]
        assert not above, f"{name} imports {above}, a layer above mnistgen"
        hidden = [module for module, in_function in imports if in_function and module.startswith("mnistgen")]
        assert not hidden, f"{name} imports {hidden} inside a function"
        edges[name] = {module for module, _ in imports if module.startswith("mnistgen.")}
    done, active = set(), []

    def walk(module):
        assert module not in active, "import cycle: " + " -> ".join(active + [module])
        if module in done:
            return
        active.append(module)
        for target in edges.get(module, ()):
            walk(target)
        active.pop()
        done.add(module)
    for module in edges:
        walk(module)


def test_models_dir_follows_the_environment(monkeypatch, tmp_path):
    try:
        monkeypatch.setenv(paths.MODELS_ENV, str(tmp_path))
        assert importlib.reload(paths).MODELS_DIR == tmp_path
        monkeypatch.delenv(paths.MODELS_ENV)
        assert importlib.reload(paths).MODELS_DIR == REPO_ROOT / "models"
    finally:
        monkeypatch.undo()
        importlib.reload(paths)


def test_mnist_lookup_does_not_depend_on_the_working_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("MNIST_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    assert data.candidate_roots() == [REPO_ROOT / "data"]
    monkeypatch.setenv("MNIST_ROOT", str(tmp_path))
    assert data.candidate_roots() == [tmp_path, REPO_ROOT / "data"]


def test_report_without_models_says_where_it_looked_and_how_to_point_it(tmp_path):
    proc = run_script(["-m", "report", "--models_dir", str(tmp_path / "nowhere")])
    assert_one_line_error(proc, str(tmp_path / "nowhere"))
    assert "--models_dir" in proc.stderr and f"${paths.MODELS_ENV}" in proc.stderr


def test_a_missing_shipped_checkpoint_says_how_to_point_at_the_models():
    with pytest.raises(CheckpointError, match=r"no checkpoint at .*nothing\.pt; set \$MNISTGEN_MODELS"):
        load_checkpoint(paths.MODELS_DIR / "nothing.pt", "vae")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(REPO_ROOT / "nothing.pt", "vae")
    assert paths.MODELS_ENV not in str(err.value)


def test_report_usage_names_the_command():
    proc = run_script(["-m", "report", "--help"])
    assert proc.returncode == 0 and proc.stdout.startswith("usage: python -m report ")


def _as_if_run(monkeypatch, argv0, module=None):
    """Make this process look like `python argv0` (or `python -m module`)."""
    main = types.ModuleType("__main__")
    main.__spec__ = types.SimpleNamespace(name=module) if module else None
    monkeypatch.setitem(sys.modules, "__main__", main)
    monkeypatch.setattr(sys, "argv", [str(argv0)])


def test_commands_name_themselves_as_typed(monkeypatch, capsys):
    _as_if_run(monkeypatch, REPO_ROOT / "ebm" / "main.py")
    assert program_name() == "ebm/main.py"
    _as_if_run(monkeypatch, REPO_ROOT / "report" / "__main__.py", module="report.__main__")
    assert program_name() == "python -m report"
    _as_if_run(monkeypatch, REPO_ROOT / "ebm" / "main.py", module="ebm.main")
    assert program_name() == "python -m ebm.main"
    _as_if_run(monkeypatch, "/elsewhere/script.py")
    assert program_name() == "/elsewhere/script.py"
    monkeypatch.chdir(REPO_ROOT)
    _as_if_run(monkeypatch, Path("ebm") / "main.py")
    parser = add_common_args(argparse.ArgumentParser())
    assert parser.prog == "ebm/main.py"
    with pytest.raises(SystemExit) as stop:
        parser.parse_args(["--device", "tpu"])
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and len(err.splitlines()) == 1 and err.endswith("(see ebm/main.py --help)")
    assert add_common_args(argparse.ArgumentParser(prog="python -m report")).prog == "python -m report"


def test_shared_flags_take_dashed_aliases_when_asked():
    parser = add_run_args(add_common_args(argparse.ArgumentParser(), dashed_aliases=True),
                          logdir="runs/x", save_path="models/x.pt", epochs=3, dashed_aliases=True)
    args = parser.parse_args(["--data-root", "d", "--max-minutes", "2", "--save-path", "s.pt", "--num-epochs", "4"])
    assert (args.data_root, args.max_minutes, args.save_path, args.num_epochs) == ("d", 2.0, "s.pt", 4)
    args = parser.parse_args(["--data_root", "d", "--figures_dir", "f", "--logdir", "l"])
    assert (args.data_root, args.figures_dir, args.logdir) == ("d", "f", "l")
    plain = add_common_args(argparse.ArgumentParser())
    with pytest.raises(SystemExit):
        plain.parse_args(["--data-root", "d"])


def test_mnist_command_reports_a_bad_flag_in_one_line(capsys):
    with pytest.raises(SystemExit) as stop:
        data.main(["--bogus"])
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and len(err.splitlines()) == 1 and err.startswith("error: unrecognized arguments")
