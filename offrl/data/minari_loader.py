"""Minari datasets from the local store (never downloaded) as flat `Transitions`.

The store is `$MINARI_DATASETS_PATH` or `~/.minari/datasets`, as in Minari itself. A Minari
episode of T steps holds T + 1 observations and T actions, rewards, terminations and
truncations; it becomes T rows with `next_observations = observations[1:]`,
`terminals = terminations` and `episode_ends` set on the last row, so unlike D4RL files no
step is lost. Dict observations are flattened with `offrl.envs.flatten_observations`, the
function evaluation envs use too.
"""

from __future__ import annotations

import json
import os
import warnings
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import numpy as np

from offrl.data.errors import DatasetError, DatasetNotFoundError, damaged_dataset_error
from offrl.envs import flatten_observations
from offrl.transitions import FIELDS, Transitions, make_transitions

if TYPE_CHECKING:
    import minari

HOW_TO_GET = (
    "Get it with `minari download {id}` on a machine with internet access (then copy the store "
    "directory, $MINARI_DATASETS_PATH or ~/.minari/datasets, here), or build a built-in dataset "
    "with `python scripts/make_dataset.py offrl/maze2d/umaze-v0`."
)
CACHE_FILE = "offrl_transitions.npz"
CACHE_VERSION = 1  # bump when the row layout produced by read_minari_transitions changes


def local_minari_ids() -> list[str]:
    """Ids of the datasets in the local Minari store, sorted; misconfigured entries are skipped."""
    import minari

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Minari warns about each misconfigured directory
        return sorted(minari.list_local_datasets())


def open_minari_dataset(dataset_id: str) -> minari.MinariDataset:
    """The local Minari dataset `dataset_id`, with errors that say which id or file is at fault."""
    import minari
    from minari.storage import get_dataset_path

    data_path = get_dataset_path(dataset_id) / "data"
    if not data_path.is_dir():
        raise DatasetNotFoundError(
            f"Minari dataset {dataset_id!r} is not in the local store {get_dataset_path()} "
            f"(local ids: {local_minari_ids() or 'none'}). " + HOW_TO_GET.format(id=dataset_id)
        )
    try:
        return minari.load_dataset(dataset_id, download=False)
    except Exception as error:  # JSON, space-deserialization or storage errors: all mean a broken store
        raise damaged_dataset_error(dataset_id, data_path / "metadata.json", f"cannot be opened ({type(error).__name__}: {error})") from error


def load_minari(dataset_id: str) -> Transitions:
    """All episodes of a local Minari dataset, in episode order, as flat float32 transitions."""
    dataset = open_minari_dataset(dataset_id)
    return minari_transitions(dataset)


def minari_transitions(dataset: minari.MinariDataset) -> Transitions:
    """The dataset's rows, from a cache beside the store's files when it is current.

    Reading a Minari HDF5 store costs a few HDF5 object reads per episode (about 0.3 ms each),
    which for datasets of many short episodes (the built-in goal-conditioned pointmaze ones average ~80 steps)
    adds up to tens of seconds, so the flat arrays are saved once as `offrl_transitions.npz`
    in the dataset's directory (next to `data/`, where Minari does not look) and reused while
    the episode file's size and modification time are unchanged. A store that cannot be
    written to is simply read every time.
    """
    cache_path = Path(dataset.storage.data_path).parent / CACHE_FILE
    key = _cache_key(dataset)
    if cache_path.exists():
        try:
            with np.load(cache_path) as saved:
                if str(saved["key"]) == key:
                    return Transitions(**{name: saved[name] for name in FIELDS})
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            pass  # an unreadable cache (say, a write cut short) is rebuilt below
    transitions = read_minari_transitions(dataset)
    write_transitions_cache(dataset, transitions)
    return transitions


def write_transitions_cache(dataset: minari.MinariDataset, transitions: Transitions) -> None:
    """Save `transitions` as the dataset's current cache (a generator that still holds the
    arrays writes it, so the first load skips reading the store)."""
    cache_path = Path(dataset.storage.data_path).parent / CACHE_FILE
    temporary = cache_path.with_suffix(f".{os.getpid()}.tmp.npz")
    try:
        np.savez(temporary, key=np.asarray(_cache_key(dataset)), **transitions.as_dict())
        os.replace(temporary, cache_path)
    except OSError:
        temporary.unlink(missing_ok=True)


