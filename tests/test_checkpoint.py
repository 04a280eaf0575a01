"""Self-contained checkpoints: one manager keeps the latest and the best, a copied run
directory evaluates and loads with no dataset, JSON files are replaced atomically, and run
directories in the older layout restore through their dataset or say what to do."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

import offrl.data
from offrl import checkpoint as ckpt
from offrl import load_policy
from offrl.cli import main_guard
from offrl.experiment import experiment_from_meta, resolve, restore_run
from offrl.runner import run

from test_train import leaves, tiny_config

from offrl.cli import evaluate as evaluate_script
from offrl.cli import train as train_script


@pytest.fixture(scope="module")
def finished_run(small_umaze_id, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("checkpoint") / "run"
    summary = run(tiny_config(small_umaze_id, run_dir, agent="iql-ddpg", steps=300, eval_interval=100,
                              normalize_observations=True), progress=False)
    return run_dir, summary


def test_one_manager_keeps_the_latest_and_the_best_in_one_write(tmp_path):
    checkpointer = ckpt.Checkpointer(tmp_path, keep=2, meta={"agent": "x"})
    for step, score in [(1, 5.0), (2, None), (3, 1.0), (4, 2.0), (5, None)]:
        checkpointer.save(step, {"w": jnp.full(3, float(step))}, score)
    checkpointer.close()
    directory = tmp_path / "checkpoints"
    assert sorted(int(path.name) for path in directory.iterdir() if path.name.isdigit()) == [1, 4, 5]
    assert sorted(path.name for path in directory.iterdir() if not path.name.isdigit() and not path.name.startswith("_")) == []
    assert {path.name for path in (directory / "5").iterdir()} >= {"state", "meta"}
    assert ckpt.find_checkpoint(tmp_path, "latest") == (directory.resolve(), 5)
    assert ckpt.find_checkpoint(tmp_path, "best") == (directory.resolve(), 1)
    assert ckpt.read_meta(directory, 1) == {"agent": "x", "step": 1, "score": 5.0, "timing": {}, "manifest": ckpt.MANIFEST}
    restored = ckpt.restore(directory, 1, {"w": jnp.zeros(3)})
    np.testing.assert_array_equal(restored["w"], np.full(3, 1.0))


def test_best_without_any_score_says_so(tmp_path):
    checkpointer = ckpt.Checkpointer(tmp_path, keep=2)
    checkpointer.save(1, {"w": jnp.zeros(2)})
    checkpointer.close()
    with pytest.raises(FileNotFoundError, match="no scored checkpoint .* use no --best"):
        ckpt.find_checkpoint(tmp_path, "best")


def test_copied_run_directory_evaluates_and_loads_without_its_dataset(finished_run, tmp_path, monkeypatch):
    run_dir, summary = finished_run
    copied = tmp_path / "elsewhere" / "run"
    shutil.copytree(run_dir, copied)
    empty_store = tmp_path / "empty_minari"
    empty_store.mkdir()
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(empty_store))

    def no_dataset(*args, **kwargs):
        raise AssertionError("the dataset was loaded")

    monkeypatch.setattr(offrl.data, "load_dataset", no_dataset)
    out = tmp_path / "eval.json"
    assert evaluate_script.main([str(copied), "--json", str(out)]) == 0
    evaluation = json.loads(out.read_text())
    assert evaluation["step"] == 300
    assert evaluation["return_mean"] == pytest.approx(summary["return_mean"])
    assert evaluation["normalized_score"] == pytest.approx(summary["normalized_score"])

    policy = load_policy(copied)
    assert policy.step == 300 and policy.config["run_dir"] == str(copied.resolve())
    state, _, _ = restore_run(run_dir, data=False)
    np.testing.assert_array_equal(np.asarray(policy.obs_mean), np.asarray(state.obs_mean))
    actions = policy(np.zeros((5, 4), np.float32))
    assert actions.shape == (5, 2) and np.abs(actions).max() <= 1.0
    assert list(empty_store.iterdir()) == [], "nothing was generated into the Minari store"


def test_an_env_not_storable_as_json_restores_through_the_dataset_with_its_derived_keys(finished_run):
    """Both restore paths compute the agent's derived keys from the run (max_steps = steps),
    whatever the meta holds: a run saved before max_steps was derived holds the default."""
    run_dir, _ = finished_run
    manager_dir, step = ckpt.find_checkpoint(run_dir)
    meta = ckpt.read_meta(manager_dir, step)
    meta["config"]["max_steps"] = 1_000_000
    stored = experiment_from_meta(meta, run_dir)
    unstorable = {**meta, "env": {**meta["env"], "factory": None, "gym_spec": None}}
    rebuilt = experiment_from_meta(unstorable, run_dir)
    assert stored.transitions is None and rebuilt.transitions is not None, "the second went through the dataset"
    assert stored.config["max_steps"] == rebuilt.config["max_steps"] == 300
    assert rebuilt.config == stored.config and rebuilt.spec.name == stored.spec.name


def test_json_files_are_replaced_atomically(tmp_path):
    path = tmp_path / "summary.json"
    ckpt.write_json_atomic(path, {"return_mean": 1.0})
    with pytest.raises(TypeError):
        ckpt.write_json_atomic(path, {"bad": object()})
    assert json.loads(path.read_text()) == {"return_mean": 1.0}, "a failed write leaves the old file whole"
    ckpt.write_json_atomic(path, {"return_mean": 2.0})
    assert json.loads(path.read_text()) == {"return_mean": 2.0}
    assert [child.name for child in tmp_path.iterdir()] == ["summary.json"]


def legacy_copy(run_dir: Path, target: Path) -> Path:
    """The run directory as the code before self-contained checkpoints wrote it: the same
    state under checkpoints/latest/<step> and checkpoints/best/<step>, no meta."""
    shutil.copytree(run_dir, target, ignore=shutil.ignore_patterns("checkpoints"))
    state, _, step = restore_run(run_dir)
    for which in ("latest", "best"):
        manager = ocp.CheckpointManager((target / "checkpoints" / which).resolve())
        manager.save(step, args=ocp.args.StandardSave(state))
        manager.wait_until_finished()
        manager.close()
    return target


def test_a_run_in_the_layout_before_self_contained_checkpoints_fails_in_one_line_naming_the_commit(
    finished_run, tmp_path, capsys
):
    run_dir, _ = finished_run
    legacy = legacy_copy(run_dir, tmp_path / "legacy")
    for path in (legacy, legacy / "checkpoints" / "best", legacy / "checkpoints" / "latest" / "300"):
        with pytest.raises(ckpt.CheckpointFormatError, match=f"check out {ckpt.LEGACY_LAYOUT_READER} to use it there"):
            restore_run(path)
    capsys.readouterr()
    for command in (lambda: evaluate_script.main([str(legacy)]), lambda: train_script.main(["--resume", str(legacy)])):
        assert main_guard(command) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err and ckpt.LEGACY_LAYOUT_READER in err


def test_resolve_config_of_a_legacy_run_is_refused_before_anything_is_written(finished_run, tmp_path):
    run_dir, _ = finished_run
    legacy = legacy_copy(run_dir, tmp_path / "legacy")
    before = (legacy / "config.json").read_text()
    with pytest.raises(ckpt.CheckpointFormatError, match="layout before self-contained checkpoints"):
        run(resolve({"resume": str(legacy), "steps": 400}), progress=False)
    assert (legacy / "config.json").read_text() == before


# A real run directory as the code before the --vmap state layout wrote it (checkpoint format 2,
# no hyperparameter leaves in the IQL state): at commit 4b98494, with PYTHONPATH at its checkout,
#   scripts/train.py --agent iql-ddpg --dataset offrl/pointmaze/umaze-v1 --steps 24 --updates_per_call 24
#     --eval_interval 24 --eval_episodes 2 --hidden_dims 8,8 --batch_size 16 --example_batch_size 64
#     --run_dir /tmp/oldrun_iql --seed 0
PRE_VMAP_RUN = Path(__file__).resolve().parent / "fixtures" / "pre_vmap_run"


def test_a_run_from_before_the_vmap_state_layout_fails_in_one_line_that_says_what_to_do(tmp_path, capsys):
    run_dir = shutil.copytree(PRE_VMAP_RUN, tmp_path / "old").resolve()
    files = {path: path.read_bytes() for path in run_dir.rglob("*") if path.is_file()}
    assert ckpt.read_meta(run_dir / "checkpoints", 24)["format"] == 2 < ckpt.META_FORMAT

    with pytest.raises(ckpt.CheckpointFormatError, match=r"retrain it with a new run, or check out 5826318\^ to use it there") as error:
        load_policy(run_dir)
    assert str(run_dir) in str(error.value) and "\n" not in str(error.value)
    capsys.readouterr()
    for command in (lambda: evaluate_script.main([str(run_dir)]),
                    lambda: train_script.main(["--resume", str(run_dir), "--steps", "48"])):
        assert main_guard(command) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error: {run_dir} holds checkpoints of format 2") and "\n" not in err
        assert "check out 5826318^" in err
    assert {path: path.read_bytes() for path in run_dir.rglob("*") if path.is_file()} == files, "nothing was written"


def test_a_current_checkpoint_that_does_not_fit_is_not_called_old(tmp_path):
    checkpointer = ckpt.Checkpointer(tmp_path, meta={"format": ckpt.META_FORMAT})
    checkpointer.save(1, {"w": jnp.zeros(2)})
    checkpointer.close()
    with pytest.raises(ValueError) as error:
        ckpt.restore(tmp_path / "checkpoints", 1, {"v": jnp.zeros(2)})
    assert not isinstance(error.value, ckpt.CheckpointFormatError)


def test_env_records_rebuild_the_env_without_the_dataset():
    """Built-in envs are stored by factory; others (e.g. a Minari dataset's recorded env) by
    their gymnasium EnvSpec; a factory outside the allowed list is never imported."""
    import functools

    import gymnasium as gym

    from offrl.envs.spec import DatasetSpec
    from offrl.envs import make_env

    def spec_of(factory):
        return DatasetSpec(name="x", family="minari", env_factory=factory, ref_min_score=0.0, ref_max_score=1.0,
                           goal_conditioned=False)

    by_factory = ckpt.env_record(spec_of(functools.partial(make_env, "CartPole-v1")))
    assert by_factory["factory"] == {"function": "offrl.envs:make_env", "args": ["CartPole-v1"], "kwargs": {}}
    by_gym_spec = ckpt.env_record(spec_of(lambda **kwargs: gym.make("CartPole-v1", max_episode_steps=50, **kwargs)))
    assert by_gym_spec["factory"] is None and by_gym_spec["gym_spec"] is not None
    for record in (by_factory, by_gym_spec):
        record = json.loads(json.dumps(record))
        assert record["observation_space"]["shape"] == [4] and record["action_space"] == {"type": "Discrete", "n": 2, "start": 0}
        spec = ckpt.spec_from_record(record)
        assert (spec.name, spec.ref_max_score) == ("x", 1.0)
        env = spec.env_factory()
        assert env.observation_space.shape == (4,)
        env.close()
    assert ckpt.spec_from_record(by_gym_spec).env_factory().spec.max_episode_steps == 50
    with pytest.raises(ValueError, match="not one of"):
        ckpt.spec_from_record({**by_factory, "factory": {"function": "os:system", "args": ["true"], "kwargs": {}}})
