import subprocess
import sys

import pytest

from serendip.cli import VERBS, main


def test_help_lists_every_verb(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for verb in VERBS:
        assert verb in out


def test_synth_then_validate(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path), "--items", "100", "--users", "20",
                 "--branching", "2/2/2/2"]) == 0
    assert main(["validate", "--data", str(tmp_path)]) == 0
    assert "interactions: 800 rows OK" in capsys.readouterr().out


def _run(*args):
    return subprocess.run([sys.executable, "-m", "serendip.cli", *args],
                          capture_output=True, text=True)


def test_bad_flag_value_exits_2_with_one_line(tmp_path):
    p = _run("synth", "--out", str(tmp_path), "--items", "zero")
    assert p.returncode == 2 and "--items must be an integer" in p.stderr
    assert not any(tmp_path.iterdir())


def test_config_error_exits_2_and_writes_nothing(tmp_path):
    p = _run("synth", "--out", str(tmp_path / "o"), "--items", "5", "--branching", "2/2/2/2")
    assert p.returncode == 2
    assert p.stderr.strip().count("\n") == 0 and "use --items >= 16" in p.stderr
    assert "Traceback" not in p.stderr
    assert not (tmp_path / "o").exists()


def test_schema_violation_exits_2(tmp_path):
    (tmp_path / "items.csv").write_text("item_id,title\na,b\n")
    p = _run("validate", "--data", str(tmp_path))
    assert p.returncode == 2
    assert "items.impressions: column is missing" in p.stderr and "Traceback" not in p.stderr
