"""Our encoders read hooks named the SAELens / ViT-Prisma way, stored in our spelling."""

import pytest


@pytest.mark.parametrize(
    ("theirs", "ours"),
    [
        ("blocks.9.hook_resid_post", "blocks.9.resid_post"),
        ("blocks.9.hook_mlp_out", "blocks.9.mlp_out"),
        ("blocks.4.hook_attn_out", "blocks.4.attn_out"),
        ("blocks.9.hook_resid_pre", "blocks.8.resid_post"),
        ("blocks.9.resid_post", "blocks.9.resid_post"),
        ("embed", "embed"),
    ],
)
def test_encoders_accept_saelens_and_prisma_hook_spellings(theirs, ours):
    from precompute.encoders import EncoderSpec

    assert EncoderSpec(hook=theirs, tokens="all" if theirs != "embed" else "cls").hook == ours


@pytest.mark.parametrize("hook", ["blocks.0.hook_resid_pre", "blocks.3.attn.hook_z", "blocks.3.ln1.hook_normalized"])
def test_hooks_our_encoders_do_not_read_are_refused(hook):
    from precompute.encoders import EncoderSpec

    with pytest.raises(ValueError, match="--hook must be"):
        EncoderSpec(hook=hook, tokens="all")
