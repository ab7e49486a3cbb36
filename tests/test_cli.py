"""`labkit reproduce`: chapters by name, declared parameters only, runs into runs/<profile>/<chapter>/."""
import json

import nbformat
import pytest

from labkit import cli


def _notebook(path, parameters_source="profile = 'book'\ndevice = 'auto'\nseed = 0\n"):
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell(parameters_source)
    params.metadata["tags"] = ["parameters"]
    body = nbformat.v4.new_code_cell(
        "import json, os, pathlib\n"
        "out = pathlib.Path(os.environ['LABKIT_RUN_DIR'])\n"
        "(out / 'metrics.json').write_text(json.dumps({'profile': profile, 'seed': seed}))")
    nb.cells = [params, body]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


@pytest.fixture
def notebooks(tmp_path, monkeypatch):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    _notebook(folder / "00_toy.ipynb")
    _notebook(folder / "01_other.ipynb")
    monkeypatch.setattr(cli, "NOTEBOOKS", folder)
    return folder


def test_chapters_resolve_by_number_name_or_stem(notebooks):
    available = cli.chapters(notebooks)
    assert available == ["00_toy", "01_other"]
    assert cli.resolve_chapter("00", available) == "00_toy"
    assert cli.resolve_chapter("other", available) == "01_other"
    with pytest.raises(ValueError, match="unknown chapter 'crm'"):
        cli.resolve_chapter("crm", available)


def test_misspelled_parameter_fails_before_running(notebooks, tmp_path):
    with pytest.raises(ValueError, match=r"no parameter\(s\) \['sede'\]"):
        cli.reproduce("smoke", ["00"], extra={"sede": 1}, runs_root=tmp_path / "runs")
    assert not (tmp_path / "runs" / "smoke" / "00_toy" / "00_toy.ipynb").exists()
    assert cli.main(["reproduce", "--profile", "smoke", "-p", "sede", "1", "00"]) == 2


def test_unknown_profile_is_rejected(notebooks):
    with pytest.raises(ValueError, match="unknown profile"):
        cli.check_parameters(notebooks / "00_toy.ipynb", {"profile": "fast"})


def test_reproduce_writes_executed_notebook_and_metrics_into_the_run_folder(notebooks, tmp_path):
    source = (notebooks / "00_toy.ipynb").read_bytes()
    [run] = cli.reproduce("smoke", ["toy"], extra={"seed": 3}, runs_root=tmp_path / "runs")
    assert run == tmp_path / "runs" / "smoke" / "00_toy"
    assert json.loads((run / "metrics.json").read_text()) == {"profile": "smoke", "seed": 3}
    executed = nbformat.read(run / "00_toy.ipynb", as_version=4)
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in executed.cells)
    assert (notebooks / "00_toy.ipynb").read_bytes() == source   # the source is never written


def test_every_course_notebook_declares_the_standard_parameters():
    for name in cli.chapters():
        declared = cli.declared_parameters(cli.NOTEBOOKS / f"{name}.ipynb")
        assert {"profile", "device", "seed"} <= set(declared), name
        assert declared["profile"] == "book", f"{name} must default to the book profile"


def test_dry_run_reproduces_the_full_profile_into_runs_dry_run(notebooks, tmp_path, monkeypatch):
    """--dry-run: the kernels see LABKIT_DRY_RUN=1 and the GPU branch switch, and write to
    runs/dry-run/<chapter>/, never runs/full/; it goes with the full profile only."""
    for name in ("LABKIT_DRY_RUN", "LABKIT_BF16_CHANNELS_LAST"):
        monkeypatch.delenv(name, raising=False)
    body = ("import json, os, pathlib\n"
            "out = pathlib.Path(os.environ['LABKIT_RUN_DIR'])\n"
            "(out / 'metrics.json').write_text(json.dumps({'profile': profile, 'dry_run': os.environ.get('LABKIT_DRY_RUN'),"
            " 'fast': os.environ.get('LABKIT_BF16_CHANNELS_LAST')}))")
    nb = nbformat.read(notebooks / "00_toy.ipynb", as_version=4)
    nb.cells[1].source = body
    nbformat.write(nb, notebooks / "00_toy.ipynb")
    [run] = cli.reproduce("full", ["toy"], runs_root=tmp_path / "runs", dry_run=True)
    assert run == tmp_path / "runs" / "dry-run" / "00_toy"
    assert json.loads((run / "metrics.json").read_text()) == {"profile": "full", "dry_run": "1", "fast": "1"}
    assert not (tmp_path / "runs" / "full").exists()
    assert "LABKIT_DRY_RUN" not in __import__("os").environ   # this process's environment is restored
    with pytest.raises(ValueError, match="use it with --profile full"):
        cli.reproduce("book", ["toy"], runs_root=tmp_path / "runs", dry_run=True)
