"""benchmarks/import_graph.py: edge kinds and the cycles it reports (docs/architecture.md)."""

from __future__ import annotations

from pathlib import Path

from benchmarks import import_graph


def write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_runtime_cycles_are_found_and_annotation_imports_are_not_edges(tmp_path):
    write(tmp_path, "offrl/__init__.py", "")
    write(tmp_path, "offrl/a.py", "from offrl import b\nfrom offrl.c import thing\n")
    write(tmp_path, "offrl/b.py", "def later():\n    import offrl.a\n")
    write(tmp_path, "offrl/c.py", "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from offrl.a import x\nthing = 1\n")
    write(tmp_path, "offrl/agents/__init__.py", "")
    write(tmp_path, "offrl/agents/new.py", "from offrl.a import y\nfrom .__init__ import z\n")
    edges = import_graph.import_edges(import_graph.module_paths(tmp_path))
    assert edges["offrl.a"] == {"offrl.b": "", "offrl.c": ""}
    assert edges["offrl.b"] == {"offrl.a": "*"} and edges["offrl.c"] == {"offrl.a": "+"}
    assert edges["offrl.agents.new"] == {"offrl.a": "", "offrl.agents": ""}
    runtime = {m: {t for t, kind in targets.items() if kind != "+"} for m, targets in edges.items()}
    assert import_graph.cycles(runtime) == [["offrl.a", "offrl.b"]]


def test_a_cycle_between_subpackages_is_found_though_no_two_modules_form_one(tmp_path):
    write(tmp_path, "offrl/__init__.py", "")
    write(tmp_path, "offrl/agents/__init__.py", "")
    write(tmp_path, "offrl/agents/a.py", "from offrl.data.loader import rows\n")
    write(tmp_path, "offrl/data/__init__.py", "")
    write(tmp_path, "offrl/data/loader.py", "rows = 1\n")
    write(tmp_path, "offrl/data/other.py", "from offrl.agents import a\n")
    edges = import_graph.import_edges(import_graph.module_paths(tmp_path))
    runtime = {m: set(targets) for m, targets in edges.items()}
    assert import_graph.cycles(runtime) == []
    packages = import_graph.subpackages(tmp_path)
    assert packages == ["offrl.agents", "offrl.data"]
    assert import_graph.cycles(import_graph.collapse_packages(runtime, packages)) == [["offrl.agents", "offrl.data"]]


def test_the_one_file_agent_needs_only_the_shared_networks_losses_and_config_fields_at_run_time():
    edges = import_graph.import_edges(import_graph.module_paths(Path(__file__).resolve().parent.parent))
    assert edges["offrl.agents.td3bc"] == {"offrl.config": "", "offrl.losses": "", "offrl.networks": ""}


def test_offrl_and_scripts_import_no_cycle():
    """No module imports one that imports it back, at any depth, counting imports made at
    call time; also with each subpackage (offrl.agents, offrl.data, ...) taken as one node."""
    root = Path(__file__).resolve().parent.parent
    edges = import_graph.import_edges(import_graph.module_paths(root))
    runtime = {m: {t for t, kind in targets.items() if kind != "+"} for m, targets in edges.items()}
    assert import_graph.cycles(runtime) == []
    assert import_graph.cycles(import_graph.collapse_packages(runtime, import_graph.subpackages(root))) == []


def test_there_is_no_top_level_agents_package():
    root = Path(__file__).resolve().parent.parent
    assert not (root / "agents").exists()
    assert not [module for module in import_graph.module_paths(root) if module.split(".")[0] not in ("offrl", "scripts")]
