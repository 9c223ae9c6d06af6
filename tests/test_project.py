"""The project's own files: lint, formatting, and conda environments that match requirements.txt."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from tests.conftest import REPO, SNAKEMAKE, make_images


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
        assert pinned(path) or path.name != "requirements.txt"


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
        [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path), "--lint", "--config", f"images_dir={tmp_path / 'images'}"],
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
