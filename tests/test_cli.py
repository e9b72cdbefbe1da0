"""The CLI shell: one-line errors, exit codes, --json errors, --version."""

import json

from modelpack import __version__
from modelpack.cli import main


def test_error_is_one_line_naming_the_path_with_nonzero_exit(tmp_path, capsys):
    missing = tmp_path / "no-such-checkpoint"
    code = main(["convert", str(missing), "-o", str(tmp_path / "out.gguf")])
    err = capsys.readouterr().err.splitlines()
    assert code == 2
    assert err[0].startswith("error: ") and str(missing) in err[0]
    assert err[-1] == "(set MODELPACK_DEBUG=1 for the traceback)"
    assert not (tmp_path / "out.gguf").exists()


def test_json_errors_are_json_on_stdout(tmp_path, capsys):
    missing = tmp_path / "no-such-checkpoint"
    code = main(["convert", str(missing), "-o", str(tmp_path / "out.gguf"), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == out["exit_code"] == 2
    assert str(missing) in out["error"] and out["type"].endswith("Error")


def test_usage_error_exits_2(capsys):
    assert main(["convert"]) == 2


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"modelpack {__version__}"
