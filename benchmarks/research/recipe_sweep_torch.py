"""Where is the ceiling of fine-tuning all-MiniLM-L6-v2 on the demo's `book` task? A recipe sweep run on a
borrowed GPU (PyTorch + transformers there; neither is a bertkeras dependency, and no result of this script
gates anything): the same split the demo writes (pipelines/demo.py ``prepare_data``), the same head ([CLS] ->
the checkpoint's pooler -> dropout -> linear), the same optimizer recipe (AdamW, no decay on biases and norms,
linear warm-up then linear decay, global-norm clipping 1.0). It answers which knobs can matter before the
slow CPU runs of the real pipeline confirm one (docs/recipe.md).

    python recipe_sweep_torch.py --model MODEL_DIR --data DATA_DIR --out results.jsonl --shard 0 --shards 8

DATA_DIR holds one folder per training set, each with the demo's book_train.tsv / book_eval.tsv (the same
1,800 evaluation verses in all), written by ``pipelines.demo.prepare_data(DATA_DIR/<name>, ...)``:
``d12k`` with its defaults (the demo's: verses of at most 24 words, at most 2,500 per part: 12,253),
``d13k`` with ``book_per_part=10**6`` (every verse of at most 24 words: 13,203), ``d22k`` with that and
``train_max_words=40`` (22,352), ``d25k`` with ``train_max_words=1000`` (every training verse: 24,888).
``--baselines`` fits the bag-of-words baselines on each instead (scikit-learn, CPU).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import time

BASE = dict(data="d12k", epochs=1.5, lr=2e-4, batch=16, warmup=100, pooling="cls", label_smoothing=0.0,
            max_len=64, seed=0, ema=0.0, weight_decay=0.01, dropout=0.1, head_lr_mult=1.0, llrd=1.0)


def sweep(round_: int = 1) -> list[dict]:
    """The configurations, most informative first (each worker takes every n-th). Round 1: seeds, epochs x
    learning rate, training sets; round 2: the tricks and longer verses at 2.25 epochs' cost (~1,720 steps)."""
    runs = []

    def add(group, **kw):
        runs.append({**BASE, **kw, "group": group})

    if round_ == 2:
        for kw in (dict(), dict(pooling="mean"), dict(label_smoothing=0.1), dict(ema=0.999), dict(head_lr_mult=10.0),
                   dict(dropout=0.2), dict(data="d25k", epochs=1.1), dict(data="d22k", epochs=1.25)):
            add("round2", **{"epochs": 2.25, **kw})
        return runs

    for seed in (0, 1, 2):  # the demo's recipe (book only), three seeds: the noise floor
        add("demo", seed=seed)
    for epochs in (1, 3, 5, 8):
        for lr in (1e-4, 2e-4, 4e-4):
            add("epochs_x_lr", epochs=epochs, lr=lr)
    for data, epochs in (("d13k", 1.5), ("d13k", 3), ("d22k", 1), ("d22k", 2), ("d22k", 4), ("d25k", 1),
                         ("d25k", 2), ("d25k", 4)):
        add("data", data=data, epochs=epochs)
    for kw in (dict(pooling="mean"), dict(label_smoothing=0.1), dict(batch=32, lr=3e-4), dict(ema=0.999),
               dict(weight_decay=0.1), dict(dropout=0.2), dict(head_lr_mult=10.0), dict(llrd=0.8, lr=3e-4),
               dict(batch=8, lr=1e-4), dict(max_len=32)):
        add("tricks_at_3_epochs", epochs=3, **kw)
    for seed in (1, 2):
        add("epochs_x_lr", epochs=3, seed=seed)
        add("data", data="d22k", epochs=2, seed=seed)
    return runs


def read_tsv(path):
    rows = [line.rstrip("\n").split("\t") for line in open(path, encoding="utf-8")][1:]
    return [r[0] for r in rows], [r[1] for r in rows]


def macro_f1(pred, gold, k):
    f1s = []
    for c in range(k):
        tp = sum(1 for p, g in zip(pred, gold) if p == c and g == c)
        fp = sum(1 for p, g in zip(pred, gold) if p == c and g != c)
        fn = sum(1 for p, g in zip(pred, gold) if p != c and g == c)
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return sum(f1s) / k


