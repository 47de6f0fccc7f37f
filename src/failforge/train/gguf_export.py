"""Write trained weights back into a GGUF that llama.cpp serves.

The metadata (architecture hyper-parameters, tokenizer, chat template) is copied
from the GGUF the lineage started from; every tensor is replaced by the trained
(LoRA-merged) weight under its GGUF name. llama.cpp's converter (``convert_hf_to_gguf.py``)
is not shipped in any package, and it would rebuild the tokenizer metadata we
already have, so this re-implements only the tensor step for the architectures
listed in ``_ARCHS``, using the ``gguf`` package's own HF -> GGUF name map.

llama-architecture GGUFs store Q and K projections with rows permuted for
llama.cpp's rotary layout; transformers undoes that when it loads a GGUF
(``LlamaTensorProcessor._reverse_permute_weights``), so the export permutes back
exactly as ``convert_hf_to_gguf.LlamaModel.permute`` does.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Literal

from failforge.errors import FailforgeError

log = logging.getLogger("failforge.train")


class GGUFExportError(FailforgeError):
    """The weights cannot be written into a GGUF that llama.cpp would load correctly."""


def _llama_permute(w, n_head: int, n_head_kv: int):
    # convert_hf_to_gguf.LlamaModel.permute (the inverse of transformers' reverse permutation)
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _llama_tensor(gguf_name: str, data, config) -> Any:
    n_head = config.num_attention_heads
    n_kv = getattr(config, "num_key_value_heads", None) or n_head
    if ".attn_q." in gguf_name:
        return _llama_permute(data, n_head, n_head)
    if ".attn_k." in gguf_name:
        return _llama_permute(data, n_head, n_kv)
    return data


#: GGUF architectures whose HF -> GGUF tensor transform is known (and checked by a parity test for llama)
_ARCHS = {"llama": _llama_tensor}
#: tensors a GGUF may carry that have no transformers counterpart: copied unchanged
_COPY_AS_IS = {"rope_freqs.weight"}
_METADATA_REWRITTEN = {"general.architecture", "general.file_type", "general.quantization_version"}


def export_gguf(
    checkpoint: str | Path,
    adapter: str | Path | None,
    template: str | Path,
    out_path: str | Path,
    dtype: Literal["f32", "f16"] = "f16",
) -> Path:
    """Merge ``adapter`` into ``checkpoint`` and write the result as a GGUF shaped like ``template``."""
    from failforge.train.sft import load_merged

    model, _ = load_merged(checkpoint, adapter)
    state = {k: v.detach().float().cpu().numpy() for k, v in model.state_dict().items()}
    return write_gguf(state, model.config, template, out_path, dtype)


def write_gguf(
    state: dict[str, Any],
    config,
    template: str | Path,
    out_path: str | Path,
    dtype: Literal["f32", "f16"] = "f16",
) -> Path:
    """Write ``state`` (HF names -> float32 numpy arrays) as a GGUF with ``template``'s metadata."""
    import gguf
    import numpy as np

    reader = gguf.GGUFReader(str(template))
    arch_field = reader.fields.get(gguf.Keys.General.ARCHITECTURE)
    arch = arch_field.contents() if arch_field else None
    if arch not in _ARCHS:
        raise GGUFExportError(f"GGUF export supports architectures {sorted(_ARCHS)}, not {arch!r} ({template})")
    transform = _ARCHS[arch]
    arch_enum = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch)
    names = gguf.get_tensor_name_map(arch_enum, config.num_hidden_layers)

    by_gguf: dict[str, tuple[str, Any]] = {}
    for hf_name, array in state.items():
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise GGUFExportError(f"tensor {hf_name} has no GGUF name for architecture {arch!r}")
        by_gguf[gguf_name] = (hf_name, array)

    out_path = Path(out_path)
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    writer = gguf.GGUFWriter(str(tmp), arch)
    try:
        _copy_metadata(reader, writer, gguf)
        writer.add_file_type(gguf.LlamaFileType.ALL_F32 if dtype == "f32" else gguf.LlamaFileType.MOSTLY_F16)
        written = set()
        for t in reader.tensors:
            expected = tuple(int(x) for x in reversed(t.shape.tolist()))
            if t.name not in by_gguf:
                if t.name not in _COPY_AS_IS:
                    raise GGUFExportError(f"{template}: tensor {t.name} has no counterpart in the trained weights")
                data = gguf.quants.dequantize(t.data, t.tensor_type).reshape(expected)
            else:
                hf_name, data = by_gguf[t.name]
                data = transform(t.name, np.asarray(data, dtype=np.float32), config)
                if data.shape != expected:
                    raise GGUFExportError(f"tensor {hf_name}: shape {data.shape}, the GGUF expects {expected}")
                written.add(t.name)
            # llama.cpp keeps 1-D tensors (norms, biases) in f32 whatever the file type
            out_type = np.float16 if dtype == "f16" and data.ndim > 1 else np.float32
            writer.add_tensor(t.name, np.ascontiguousarray(data, dtype=out_type))
        _check_leftovers(by_gguf, written, np)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    except BaseException:
        writer.close()
        tmp.unlink(missing_ok=True)
        raise
    writer.close()
    os.replace(tmp, out_path)
    log.info("wrote %s (%s)", out_path, dtype)
    return out_path


def _copy_metadata(reader, writer, gguf) -> None:
    # as gguf's own scripts/gguf_new_metadata.py copies fields
    for field in reader.fields.values():
        if field.name.startswith("GGUF.") or field.name in _METADATA_REWRITTEN:
            continue
        val_type = field.types[0]
        sub_type = field.types[-1] if val_type == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), val_type, sub_type=sub_type)


def _check_leftovers(by_gguf: dict[str, tuple[str, Any]], written: set[str], np) -> None:
    """Trained tensors the template has no slot for must be tied copies (the output head)."""
    for gguf_name, (hf_name, data) in by_gguf.items():
        if gguf_name in written:
            continue
        if gguf_name == "output.weight" and "token_embd.weight" in by_gguf:
            if np.array_equal(data, by_gguf["token_embd.weight"][1]):
                continue  # tied to the embeddings, which the GGUF shares the same way
        raise GGUFExportError(f"trained tensor {hf_name} ({gguf_name}) has no place in the template GGUF")
