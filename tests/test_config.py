"""Config checks every field when it is made: a bad setting fails there, naming the field,
the value and what is allowed, not as a NaN or a raw error deep in training."""

import dataclasses
import math
import re

import numpy as np
import pytest
from torch import nn

from lumos_fx import Config


@pytest.mark.parametrize("name", [f.name for f in dataclasses.fields(Config)])
def test_every_field_refuses_a_value_of_the_wrong_type(name):
    with pytest.raises(TypeError, match=rf"Config\.{name}"):
        Config(**{name: "3"})


@pytest.mark.parametrize("name, value, allowed", [
    ("lam", -1, ">= 0"),
    ("lam", math.inf, "finite"),
    ("gate_lr", -0.1, "> 0"),
    ("gate_lr", 0.0, "> 0"),
    ("beta", 0.0, "> 0"),
    ("beta", math.nan, "finite"),
    ("zeta", 0.9, "> 1"),
    ("final_beta", -1.0, "> 0"),
    ("init_log_alpha", math.inf, "finite"),
    ("gate_warmup", -1, "int >= 0"),
    ("anneal_steps", -5, "int >= 0"),
    ("budget_warmup", -1, "int >= 0"),
    ("budget_lr", 0.0, "> 0"),
    ("budget_tolerance", 1.0, "0 <= budget_tolerance < 1"),
])
def test_a_value_out_of_range_names_the_field_the_value_and_what_is_allowed(name, value, allowed):
    with pytest.raises(ValueError, match=rf"Config\.{name} must be .*{allowed}.*; got {value!r}"):
        Config(**{name: value})


def test_numbers_may_be_ints_or_numpy_scalars_but_not_bools():
    config = Config(lam=1, beta=np.float32(0.5), gate_warmup=np.int64(2), noise_range=[0.1, 0.9])
    assert config.gate_warmup == 2
    for name, value in (("gate_warmup", True), ("lam", False), ("gate_seed", 1.0), ("anneal_steps", 2.5)):
        with pytest.raises(TypeError, match=rf"Config\.{name} must be"):
            Config(**{name: value})
    with pytest.raises(TypeError, match=r"Config\.noise_range must be a pair"):
        Config(noise_range=(0.1, 0.5, 0.9))


@pytest.mark.parametrize("name, bare, written", [
    ("leaf_modules", "l1", "leaf_modules=['l1']"),
    ("frozen", "backbone", "frozen=['backbone']"),
    ("leaf_modules", nn.LayerNorm, "leaf_modules=[LayerNorm]"),
])
def test_a_bare_spec_is_refused_with_the_list_to_write(name, bare, written):
    with pytest.raises(TypeError, match=rf"Config\.{name} must be a list .*write {re.escape(written)}"):
        Config(**{name: bare})


def test_a_spec_is_a_name_a_module_class_or_a_predicate():
    Config(leaf_modules=["block", nn.Linear, lambda module, name: False], frozen={"encoder"})
    with pytest.raises(TypeError, match=r"Config\.leaf_modules\[1\] is the class int, which is not an nn.Module"):
        Config(leaf_modules=["block", int])
    with pytest.raises(TypeError, match=r"Config\.frozen\[0\] must be a qualified name .*got 3 \(int\)"):
        Config(frozen=[3])


def test_replace_checks_again():
    with pytest.raises(ValueError, match=r"Config\.lam"):
        dataclasses.replace(Config(), lam=-1.0)
