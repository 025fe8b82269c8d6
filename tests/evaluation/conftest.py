"""The demo's evaluation examples, built once per session (indexing is slow): every third
demo commit stands for the evaluation set, the others are training commits."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from appliance.evaluation.examples import CommitExamples, Example
from appliance.evaluation.run import settings_for
from appliance.harness.spec import CommitSpec, package_specs
from appliance.packages import corpus
from appliance.serving.pool import ModelPool
from appliance.stages.pipeline import _budget
from tests.harness.conftest import DEMO, ingest_package, make_home

# holdout 0: every commit but the chosen evaluation ones is a training commit
SETTINGS = """
[campaign]
max_tokens = 96
context_tokens = 384
[evaluation]
holdout_fraction = 0.0
"""
STAGES = ("task_analysis", "scope", "precision", "plan")


@dataclass
class DemoExamples:
    config: object
    db: object
    specs: list[CommitSpec]  # every demo commit
    evaluation: list[CommitSpec]  # the commits the examples come from
    commits: dict[str, CommitExamples]  # sha -> its examples
    examples: dict[str, list[Example]]  # stage -> examples, in commit order


@pytest.fixture(scope="session")
def demo_examples(tmp_path_factory):
    with pytest.MonkeyPatch.context() as monkeypatch:
        home = tmp_path_factory.mktemp("examples") / "home"
        config, db = make_home(home, monkeypatch, SETTINGS)
        ingest_package(config, db, DEMO)
        pool = ModelPool.from_config(config)
        settings = settings_for(config)
        try:
            specs = package_specs(config, db, corpus.packages(db)[0])
            evaluation = specs[::3]
            commits, examples = {}, {stage: [] for stage in STAGES}
            for spec in evaluation:
                built = CommitExamples(db, pool, spec, lambda s: _budget(pool, s, settings))
                commits[spec.sha] = built
                for stage in STAGES:
                    example = built.example(stage)
                    if example is not None:
                        examples[stage].append(example)
            yield DemoExamples(config, db, specs, evaluation, commits, examples)
        finally:
            pool.close()
