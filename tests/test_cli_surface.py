"""The `timm-nas` command's surface: one spelling per option, deprecated spellings that still work (and say so),
an example in every search command's help, and `--model-args` read as a JSON object."""
from __future__ import annotations

import argparse
import json

import pytest

from timm_nas.cli import build_parser, main
from timm_nas.commands._argtypes import kv_pairs, model_args


def _search_parsers() -> dict[str, argparse.ArgumentParser]:
    top = build_parser()
    sub = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    search = next(a for a in sub.choices["search"]._actions if isinstance(a, argparse._SubParsersAction))
    return dict(search.choices)


def _parse(argv: list[str]) -> argparse.Namespace:
    return build_parser().parse_args(argv)


# (old argv, new argv, the deprecated flag): both parse to the same namespace
RENAMED = [
    (["search", "darts", "--data-dir", "d", "--output", "o"], ["search", "darts", "--data-dir", "d", "--out", "o"],
     "--output"),
    (["train-darts", "--data-dir", "d", "--output", "o"], ["train-darts", "--data-dir", "d", "--out", "o"], "--output"),
    (["search", "spvit", "--data-dir", "d", "--output", "o"], ["search", "spvit", "--data-dir", "d", "--out", "o"],
     "--output"),
    (["search", "spvit", "--data-dir", "d", "--out", "o", "--push-to", "me/x"],
     ["search", "spvit", "--data-dir", "d", "--out", "o", "--push-to-hub", "me/x"], "--push-to"),
    (["search", "spvit", "--data-dir", "d", "--out", "o", "--model-kwargs", '{"depth": 2}'],
     ["search", "spvit", "--data-dir", "d", "--out", "o", "--model-args", '{"depth": 2}'], "--model-kwargs"),
]


@pytest.mark.parametrize("old, new, flag", RENAMED, ids=[f"{r[0][:2]}{r[2]}" for r in RENAMED])
def test_deprecated_spelling_works_and_warns_once(old, new, flag, capsys):
    assert vars(_parse(old)) == vars(_parse(new))
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and flag in err[0] and "deprecated" in err[0], err


def test_eval_subnet_model_kwargs_pairs_become_model_args(capsys):
    base = ["eval-subnet", "--checkpoint", "c.pth", "--subnet", "autoformer_tiny", "--data-dir", "d"]
    old = _parse(base + ["--model-kwargs", "space=tiny", "img_size=224", "sampling=uniform"])
    assert old.model_args == {"space": "tiny", "img_size": 224, "sampling": "uniform"}
    assert "--model-kwargs is deprecated" in capsys.readouterr().err
    new = _parse(base + ["--model-args", '{"space": "tiny", "img_size": 224, "sampling": "uniform"}'])
    assert model_args(new.model_args) == old.model_args
    assert _parse(base).model_args is None


def test_old_and_new_spelling_together_and_neither_are_usage_errors(capsys):
    with pytest.raises(SystemExit) as e:
        _parse(["search", "darts", "--data-dir", "d", "--out", "a", "--output", "b"])
    assert e.value.code == 2 and "not allowed with" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        _parse(["search", "darts", "--data-dir", "d"])
    assert e.value.code == 2 and "--out" in capsys.readouterr().err


def test_every_search_command_shows_an_example(capsys):
    parsers = _search_parsers()
    assert {"tf-tas", "evolution", "random", "proxies", "darts", "spvit", "s3-space"} <= set(parsers)
    for name, parser in parsers.items():
        text = parser.format_help()
        assert "Example" in text and f"timm-nas search {name}" in text.split("Example", 1)[1], name
        assert "--pretrained " not in text.split("Example", 1)[1], name  # no example downloads weights


def test_model_args_reads_json_objects(tmp_path):
    assert model_args('{"patch_size": 8, "space": "tiny"}') == {"patch_size": 8, "space": "tiny"}
    path = tmp_path / "args.json"
    path.write_text(json.dumps({"img_size": 32}))
    assert model_args(str(path)) == {"img_size": 32}
    assert model_args(None) == {}
    for bad in ("[1]", "3", '"tiny"'):
        with pytest.raises(ValueError, match="--model-args must be a JSON object"):
            model_args(bad)
    with pytest.raises(ValueError, match="not valid JSON"):
        model_args('{"a": ')
    assert kv_pairs(["a=1", "b=x", "c=[1, 2]"]) == {"a": 1, "b": "x", "c": [1, 2]}


@pytest.mark.parametrize("argv", [
    ["export", "autoformer_subnet", "--out", "{out}", "--model-args", "[1]"],
    ["search", "tf-tas", "--out", "{out}", "--model-args", "[1, 2]"],
])
def test_model_args_not_an_object_is_one_error_line(argv, tmp_path, capsys):
    out = tmp_path / "out"
    assert main([a.format(out=out) for a in argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("timm-nas: error: --model-args must be a JSON object"), err
    assert not out.exists()
