"""What a training step costs besides its optimizer steps, on the bundled SmolLM2-135M.

Times, in the order a ReverseGen iteration meets them:

1. converting the GGUF to a transformers checkpoint (once per GGUF file, then cached);
2. a 2-step LoRA SFT through ``train_sft`` without export: the wall time minus the
   optimizer steps is loading the model, tokenising and building the trainer;
3. merging that adapter into the weights and saving them (what a DPO step on an
   adapter version does first, ``plain_checkpoint``);
4. the GGUF export (``export_gguf``), split into merging the adapter, reading the
   template GGUF and writing the new one;
5. loading the exported GGUF into llama.cpp.

    .venv/bin/python bench/train_rest.py
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from pathlib import Path

from failforge.models.registry import resolve_weights
from failforge.run.store import RunStore
from failforge.train import TrainSettings, train_sft, version_from_gguf
from failforge.train.callbacks import StepRecorder  # noqa: F401  (imports transformers before timing)

ROWS = [
    {"messages": [{"role": "user", "content": f"What is {i} plus {i}?"}, {"role": "assistant", "content": f"{i} plus {i} is {2 * i}."}]}
    for i in range(8)
]


def timed(label: str, fn, results: list):
    t0 = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t0
    results.append((label, dt))
    print(f"  {label:58} {dt:6.1f} s  (load {os.getloadavg()[0]:.1f})", flush=True)
    return out


def main() -> None:
    from failforge.models.convert import ensure_checkpoint
    from failforge.train import gguf_export
    from failforge.train.sft import load_merged

    gguf_path = resolve_weights("smollm2-135m-instruct")
    work = Path(tempfile.mkdtemp(prefix="failforge-rest-"))
    results: list[tuple[str, float]] = []
    try:
        timed("1. GGUF -> checkpoint conversion (first use of a GGUF)", lambda: ensure_checkpoint(gguf_path, root=work / "cache"), results)
        base = version_from_gguf(gguf_path, "smollm2")
        store = RunStore(work / "run.sqlite")
        settings = TrainSettings(max_steps=2, batch_size=2, lora={"r": 8}, export_gguf=False)
        sft = timed("2. SFT, 2 steps, no export (wall)", lambda: train_sft(base, ROWS, settings, work / "sft", store=store, name="sft", quiet=True), results)
        steps = sum(s["seconds"] for s in store.train_steps("sft"))
        results.append(("   of which optimizer steps", steps))
        print(f"  {'   of which optimizer steps':58} {steps:6.1f} s")
        print(f"  {'   the rest: load, tokenise, build the trainer, save':58} {results[-2][1] - steps:6.1f} s")

        def merge_and_save():
            model, tok = load_merged(sft.checkpoint, sft.adapter)
            model.save_pretrained(work / "merged")
            tok.save_pretrained(work / "merged")

        timed("3. merge the adapter and save (DPO on an adapter version)", merge_and_save, results)

        state = {}

        def merged_state():
            model, _ = load_merged(sft.checkpoint, sft.adapter)
            state["config"] = model.config
            state["weights"] = {k: v.detach().float().cpu().numpy() for k, v in model.state_dict().items()}

        timed("4a. export: load and merge the weights", merged_state, results)

        def read_template():
            import gguf

            reader = gguf.GGUFReader(str(gguf_path))
            return len(reader.fields)

        timed("4b. export: read the template GGUF (metadata, tokenizer)", read_template, results)
        out = work / "model.gguf"
        timed("4c. export: read template + write the f16 GGUF", lambda: gguf_export.write_gguf(state["weights"], state["config"], gguf_path, out, "f16"), results)
        timed("4.  export_gguf as a step calls it (a-c)", lambda: gguf_export.export_gguf(sft.checkpoint, sft.adapter, gguf_path, work / "again.gguf", "f16"), results)

        def load_llama():
            import llama_cpp

            llm = llama_cpp.Llama(str(out), n_ctx=512, verbose=False, n_threads=2)
            llm.close()

        timed("5. load the exported GGUF into llama.cpp", load_llama, results)
        store.close()
        print(f"  GGUF size {out.stat().st_size / 1e6:.0f} MB")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
