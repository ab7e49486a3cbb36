"""requirements.lock, environment.yml and pyproject.toml must tell one story.

requirements.lock (pip freeze) is the source of truth; environment.yml is
generated from it by scripts/write_environment_yml.py. Every check is written
as a function that returns a list of problems, run once on the real files and
once on a deliberately broken input, so each test is known to be able to fail.
"""

from __future__ import annotations

import importlib.util
import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "requirements.lock"
ENV_YML = ROOT / "environment.yml"
PYPROJECT = ROOT / "pyproject.toml"

TORCH = "2.13.0"
PYTHON = "3.11"
PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[^\s=;#]+)$")


def normalise(name: str) -> str:
    """PEP 503 name normalisation: runs of -_. become '-', lower case."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_lines(lock_text: str) -> list[str]:
    """Non-blank, non-comment lines of a requirements file."""
    lines = (line.strip() for line in lock_text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def pins_of(lines: list[str]) -> dict[str, str]:
    """{normalised name: version} for the lines that are exact ``==`` pins."""
    pins = {}
    for line in lines:
        match = PIN.match(line)
        if match:
            pins[normalise(match["name"])] = match["version"]
    return pins


def env_pip_lines(env: dict) -> list[str]:
    """The strings in the ``pip:`` section of a parsed environment.yml."""
    for dep in env.get("dependencies", []):
        if isinstance(dep, dict) and "pip" in dep:
            return [str(item).strip() for item in dep["pip"]]
    return []


def env_conda_deps(env: dict) -> list[str]:
    return [str(dep).replace(" ", "") for dep in env.get("dependencies", [])
            if not isinstance(dep, dict)]


# --------------------------------------------------------------------------- checks

def unpinned_lines(lines: list[str]) -> list[str]:
    return [line for line in lines if not PIN.match(line)]


def duplicate_names(lines: list[str]) -> list[str]:
    seen, dupes = set(), []
    for line in lines:
        match = PIN.match(line)
        if match:
            name = normalise(match["name"])
            if name in seen:
                dupes.append(name)
            seen.add(name)
    return dupes


def pin_differences(lock_lines: list[str], env: dict) -> list[str]:
    """Differences between the lock and the pip section of environment.yml."""
    lock = {f"{normalise(n)}=={v}" for n, v in pins_of(lock_lines).items()}
    pip_lines = env_pip_lines(env)
    pinned = [line for line in pip_lines if line != "-e ."]
    envset = {f"{normalise(n)}=={v}" for n, v in pins_of(pinned).items()}
    problems = [f"only in requirements.lock: {p}" for p in sorted(lock - envset)]
    problems += [f"only in environment.yml: {p}" for p in sorted(envset - lock)]
    problems += [f"environment.yml pip line is not an exact pin: {line}"
                 for line in unpinned_lines(pinned)]
    if "-e ." not in pip_lines:
        problems.append("environment.yml pip section lacks '-e .'")
    return problems


def torch_problems(lock_lines: list[str], env: dict) -> list[str]:
    problems = []
    if pins_of(lock_lines).get("torch") != TORCH:
        problems.append(f"requirements.lock does not pin torch=={TORCH}")
    if pins_of(env_pip_lines(env)).get("torch") != TORCH:
        problems.append(f"environment.yml does not pin torch=={TORCH}")
    return problems


def python_problems(lock_text: str, env: dict, pyproject: dict) -> list[str]:
    problems = []
    pythons = [d for d in env_conda_deps(env) if re.match(r"python\b", d)]
    if pythons != [f"python={PYTHON}"]:
        problems.append(f"environment.yml must list exactly python={PYTHON}, has {pythons}")
    # pip freeze cannot pin the interpreter; the lock states it in its header.
    header = [line for line in lock_text.splitlines() if line.startswith("#")]
    stated = {m for line in header for m in re.findall(r"Python (\d+\.\d+)", line)}
    if stated != {PYTHON}:
        problems.append(f"requirements.lock header must say 'Python {PYTHON}', says {sorted(stated)}")
    spec = SpecifierSet(pyproject.get("project", {}).get("requires-python", ""))
    for version, allowed in ((f"{PYTHON}.0", True), (f"{PYTHON}.99", True),
                             ("3.10.99", False), ("3.12.0", False)):
        if spec.contains(version) is not allowed:
            problems.append(f"pyproject requires-python {str(spec)!r} "
                            f"{'rejects' if allowed else 'admits'} {version}")
    return problems


def unlocked_dependencies(pyproject: dict, lock_lines: list[str]) -> list[str]:
    """pyproject dependencies (and extras) missing from, or not satisfied by, the lock."""
    project = pyproject.get("project", {})
    declared = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        declared += extra
    pins = pins_of(lock_lines)
    problems = []
    for text in declared:
        req = Requirement(text)
        version = pins.get(normalise(req.name))
        if version is None:
            problems.append(f"{text}: not pinned in requirements.lock")
        elif not req.specifier.contains(version, prereleases=True):
            problems.append(f"{text}: lock pins {req.name}=={version}")
    return problems


# --------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def lock_text() -> str:
    return LOCK.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def lock_lines(lock_text) -> list[str]:
    return requirement_lines(lock_text)


@pytest.fixture(scope="module")
def env() -> dict:
    return yaml.safe_load(ENV_YML.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def pyproject() -> dict:
    return tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- tests

def test_every_lock_line_is_an_exact_pin(lock_lines):
    assert lock_lines, "requirements.lock has no requirements"
    assert unpinned_lines(lock_lines) == []
    assert duplicate_names(lock_lines) == []


def test_environment_yml_lists_exactly_the_lock_pins(lock_lines, env):
    assert env.get("name") == "labkit"
    assert env.get("channels") == ["conda-forge"]
    assert "pip" in env_conda_deps(env)
    assert pin_differences(lock_lines, env) == []


def test_environment_yml_is_what_the_generator_writes(lock_text):
    spec = importlib.util.spec_from_file_location(
        "write_environment_yml", ROOT / "scripts" / "write_environment_yml.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert ENV_YML.read_text(encoding="utf-8") == module.render(lock_text), (
        "environment.yml is stale: run python scripts/write_environment_yml.py")


def test_torch_is_pinned_in_both(lock_lines, env):
    assert torch_problems(lock_lines, env) == []


def test_python_is_311_everywhere(lock_text, env, pyproject):
    assert python_problems(lock_text, env, pyproject) == []


def test_pyproject_dependencies_are_locked(pyproject, lock_lines):
    assert pyproject["project"]["dependencies"], "pyproject lists no dependencies"
    assert unlocked_dependencies(pyproject, lock_lines) == []


# ------------------------------------------------ the checks above do catch mistakes

BROKEN_LOCK = """# Python 3.10.
torch==2.12.0
numpy>=2
Scipy==1.17.1
scipy==1.17.0
-e git+https://example.org/x.git#egg=x
"""


def test_checks_catch_broken_inputs():
    lines = requirement_lines(BROKEN_LOCK)
    assert unpinned_lines(lines) == ["numpy>=2", "-e git+https://example.org/x.git#egg=x"]
    assert duplicate_names(lines) == ["scipy"]

    env = {"dependencies": ["python=3.12", "pip",
                            {"pip": ["torch==2.13.0", "scipy==1.17.1", "numpy"]}]}
    diffs = pin_differences(lines, env)
    assert "only in requirements.lock: torch==2.12.0" in diffs
    assert "only in environment.yml: torch==2.13.0" in diffs
    assert "environment.yml pip line is not an exact pin: numpy" in diffs
    assert "environment.yml pip section lacks '-e .'" in diffs

    assert torch_problems(lines, env) == [f"requirements.lock does not pin torch=={TORCH}"]
    assert len(torch_problems(lines, {"dependencies": []})) == 2

    pyproject = {"project": {"requires-python": ">=3.10",
                             "dependencies": ["torch==2.13.0", "numpy", "kornia"],
                             "optional-dependencies": {"book": ["jupyter-book<2"]}}}
    problems = python_problems(BROKEN_LOCK, env, pyproject)
    assert any("python=3.11" in p for p in problems)
    assert any("header" in p for p in problems)
    assert any("admits 3.10.99" in p for p in problems)
    assert any("admits 3.12.0" in p for p in problems)

    assert unlocked_dependencies(pyproject, lines) == [
        "torch==2.13.0: lock pins torch==2.12.0",
        "numpy: not pinned in requirements.lock",
        "kornia: not pinned in requirements.lock",
        "jupyter-book<2: not pinned in requirements.lock",
    ]
    # PEP 503: differently spelled names are the same project
    assert pins_of(["Jupyter_Book==1.0.4.post1"]) == {"jupyter-book": "1.0.4.post1"}
