"""GGUF -> plain transformers checkpoint, converted once and cached; cached file hashes.

transformers can read a GGUF file directly (``from_pretrained(dir, gguf_file=...)``),
but the model it returns carries a GGUF quantizer: ``is_trainable`` and
``is_serializable`` are False, so PEFT/TRL refuse to train it and ``save_pretrained``
refuses to write it. :func:`ensure_checkpoint` dequantizes the file once into an
ordinary float32 safetensors checkpoint (config, weights, tokenizer with the GGUF's
chat template, generation config) that every trainer and the transformers backend
load like any other folder.

Layout: ``$FAILFORGE_CACHE/checkpoints/<sha256 prefix of the GGUF>/`` (the cache root
defaults to ``~/.cache/failforge``). The folder is written under a temporary name
and renamed into place, so a crash mid-conversion never leaves a half checkpoint
that a later run would trust.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from failforge.errors import ModelUnavailable
from failforge.models.base import file_sha256

#: written last into a converted checkpoint: where it came from
SOURCE_FILE = "failforge_source.json"


def cache_root() -> Path:
    """``$FAILFORGE_CACHE`` or ``~/.cache/failforge``."""
    env = os.environ.get("FAILFORGE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "failforge"


def cached_sha256(path: str | Path, root: Path | None = None) -> str:
    """sha256 of a file, remembered on disk by (absolute path, size, mtime).

    Weights are 100 MB and more; hashing them on every model load would cost seconds.
    A changed file changes its size or mtime, which invalidates the entry.
    """
    p = Path(path).resolve()
    st = p.stat()
    stamp = {"path": str(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
    entry = (root or cache_root()) / "sha256" / (hashlib.sha1(str(p).encode()).hexdigest() + ".json")
    try:
        saved = json.loads(entry.read_text())
        if {k: saved.get(k) for k in stamp} == stamp:
            return saved["sha256"]
    except (OSError, ValueError, KeyError):
        pass
    digest = file_sha256(str(p))
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(entry, json.dumps({**stamp, "sha256": digest}))
    except OSError:
        pass  # a read-only cache only costs the re-hash next time
    return digest


def is_gguf(path: str | Path) -> bool:
    p = Path(path)
    if not p.is_file():
        return False
    with open(p, "rb") as f:
        return f.read(4) == b"GGUF"


def checkpoint_dir_for(gguf_path: str | Path, root: Path | None = None) -> Path:
    """Where :func:`ensure_checkpoint` puts (or has put) the conversion of this file."""
    root = root or cache_root()
    return root / "checkpoints" / cached_sha256(gguf_path, root)[:16]


def ensure_checkpoint(gguf_path: str | Path, root: Path | None = None) -> Path:
    """A trainable, saveable transformers checkpoint folder for a GGUF file.

    Converted on first use (20-50 s for the bundled 135M model on two cores), then
    reused: the folder is keyed by the GGUF's sha256, so changed weights get a new
    folder. ``root`` overrides the cache root (tests use a temporary one). Raises
    :class:`ModelUnavailable` for a missing or non-GGUF file or an architecture
    transformers cannot read from GGUF.
    """
    src = Path(gguf_path).expanduser()
    if not src.is_file():
        raise ModelUnavailable(f"GGUF file {src}: no such file")
    if not is_gguf(src):
        raise ModelUnavailable(f"GGUF file {src}: not a GGUF file (bad magic bytes)")
    return build_once(checkpoint_dir_for(src, root), SOURCE_FILE, lambda tmp: _convert(src, tmp, root))


def build_once(target: Path, marker: str, build) -> Path:
    """A cache folder made once: ``build(tmp)`` fills a temporary folder beside
    ``target`` (its last act writes ``marker``), which is then renamed into place, so a
    kill never leaves a half-built folder that a later run trusts."""
    if (target / marker).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build(tmp)
        try:
            os.rename(tmp, target)
        except OSError:
            # another process finished the same folder first; theirs is as good
            if not (target / marker).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _convert(src: Path, out: Path, root: Path | None) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    try:
        loaded = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
    except (ValueError, KeyError, OSError, NotImplementedError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ModelUnavailable(f"GGUF file {src}: transformers cannot convert it ({msg})") from None

    # Rebuild the model from a config without the GGUF quantization entry, then copy the
    # (already dequantized) tensors in: the result is an ordinary, trainable model.
    config_dict = loaded.config.to_dict()
    config_dict.pop("quantization_config", None)
    config_dict.pop("_name_or_path", None)
    config = AutoConfig.for_model(**config_dict)
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(loaded.state_dict(), strict=False)
    # tied output embeddings are absent from the state dict by design; anything else is a bug
    missing = [k for k in missing if k not in set(getattr(plain, "_tied_weights_keys", None) or [])]
    if missing or unexpected:
        raise ModelUnavailable(
            f"GGUF file {src}: converted weights do not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    plain.tie_weights()
    plain.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id
    )
    plain.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    # Last: its presence marks a complete folder.
    (out / SOURCE_FILE).write_text(
        json.dumps({"gguf": str(src.resolve()), "sha256": cached_sha256(src, root)}, indent=2)
    )


def source_sha256(checkpoint: str | Path) -> str | None:
    """The GGUF sha256 a converted checkpoint came from (None for other checkpoints)."""
    f = Path(checkpoint) / SOURCE_FILE
    try:
        return json.loads(f.read_text())["sha256"]
    except (OSError, ValueError, KeyError):
        return None


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)
