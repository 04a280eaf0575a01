"""A non-editable install works from outside the repository: the entry points train, evaluate
and export with the package's own presets, not the checkout's files."""

from __future__ import annotations

import os
import subprocess
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_non_editable_install_trains_evaluates_and_exports_outside_the_repository(tmp_path: Path, small_umaze_id: str):
    # The venv sees this interpreter's packages (jax, gymnasium, ...), so only offrl itself is
    # installed, built in pip's isolated build env from pyproject.toml like any user's install.
    env_dir = tmp_path / "venv"
    venv.create(env_dir, system_site_packages=True, with_pip=True)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--disable-pip-version-check", str(REPO)],
        check=True, cwd=tmp_path,
    )
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env["WANDB_MODE"] = "disabled"

    def run(*command: str) -> str:
        result = subprocess.run(command, cwd=outside, env=env, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, result.stderr
        return result.stdout

    located = run(str(python), "-c", "import offrl, offrl.config as c; print(offrl.__file__); print(c.PRESET_DIR)")
    package_file, preset_dir = located.split()
    assert Path(package_file).is_relative_to(env_dir), "the venv's copy of offrl is the one imported"
    assert (Path(preset_dir) / "iql" / "maze2d.yaml").is_file(), "presets ship as package data"

    bin_dir = env_dir / "bin"
    run(str(bin_dir / "offrl-train"), "--agent", "iql-ddpg", "--dataset", small_umaze_id, "--steps", "20",
        "--updates-per-call", "10", "--hidden-dims", "8,8", "--batch-size", "16", "--eval-episodes", "2",
        "--run-dir", "run")
    assert (outside / "run" / "summary.json").is_file()
    assert '"step": 20' in run(str(bin_dir / "offrl-evaluate"), "run", "--episodes", "2")
    run(str(bin_dir / "offrl-export"), "run", "--out", "exported")
    assert (outside / "exported" / "policy.jax").is_file()
