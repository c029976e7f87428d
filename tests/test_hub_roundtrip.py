"""Push / pull through the real ``huggingface_hub`` client and timm's real loader, against the fake Hub in
``tests/hub_server.py`` (no network).

``huggingface_hub`` reads ``HF_ENDPOINT``, ``HF_HUB_OFFLINE`` and friends when it is imported, so the client side
runs in fresh subprocesses with the environment set; every pull happens in a process that has never seen the
model and only imports ``timm_nas``. Each fresh process costs seconds of imports, so the default suite keeps the
round trip and the offline cases and marks the other subprocess checks ``slow``. A real-Hub run is opt-in
(``-m hub_online`` with ``TIMM_NAS_HUB_TOKEN`` and ``TIMM_NAS_HUB_REPO`` set).
"""
from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Callable, Iterator, NamedTuple

import pytest
import torch

import timm
from timm_nas import cli, hub

from hub_server import FakeHub

TOKEN = "hf_fake_" + "x" * 24
REPO = "user/tiny-searched"


@pytest.fixture
def fake_hub() -> Iterator[FakeHub]:
    with FakeHub(token=TOKEN) as server:
        yield server


@pytest.fixture
def in_process_client(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Callable[[FakeHub], None]:
    """Point this process's ``huggingface_hub`` at a fake Hub (for pushes; pulls run in fresh processes). Its
    telemetry (which would fetch an agent registry from the endpoint and cache it under HF_HOME) is off."""
    from huggingface_hub import constants

    def point(server: FakeHub) -> None:
        monkeypatch.setattr(constants, "ENDPOINT", server.endpoint)
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
        monkeypatch.setattr(constants, "AGENT_HARNESSES_PATH", str(tmp_path / "agent_harnesses.json"))
        monkeypatch.setenv("HF_TOKEN", TOKEN)

    return point


def _env(server: FakeHub | None, cache: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_"))}
    env.update(HF_HUB_DISABLE_XET="1", HF_HUB_CACHE=str(cache), HF_HOME=str(cache.parent / "hf_home"),
               HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_PROGRESS_BARS="1", HF_TOKEN=TOKEN)
    env["HF_ENDPOINT"] = server.endpoint if server is not None else "http://127.0.0.1:9"  # nothing listens on 9
    env.update(extra)
    return env


def _run(code: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=300)


PULL = """
    import torch
    import timm_nas, timm
    from timm_nas import hub
    x = torch.load({x!r}, weights_only=True)
    for name, build in (("timm", lambda: timm.create_model("hf-hub:{repo}", pretrained=True)),
                        ("load", lambda: hub.load("hf-hub:{repo}"))):
        model = build().eval()
        with torch.no_grad():
            torch.save(model(x), {out!r} + name)
    print("pulled")
"""


def _pull_both(repo: str, x_path: Path, out: Path, env: dict[str, str], cwd: Path) -> dict[str, torch.Tensor]:
    """Pull ``repo`` in a fresh process with timm's loader and with ``hub.load``; their logits by loader."""
    ran = _run(PULL.format(x=str(x_path), out=str(out), repo=repo), env, cwd)
    assert ran.returncode == 0, ran.stderr
    return {name: torch.load(f"{out}{name}", weights_only=True) for name in ("timm", "load")}


def _export_test_vit(folder: Path) -> tuple[Path, Path, torch.Tensor]:
    """timm's ``test_vit`` (registered in every process) exported with a card; its input and logits."""
    model = timm.create_model("test_vit", num_classes=7).eval()
    hub.export(model, folder, card={"provenance": {"method": "random", "seed": 3},
                                    "metrics": {"top1": 12.5, "dataset": "imagenet-1k"}})
    x = torch.randn(2, 3, 160, 160, generator=torch.Generator().manual_seed(0))
    torch.save(x, folder.parent / "x.pt")
    with torch.no_grad():
        return folder, folder.parent / "x.pt", model(x)


class Published(NamedTuple):
    hub: FakeHub
    folder: Path
    x_path: Path
    ref: torch.Tensor
    cache: Path
    push: subprocess.CompletedProcess


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Published]:
    """One export pushed by a fresh process with the real client; the pulls share its warm cache."""
    root = tmp_path_factory.mktemp("published")
    folder, x_path, ref = _export_test_vit(root / "export")
    with FakeHub(token=TOKEN, lifetime_s=900) as server:
        cache = root / "cache"
        pushed = _run(f"""
            import logging
            logging.basicConfig(level=logging.DEBUG)
            from timm_nas import hub
            print(hub.push({str(folder)!r}, {REPO!r}))
        """, _env(server, cache), root)
        assert pushed.returncode == 0, pushed.stderr
        yield Published(server, folder, x_path, ref, cache, pushed)


def test_push_then_pull_in_a_fresh_process_gives_identical_logits(published: Published, tmp_path: Path) -> None:
    server = published.hub
    assert published.push.stdout.strip().splitlines()[-1] == f"{server.endpoint}/{REPO}"
    assert TOKEN not in published.push.stdout + published.push.stderr  # client DEBUG logs included
    repo = server.repos[REPO]
    assert sorted(repo.files) == ["README.md", "config.json", "model.safetensors"]
    assert repo.private is False and server.create_payloads[0]["visibility"] == "public"
    assert json.loads(repo.files["config.json"])["model_args"]["num_classes"] == 7
    readme = repo.files["README.md"].decode()
    assert f'timm.create_model("hf-hub:{REPO}", pretrained=True)' in readme  # push filled in the repo id
    assert hub.REPO_ID_PLACEHOLDER not in readme
    assert server.validated and all("model-index:" in c for c in server.validated)  # the card was checked

    logits = _pull_both(REPO, published.x_path, tmp_path / "y", _env(server, published.cache), tmp_path)
    assert torch.equal(logits["timm"], published.ref)  # timm's own loader, after only `import timm_nas`
    assert torch.equal(logits["load"], published.ref)

    assert server.unknown == []
    routes = {(m, re.sub(r"/resolve/main/.*", "/resolve/main/*", p)) for m, p in server.requests}
    assert routes == {("POST", "/api/repos/create"), ("POST", "/api/validate-yaml"),
                      ("POST", f"/api/models/{REPO}/preupload/main"), ("POST", f"/api/models/{REPO}/commit/main"),
                      ("HEAD", f"/{REPO}/resolve/main/*"), ("GET", f"/{REPO}/resolve/main/*")}


@pytest.mark.slow  # one more fresh process (a few seconds of imports)
def test_card_example_from_the_hub_runs(published: Published, tmp_path: Path) -> None:
    readme = published.hub.repos[REPO].files["README.md"].decode()
    code = re.search(r"```python\n(.*?)```", readme, flags=re.S).group(1)
    ran = _run(code, _env(published.hub, tmp_path / "cache"), tmp_path)  # exactly as published, cold cache
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "torch.Size([1, 7])"


def test_offline_with_a_warm_cache_loads_without_requests(published: Published, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    _pull_both(REPO, published.x_path, tmp_path / "warm", _env(published.hub, cache), tmp_path)
    seen = len(published.hub.requests)
    offline = _env(None, cache, HF_HUB_OFFLINE="1")  # and no server at that endpoint
    logits = _pull_both(REPO, published.x_path, tmp_path / "y", offline, tmp_path)
    assert torch.equal(logits["timm"], published.ref) and torch.equal(logits["load"], published.ref)
    assert len(published.hub.requests) == seen


def test_offline_with_a_cold_cache_is_a_clear_error(tmp_path: Path) -> None:
    env = _env(None, tmp_path / "cold", HF_HUB_OFFLINE="1")
    ran = _run(f"""
        from timm_nas import hub
        try:
            hub.load("hf-hub:{REPO}")
        except FileNotFoundError as e:
            print("ERROR", e)
    """, env, tmp_path)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.startswith(f"ERROR hf-hub:{REPO} is not in the local Hugging Face cache")
    assert "HF_HUB_OFFLINE" in ran.stdout and "download it once while online" in ran.stdout


@pytest.mark.slow  # one more fresh process (a few seconds of imports)
def test_missing_repo_and_missing_revision(published: Published, tmp_path: Path) -> None:
    ran = _run(f"""
        from timm_nas import hub
        for source in ("hf-hub:user/absent", "hf-hub:{REPO}@0123456789abcdef0123456789abcdef01234567"):
            try:
                hub.load(source)
            except FileNotFoundError as e:
                print("ERROR", e)
    """, _env(published.hub, tmp_path / "cache"), tmp_path)
    lines = ran.stdout.strip().splitlines()
    assert len(lines) == 2, ran.stderr
    assert lines[0].startswith("ERROR Hub repository 'user/absent' not found")
    assert lines[1].startswith("ERROR revision '0123456789abcdef0123456789abcdef01234567' not found")


@pytest.mark.slow  # one more fresh process (a few seconds of imports)
def test_unknown_architecture_from_the_hub_says_what_to_install(fake_hub: FakeHub, in_process_client,
                                                                 tmp_path: Path) -> None:
    folder, _, _ = _export_test_vit(tmp_path / "export")
    config = json.loads((folder / "config.json").read_text())
    config["architecture"] = "autoformer_from_the_future"
    config["timm_nas"].update(version="9.9.0", install="pip install 'timm-nas>=9.9.0'")
    (folder / "config.json").write_text(json.dumps(config))
    in_process_client(fake_hub)
    hub.push(folder, REPO)
    ran = _run(f"""
        from timm_nas import hub
        try:
            hub.load("hf-hub:{REPO}")
        except ValueError as e:
            print("ERROR", e)
    """, _env(fake_hub, tmp_path / "cache"), tmp_path)
    assert f"ERROR hf-hub:{REPO} holds architecture 'autoformer_from_the_future'" in ran.stdout, ran.stderr
    assert "pip install 'timm-nas>=9.9.0'" in ran.stdout


def test_private_push_and_second_push_to_the_same_repo(fake_hub: FakeHub, in_process_client,
                                                       tmp_path: Path) -> None:
    folder, _, _ = _export_test_vit(tmp_path / "export")
    in_process_client(fake_hub)
    url = hub.push(folder, REPO, private=True)
    assert hub.push(folder, REPO, private=True) == url == f"{fake_hub.endpoint}/{REPO}"  # 409 -> exist_ok
    assert fake_hub.repos[REPO].private is True
    assert [p["visibility"] for p in fake_hub.create_payloads] == ["private", "private"]
    assert len(fake_hub.repos[REPO].commits) == 2
    assert fake_hub.unknown == []


def test_push_points_the_card_example_at_each_repo(fake_hub: FakeHub, in_process_client, tmp_path: Path) -> None:
    folder, _, _ = _export_test_vit(tmp_path / "export")
    in_process_client(fake_hub)
    hub.push(folder, REPO)
    assert f'timm.create_model("hf-hub:{REPO}", pretrained=True)' in (folder / "README.md").read_text()
    hub.push(folder, "user/another-copy")
    for repo in (REPO, "user/another-copy"):
        readme = fake_hub.repos[repo].files["README.md"].decode()
        assert f'timm.create_model("hf-hub:{repo}", pretrained=True)' in readme
        assert readme.count("hf-hub:") == 1
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json", "model.safetensors"]


@pytest.mark.slow  # one more fresh process (a few seconds of imports)
def test_token_never_appears_in_logs_files_or_errors(tmp_path: Path) -> None:
    folder, _, _ = _export_test_vit(tmp_path / "export")
    with FakeHub(token=TOKEN, echo_auth_in_errors=True) as server:  # every write answers with the token in it
        env = _env(server, tmp_path / "cache")
        env.pop("HF_TOKEN")
        ran = _run(f"""
            import logging, traceback
            logging.basicConfig(level=logging.DEBUG)
            # the HTTP transport's own trace prints raw response headers, which this server fills with the token
            logging.getLogger("httpcore2").setLevel(logging.INFO)
            logging.getLogger("httpcore").setLevel(logging.INFO)
            from timm_nas import hub
            try:
                hub.push({str(folder)!r}, {REPO!r}, token={TOKEN!r})
            except RuntimeError as e:
                print("ERROR", e)
                traceback.print_exc()
        """, env, tmp_path)
        assert server.auth_headers and all(h == f"Bearer {TOKEN}" for h in server.auth_headers)  # it was sent
    assert "ERROR push of" in ran.stdout and "403" in ran.stdout and "token rejected: Bearer ***" in ran.stdout
    assert TOKEN not in ran.stdout and TOKEN not in ran.stderr
    for path in folder.rglob("*"):
        assert TOKEN.encode() not in path.read_bytes()


def test_push_in_process_masks_the_token(in_process_client, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder, _, _ = _export_test_vit(tmp_path / "export")
    with FakeHub(token=TOKEN, echo_auth_in_errors=True) as server:
        in_process_client(server)
        with caplog.at_level(logging.DEBUG), pytest.raises(RuntimeError) as info:
            hub.push(folder, REPO, token=TOKEN)
    assert "token rejected: Bearer ***" in str(info.value) and TOKEN not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__  # no chained copy of the token
    # (the HTTP transport's DEBUG trace of raw response headers shows what this server echoes: not ours to log)
    ours = [r.getMessage() for r in caplog.records if not r.name.startswith("httpcore")]
    assert ours and not any(TOKEN in m for m in ours)


def test_push_with_a_wrong_token_fails_clearly(fake_hub: FakeHub, in_process_client, tmp_path: Path) -> None:
    folder, _, _ = _export_test_vit(tmp_path / "export")
    in_process_client(fake_hub)
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.iterdir()}
    with pytest.raises(RuntimeError, match=r"push of .* to user/tiny-searched failed: .*401"):
        hub.push(folder, REPO, token="hf_wrong_token_123456")
    assert fake_hub.repos == {}
    # a failed push changes nothing locally (the card keeps its placeholder)
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in folder.iterdir()} == before


def test_push_refuses_a_folder_that_is_not_an_export(tmp_path: Path) -> None:
    (tmp_path / "junk").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        hub.push(tmp_path / "junk", REPO)
    with pytest.raises(ValueError, match="namespace/name"):
        hub.push(tmp_path / "junk", "not a repo")


def test_cli_push(fake_hub: FakeHub, in_process_client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                  capsys: pytest.CaptureFixture) -> None:
    folder, _, _ = _export_test_vit(tmp_path / "export")
    in_process_client(fake_hub)
    assert cli.main(["push", str(folder), REPO, "--private", "--message", "searched net"]) == 0
    assert capsys.readouterr().out.strip() == f"{fake_hub.endpoint}/{REPO}"
    assert fake_hub.repos[REPO].private is True
    monkeypatch.setenv("HF_TOKEN", "hf_wrong_" + "y" * 20)
    assert cli.main(["push", str(folder), REPO]) == 2
    err = capsys.readouterr().err
    assert err.startswith("timm-nas: error: push of") and "401" in err and "hf_wrong_" not in err


@pytest.mark.hub_online
def test_real_hub_round_trip(tmp_path: Path) -> None:
    """Opt-in: ``TIMM_NAS_HUB_TOKEN`` (a write token) and ``TIMM_NAS_HUB_REPO`` (a scratch repo id), run with
    ``-m hub_online``."""
    token, repo = os.environ.get("TIMM_NAS_HUB_TOKEN"), os.environ.get("TIMM_NAS_HUB_REPO")
    if not token or not repo:
        pytest.skip("set TIMM_NAS_HUB_TOKEN and TIMM_NAS_HUB_REPO to run the real-Hub round trip")
    model = timm.create_model("test_vit", num_classes=3).eval()
    folder = hub.export(model, tmp_path / "export", card={"notes": f"timm-nas test run {uuid.uuid4().hex[:8]}"})
    hub.push(folder, repo, private=True, token=token)
    x = torch.randn(1, 3, 160, 160)
    torch.save(x, tmp_path / "x.pt")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    env.update(HF_TOKEN=token, HF_HUB_CACHE=str(tmp_path / "cache"))
    logits = _pull_both(repo, tmp_path / "x.pt", tmp_path / "y", env, tmp_path)
    with torch.no_grad():
        ref = model(x)
    assert torch.equal(logits["timm"], ref) and torch.equal(logits["load"], ref)