def _cache_key(dataset: minari.MinariDataset) -> str:
    """What the cached arrays depend on: loader version, episode selection and the files' state."""
    data_path = Path(dataset.storage.data_path)
    files = sorted(path for path in data_path.rglob("*") if path.is_file())
    stats = [(str(path.relative_to(data_path)), path.stat().st_size, path.stat().st_mtime_ns) for path in files]
    episodes = dataset.episode_indices
    return json.dumps([CACHE_VERSION, dataset.id, len(episodes), int(episodes.sum()), stats])


def read_minari_transitions(dataset: minari.MinariDataset) -> Transitions:
    """Concatenate a dataset's episodes into rows; the per-episode work is only slicing.

    Observations of each episode are flattened as a whole batch, and columns are joined with
    one `np.concatenate` at the end, so loading costs a few array copies per episode.
    """
    storage_file = _storage_file(dataset)
    try:
        return transitions_from_episodes(
            dataset.iterate_episodes(), dataset.observation_space, dataset.action_space, dataset.id, storage_file
        )
    except DatasetError:
        raise
    except (OSError, KeyError, ValueError, TypeError, RuntimeError) as error:  # h5py raises RuntimeError on corrupt blocks
        raise damaged_dataset_error(dataset.id, storage_file, f"reading failed ({type(error).__name__}: {error})") from error


def transitions_from_episodes(
    episodes: Iterable[Any], observation_space: Any, action_space: Any, dataset_id: str, source: str
) -> Transitions:
    """Rows of Minari episodes (stored `EpisodeData` or in-memory `EpisodeBuffer`s)."""
    columns: dict[str, list[np.ndarray]] = {
        "observations": [],
        "next_observations": [],
        "actions": [],
        "rewards": [],
        "terminals": [],
        "episode_ends": [],
    }
    for episode in episodes:
        _append_episode(columns, episode, observation_space, action_space, dataset_id)
    if not columns["rewards"]:
        raise DatasetError(f"Minari dataset {dataset_id!r} at {source} has no steps.")
    arrays = {name: np.concatenate(parts) for name, parts in columns.items()}
    for name in ("observations", "next_observations", "actions", "rewards"):
        if not np.isfinite(arrays[name]).all():
            raise DatasetError(f"Minari dataset {dataset_id!r} ({source}) has NaN or Inf in {name}.")
    return make_transitions(**arrays)


def _append_episode(
    columns: dict[str, list[np.ndarray]], episode: Any, observation_space: Any, action_space: Any, dataset_id: str
) -> None:
    steps = len(episode.rewards)
    if steps == 0:
        return
    observations = flatten_observations(observation_space, episode.observations)
    if len(observations) != steps + 1:
        raise DatasetError(
            f"Minari dataset {dataset_id!r}, episode {episode.id}: {len(observations)} observations for "
            f"{steps} steps (expected {steps + 1}); the dataset is malformed."
        )
    ends = np.zeros(steps, np.float32)
    ends[-1] = 1.0
    columns["observations"].append(observations[:-1])
    columns["next_observations"].append(observations[1:])
    columns["actions"].append(flatten_observations(action_space, episode.actions))
    columns["rewards"].append(np.asarray(episode.rewards, np.float32).reshape(-1))
    columns["terminals"].append(np.asarray(episode.terminations, np.float32).reshape(-1))
    columns["episode_ends"].append(ends)


def _storage_file(dataset: minari.MinariDataset) -> str:
    """The file (HDF5) or directory (Arrow) holding the episodes, for error messages."""
    data_path = dataset.storage.data_path
    main_file = data_path / "main_data.hdf5"
    return str(main_file if main_file.exists() else data_path)


def minari_ref_scores(dataset: minari.MinariDataset) -> tuple[float | None, float | None]:
    """(ref_min_score, ref_max_score) recorded in the dataset's metadata, None where absent."""
    metadata = dataset.storage.metadata
    low, high = metadata.get("ref_min_score"), metadata.get("ref_max_score")
    return (None if low is None else float(low), None if high is None else float(high))
