"""The output folder of one training step, and how a killed step resumes.

Layout of ``out_dir``::

    inputs.json      what the step trains (parent, settings, data hash): a folder never mixes two steps
    trainer/         Trainer checkpoints (save_steps), the resume points; removed once DONE
    base/            the parent with its adapter merged in (only when the parent has one)
    adapter/         the trained LoRA adapter        (LoRA)
    model/           the trained full checkpoint     (full fine-tuning, classifiers)
    model.gguf       the merged weights for llama.cpp (when exported)
    train_log.jsonl  step, loss, seconds per optimizer step
    DONE             the resulting ModelVersion (JSON); present = the step is finished

Every folder and file that a later stage trusts is written under a temporary name
and renamed into place, so a kill leaves either the old state or the new one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from failforge.errors import ConfigError
from failforge.models.base import fingerprint_of
from failforge.train.base import ModelVersion, TrainSettings

log = logging.getLogger("failforge.train")

DONE = "DONE"
INPUTS = "inputs.json"
#: settings that change files next to the weights but not the weights themselves
_NOT_WEIGHTS = {
    "export_gguf", "gguf_dtype", "save_steps", "precision", "gradient_checkpointing", "precompute_ref",
    "launcher", "accelerate_config",
}


# --- atomic writes ----------------------------------------------------------------
def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


@contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield a temporary folder; on success it replaces ``final``.

    The old folder is never deleted before the new one is in place: it is renamed
    aside, the new one renamed in, and only then is the old one removed. A crash at
    any moment leaves one complete folder: ``final`` itself, or the old one aside,
    which ``recover_dir`` (called here first) puts back.
    """
    recover_dir(final)
    tmp = final.with_name(f".{final.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = _aside(final)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)


def recover_dir(final: Path) -> None:
    """Finish or undo an ``atomic_dir`` swap that a crash cut short."""
    old = _aside(final)
    if not old.exists():
        return
    if final.exists():  # the new folder is in place: only the old one's removal was missed
        shutil.rmtree(old, ignore_errors=True)
    else:  # cut between the two renames: the old folder is the complete one
        os.replace(old, final)


def _aside(final: Path) -> Path:
    return final.with_name(f".{final.name}.old")


# --- hashes -----------------------------------------------------------------------
def data_hash(rows: list[dict[str, Any]]) -> str:
    h = hashlib.sha256()
    for row in rows:
        h.update(json.dumps(row, sort_keys=True, ensure_ascii=False).encode())
        h.update(b"\n")
    return h.hexdigest()


def weights_hash(folder: str | Path) -> str:
    """sha256 over a folder's weight files (safetensors), in name order."""
    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise ConfigError(f"{folder}: no *.safetensors weights in that folder")
    h = hashlib.sha256()
    for p in files:
        h.update(p.name.encode())
        with p.open("rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
    return h.hexdigest()


def weight_settings(settings: TrainSettings) -> dict[str, Any]:
    """The settings that decide the trained weights (what a fingerprint must cover)."""
    out = settings.model_dump(mode="json", exclude=_NOT_WEIGHTS)
    if out["processes"] == 1:  # one process, as before the setting existed: the same fingerprints
        del out["processes"]
    return out


def base_version(checkpoint: str | Path, name: str, gguf: str | Path | None = None) -> ModelVersion:
    """A ModelVersion for an existing plain checkpoint (the first rung of a training ladder)."""
    from failforge.models.convert import source_sha256

    ckpt = Path(checkpoint)
    if not (ckpt / "config.json").exists():
        raise ConfigError(f"checkpoint {ckpt}: no config.json in that folder")
    # a checkpoint converted from a GGUF is named by that file's hash (no need to re-hash 0.5 GB)
    source = source_sha256(ckpt)
    weights = {"gguf_sha256": source} if source else {"weights": weights_hash(ckpt)}
    return ModelVersion(name=name, checkpoint=str(ckpt), gguf=str(gguf) if gguf else None, fingerprint=fingerprint_of(**weights))


def version_from_gguf(gguf: str | Path, name: str | None = None) -> ModelVersion:
    """The trainable version of a GGUF file: its cached checkpoint conversion, with the GGUF kept for serving."""
    from failforge.models.convert import ensure_checkpoint

    return base_version(ensure_checkpoint(gguf), name or Path(gguf).stem, gguf=gguf)


# --- the step folder --------------------------------------------------------------
class StepDir:
    """One training step's output folder: claim it, find resume points, finish it."""

    def __init__(
        self,
        out_dir: str | Path,
        kind: str,
        base: ModelVersion,
        settings: TrainSettings,
        rows: list[dict],
        extra: dict[str, Any] | None = None,
    ):
        self.root = Path(out_dir)
        self.kind = kind
        self.base = base
        self.settings = settings
        self.data_hash = data_hash(rows)
        #: other inputs that decide the weights (the DPO reference, classifier labels)
        self.extra = extra or {}
        self.inputs = {
            "kind": kind,
            "parent": base.fingerprint,
            "settings": weight_settings(settings),
            "data": self.data_hash,
            "rows": len(rows),
            **({"extra": self.extra} if self.extra else {}),
        }

    # paths
    @property
    def trainer_dir(self) -> Path:
        return self.root / "trainer"

    @property
    def merged_base_dir(self) -> Path:
        return self.root / "base"

    @property
    def adapter_dir(self) -> Path:
        return self.root / "adapter"

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    @property
    def gguf_path(self) -> Path:
        return self.root / "model.gguf"

    @property
    def log_path(self) -> Path:
        return self.root / "train_log.jsonl"

    def done(self) -> ModelVersion | None:
        """The finished version when this exact step already ran here."""
        self._check_inputs()
        marker = self.root / DONE
        if not marker.exists():
            return None
        return ModelVersion.model_validate_json(marker.read_text(encoding="utf-8"))

    def claim(self) -> None:
        """Create the folder and record what it trains; refuse one that trained something else."""
        self.root.mkdir(parents=True, exist_ok=True)
        for folder in (self.adapter_dir, self.model_dir, self.merged_base_dir):
            recover_dir(folder)  # a swap a kill cut short: put the complete folder back
        if not self._check_inputs():
            atomic_write_text(self.root / INPUTS, json.dumps(self.inputs, indent=2, sort_keys=True))

    def _check_inputs(self) -> bool:
        path = self.root / INPUTS
        if not path.exists():
            return False
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: unreadable ({e}); delete the folder to train again") from e
        if old != self.inputs:
            changed = sorted(k for k in set(old) | set(self.inputs) if old.get(k) != self.inputs.get(k))
            raise ConfigError(
                f"{self.root}: holds a training step with other inputs ({', '.join(changed)} differ); "
                "use another out_dir or delete it"
            )
        return True

    def resume_checkpoint(self) -> str | None:
        """The newest complete Trainer checkpoint (one whose trainer_state.json parses)."""
        if not self.trainer_dir.exists():
            return None
        found = []
        for p in self.trainer_dir.iterdir():
            m = re.fullmatch(r"checkpoint-(\d+)", p.name)
            if m and p.is_dir():
                found.append((int(m.group(1)), p))
        for _, p in sorted(found, reverse=True):
            # Trainer writes trainer_state.json last, so a checkpoint cut short by a kill lacks it
            try:
                json.loads((p / "trainer_state.json").read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                log.warning("skipping incomplete checkpoint %s", p)
                continue
            return str(p)
        return None

    def train(self, trainer, name: str, store=None, quiet: bool = False, callbacks=()) -> None:
        """Run ``trainer`` from the newest complete checkpoint, recording every step."""
        from transformers import PrinterCallback

        from failforge.train.callbacks import StepRecorder

        if quiet:  # with tqdm off, Trainer prints every log dict instead
            trainer.remove_callback(PrinterCallback)
        trainer.add_callback(StepRecorder(name, self.log_path, store))
        for cb in callbacks:
            trainer.add_callback(cb)
        resume = self.resume_checkpoint()
        if resume:
            log.info("%s: resuming from %s", name, resume)
        trainer.train(resume_from_checkpoint=resume)

    def finish(self, version: ModelVersion) -> ModelVersion:
        atomic_write_text(self.root / DONE, version.model_dump_json(indent=2))
        # resume points are useless once the step is done, and hold optimizer state
        shutil.rmtree(self.trainer_dir, ignore_errors=True)
        return version

    def fingerprint(self, weights_folder: Path) -> str:
        return fingerprint_of(
            parent=self.base.fingerprint,
            kind=self.kind,
            extra=self.extra,
            weights=weights_hash(weights_folder),
            settings=weight_settings(self.settings),
            data=self.data_hash,
        )
