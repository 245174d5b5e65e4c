"""Shipped training and accelerate configs parse, and TRL accepts their 'trl:' sections."""

from pathlib import Path

import pytest
import yaml

from flexguard.errors import ConfigError
from flexguard.train.llm.config import GRPORunConfig, SFTRunConfig, load_run_config

CONFIGS = Path(__file__).resolve().parent.parent / "configs"


@pytest.mark.parametrize("name, cls", [("sft_qwen3_8b.yaml", SFTRunConfig), ("grpo_qwen3_8b.yaml", GRPORunConfig)])
def test_training_configs_are_valid_for_trl(name, cls):
    trl = pytest.importorskip("trl")
    cfg = load_run_config(cls, CONFIGS / "train" / name)
    trl_cls = trl.SFTConfig if cls is SFTRunConfig else trl.GRPOConfig
    fields = set(trl_cls.__dataclass_fields__)
    assert set(cfg.trl) <= fields, set(cfg.trl) - fields


@pytest.mark.parametrize("name", ["single_gpu.yaml", "multi_gpu.yaml", "deepspeed_zero2.yaml"])
def test_accelerate_configs(name):
    cfg = yaml.safe_load((CONFIGS / "accelerate" / name).read_text())
    assert cfg["mixed_precision"] == "bf16" and cfg["distributed_type"] in ("NO", "MULTI_GPU", "DEEPSPEED")


def test_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="needs 'model'"):
        SFTRunConfig(data="d", output_dir="o")
    p = tmp_path / "c.yaml"
    p.write_text("model: m\ndata: d\noutput_dir: o\nlearning_rate: 1\n")
    with pytest.raises(ConfigError, match="TRL options go under 'trl:'"):
        load_run_config(SFTRunConfig, p)
    with pytest.raises(ConfigError, match="unknown reward"):
        GRPORunConfig(model="m", data="d", output_dir="o", reward_weights={"vibes": 1.0})
    cfg = load_run_config(SFTRunConfig, None, model="m", data="d", output_dir="o")
    assert cfg.lora is True
