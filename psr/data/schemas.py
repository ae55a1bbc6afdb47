r"""jsonl schemas of the SFT data (paper §3.2): IFT and EFT records, validated with file:line errors.

IFT (instruction fine-tuning, policy role; one solution split into steps with the Figure 3 prompt)::

    {"id": str|int, "question": str, "steps": [str, ...]}

    ``steps`` are step bodies (a "Step n: " header is tolerated and removed), non-empty, the last
    one holding the final answer in \boxed{}. Training pair: prompt = chat(tok,
    reasoning_prompt(question)), response = format_steps(steps) (+ EOS).

EFT (evaluation fine-tuning, judge role; one step-level comparison)::

    {"id": str|int, "question": str, "prev_steps": [str, ...], "step_a": str, "step_b": str,
     "judgment": str, "label": "A"|"B"}

    ``prev_steps`` may be empty (judging step 1); ``step_a``/``step_b`` are bodies or headed steps
    (psr.prompts.judge_prompt shows both as "Step l: body"); ``judgment`` is the explanation ending
    in the verdict, and its last [[A]]/[[B]] must equal ``label``. Training pair: prompt =
    chat(tok, judge_prompt(question, prev_steps, step_a, step_b)), response = judgment (+ EOS).

TEXT (plain continuation, e.g. a base model's M0 training on free-form solutions; no chat template)::

    {"id": str|int, "prompt": str (may be empty), "response": str}

    Training pair: prompt as is, response as is (+ EOS); the loss covers the response only.

API: validate_text(rec, where), load_text(path); validate_ift(rec, where), validate_eft(rec, where) -> normalised record (raise DataError
naming ``where`` = "file:line"); load_ift(path), load_eft(path) -> list of records (the whole file
is checked before anything is returned).
"""

from __future__ import annotations

import os
from typing import Any

from psr.data.jsonl import DataError, iter_jsonl
from psr.judge import parse_verdict
from psr.steps import final_answer_reached, parse_steps

IFT_FIELDS = ("id", "question", "steps")
TEXT_FIELDS = ("id", "prompt", "response")
EFT_FIELDS = ("id", "question", "prev_steps", "step_a", "step_b", "judgment", "label")


def _text(rec: dict, key: str, where: str, allow_empty: bool = False) -> str:
    v = rec.get(key)
    if not isinstance(v, str):
        raise DataError(f"{where}: field {key!r} must be a string, got {type(v).__name__}")
    if not allow_empty and not v.strip():
        raise DataError(f"{where}: field {key!r} is empty")
    return v


def _steps(rec: dict, key: str, where: str, allow_empty_list: bool) -> list[str]:
    v = rec.get(key)
    if not isinstance(v, list):
        raise DataError(f"{where}: field {key!r} must be a list of strings, got {type(v).__name__}")
    if not v and not allow_empty_list:
        raise DataError(f"{where}: field {key!r} is an empty list")
    out = []
    for n, s in enumerate(v, 1):
        if not isinstance(s, str):
            raise DataError(f"{where}: {key}[{n - 1}] must be a string, got {type(s).__name__}")
        parsed = parse_steps(s)
        if len(parsed) > 1:
            raise DataError(f"{where}: {key}[{n - 1}] holds {len(parsed)} \"Step n:\" headers; one step per item")
        body = parsed[0] if parsed and parse_steps(s.strip()) and s.strip().lower().startswith("step") else s.strip()
        if not body:
            raise DataError(f"{where}: {key}[{n - 1}] (step {n}) is empty")
        out.append(body)
    return out


def _id(rec: dict, where: str) -> Any:
    v = rec.get("id")
    if not isinstance(v, (str, int)) or isinstance(v, bool) or v == "":
        raise DataError(f"{where}: field 'id' must be a non-empty string or an integer")
    return v


def validate_ift(rec: dict, where: str) -> dict:
    steps = _steps(rec, "steps", where, allow_empty_list=False)
    if not final_answer_reached(steps[-1]):
        raise DataError(f"{where}: the last step has no \\boxed{{}} final answer")
    return {"id": _id(rec, where), "question": _text(rec, "question", where).strip(), "steps": steps}


def validate_eft(rec: dict, where: str) -> dict:
    label = rec.get("label")
    if label not in ("A", "B"):
        raise DataError(f"{where}: field 'label' must be \"A\" or \"B\", got {label!r}")
    judgment = _text(rec, "judgment", where)
    verdict = parse_verdict(judgment)
    if verdict is None:
        raise DataError(f"{where}: 'judgment' does not end in a [[A]]/[[B]] verdict")
    if verdict != label:
        raise DataError(f"{where}: 'judgment' verdict [[{verdict}]] disagrees with label {label!r}")
    return {
        "id": _id(rec, where),
        "question": _text(rec, "question", where).strip(),
        "prev_steps": _steps(rec, "prev_steps", where, allow_empty_list=True),
        "step_a": _text(rec, "step_a", where),
        "step_b": _text(rec, "step_b", where),
        "judgment": judgment.strip(),
        "label": label,
    }


def validate_text(rec: dict, where: str) -> dict:
    return {"id": _id(rec, where), "prompt": _text(rec, "prompt", where, allow_empty=True),
            "response": _text(rec, "response", where)}


def _load(path: str | os.PathLike, fields: tuple, validate) -> list[dict]:
    return [validate(rec, f"{path}:{n}") for n, rec in iter_jsonl(path, required=fields)]


def load_ift(path: str | os.PathLike) -> list[dict]:
    return _load(path, IFT_FIELDS, validate_ift)


def load_eft(path: str | os.PathLike) -> list[dict]:
    return _load(path, EFT_FIELDS, validate_eft)


def load_text(path: str | os.PathLike) -> list[dict]:
    return _load(path, TEXT_FIELDS, validate_text)
