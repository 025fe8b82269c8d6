"""Trivial baselines on the demo's evaluation examples: scored per task with the metrics
code, position carries no signal, and training statistics never count evaluation commits."""

from __future__ import annotations

from collections import Counter

from appliance.campaign import store as campaign_store
from appliance.campaign import targets, truth
from appliance.evaluation import baselines


def results_of(demo, stage: str) -> dict[str, baselines.BaselineResult]:
    stats = baselines.package_stats(demo.config, demo.db, demo.evaluation)
    examples = demo.examples[stage]
    found = baselines.score_baselines(stage, examples, baselines.baselines_for(stage, stats))
    return {r.name: r for r in found}


def relevant_share(examples) -> float:
    """Per task, the share of listed files that are relevant; mean over tasks."""
    shares = [
        sum(f["label"] == "relevant" for f in e.target["files"]) / len(e.target["files"])
        for e in examples
    ]
    return sum(shares) / len(shares)


def test_every_baseline_scores_every_task_on_every_metric(demo_examples):
    expected = {
        "task_analysis": {"file_recall", "file_precision"},
        "scope": {"accuracy", "relevant_recall"},
        "precision": {"accuracy", "primary_recall"},
        "plan": {"resolved"},
    }
    for stage, wanted in expected.items():
        keys = {e.key for e in demo_examples.examples[stage]}
        results = results_of(demo_examples, stage)
        assert len(results) >= (1 if stage == "plan" else 3)
        for result in results.values():
            assert set(result.per_task) == keys
            assert all(set(scores) == wanted for scores in result.per_task.values())
            assert set(result.scores) == wanted
            for metric in wanted:
                values = [t[metric] for t in result.per_task.values()]
                assert result.scores[metric] == sum(values) / len(values)


def test_first_listed_and_longest_score_at_chance(demo_examples):
    scope = demo_examples.examples["scope"]
    results = results_of(demo_examples, "scope")
    share = relevant_share(scope)
    for name in ("first-listed", "longest"):
        recall = results[name].scores["relevant_recall"]
        assert recall <= 0.5, (name, recall)
        assert abs(recall - share) < 0.25, (name, recall, share)
    # the constants are what they say: every file relevant recalls all, irrelevant none
    assert results["all-relevant"].scores["relevant_recall"] == 1.0
    assert results["all-irrelevant"].scores["relevant_recall"] == 0.0
    irrelevant = [
        sum(f["label"] == "irrelevant" for f in e.target["files"]) / len(e.target["files"])
        for e in scope
    ]
    assert results["all-irrelevant"].scores["accuracy"] == sum(irrelevant) / len(irrelevant)


def test_best_is_the_highest_scoring_baseline(demo_examples):
    results = list(results_of(demo_examples, "scope").values())
    top = baselines.best(results, "accuracy")
    assert top.scores["accuracy"] == max(r.scores["accuracy"] for r in results)
    assert baselines.best(results, "relevant_recall").name == "all-relevant"
    assert baselines.best([], "accuracy") is None


def test_no_edits_never_resolves_a_task(demo_examples):
    (result,) = results_of(demo_examples, "plan").values()
    assert result.name == "no-edits"
    assert result.per_task and all(t == {"resolved": 0.0} for t in result.per_task.values())
    assert result.scores == {"resolved": 0.0}


def test_package_statistics_never_count_evaluation_commits(demo_examples):
    demo = demo_examples
    stats = baselines.package_stats(demo.config, demo.db, demo.evaluation)
    everything = baselines.package_stats(demo.config, demo.db, [])
    held = Counter(p for spec in demo.evaluation for p in truth.commit_truth(spec).files)
    assert held  # the evaluation commits change files
    for path, count in everything.changed["demo"].items():
        assert stats.changed["demo"].get(path, 0) == count - held[path]
    spec = demo.evaluation[0]
    top = stats.most_changed(spec, baselines.K)
    counts = stats.changed["demo"]
    assert len(top) == baselines.K
    assert all(counts[p] >= counts[q] for p in top for q in counts if q not in top)
    result = results_of(demo, "task_analysis")["most-changed"]
    assert result.per_task  # answered from the training counts alone


def test_the_majority_label_comes_from_training_pairs_only(demo_examples):
    demo = demo_examples
    assert (
        baselines.package_stats(demo.config, demo.db, demo.evaluation).majority(
            "scope", "irrelevant"
        )
        == "irrelevant"
    )  # no pairs yet: the default
    package_id = demo.evaluation[0].package_id
    train = next(s for s in demo.specs if s not in demo.evaluation)
    real = truth.commit_truth(train)
    shown = ["a.py", "b.py", "c.py", *real.files]
    pairs = [
        campaign_store.SyntheticPair(package_id, train.sha, "scope", {"candidates": shown},
                                     targets.scope_target(real.files, shown, set())),
        # an evaluation commit's pair, all relevant: it must not count
        campaign_store.SyntheticPair(package_id, demo.evaluation[0].sha, "scope",
                                     {"candidates": [f"{i}.py" for i in range(20)]},
                                     {"files": [{"path": f"{i}.py", "label": "relevant"}
                                                for i in range(20)]}),
    ]  # fmt: skip
    campaign_store.record_pairs(demo.db, pairs)
    stats = baselines.package_stats(demo.config, demo.db, demo.evaluation)
    assert stats.labels["scope"] == {"irrelevant": 3, "relevant": len(real.files)}
    assert stats.majority("scope", "relevant") == "irrelevant"
    (majority,) = [b for b in baselines.baselines_for("scope", stats) if b.name == "majority"]
    assert "irrelevant" in majority.description
