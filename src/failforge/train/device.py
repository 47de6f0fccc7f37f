"""Per-device training settings: precision, gradient checkpointing, CPU threads.

``precision: auto`` is chosen by what the device does fast, not by its kind:

- a CUDA GPU says reliably whether it has bf16 (``torch.cuda.is_bf16_supported``):
  bf16 autocast if so, else fp16;
- a CPU's flags do not say whether torch's kernels run bf16 faster than fp32 (an
  AVX512 CPU without AVX512-BF16 or AMX emulates bf16 and is slower), so a matrix
  product is timed at both precisions (under a second, best of several rounds) and
  the result is cached per machine in ``$FAILFORGE_CACHE/device/``; bf16 autocast is
  chosen when it is at least ``BF16_MARGIN`` times as fast as fp32;
- MPS trains in fp32.

``gradient_checkpointing: null`` turns checkpointing on only when memory requires it:
when the weights, optimizer state and a worst-case batch's activations
(``batch_size`` x ``max_length`` tokens, both sides of a DPO pair) would take more
than ``MEMORY_SHARE`` of the memory available now. Recomputing activations costs
about a third more compute, so it is never on by default otherwise.

The plan carries the reason for each choice; the training steps write it to the
run store (``train_plan`` records) and the ``failforge.train`` log.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from failforge.errors import ConfigError
from failforge.train.base import TrainSettings

log = logging.getLogger("failforge.train")

DeviceKind = Literal["cpu", "cuda", "mps"]
#: a step folder's record of its device plan
PLAN_FILE = "plan.json"


class DevicePlan(BaseModel):
    """What a training step runs on and how."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    device: DeviceKind
    bf16: bool = False
    fp16: bool = False
    gradient_checkpointing: bool = False
    #: torch intra-op threads on a CPU (None: leave torch's choice)
    threads: int | None = None
    #: why this precision and this checkpointing (logged and stored with the step)
    precision_reason: str = ""
    checkpointing_reason: str = ""

    @property
    def precision(self) -> str:
        return "bf16" if self.bf16 else "fp16" if self.fp16 else "fp32"

    def describe(self) -> str:
        """One line: the choices and why."""
        ckpt = "on" if self.gradient_checkpointing else "off"
        return (
            f"{self.device}, {self.precision} ({self.precision_reason}); "
            f"gradient checkpointing {ckpt} ({self.checkpointing_reason})"
        )

    def record(self, name: str, store=None, folder: Path | None = None) -> None:
        """Write the plan and its reasons to the log, with a run store to its ``train_plan``
        records, and with a step folder to its ``plan.json`` (rank 0 of several processes,
        which have no store: the run imports it)."""
        from failforge.train.ranks import is_rank_zero

        log.info("%s: training on %s", name, self.describe())
        record = self.model_dump() | {"precision": self.precision}
        if store is not None:
            store.put_records("train_plan", [(name, record)])
        if folder is not None and is_rank_zero():
            from failforge.train.checkpointing import atomic_write_text

            atomic_write_text(Path(folder) / PLAN_FILE, json.dumps(record, indent=2))

    def trainer_kwargs(self) -> dict:
        """The matching ``TrainingArguments`` / TRL config fields."""
        return {
            "bf16": self.bf16,
            "fp16": self.fp16,
            # transformers 5 renamed gradient_checkpointing; the new name wins over TRL's default of True
            "activation_checkpointing": self.gradient_checkpointing,
            "use_cpu": self.device == "cpu",
            # pinned memory only pays off for host -> GPU copies
            "dataloader_pin_memory": self.device == "cuda",
        }

    def apply(self) -> None:
        """Set process-wide torch state that the plan asks for (threads)."""
        if self.threads:
            import torch

            torch.set_num_threads(self.threads)


def detect_device() -> DeviceKind:
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


#: bf16 autocast is chosen on a CPU when its matmul is at least this many times faster than fp32
#: (autocast adds casts, and the LoRA weights and the optimizer stay in fp32)
BF16_MARGIN = 1.3
#: gradient checkpointing turns on when a step would need more than this share of the free memory
MEMORY_SHARE = 0.8
_BENCH_N = 768
_BENCH_ROUNDS = 4
_BENCH_SECONDS = 0.04


