"""The FiftyOne plugin registers cleanly and runs; `doctor` and `plugin install` behave."""

import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from curate_loop.cli import cli
from curate_loop.errors import InvalidInputError
from curate_loop.plugin_install import PLUGIN_NAME, install_plugin, plugin_source_dir


def test_operators_register_without_errors(plugin_installed):
    import fiftyone.operators.registry as registry

    assert registry.OperatorRegistry().list_errors() == []
    import yaml

    uris = {op.uri for op in registry.list_operators()}
    declared = yaml.safe_load((plugin_source_dir() / "fiftyone.yml").read_text())
    expected = declared["operators"] + declared["panels"]
    assert "curation_loop" in expected and "run_loop_iteration" in expected
    assert {f"{PLUGIN_NAME}/{name}" for name in expected} <= uris  # every declared operator and panel registered


def test_summary_operator_runs_headless_on_the_example(example_dataset):
    from fiftyone.operators import execute_operator

    result = execute_operator(f"{PLUGIN_NAME}/dataset_summary", ctx={"dataset": example_dataset.name, "params": {}})
    assert result.result["samples"] == 90
    assert result.result["labeled_samples"] == 30  # ground_truth by default, not the kept-aside truth
    n_objects = example_dataset.count("ground_truth.detections")
    per_class = dict(item.split(": ") for item in result.result["labels_per_class"].split(", "))
    assert sum(int(v) for v in per_class.values()) == n_objects


def test_plugin_install_is_idempotent_and_protects_foreign_folders(tmp_path):
    target = install_plugin(tmp_path)
    assert target.resolve() == plugin_source_dir()
    assert install_plugin(tmp_path) == target  # second run: same link, no error
    copied = install_plugin(tmp_path, copy=True)
    assert not copied.is_symlink() and (copied / "fiftyone.yml").is_file()
    foreign = tmp_path / "other" / "curate-loop"
    foreign.mkdir(parents=True)
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(InvalidInputError, match="is not a curate-loop plugin folder"):
        install_plugin(tmp_path / "other")
    assert (foreign / "notes.txt").read_text() == "mine"


