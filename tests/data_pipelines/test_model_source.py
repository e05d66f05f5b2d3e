"""Where a model comes from: a missing path, an unknown hub id offline or unreachable, and a folder that wants
to run its own code each give one line, exit 2, and nothing written (nor any of the folder's code run)."""

from __future__ import annotations

import json

from data_pipelines.cli import main


def run(args, tmp_path, capsys) -> tuple[int, list[str]]:
    code = main([*map(str, args), "--output-root", str(tmp_path / "out"), "--progress", "false"])
    err = capsys.readouterr().err
    assert "Traceback" not in err and not (tmp_path / "out").exists()
    return code, [line for line in err.splitlines() if line.startswith("specmd-harvest:")]


def test_a_missing_model_path_says_so(tmp_path, capsys):
    code, lines = run(["--model", "/does/not/exist"], tmp_path, capsys)
    assert code == 2 and lines == [
        "specmd-harvest: error: model path /does/not/exist does not exist (and it is not a Hugging Face hub id)"
    ]


def test_an_unknown_hub_id_offline_is_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    code, lines = run(["--model", "nobody-xyz/no-such-moe"], tmp_path, capsys)
    assert code == 2 and len(lines) == 1
    assert "'nobody-xyz/no-such-moe' is neither a local folder nor in the Hugging Face cache" in lines[0]


def test_an_unreachable_hub_is_one_line_without_retries(tmp_path, capsys, monkeypatch):
    import huggingface_hub

    calls = []

    def no_network(repo_id, **kwargs):
        calls.append(kwargs.get("timeout"))
        raise OSError("[Errno -2] Name or service not known")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub, "model_info", no_network)
    code, lines = run(["--model", "nobody-xyz/no-such-moe"], tmp_path, capsys)
    assert code == 2 and len(lines) == 1 and calls == [10]  # one probe with a timeout, then the line
    assert "cannot reach the Hugging Face hub for 'nobody-xyz/no-such-moe'" in lines[0]


def test_a_folder_with_its_own_code_is_refused_and_its_code_never_runs(tmp_path, capsys, monkeypatch):
    folder = tmp_path / "custom"
    folder.mkdir()
    auto_map = {"AutoConfig": "configuration_custom.CustomConfig", "AutoModelForCausalLM": "modeling_custom.M"}
    (folder / "config.json").write_text(json.dumps({"model_type": "custom_moe", "auto_map": auto_map}))
    (folder / "configuration_custom.py").write_text("import pathlib\npathlib.Path(__file__).with_name('RAN').touch()\n")
    monkeypatch.setattr("sys.stdin", None)  # nothing to answer a prompt with
    code, lines = run(["--model", folder], tmp_path, capsys)
    assert code == 2 and len(lines) == 1
    assert f"{folder} wants to run its own Python code" in lines[0] and "trust_remote_code=False" in lines[0]
    assert not (folder / "RAN").exists()


def test_local_folders_and_the_embedded_model_need_no_hub(tiny_model_dir, monkeypatch):
    import huggingface_hub

    from data_pipelines import HarvestConfig
    from data_pipelines.model_source import check_model_source

    monkeypatch.setattr(huggingface_hub, "model_info", None)  # any hub call would fail
    for model in ("embedded", str(tiny_model_dir("olmoe"))):
        check_model_source(HarvestConfig(model=model))
