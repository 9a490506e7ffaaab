"""Decisions made at start: the W&B mode and trainer.precision=auto."""

import pytest

from unet_lab.arguments import InvalidArgumentError
from unet_lab.training import precision
from unet_lab.training import wandb_logger as wandb_logging


def test_no_credentials_means_offline_without_touching_the_network(monkeypatch) -> None:
    monkeypatch.setattr(wandb_logging, "server_reachable", lambda *a: pytest.fail("no network"))
    assert not wandb_logging.has_credentials()
    assert wandb_logging.resolve_mode("auto") == "offline"


@pytest.mark.parametrize(("reachable", "mode"), [(True, "online"), (False, "offline")])
def test_credentials_go_online_only_when_the_server_answers(monkeypatch, reachable, mode) -> None:
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setattr(wandb_logging, "server_reachable", lambda *a: reachable)
    assert wandb_logging.resolve_mode("auto") == mode


def test_explicit_modes_win(monkeypatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert wandb_logging.resolve_mode("auto") == "disabled"
    assert wandb_logging.resolve_mode("offline") == "offline"
    with pytest.raises(InvalidArgumentError, match="mode"):
        wandb_logging.resolve_mode("sometimes")


def test_unreachable_server_means_offline(monkeypatch) -> None:
    # A port on this machine that nothing listens on: the connection is refused at once.
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert not wandb_logging.server_reachable()
    assert wandb_logging.resolve_mode("auto") == "offline"


@pytest.mark.parametrize(("fast_bf16", "expected"), [(True, "bf16-mixed"), (False, "32-true")])
def test_auto_precision_on_cpu(monkeypatch, fast_bf16: bool, expected: str) -> None:
    monkeypatch.setattr(precision, "cpu_has_fast_bf16", lambda: fast_bf16)
    assert precision.resolve_precision("auto", "cpu") == expected


def test_explicit_precision_is_kept() -> None:
    assert precision.resolve_precision("16-mixed", "cpu") == "16-mixed"
    assert precision.resolve_precision("32-true") == "32-true"


@pytest.mark.parametrize(
    ("bf16", "expected"),
    [(True, "bf16-mixed"), (False, "16-mixed")],  # Ampere+ | older GPUs
)
def test_auto_precision_on_gpus_is_logged(monkeypatch, caplog, bf16: bool, expected: str) -> None:
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    monkeypatch.setattr("torch.cuda.is_bf16_supported", lambda including_emulation=True: bf16)
    monkeypatch.setattr("torch.cuda.get_device_name", lambda *a: "Tesla V100")
    with caplog.at_level("INFO", logger="unet_lab.training.precision"):
        assert precision.resolve_precision("auto", "auto") == expected
    assert f"precision: auto -> {expected} (GPU Tesla V100)" in caplog.text
