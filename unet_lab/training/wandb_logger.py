"""Weights & Biases that never blocks a run: online with credentials and a reachable server,
otherwise offline (synced later with ``wandb sync``)."""

from __future__ import annotations

import logging
import netrc
import os
import socket
import sys
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pytorch_lightning.loggers import WandbLogger

from unet_lab.arguments import check_choice, check_float
from unet_lab.errors import first_line
from unet_lab.training.launcher import is_rank_zero

log = logging.getLogger(__name__)

MODES = ("auto", "online", "offline", "disabled")
DEFAULT_HOST = "https://api.wandb.ai"
CONNECT_TIMEOUT_S = 3.0


def _host() -> str:
    return urlparse(os.environ.get("WANDB_BASE_URL", DEFAULT_HOST)).hostname or "api.wandb.ai"


def has_credentials() -> bool:
    """An API key in ``WANDB_API_KEY`` or in the netrc file that ``wandb login`` writes."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    path = os.environ.get("NETRC", str(Path.home() / ".netrc"))
    try:
        return netrc.netrc(path).authenticators(_host()) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def server_reachable(timeout: float = CONNECT_TIMEOUT_S) -> bool:
    url = urlparse(os.environ.get("WANDB_BASE_URL", DEFAULT_HOST))
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((_host(), port), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_mode(mode: str = "auto") -> str:
    """``auto`` -> ``$WANDB_MODE`` if set, else online with credentials and a reachable server,
    else offline. Takes at most a few seconds and never prompts."""
    check_choice("mode", mode, MODES)
    if mode != "auto":
        return mode
    if os.environ.get("WANDB_MODE"):
        return check_choice("WANDB_MODE", os.environ["WANDB_MODE"], (*MODES[1:], "dryrun", "run"))
    if not has_credentials():
        log.info("W&B: no credentials (WANDB_API_KEY or `wandb login`): logging offline")
        return "offline"
    if not server_reachable():
        log.warning("W&B: %s is not reachable: logging offline", _host())
        return "offline"
    return "online"


def _run_id(save_dir: Path) -> str:
    """The W&B run id of this run folder: made once, reused on resume."""
    path = save_dir / "wandb" / "run_id"
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    run_id = uuid.uuid4().hex[:12]
    path.write_text(run_id + "\n")
    return run_id


class OfflineFallbackWandbLogger(WandbLogger):
    """A ``WandbLogger`` whose online run, when it cannot start (a wrong API key or entity, a
    server that does not answer within ``init_timeout``), becomes an offline run in the same
    folder, with a warning, instead of stopping the training."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # Lightning always passes anonymous=None, which W&B 0.31 answers with a deprecation
        # warning that says nothing about the run.
        if self._wandb_init.get("anonymous") is None:
            self._wandb_init.pop("anonymous", None)

    @property
    def experiment(self) -> Any:
        try:
            return super().experiment
        except Exception as exc:
            if self._wandb_init.get("mode") != "online" or self._experiment is not None:
                raise
            reason = first_line(exc)[:200]
            log.warning(
                "W&B: the online run did not start (%s): logging offline instead; upload it "
                "later with `wandb sync`",
                reason,
            )
            import wandb

            wandb.teardown()  # the failed run's service still holds its id
            # A service inherited from a parent process that uses W&B (a notebook, a script)
            # is not ours to tear down and holds the id too: the offline run starts its own.
            os.environ.pop(wandb.env.SERVICE, None)
            self._wandb_init["mode"] = "offline"
            return super().experiment


def wandb_logger(
    save_dir: str,
    project: str = "unet-lab",
    name: str | None = None,
    group: str | None = None,
    tags: list[str] | None = None,
    entity: str | None = None,
    mode: str = "auto",
    init_timeout: float = 30.0,
) -> WandbLogger:
    """A Lightning ``WandbLogger`` writing under ``save_dir/wandb``, resumable in place. An
    online run that cannot start within ``init_timeout`` seconds (W&B's own retries may take
    about twice that) continues offline."""
    import wandb

    check_float("init_timeout", init_timeout, 1.0)
    folder = Path(save_dir)
    return OfflineFallbackWandbLogger(
        save_dir=str(folder),
        project=project,
        name=name,
        group=group,
        tags=list(tags or []),
        entity=entity,
        id=_run_id(folder) if is_rank_zero() else None,  # only rank 0 starts a W&B run
        resume="allow",
        mode=resolve_mode(mode),
        # W&B's own console lines (banner, history sparklines) are left out: the run reports
        # the W&B run folder or address, and how to sync an offline run, in its own lines.
        settings=wandb.Settings(init_timeout=init_timeout, console="off", silent=True),
    )


def finish_wandb(save_dir: Path) -> list[Path]:
    """Closes the W&B run (if any) completely; returns its offline run folders, to sync."""
    wandb = sys.modules.get("wandb")  # not imported: W&B was not used in this process
    if wandb is not None and wandb.run is not None:
        wandb.finish()
        wandb.teardown()
    return sorted((save_dir / "wandb").glob("offline-run-*"))