def plan_device(
    settings: TrainSettings,
    device: DeviceKind | None = None,
    threads: int | None = None,
    checkpoint: str | Path | None = None,
    sequences_per_row: int = 1,
) -> DevicePlan:
    """Choose precision, checkpointing and threads for ``settings`` on ``device`` (auto-detected).

    ``threads``: the CPU thread count to train with (``train.threads.run_threads``
    keeps it fixed for a run); None takes this process's CPU affinity.
    ``checkpoint``: the model folder (its ``config.json`` sizes the memory estimate);
    ``sequences_per_row``: 2 for DPO (chosen and rejected run side by side).
    """
    device = device or detect_device()
    threads = (threads or cpu_count()) if device == "cpu" else None
    precision = settings.precision
    if precision == "auto":
        # DPO too: its bf16 training loss falls more slowly than fp32's, but that is bf16's rounding of the
        # small policy-reference differences it is made of; the adapter it trains, evaluated in fp32, has
        # learned what the fp32-trained one has (tests/test_train_precision.py, docs/training.md)
        precision, precision_reason = auto_precision(device, threads)
    else:
        precision_reason = f"train.precision: {precision}"
    if precision == "fp16" and device != "cuda":
        raise ConfigError(f"train.precision: fp16 needs a CUDA GPU, this step runs on {device}")
    if precision == "bf16" and device == "cuda":
        import torch

        if not torch.cuda.is_bf16_supported():
            raise ConfigError(f"train.precision: bf16 is not supported by this GPU ({_gpu_name()}); use fp16 or auto")
    checkpointing = settings.gradient_checkpointing
    if checkpointing is None:
        checkpointing, checkpointing_reason = auto_checkpointing(
            settings, device, precision, checkpoint, sequences_per_row
        )
    else:
        checkpointing_reason = f"train.gradient_checkpointing: {str(checkpointing).lower()}"
    return DevicePlan(
        device=device,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        gradient_checkpointing=checkpointing,
        threads=threads,
        precision_reason=precision_reason,
        checkpointing_reason=checkpointing_reason,
    )


# --- precision ------------------------------------------------------------------------
def auto_precision(device: DeviceKind, threads: int | None = None) -> tuple[str, str]:
    """The fastest precision on ``device`` and why."""
    if device == "cuda":
        import torch

        if torch.cuda.is_bf16_supported():
            return "bf16", f"{_gpu_name()} supports bf16"
        return "fp16", f"{_gpu_name()} has no bf16"
    if device == "mps":
        return "fp32", "mps: bf16 autocast is not used"
    rates = cpu_matmul_rates(threads or cpu_count())
    fp32, bf16 = rates["fp32"], rates["bf16"]
    measured = f"matmul fp32 {fp32:.0f} GFLOP/s, bf16 {bf16:.0f} GFLOP/s on {rates['threads']} threads"
    if bf16 >= BF16_MARGIN * fp32:
        return "bf16", f"{measured}: bf16 is {bf16 / fp32:.1f}x faster"
    return "fp32", f"{measured}: bf16 is not {BF16_MARGIN}x faster"


def cpu_matmul_rates(threads: int, cache_dir: str | Path | None = None, refresh: bool = False) -> dict:
    """GFLOP/s of a square matmul in fp32 and bf16 on this CPU, measured once per machine and thread count.

    Cached as JSON under ``$FAILFORGE_CACHE/device/`` (or ``cache_dir``), keyed by the
    CPU model and flags, the torch version and the thread count.
    """
    ident = cpu_identity()
    key = hashlib.sha256(json.dumps([ident, threads], sort_keys=True).encode()).hexdigest()[:16]
    path = Path(cache_dir) if cache_dir else _cache_root() / "device"
    path = path / f"cpu-matmul-{key}.json"
    if not refresh:
        try:
            cached = json.loads(path.read_text(encoding="utf-8"))
            if {"fp32", "bf16"} <= cached.keys():
                return cached
        except (OSError, ValueError):
            pass
    rates = measure_matmul(threads) | {"threads": threads, "cpu": ident["model"], "measured_at": time.time()}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(rates), encoding="utf-8")
        os.replace(tmp, path)
    except OSError as e:  # a read-only home: measure again next time
        log.debug("could not cache the matmul rates in %s: %s", path, e)
    return rates


