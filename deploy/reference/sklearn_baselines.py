#!/usr/bin/env python3
"""Centralized scikit-learn reference figures for the demo federations.

Optional reference tooling, not part of the demo (README.md in this folder). For
each federation it loads every partner's train and test splits with the
federation's schema.toml, cleaned and fused the way fedprofile's client node does
(docs/schema.md), encodes them the way a fedprofile model does (standardised
numerics, 0/1 booleans, one-hot categoricals plus an unseen slot; missing cells
imputed as the schema says), and fits

  - LogisticRegression, C = 1.0 and C = 0.1 (lbfgs, max_iter 5000);
  - HistGradientBoostingClassifier with XGBoost-like parameters: max_iter 100,
    learning_rate 0.1, max_depth 6, max_leaf_nodes None (depth-limited only, as
    XGBoost), l2_regularization 1.0, max_bins 64, early_stopping False,
    min_samples_leaf 1 and 20, on the same one-hot encoding;

  (a) pooled: trained on all partners' train splits, scored on all test splits;
  (b) pooled -> partner: the same pooled model scored on one partner's test split;
  (c) alone: trained on one partner's train split, scored on its own test split.

It prints one markdown table per federation: AUC and log loss.

    python3 deploy/reference/sklearn_baselines.py [--federation telco|caravan|all]

Needs Python >= 3.11 (tomllib), pandas and scikit-learn.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

# One OpenMP thread unless told otherwise: on a busy 2-core machine the boosting's
# default thread pool made the Telco tables take 490 s instead of 9 s.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402 (after the thread setting, which must come first)
import pandas as pd  # noqa: E402
from sklearn.ensemble import HistGradientBoostingClassifier  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import log_loss, roc_auc_score  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "deploy" / "demo"

# name -> (schema, data folder, partners)
FEDERATIONS = {
    "telco": (
        DEMO / "schema.toml",
        DEMO / "data",
        ["partner-a", "partner-b", "partner-c", "partner-d"],
    ),
    "caravan": (
        DEMO / "caravan" / "schema.toml",
        DEMO / "caravan" / "data",
        ["insurer-a", "insurer-b", "insurer-c"],
    ),
}

# fedprofile_data::MAX_MAGNITUDE: a number above it is a broken export, not a value.
MAX_MAGNITUDE = 1e15
FOLDED = {"categorical", "boolean", "label", "class"}


# ------------------------------------------------------------------ loading


def parse_number(cell: str) -> float:
    """A numeric cell as fedprofile reads it: NaN when blank or unparseable."""
    if cell == "":
        return math.nan
    try:
        v = float(cell)
    except ValueError:
        return math.nan
    if not math.isfinite(v) or abs(v) > MAX_MAGNITUDE:
        return math.nan
    return v


def clean_source(source: dict, path: Path, key: str) -> pd.DataFrame:
    """One source file: trimmed, case-folded, de-duplicated as the schema says."""
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    cols = [c["name"] for c in source["column"]]
    missing = [c for c in cols if c not in raw.columns]
    if missing:
        sys.exit(f"{path}: declared columns missing from the header: {missing}")
    df = raw[cols].apply(lambda s: s.str.strip())
    for c in source["column"]:
        if c["type"] in FOLDED:
            df[c["name"]] = df[c["name"]].str.lower()
        elif c["type"] == "numeric":
            df[c["name"]] = df[c["name"]].map(parse_number)
    df = df[df[key] != ""]
    if source.get("drop_exact_duplicates", False):
        df = df.drop_duplicates(keep="first")
    newest = source.get("keep_newest_by")
    if newest:
        # Newest date wins; blank or unparseable is older than any date; on equal
        # dates the later line wins.
        dates = pd.to_datetime(df[newest], errors="coerce", format="mixed", utc=True)
        order = dates.fillna(pd.Timestamp.min.tz_localize("UTC"))
        df = df.assign(_date=order, _line=np.arange(len(df)))
        df = df.sort_values(["_date", "_line"]).drop_duplicates(key, keep="last")
        df = df.sort_values("_line").drop(columns=["_date", "_line"])
    return df.drop_duplicates(key, keep="first")


@dataclass
class Split:
    features: pd.DataFrame  # the fused rows, feature columns only (cleaned, not encoded)
    label: np.ndarray  # 0/1


def load_split(schema: dict, data_dir: Path, split: str) -> Split:
    key = schema["key"]
    primary = next(s for s in schema["source"] if s.get("primary", len(schema["source"]) == 1))
    fused = clean_source(primary, data_dir / primary["path"].replace("{split}", split), key)
    for source in schema["source"]:
        if source is primary:
            continue
        other = clean_source(source, data_dir / source["path"].replace("{split}", split), key)
        fused = fused.merge(other, on=key, how="left")
    label = next(c for s in schema["source"] for c in s["column"] if c["type"] == "label")
    y = fused[label["name"]]
    keep = y != ""
    if "negative" in label:
        keep &= y.isin([label["positive"], label["negative"]])
    fused = fused[keep]
    return Split(fused, (fused[label["name"]] == label["positive"]).to_numpy(dtype=int))


class Encoder:
    """A fedprofile FeatureSpec: fitted on a training set, applied to any split."""

    def __init__(self, schema: dict, train: pd.DataFrame):
        self.columns = [
            c
            for s in schema["source"]
            for c in s["column"]
            if c["type"] in ("numeric", "categorical", "boolean")
        ]
        self.stats = {}
        for c in self.columns:
            if c["type"] == "numeric":
                observed = train[c["name"]].dropna()
                mean = float(observed.mean()) if len(observed) else 0.0
                std = float(observed.std(ddof=0)) if len(observed) else 0.0
                self.stats[c["name"]] = (mean, std if std > 0 else 1.0)

    def encode(self, df: pd.DataFrame, standardise: bool = True) -> np.ndarray:
        blocks = []
        for c in self.columns:
            v = df[c["name"]]
            if c["type"] == "numeric":
                mean, std = self.stats[c["name"]]
                fill = c.get("value", mean) if c.get("impute", "mean") == "constant" else mean
                x = v.astype(float).fillna(fill).to_numpy()
                blocks.append(((x - mean) / std if standardise else x)[:, None])
            elif c["type"] == "boolean":
                t = v.isin(c["true_values"])
                f = v.isin(c["false_values"])
                blocks.append(np.where(t, 1.0, np.where(f, 0.0, float(c["value"])))[:, None])
            else:
                vocab = c["vocabulary"]
                cell = v.fillna("")
                if c.get("impute", "unknown") == "constant":
                    cell = cell.where(cell != "", c["value"])
                slot = cell.map({w: i for i, w in enumerate(vocab)}).fillna(len(vocab))
                blocks.append(np.eye(len(vocab) + 1)[slot.to_numpy(dtype=int)])
        return np.hstack(blocks)


# ------------------------------------------------------------------ models

MODELS = {
    "LR C=1.0": lambda: LogisticRegression(C=1.0, max_iter=5000),
    "LR C=0.1": lambda: LogisticRegression(C=0.1, max_iter=5000),
    **{
        f"HGB leaf≥{m}": (
            lambda m=m: HistGradientBoostingClassifier(
                max_iter=100,
                learning_rate=0.1,
                max_depth=6,
                max_leaf_nodes=None,
                l2_regularization=1.0,
                max_bins=64,
                min_samples_leaf=m,
                early_stopping=False,
                random_state=0,
            )
        )
        for m in (1, 20)
    },
}


def score(y: np.ndarray, p: np.ndarray) -> str:
    if len(set(y)) < 2:
        return "n/a"
    return f"{roc_auc_score(y, p):.3f} / {log_loss(y, p, labels=[0, 1]):.3f}"


def run(name: str) -> None:
    schema_path, data_root, partners = FEDERATIONS[name]
    with open(schema_path, "rb") as f:
        schema = tomllib.load(f)
    splits = {
        p: {s: load_split(schema, data_root / p, s) for s in ("train", "test")} for p in partners
    }

    def pool(split: str) -> Split:
        parts = [splits[p][split] for p in partners]
        return Split(
            pd.concat([s.features for s in parts], ignore_index=True),
            np.concatenate([s.label for s in parts]),
        )

    rows: list[tuple[str, str, dict[str, str]]] = []
    started = time.monotonic()

    train, test = pool("train"), pool("test")
    enc = Encoder(schema, train.features)
    xtr, xte = enc.encode(train.features), enc.encode(test.features)
    pooled_rows = {"pooled": {}, **{f"pooled → {p}": {} for p in partners}}
    bounds, at = {}, 0
    for p in partners:
        n = len(splits[p]["test"].label)
        bounds[p] = (at, at + n)
        at += n
    for m, make in MODELS.items():
        prob = make().fit(xtr, train.label).predict_proba(xte)[:, 1]
        pooled_rows["pooled"][m] = score(test.label, prob)
        for p, (a, b) in bounds.items():
            pooled_rows[f"pooled → {p}"][m] = score(test.label[a:b], prob[a:b])
    counts = {"pooled": (len(train.label), len(test.label), int(test.label.sum()))}
    for p in partners:
        tr, te = splits[p]["train"], splits[p]["test"]
        counts[f"pooled → {p}"] = (len(train.label), len(te.label), int(te.label.sum()))
        counts[f"{p} alone"] = (len(tr.label), len(te.label), int(te.label.sum()))
    for r, figures in pooled_rows.items():
        rows.append((r, "%d / %d (%d)" % counts[r], figures))

    for p in partners:
        tr, te = splits[p]["train"], splits[p]["test"]
        enc = Encoder(schema, tr.features)
        xtr, xte = enc.encode(tr.features), enc.encode(te.features)
        figures = {}
        for m, make in MODELS.items():
            figures[m] = score(te.label, make().fit(xtr, tr.label).predict_proba(xte)[:, 1])
        rows.append((f"{p} alone", "%d / %d (%d)" % counts[f"{p} alone"], figures))

    features = enc.encode(splits[partners[0]]["test"].features).shape[1]
    print(f"\n### {name}: AUC / log loss on the test split(s)\n")
    print(
        f"schema {schema_path.relative_to(ROOT)}; {features} encoded features; "
        f"{time.monotonic() - started:.1f} s\n"
    )
    print("| trained → scored on | train / test rows (test positives) | " + " | ".join(MODELS) + " |")
    print("|---|---|" + "---|" * len(MODELS))
    for r, n, figures in rows:
        print(f"| {r} | {n} | " + " | ".join(figures[m] for m in MODELS) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--federation", choices=[*FEDERATIONS, "all"], default="all")
    args = ap.parse_args()
    for name in FEDERATIONS if args.federation == "all" else [args.federation]:
        run(name)


if __name__ == "__main__":
    main()