def run(cfg: dict, model_dir: str, data_dir: str, device) -> dict:
    import torch
    from transformers import BertModel, BertTokenizerFast

    torch.manual_seed(cfg["seed"])
    tok = BertTokenizerFast(os.path.join(model_dir, "vocab.txt"), do_lower_case=True)
    train_x, train_y = read_tsv(os.path.join(data_dir, cfg["data"], "book_train.tsv"))
    eval_x, eval_y = read_tsv(os.path.join(data_dir, cfg["data"], "book_eval.tsv"))
    labels = sorted(set(train_y))
    ty = torch.tensor([labels.index(y) for y in train_y])
    ey = [labels.index(y) for y in eval_y]

    def encode(texts):
        return tok(texts, truncation=True, max_length=cfg["max_len"], padding=True, return_tensors="pt")

    bert = BertModel.from_pretrained(model_dir, dtype=torch.float32, hidden_dropout_prob=cfg["dropout"],
                                     attention_probs_dropout_prob=cfg["dropout"]).to(device)
    hidden = bert.config.hidden_size
    pooler = torch.nn.Linear(hidden, hidden).to(device)
    pooler.load_state_dict(bert.pooler.dense.state_dict())
    classifier = torch.nn.Linear(hidden, len(labels)).to(device)
    torch.nn.init.trunc_normal_(classifier.weight, std=0.02, a=-0.04, b=0.04)
    torch.nn.init.zeros_(classifier.bias)
    drop = torch.nn.Dropout(cfg["dropout"])

    def forward(batch):
        out = bert(**batch).last_hidden_state
        if cfg["pooling"] == "mean":
            m = batch["attention_mask"].unsqueeze(-1).float()
            h = (out * m).sum(1) / m.sum(1)
        else:
            h = torch.tanh(pooler(out[:, 0]))
        return classifier(drop(h))

    groups = []
    layers = bert.config.num_hidden_layers
    for name, p in list(bert.named_parameters()) + [("head." + n, p) for n, p in pooler.named_parameters()] + \
            [("head.c." + n, p) for n, p in classifier.named_parameters()]:
        if name.startswith("pooler."):
            continue  # the head has its own copy
        scale = 1.0
        if name.startswith("head."):
            scale = cfg["head_lr_mult"]
        elif cfg["llrd"] != 1.0:
            if ".layer." in name:
                scale = cfg["llrd"] ** (layers - 1 - int(name.split(".layer.")[1].split(".")[0]))
            elif name.startswith("embeddings."):
                scale = cfg["llrd"] ** layers
        decay = 0.0 if ("bias" in name or "LayerNorm" in name) else cfg["weight_decay"]
        groups.append({"params": [p], "weight_decay": decay, "scale": scale})
    opt = torch.optim.AdamW(groups, lr=cfg["lr"], betas=(0.9, 0.999), eps=1e-6)
    params = [p for g in groups for p in g["params"]]
    ema = [p.detach().clone() for p in params] if cfg["ema"] else None

    n = len(train_x)
    steps = max(1, round(cfg["epochs"] * n / cfg["batch"]))
    gen = torch.Generator().manual_seed(cfg["seed"])
    order = torch.cat([torch.randperm(n, generator=gen) for _ in range(math.ceil(cfg["epochs"]) + 1)])
    eval_batches = [encode(eval_x[i:i + 256]) for i in range(0, len(eval_x), 256)]
    checkpoints = sorted({max(1, round(steps * f)) for f in (0.25, 0.5, 0.75, 1.0)})
    curve = []

    def evaluate():
        modules = (bert, pooler, classifier)
        for m in modules:
            m.eval()
        if ema:
            saved = [p.detach().clone() for p in params]
            with torch.no_grad():
                for p, e in zip(params, ema):
                    p.copy_(e)
        pred = []
        with torch.no_grad():
            for b in eval_batches:
                pred += forward({k: v.to(device) for k, v in b.items()}).argmax(-1).tolist()
        if ema:
            with torch.no_grad():
                for p, s in zip(params, saved):
                    p.copy_(s)
        for m in modules:
            m.train()
        acc = sum(p == g for p, g in zip(pred, ey)) / len(ey)
        return acc, macro_f1(pred, ey, len(labels))

    started = time.time()
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=cfg["label_smoothing"])
    for step in range(1, steps + 1):
        lr = cfg["lr"] * (step / cfg["warmup"] if step < cfg["warmup"] else
                          max(0.0, (steps - step) / max(1, steps - cfg["warmup"])))
        for g in opt.param_groups:
            g["lr"] = lr * g["scale"]
        idx = order[(step - 1) * cfg["batch"]: step * cfg["batch"]].tolist()
        batch = {k: v.to(device) for k, v in encode([train_x[i] for i in idx]).items()}
        loss = loss_fn(forward(batch), ty[idx].to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if ema:
            with torch.no_grad():
                torch._foreach_lerp_(ema, [p.detach() for p in params], 1 - cfg["ema"])
        if step in checkpoints:
            acc, f1 = evaluate()
            curve.append({"step": step, "epoch": round(step * cfg["batch"] / n, 2), "accuracy": round(acc, 4),
                          "macro_f1": round(f1, 4), "loss": round(float(loss.detach()), 4)})
    final = curve[-1]
    return {**cfg, "train_examples": n, "steps": steps, "accuracy": final["accuracy"], "macro_f1": final["macro_f1"],
            "curve": curve, "seconds": round(time.time() - started, 1)}


def baselines(data_dir: str, model_dir: str) -> list[dict]:
    """TF-IDF + linear baselines on each training set: over the checkpoint's sub-words (as the pipeline's
    baseline), over words (the issue's), and char 2-5-grams with a linear SVM."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.svm import LinearSVC
    from transformers import BertTokenizerFast

    tok = BertTokenizerFast(os.path.join(model_dir, "vocab.txt"), do_lower_case=True)
    rows = []
    for data in sorted(os.listdir(data_dir)):
        train_x, train_y = read_tsv(os.path.join(data_dir, data, "book_train.tsv"))
        eval_x, eval_y = read_tsv(os.path.join(data_dir, data, "book_eval.tsv"))
        labels = sorted(set(train_y))
        gold = [labels.index(y) for y in eval_y]
        for name, vectorizer, classifier in (
                ("subword_1_2gram_tfidf_logreg", TfidfVectorizer(ngram_range=(1, 2), tokenizer=tok.tokenize,
                                                                 lowercase=False, token_pattern=None),
                 LogisticRegression(C=1, max_iter=2000)),
                ("word_1_2gram_tfidf_logreg", TfidfVectorizer(ngram_range=(1, 2)), LogisticRegression(C=1, max_iter=2000)),
                ("char_wb_2_5gram_tfidf_linear_svm", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5),
                                                                     sublinear_tf=True), LinearSVC(C=0.5))):
            classifier.fit(vectorizer.fit_transform(train_x), [labels.index(y) for y in train_y])
            pred = [int(p) for p in classifier.predict(vectorizer.transform(eval_x))]
            rows.append({"group": "baseline", "data": data, "train_examples": len(train_x), "model": name,
                         "accuracy": round(sum(p == g for p, g in zip(pred, gold)) / len(gold), 4),
                         "macro_f1": round(macro_f1(pred, gold, len(labels)), 4)})
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--shard", type=int, default=0)
    parser.add_argument("--shards", type=int, default=1)
    parser.add_argument("--round", type=int, default=1, choices=(1, 2))
    parser.add_argument("--limit", type=int, default=0, help="run only the first N of this shard's configurations")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every run's epochs (a smoke test)")
    parser.add_argument("--baselines", action="store_true", help="fit the bag-of-words baselines instead")
    args = parser.parse_args()
    if args.baselines:
        for row in baselines(args.data, args.model):
            with open(args.out, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
        return
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False  # float32 as on the CPU runs
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    mine = sweep(args.round)[args.shard::args.shards]
    if args.limit:
        mine = mine[:args.limit]
    for cfg in mine:
        cfg = copy.deepcopy(cfg)
        cfg["epochs"] *= args.scale
        result = run(cfg, args.model, args.data, device)
        with open(args.out, "a", encoding="utf-8") as f:
            f.write(json.dumps(result) + "\n")
        print(json.dumps({k: result[k] for k in ("group", "data", "epochs", "lr", "seed", "accuracy", "macro_f1",
                                                 "seconds")}), flush=True)


if __name__ == "__main__":
    main()