def test_plugin_install_from_a_plain_pip_install(tmp_path):
    """A wheel (not the checkout) carries the plugin folder and its fiftyone.yml."""
    root = plugin_source_dir().parent
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path), str(root)], capture_output=True, text=True)
    if proc.returncode != 0:  # the venv may lack pip's build deps; uv builds the same wheel
        proc = subprocess.run([str(root / ".venv" / "bin" / "uv"), "build", "--wheel", "-q", "-o", str(tmp_path),
                               str(root)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    import zipfile

    (wheel,) = tmp_path.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "curate_loop/plugin/fiftyone.yml" in names
    assert "curate_loop/plugin/__init__.py" in names
    assert "curate_loop/adapters/labelstudio/server.py" in names
    assert "curate_loop/examples/digits_canvas.py" in names


def test_doctor_passes_when_everything_is_set_up(plugin_installed, labelstudio, monkeypatch):
    monkeypatch.setenv("LABEL_STUDIO_URL", labelstudio.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", labelstudio.token)
    result = CliRunner().invoke(cli, ["doctor"])
    assert result.exit_code == 0, result.output
    for name in ("python packages", "torch / open_clip", "mongod binary", "mongodb start", "fiftyone plugin", "label studio"):
        assert f"ok   {name}" in result.output


def test_doctor_fails_with_the_fix_when_label_studio_is_missing(plugin_installed, monkeypatch, tmp_path):
    monkeypatch.setenv("CURATE_LOOP_LABEL_STUDIO_BIN", str(tmp_path / "missing"))
    monkeypatch.setenv("CURATE_LOOP_HOME", str(tmp_path / "home"))  # no key file either
    result = CliRunner().invoke(cli, ["doctor"])
    assert result.exit_code == 1
    assert "FAIL label studio" in result.output
    assert "fix: run `curate-loop labelstudio install`" in result.output


def test_doctor_fails_when_no_key_is_at_hand_and_keeps_warnings_out_of_its_table(plugin_installed, monkeypatch,
                                                                                 tmp_path):
    """No key in the environment and no key file: FAIL (every sync command would fail), with the file to source.
    FiftyOne's MongoDB-version warning never lands among the table's lines."""
    monkeypatch.setenv("CURATE_LOOP_HOME", str(tmp_path / "home"))
    result = CliRunner().invoke(cli, ["doctor"])
    assert result.exit_code == 1
    line = next(line for line in result.output.splitlines() if "label studio" in line)
    assert line.split()[0] == "FAIL" and "no Label Studio key" in line
    assert f"source {tmp_path / 'home' / 'labelstudio.env'}" in result.output
    assert "oldest supported major version of MongoDB" not in result.output
    # CI's form: the server installed is enough (every test starts its own), and says that no key was checked
    without = CliRunner().invoke(cli, ["doctor", "--without-key"])
    assert without.exit_code == 0, without.output
    line = next(line for line in without.output.splitlines() if "label studio" in line)
    assert line.split()[0] == "ok" and "no key checked" in line


def test_doctor_reads_the_key_file_and_says_so(plugin_installed, labelstudio, monkeypatch, tmp_path):
    from curate_loop.adapters.labelstudio.keyfile import write_env_file

    monkeypatch.setenv("CURATE_LOOP_HOME", str(tmp_path / "home"))
    path = write_env_file(labelstudio.url, labelstudio.token)
    result = CliRunner().invoke(cli, ["doctor"])
    line = next(line for line in result.output.splitlines() if "label studio" in line)
    assert line.split()[0] == "ok" and f"key from {path}" in line
    assert labelstudio.token not in result.output


def test_doctor_fails_on_a_key_with_a_trailing_newline_without_echoing_it(plugin_installed, labelstudio, monkeypatch):
    monkeypatch.setenv("LABEL_STUDIO_URL", labelstudio.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", labelstudio.token + "\n")
    result = CliRunner().invoke(cli, ["doctor"])
    assert result.exit_code == 1
    assert "trailing newline" in result.output and labelstudio.token not in result.output


def test_doctor_reports_an_unreachable_configured_server(plugin_installed, monkeypatch):
    monkeypatch.setenv("LABEL_STUDIO_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "secret-key-value")
    result = CliRunner().invoke(cli, ["doctor"])
    assert result.exit_code == 1
    assert "http://127.0.0.1:9 is not reachable" in result.output
    assert "secret-key-value" not in result.output


def test_doctor_accepts_the_real_server_and_its_token(plugin_installed, labelstudio, monkeypatch):
    monkeypatch.setenv("LABEL_STUDIO_URL", labelstudio.url)
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", labelstudio.token)
    result = CliRunner().invoke(cli, ["doctor"])
    assert result.exit_code == 0, result.output
    assert f"legacy token accepted for {labelstudio.credentials.username}" in result.output
    assert labelstudio.token not in result.output


def test_doctor_flags_a_missing_plugin(tmp_path, monkeypatch):
    env = {**os.environ, "FIFTYONE_PLUGINS_DIR": str(tmp_path / "empty")}
    proc = subprocess.run([sys.executable, "-m", "curate_loop.cli", "doctor"], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 1
    assert "FAIL fiftyone plugin" in proc.stdout
    assert "fix: run `curate-loop plugin install`" in proc.stdout


def test_example_build_cli_twice_needs_overwrite(tmp_path):
    runner = CliRunner()
    args = ["example", "build", "--name", "cli-example", "--media-dir", str(tmp_path), "--n-labeled", "4",
            "--n-pool", "50"]
    first = runner.invoke(cli, args)
    assert first.exit_code == 0, first.output
    assert "Built dataset 'cli-example': 54 samples (4 labeled, 50 pool)" in first.output
    second = runner.invoke(cli, args)
    assert second.exit_code == 1
    assert "already exists. Pass overwrite=True (CLI: --overwrite)" in second.output
    bad = runner.invoke(cli, args[:-1] + ["5", "--overwrite"])
    assert bad.exit_code == 2 and "raise n_pool to at least 44" in bad.output
