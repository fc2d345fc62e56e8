"""A trained adapter goes to a Hub model repo (on a branch, tagged with its version) through
huggingface_hub, against a local stand-in for the Hub API that records every call."""

from __future__ import annotations

import json
from collections.abc import Iterator

import huggingface_hub.constants
import pytest

from standby.trainer.config import TrainConfig, TrainError
from standby.trainer.publish import push_adapter
from standby.trainer.train import TrainResult
from tests.fixtures.hub_stub import HubStub, running_hub_stub

TOKEN = "hf_stub_token"


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> Iterator[HubStub]:
    """The stub, holding the token; huggingface_hub online (tests run with HF_HUB_OFFLINE=1)."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with running_hub_stub(token=TOKEN) as stub:
        yield stub


def test_push_to_a_branch_and_tag_the_version(
    trained: tuple[TrainConfig, TrainResult], hub: HubStub
) -> None:
    cfg, result = trained
    assert result.card is not None and result.card.version is not None
    version = result.card.version
    cfg = cfg.model_copy(
        update={
            "push_to_hub": "team/standby-gemma",
            "hub_revision": "candidates",
            "hub_endpoint": hub.url,
        }
    )
    pushed = push_adapter(cfg, result.adapter_dir, version)
    assert hub.paths() == [
        "POST /api/repos/create",
        "POST /api/models/team/standby-gemma/branch/candidates",
        "POST /api/validate-yaml",
        "POST /api/models/team/standby-gemma/preupload/candidates",
        "POST /api/models/team/standby-gemma/commit/candidates",
        f"POST /api/models/team/standby-gemma/tag/{pushed['commit']}",
    ]
    assert hub.calls[0].body == {
        "name": "standby-gemma",
        "organization": "team",
        "type": "model",
        "visibility": "private",
    }
    assert {c.authorization for c in hub.calls} == {f"Bearer {TOKEN}"}
    repo = hub.repos["team/standby-gemma"]
    (commit,) = repo.commits
    assert commit["branch"] == "candidates" and commit["summary"] == f"standby: adapter {version}"
    assert repo.branches["candidates"] == repo.tags[version] == pushed["commit"] == commit["oid"]
    # The adapter and its card travel; checkpoints and the merged model stay home.
    assert {
        "adapter_config.json",
        "adapter_model.safetensors",
        "standby-model.json",
        "tokenizer.json",
        "tokenizer_config.json",
    } <= set(repo.files)
    assert not any(f.startswith(("merged/", "checkpoints/")) for f in repo.files)
    assert json.loads(repo.files["standby-model.json"])["version"] == version
    assert pushed == {
        "repo_id": "team/standby-gemma",
        "url": f"{hub.url}/team/standby-gemma",
        "revision": "candidates",
        "tag": version,
        "commit": commit["oid"],
    }


def test_push_failures_are_one_line_errors(
    trained: tuple[TrainConfig, TrainResult], hub: HubStub, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg, result = trained
    cfg = cfg.model_copy(update={"push_to_hub": "team/m", "hub_endpoint": hub.url})
    push_adapter(cfg, result.adapter_dir, "v1")
    with pytest.raises(TrainError, match=r"HTTP 409: Reference already exists: refs/tags/v1"):
        push_adapter(cfg, result.adapter_dir, "v1")  # a version is pushed once
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    with pytest.raises(TrainError, match="401") as e:
        push_adapter(cfg, result.adapter_dir, "v2")
    assert "\n" not in str(e.value) and "hf_wrong" not in str(e.value)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(TrainError, match="offline"):
        push_adapter(cfg, result.adapter_dir, "v2")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    unreachable = cfg.model_copy(update={"hub_endpoint": "http://127.0.0.1:9"})
    with pytest.raises(TrainError, match="cannot reach the Hub"):
        push_adapter(unreachable, result.adapter_dir, "v2")
