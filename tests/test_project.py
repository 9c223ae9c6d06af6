"""The project's own files: lint, formatting, conda environments that match requirements.txt, and the
package's shape (each stage imports only from those below it)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import REPO, make_images, snakemake_cmd


def pinned(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            name, _, version = line.partition("==")
            assert version, f"{path.name}: {line!r} is not pinned with =="
            pins[name.lower()] = version
    return pins


def test_requirements_are_pinned():
    files = sorted(REPO.glob("requirements*.txt"))
    assert [f.name for f in files] == ["requirements-dev.txt", "requirements-slurm.txt", "requirements-test.txt", "requirements.txt"]
    for path in files:
        assert pinned(path), f"{path.name} pins nothing"  # pinned() fails on any line not pinned with ==


def test_the_torch_extra_pins_the_versions_the_tests_run_with():
    import tomllib

    extra = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["torch"]
    tested = pinned(REPO / "requirements-dev.txt")  # what make test installs
    assert extra and all(tested[name.lower()] == version for name, version in (e.split("==") for e in extra))


def test_conda_envs_match_requirements():
    runtime = pinned(REPO / "requirements.txt")
    runtime.pop("snakemake")  # the jobs import the package, not snakemake,
    runtime.pop("pygments")  # nor what snakemake --report needs
    envs = sorted((REPO / "envs").glob("*.yaml"))
    assert [e.stem for e in envs] == ["decode_shard", "gather", "verify"]
    for env in envs:
        spec = yaml.safe_load(env.read_text())
        pips = next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict))
        assert {p.split("==")[0].lower(): p.split("==")[1] for p in pips} == runtime, env.name
    rules = "".join(p.read_text() for p in (REPO / "workflow/rules").glob("*.smk"))
    for env in envs:
        assert f'"../../envs/{env.name}"' in rules


def test_snakemake_lint_is_clean(tmp_path):
    make_images(tmp_path / "images", 3)
    proc = subprocess.run(
        snakemake_cmd(tmp_path, "--lint", images_dir=tmp_path / "images"),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Congratulations, your workflow is in a good condition" in proc.stdout + proc.stderr


def test_snakefmt_is_clean():
    snakefmt = str(Path(sys.executable).with_name("snakefmt"))
    files = [str(REPO / "Snakefile"), *map(str, sorted((REPO / "workflow/rules").glob("*.smk")))]
    proc = subprocess.run([snakefmt, "--check", *files], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_slurm_plugin_stays_out_of_the_main_environment():
    """snakemake imports every installed executor plugin at start, and the SLURM plugin runs
    cluster commands on import: 9 s more per local start with no controller answering."""
    import importlib.util

    assert importlib.util.find_spec("snakemake_executor_plugin_slurm") is None, (
        f"the SLURM executor plugin is installed in {sys.prefix}: it belongs in .venv-slurm (make test-slurm)"
    )
    assert "snakemake-executor-plugin-slurm" not in (REPO / "requirements-dev.txt").read_text()


def test_the_docs_links_resolve_and_the_readme_is_a_page_not_a_log():
    import re

    docs = [REPO / "README.md", REPO / "benchmarks/README.md", *sorted((REPO / "docs").glob("*.md"))]
    for doc in docs:
        text = doc.read_text()
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if target.startswith(("http://", "https://")):
                continue
            assert (doc.parent / target).exists(), f"{doc.relative_to(REPO)}: link to {target}, which does not exist"
        # a diary: who worked on it when, which run before this one was faster, how the machine was that day
        assert not re.search(r"\bses{2}ions?\b|(last|previous) (bench )?run.s\b|slow\s+period", text, re.I), f"{doc.relative_to(REPO)} narrates the development"
    readme = (REPO / "README.md").read_text()
    assert len(readme.splitlines()) <= 300
    assert readme.index("make run") < readme.index("## ")  # the two commands come first
    assert "SPEED_TABLE" not in readme


# The package's stages, lowest first: a module may import from its own unit and from units before it.
LAYERS = [
    {"errors", "format", "codecs", "temp", "shm", "__version__"},
    {"layout"},
    {"pixels"},
    {"plan"},
    {"build"},
    {"publish"},
    {"read"},
    {"tools"},
    {"steps", "__init__", "__main__"},
]
BASE = {"errors", "format", "codecs", "temp", "shm", "layout", "__version__"}
# Inside build/, the shard job's steps in the order the orchestrator calls them (index first: the plan reads one).
BUILD_ORDER = ["index", "reuse", "workers", "part", "assemble", "shard"]


def internal_imports(path: Path) -> set[str]:
    """The imgshard modules ``path`` imports, as dotted names below imgshard (``build.index``)."""
    package = path.relative_to(REPO / "imgshard").with_suffix("").parts[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(package[: len(package) - node.level + 1])
                target = base + (node.module.split(".") if node.module else [])
                names = [target + [a.name] for a in node.names] if not node.module else [target]
            elif (node.module or "").startswith("imgshard"):
                names = [node.module.split(".")[1:] or [a.name for a in node.names]]
            else:
                continue
            found |= {".".join(n) for n in names if n}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".", 1)[1] for a in node.names if a.name.startswith("imgshard.")}
    return found


def test_each_stage_imports_only_from_those_below_it():
    rank = {unit: k for k, units in enumerate(LAYERS) for unit in units}
    wrong = []
    for path in sorted((REPO / "imgshard").rglob("*.py")):
        parts = path.relative_to(REPO / "imgshard").with_suffix("").parts
        unit = parts[0]
        for target in internal_imports(path):
            to = target.split(".")[0]
            assert to in rank, f"{path}: imports {target}, a module no layer names"
            if rank[to] > rank[unit] or (unit == "read" and to not in BASE | {"read"}):
                wrong.append(f"{'/'.join(parts)} imports {target}")
            if unit == to == "build" and len(parts) > 1 and parts[1] in BUILD_ORDER:
                leaf = target.split(".")[1] if "." in target else ""
                if leaf in BUILD_ORDER and BUILD_ORDER.index(leaf) > BUILD_ORDER.index(parts[1]):
                    wrong.append(f"{'/'.join(parts)} calls back up into build.{leaf}")
    assert wrong == []
    # The check reads real imports: the shard job's own module imports each of its steps.
    assert {"build.reuse", "build.workers", "build.assemble", "build.index", "build.part"} <= internal_imports(REPO / "imgshard/build/shard.py")