def measure_matmul(threads: int | None = None, n: int = _BENCH_N, rounds: int = _BENCH_ROUNDS,
                   seconds: float = _BENCH_SECONDS, device: str = "cpu",
                   precisions: tuple[str, ...] = ("fp32", "bf16")) -> dict[str, float]:
    """GFLOP/s of an ``n`` x ``n`` matmul per precision: the best of ``rounds`` alternating rounds.

    The best round, not the mean, because other processes on a shared machine only
    ever slow a round down. About ``2 * rounds * seconds`` plus warm-up.
    """
    import torch

    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        gen = torch.Generator().manual_seed(0)
        mats = {}
        for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            if name not in precisions:
                continue
            a = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
            b = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
            a @ b  # warm-up: thread pool, kernel selection
            mats[name] = (a, b)
        best = dict.fromkeys(mats, 0.0)
        for _ in range(rounds):
            for name, (a, b) in mats.items():
                k, t0 = 0, time.perf_counter()
                while True:
                    a @ b
                    k += 1
                    if device != "cpu":
                        torch.cuda.synchronize()
                    dt = time.perf_counter() - t0
                    if dt >= seconds:
                        break
                best[name] = max(best[name], 2 * n**3 * k / dt / 1e9)
        return best
    finally:
        torch.set_num_threads(old)


def cpu_identity() -> dict[str, str]:
    """What makes two machines' matmul rates differ: CPU model, its SIMD flags, torch version."""
    import torch

    model, flags = platform.processor() or platform.machine(), ""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            k, _, v = line.partition(":")
            if k.strip() == "model name" and model in ("", platform.machine(), platform.processor()):
                model = v.strip()
            elif k.strip() == "flags" and not flags:
                wanted = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "avx512_fp16")
                flags = " ".join(f for f in v.split() if f in wanted)
    except OSError:  # not Linux
        pass
    return {"model": model, "flags": flags, "torch": torch.__version__, "machine": platform.machine()}


def _cache_root() -> Path:
    root = os.environ.get("FAILFORGE_CACHE")
    return Path(root).expanduser() if root else Path.home() / ".cache" / "failforge"


def _gpu_name() -> str:
    import torch

    return torch.cuda.get_device_name()


# --- gradient checkpointing --------------------------------------------------------------
def auto_checkpointing(
    settings: TrainSettings,
    device: DeviceKind,
    precision: str,
    checkpoint: str | Path | None,
    sequences_per_row: int = 1,
) -> tuple[bool, str]:
    """Checkpointing on only when a worst-case step would not fit in ``MEMORY_SHARE`` of free memory."""
    config = _model_config(checkpoint)
    free = free_memory(device) if config is not None else None
    if config is None or free is None:
        on = device == "cuda"
        return on, f"memory need unknown ({'no model config' if config is None else 'free memory unknown'}); {'on' if on else 'off'} on {device}"
    tokens = settings.batch_size * settings.max_length * sequences_per_row
    need = step_memory(config, tokens, precision, lora=settings.lora is not None)
    gib = 1024**3
    verdict = f"a step needs at most ~{need / gib:.1f} GiB ({tokens} tokens a batch), {free / gib:.1f} GiB free"
    if need > MEMORY_SHARE * free:
        return True, verdict
    return False, verdict


def step_memory(config: dict, tokens: int, precision: str, lora: bool = True) -> float:
    """A rough upper bound, in bytes, of one training step's memory.

    Weights at the training precision, then (full fine-tuning) fp32 gradients and two
    Adam moments per weight; activations kept for the backward pass: per token and
    layer about 8 hidden-size vectors (norms, q/k/v/o, residuals) and 5
    intermediate-size vectors (gate, up, activation, product, down input). Attention
    scores are not counted (torch's SDPA kernels do not keep them), nor the logits
    (TRL's SFT and DPO trainers compute log-probabilities through a fused, chunked LM
    head).
    """
    h = int(config.get("hidden_size", 0))
    i = int(config.get("intermediate_size", 4 * h))
    layers = int(config.get("num_hidden_layers", 0))
    vocab = int(config.get("vocab_size", 0))
    params = layers * (4 * h * h + 3 * h * i) + vocab * h
    act_bytes = 2 if precision in ("bf16", "fp16") else 4
    weights = params * (act_bytes if lora else 4)
    optimizer = 0 if lora else params * 12
    activations = tokens * layers * (8 * h + 5 * i) * act_bytes
    return float(weights + optimizer + activations)


def free_memory(device: DeviceKind) -> float | None:
    """Bytes available now: ``MemAvailable`` on a CPU, free device memory on a GPU."""
    if device == "cuda":
        import torch

        return float(torch.cuda.mem_get_info()[0])
    if device == "cpu":
        try:
            for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
        except OSError:
            pass
        try:
            return float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            return None
    return None


def _model_config(checkpoint: str | Path | None) -> dict | None:
    if checkpoint is None:
        return None
    try:
        config = json.loads((Path(checkpoint) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    config = config.get("text_config", config)
    return config if config.get("hidden_size") and config.get("num_hidden_layers") else None
