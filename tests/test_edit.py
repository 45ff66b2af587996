"""The one latent-id rule and edit validation (shared by steering, heat maps and the app)."""

import math

import numpy as np
import pytest
import torch

from sae_core.config import SAEConfig
from sae_core.edit import Edit, apply_edits, latent_id, validate_edits
from sae_core.sae import SparseAutoencoder


@pytest.mark.parametrize("value,expected", [(3, 3), (np.int64(7), 7), (4.0, 4), (np.float32(2.0), 2), (0, 0)])
def test_whole_numbers_are_latent_ids(value, expected):
    got = latent_id(value, 10)
    assert got == expected and type(got) is int


@pytest.mark.parametrize("value", [2.7, -1, 10, math.nan, math.inf, True, None, "3", [1]])
def test_everything_else_is_refused_never_truncated(value):
    with pytest.raises(ValueError, match="whole number from 0 to 9"):
        latent_id(value, 10)


def test_text_ids_only_where_text_is_expected():
    assert latent_id(" 12 ", 20, text=True) == 12 and latent_id("3.0", 20, text=True) == 3
    for bad in ("2.7", "abc", "", "1e9", "nan"):
        with pytest.raises(ValueError, match="whole number from 0 to 19"):
            latent_id(bad, 20, text=True)


def test_numpy_values_are_numbers_and_edits_come_back_checked():
    edits = validate_edits([Edit(np.int64(2), "set", np.float32(0.5)), Edit(1.0, "add", 3)], d_sae=4)
    assert edits == [Edit(2, "set", 0.5), Edit(1, "add", 3.0)]
    for bad, msg in (
        (Edit(0, "set", np.float32("nan")), "finite number"),
        (Edit(0, "set", True), "finite number"),
        (Edit(2.5, "set", 1.0), "whole number"),
    ):
        with pytest.raises(ValueError, match=msg):
            validate_edits([bad], d_sae=4)


def test_a_whole_float_latent_edits_the_same_latent_as_the_int():
    sae = SparseAutoencoder(SAEConfig(d_in=6, d_sae=8), generator=torch.Generator().manual_seed(0)).eval()
    x = torch.randn(3, 6, generator=torch.Generator().manual_seed(1))
    a = apply_edits(sae, x, [Edit(5, "add", 2.0)])
    b = apply_edits(sae, x, [Edit(5.0, "add", 2.0)])
    assert torch.equal(a, b) and not torch.equal(a, x)
