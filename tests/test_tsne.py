"""psr.tsne (the paper's Figure 2 shape): record texts per schema, mean hidden-state embeddings,
and the plot on a tiny model."""

import json
import subprocess
import sys

import pytest

from psr.tsne import embed, load_group, main, record_text  # scikit-learn: requirements.txt


def test_record_text_per_schema():
    assert record_text({"question": "Q?", "steps": ["a = 1.", "b = 2."]}) == "Q?\nStep 1: a = 1.\nStep 2: b = 2.\n"
    eft = record_text({"question": "Q?", "prev_steps": ["x"], "step_a": "A1", "step_b": "B1", "judgment": "J [[A]]"})
    assert eft.startswith("Please act as an impartial judge") and "A1" in eft and eft.endswith("\nJ [[A]]")
    assert record_text({"question": "Q?", "prev_steps": ["Step 1: x"], "chosen": "Step 2: y", "rejected": "z"}) == \
        "Q?\nStep 1: x\nStep 2: y"
    assert record_text({"prompt": "Q?", "initial_reason_steps": "", "chosen": "S", "rejected": "T"}) == "Q?\nS"
    assert record_text({"prompt": "P ", "response": "R"}) == "P R"
    assert record_text({"id": 1, "problem": "What?"}) == "What?"
    with pytest.raises(ValueError, match=r"f.jsonl:3: no known schema \(fields \['a', 'b'\]"):
        record_text({"a": 1, "b": 2}, "f.jsonl:3")


def test_embed_is_the_masked_mean_of_the_last_hidden_states(tiny_model_dir):
    import numpy as np
    import torch
    from transformers import AutoModel, AutoTokenizer

    texts = ["one two three four", "five", "six seven"]
    x = embed(texts, tiny_model_dir, batch_size=2)
    model = AutoModel.from_pretrained(str(tiny_model_dir), dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    assert x.shape == (3, model.config.hidden_size)
    for row, t in zip(x, texts):  # padding in a batch does not change a text's embedding
        ids = tok(t, return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            alone = model(**ids).last_hidden_state[0].mean(0).numpy()
        assert np.allclose(row, alone, atol=1e-4)


def test_plot_writes_png_points_and_names_the_encoder(tmp_path, tiny_model_dir, capsys):
    (tmp_path / "ift.jsonl").write_text("".join(json.dumps({"id": i, "question": f"Q{i}?", "steps": [f"{i} + 1 = {i + 1}."]})
                                                + "\n" for i in range(8)))
    (tmp_path / "q.jsonl").write_text("".join(json.dumps({"id": i, "problem": f"What is {i} * 3?"}) + "\n" for i in range(6)))
    out = tmp_path / "fig" / "tsne.png"
    rc = main(["--encoder", str(tiny_model_dir), "--data", f"IFT={tmp_path / 'ift.jsonl'}", "--data",
               f"PPD(M1)={tmp_path / 'q.jsonl'}", "--limit", "5", "--out", str(out)])
    assert rc == 0 and out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    said = capsys.readouterr().out
    assert f"t-SNE of mean last-layer hidden states of model ({tiny_model_dir}); the paper used BERT embeddings" in said
    assert "{'IFT': 5, 'PPD(M1)': 5}" in said
    pts = [json.loads(x) for x in (tmp_path / "fig" / "tsne.png.jsonl").read_text().splitlines()]
    assert [p["group"] for p in pts] == ["IFT"] * 5 + ["PPD(M1)"] * 5
    assert len(load_group(tmp_path / "ift.jsonl", 5, 0)) == 5 and load_group(tmp_path / "ift.jsonl", 5, 0) == \
        load_group(tmp_path / "ift.jsonl", 5, 0)
    p = subprocess.run([sys.executable, "-m", "psr.tsne", "--encoder", str(tiny_model_dir), "--data", "X=/no/such.jsonl",
                        "--out", str(tmp_path / "x.png")], capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and "--data X: /no/such.jsonl: no such file" in p.stderr
    p = subprocess.run([sys.executable, "-m", "psr.tsne", "--encoder", str(tmp_path), "--data", f"A={tmp_path / 'q.jsonl'}",
                        "--out", str(tmp_path / "x.png")], capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and "no config.json" in p.stderr
