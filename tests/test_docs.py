"""The docs stay true: relative links resolve (anchors included), every `docs/...` path the code names exists,
and each `convlab ...` command of the README's tour composes with Hydra's compose API (nothing runs)."""

from __future__ import annotations

import itertools
import re
import shlex
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import ConfigCompositionException

from tests.conftest import REPO, compose_config

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
#: where a `docs/...` path named in the code must exist
CODE = [REPO / "Makefile", REPO / "pyproject.toml",
        *(path for folder in ("runner", "tasks", "conf", "bench", ".ci") for path in sorted((REPO / folder).rglob("*"))
          if path.is_file() and path.suffix in {".py", ".yaml", ".sh", ""})]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
DOCS_PATH = re.compile(r"(?<![\w/.])docs/[\w./-]*\w")
FENCE = re.compile(r"^(```|~~~)")


def prose(text: str) -> str:
    """The page without its fenced code blocks (a `# comment` there is no heading, `[x](y)` no link)."""
    kept, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line.lstrip()):
            fenced = not fenced
        elif not fenced:
            kept.append(line)
    return "\n".join(kept)


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens, repeats numbered."""
    seen: dict[str, int] = {}
    result = set()
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", prose(page.read_text()), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        result.add(f"{slug}-{seen[slug]}" if slug in seen else slug)
        seen[slug] = seen.get(slug, 0) + 1
    return result


def relative_links(page: Path) -> list[str]:
    return [target for target in LINK.findall(prose(page.read_text()))
            if not re.match(r"^[a-z][a-z0-9+.-]*:", target)]  # http:, https:, mailto:


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            broken.append(f"{target}: no file {linked.relative_to(REPO) if linked.is_relative_to(REPO) else linked}")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target}: no heading #{anchor} in {linked.name}")
    return broken


def tour_commands(readme_text: str) -> list[list[str]]:
    """The arguments of each `convlab ...` line in the README's ``## A tour`` bash block."""
    tour = readme_text.split("## A tour", 1)[1]
    block = re.search(r"```bash\n(.*?)```", tour, re.S).group(1)
    commands = [shlex.split(line, comments=True) for line in block.splitlines()]
    return [words[1:] for words in commands if words and words[0] == "convlab"]


def jobs(args: list[str]) -> list[list[str]]:
    """The override lists a command composes: flags dropped (`--cfg job`, `-m`), a `-m` sweep expanded by
    Hydra's own override parser into every combination."""
    overrides, skip_value = [], False
    for arg in args:
        if skip_value:
            skip_value = False
        elif arg in ("--cfg", "-c", "--package", "-p"):
            skip_value = True
        elif not arg.startswith("-"):
            overrides.append(arg)
    if "-m" not in args and "--multirun" not in args:
        return [overrides]
    choices = []
    for override in OverridesParser.create().parse_overrides(overrides):
        key = override.get_key_element()
        values = (list(override.sweep_string_iterator()) if override.is_sweep_override()
                  else [override.get_value_element_as_str()])
        choices.append([f"{key}={value}" for value in values])
    return [list(job) for job in itertools.product(*choices)]


@pytest.mark.parametrize("page", PAGES, ids=lambda page: str(page.relative_to(REPO)))
def test_relative_links_point_at_existing_files_and_headings(page):
    assert broken_links(page) == []


def test_a_broken_link_and_a_missing_heading_are_found(tmp_path):
    (tmp_path / "other.md").write_text("# Other page\n\n## A `task`: section\n")
    page = tmp_path / "page.md"
    page.write_text("[ok](other.md#a-task-section) [gone](missing.md) [bad](other.md#nowhere) "
                    "[web](https://example.org/x.md)\n```\n[in code](ignored.md)\n# not a heading\n```\n")
    assert [problem.split(":")[0] for problem in broken_links(page)] == ["missing.md", "other.md#nowhere"]


def test_docs_paths_named_in_the_code_exist():
    named = {(str(source.relative_to(REPO)), path) for source in CODE
             for path in DOCS_PATH.findall(source.read_text(errors="replace"))}
    assert named, "the Makefile names docs/infrastructure.md: the scan found nothing"
    assert sorted(pair for pair in named if not (REPO / pair[1]).exists()) == []


def test_the_tour_has_commands_and_each_job_of_each_composes():
    commands = tour_commands((REPO / "README.md").read_text())
    assert len(commands) >= 8
    for args in commands:
        for overrides in jobs(args):
            compose_config(overrides)  # raises ConfigCompositionException (Hydra's message) when invalid


def test_a_tour_command_with_a_typo_does_not_compose():
    readme = "## A tour\n\n```bash\nsource .venv/bin/activate\nconvlab task.epochs=2   # fine\n" \
             "convlab-rerun 0123 task.epochs=3\nconvlab -m task.epoch=3,4\n```\n"
    commands = tour_commands(readme)
    assert commands == [["task.epochs=2"], ["-m", "task.epoch=3,4"]]
    compose_config(jobs(commands[0])[0])
    with pytest.raises(ConfigCompositionException, match="epoch"):
        compose_config(jobs(commands[1])[0])


def test_a_sweep_is_expanded_into_its_jobs_and_flags_are_dropped():
    assert jobs(["-m", "task.epochs=1,2", "seed=1,2", "--cfg", "job", "task.layers=[a,b]"]) == [
        ["task.epochs=1", "seed=1", "task.layers=[a,b]"], ["task.epochs=1", "seed=2", "task.layers=[a,b]"],
        ["task.epochs=2", "seed=1", "task.layers=[a,b]"], ["task.epochs=2", "seed=2", "task.layers=[a,b]"]]
    assert jobs(["--cfg", "job", "task.augment=false,true"]) == [["task.augment=false,true"]]



def test_make_figure_draws_the_newest_finished_runs_artifacts(tracking, tmp_path, monkeypatch, capsys):
    import runpy

    import mlflow
    import numpy as np

    store = mlflow.get_tracking_uri()
    newest = {}
    for experiment, artifact in {"gradcam": "gradcam/chelsea_overlay.png", "activations": "activations/conv2d_2.png",
                                 "filters": "filters/conv2d_4.png"}.items():
        mlflow.set_experiment(experiment)
        for status in ("FINISHED", "FAILED"):  # a newer FAILED run is passed over
            with mlflow.start_run() as run:
                mlflow.log_image(np.full((8, 12, 3), 128, np.uint8), artifact)
                mlflow.end_run(status)
            newest.setdefault(experiment, run.info.run_id)
    out = tmp_path / "figure.png"
    monkeypatch.setattr("sys.argv", ["make_figure.py", "--store", store, "--out", str(out)])
    try:
        runpy.run_path(str(REPO / "docs" / "make_figure.py"), run_name="__main__")
    finally:
        mlflow.set_tracking_uri(store)
    printed = capsys.readouterr().out
    assert all(f"{experiment} {run_id}" in printed for experiment, run_id in newest.items())
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
