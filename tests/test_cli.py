"""Command-line checks that need no training: parameter validation before a run starts."""

import pytest

from pipelines.cli import main


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--dropout", "1.5"], "dropout must be in [0, 1), got 1.5"),
        (["--optimizer", "adamx"], "optimizer 'adamx' is not one of adam, adamw, sgd, rmsprop"),
        (["--unfreeze", "top:x"], "unfreeze 'top:x' must be 'all', 'top:N'"),
        (["--image-size", "16"], "image_size 16 is below the minimum input size 32 px"),
        (["--base-weights", "/nonexistent/w.weights.h5"], "base_weights file '/nonexistent/w.weights.h5' does not exist"),
        (["--eval-fraction", "0.6", "--test-fraction", "0.5"], "eval_fraction + test_fraction must be below 1"),
    ],
)
def test_run_local_refuses_bad_settings_before_running(flags, message, tmp_path, capsys):
    """Regression: these were only caught inside the finetune step, after preprocessing ran."""
    code = main(["run-local", "--data-uri", str(tmp_path), "--registry-uri", str(tmp_path / "reg"),
                 "--pipeline-root", str(tmp_path / "root"), *flags])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1]
    assert not (tmp_path / "root").exists() or not any((tmp_path / "root").iterdir())


def test_a_plain_file_as_data_uri_is_named(tmp_path):
    from components import sources

    (tmp_path / "make.py").write_text("print(1)")
    with pytest.raises(ValueError, match=r"data_uri '.*make.py' is a file, but not a .csv manifest or a .tfrecord"):
        sources.discover(str(tmp_path / "make.py"))
