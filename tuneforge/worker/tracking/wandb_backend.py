"""Weights & Biases, with the `wandb` library: offline by default, so a worker without network access writes a
run folder (`<TUNEFORGE_WANDB_DIR>/wandb/offline-run-*`) that `wandb sync` uploads later (docs/deployment.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tuneforge.contract.spec import WandbSettings
from tuneforge.worker.tracking.sink import Rejected

MISSING = "the wandb library is not installed on this worker (pip install 'tuneforge[integrations]')"


class WandbBackend:
    kind = "wandb"
    title = "W&B"

    def __init__(
        self, cfg: WandbSettings, *, job_id: str, model: str, config: dict[str, Any], mode: str, root: Path
    ) -> None:
        self.cfg = cfg
        self.job_id = job_id
        self.model = model
        self.config = config
        self.mode = mode
        self.root = root
        self.where = f"project {cfg.project} ({'an offline run under ' + str(root) if mode == 'offline' else 'online'})"
        self._run: Any = None

    def open(self) -> str:
        try:
            import wandb
        except ImportError as exc:
            raise Rejected(MISSING, fatal=True) from exc
        self.root.mkdir(parents=True, exist_ok=True)
        # OpenAI tags each run with its job and base model; these are Tuneforge's (W&B caps a tag at 64 chars).
        own = ["tuneforge/finetune", f"tuneforge/{self.model}"[:64], f"tuneforge/{self.job_id}"]
        tags = [*(self.cfg.tags or []), *own]
        self._run = wandb.init(
            project=self.cfg.project,
            entity=self.cfg.entity,
            name=self.cfg.name or self.job_id,
            tags=list(dict.fromkeys(tags)),
            id=self.job_id,  # a later attempt of the job (a resume) continues the same run
            resume="allow",
            config=self.config,
            mode=self.mode,  # type: ignore[arg-type]  # a Literal there; TUNEFORGE_WANDB_MODE is validated
            dir=str(self.root),
            reinit="create_new",  # jobs may overlap in one worker process (the next starts while this one drains)
            settings=wandb.Settings(console="off", silent=True, x_disable_stats=True, x_disable_machine_info=True),
        )
        return f"Logging to W&B project {self.cfg.project}: run {self.job_id} in {self._run.dir.removesuffix('/files')}"

    def log(self, points: list[tuple[int, dict[str, float]]]) -> None:
        for step, values in points:
            self._run.log(values, step=step)

    def finish(self, summary: dict[str, float], status: str) -> None:
        self._run.summary.update({**summary, "tuneforge/status": status})
        self._run.finish(exit_code=1 if status == "failed" else 0)

    def abandon(self) -> None:
        if self._run is not None:
            self._run.finish(exit_code=1, quiet=True)
