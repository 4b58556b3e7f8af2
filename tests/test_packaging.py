"""The settings example and the wheel: what a user gets from the project as shipped."""
from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import zipfile

import yaml

from distributor.settings import ChannelsSettings, Settings, load_settings

from .conftest import ROOT


def test_settings_example_names_every_key_with_its_default():
    example = load_settings(ROOT / "settings.example.yaml")
    assert example == Settings()

    def keys(value, prefix=""):
        for field in dataclasses.fields(value):
            child = getattr(value, field.name)
            yield prefix + field.name
            if dataclasses.is_dataclass(child):
                yield from keys(child, prefix + field.name + ".")
            elif isinstance(child, ChannelsSettings):       # one block per installed channel
                for name, block in child.items():
                    yield f"{prefix}{field.name}.{name}"
                    yield from keys(block, f"{prefix}{field.name}.{name}.")

    def written(mapping, prefix=""):
        for key, value in mapping.items():
            yield prefix + key
            if isinstance(value, dict):
                yield from written(value, prefix + key + ".")

    text = (ROOT / "settings.example.yaml").read_text(encoding="utf-8")
    assert set(keys(Settings())) == set(written(yaml.safe_load(text)))


def test_installed_wheel_renders_outside_the_checkout(tmp_path):
    # Built from a copy without the checkout's build/ folder, whose leftovers would hide a file that
    # the package data leaves out.
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__",
                                                                 ".ruff_cache", ".mypy_cache"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist"), str(source)], check=True, timeout=300,
                   cwd=tmp_path, capture_output=True)
    (wheel,) = (tmp_path / "dist").glob("distributor-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    templates = {f"distributor/templates/{path.relative_to(ROOT / 'templates')}"
                 for path in (ROOT / "templates").rglob("*") if path.is_file() and "__pycache__" not in path.parts}
    assert templates - set(names) == set()          # every template the code may load is installed
    assert "distributor/channels/__init__.py" in names and "distributor/channels/wechat/publisher.py" in names
    # One top-level package beside its metadata: no generic `channels` or `templates` at the root.
    roots = {name.split("/")[0] for name in names}
    assert {root for root in roots if not root.endswith(".dist-info")} == {"distributor"}
    installed = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(installed)
    example = next(name for name in names if name.startswith("distributor/examples/") and name.endswith(".md"))
    environment = {**os.environ, "PYTHONPATH": str(installed), "PYTHONSAFEPATH": "1"}
    result = subprocess.run([sys.executable, "-P", "-m", "distributor", "preview", str(installed / example),
                             "--out", str(tmp_path / "out")], cwd=tmp_path, env=environment,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "email.html").stat().st_size > 1000
    probe = subprocess.run([sys.executable, "-P", "-c", "import distributor; print(distributor.__file__)"],
                           cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=60)
    assert probe.stdout.startswith(str(installed))
