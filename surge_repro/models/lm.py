"""Language models for the NLP workloads, built from transformers' own classes and configs (no weights downloaded).

``gpt2`` builds ``GPT2LMHeadModel`` (the paper's "simplified DistilGPT2", Fig. 4 and 6) and ``moe`` builds
``Qwen2MoeForCausalLM`` (the paper's MoE "similar to Mixtral but with shared experts", Fig. 5). The sizes are in
``conf/model/*.yaml``; these functions only fix what every size shares:

- GPT-2's vocabulary (50257), the size of the vendored BPE the tasks tokenize with (``surge_repro/assets/gpt2``).
- Dropout 0 everywhere: the paper measures the training loss and its drop over K steps; dropout would add noise of
  its own to every minibatch loss and every probe, and make the training loss depend on the train/eval mode.
- No KV cache (``use_cache=False``): a training step has no use for one, and building it costs time.
- Weights are initialised by transformers' own ``_init_weights`` from torch's global RNG, which ``train.py`` seeds
  with the point's seed before it builds the model, so a point's initial weights are a function of its seed.

- ``precision``: ``fp32`` (plain float32) or ``bf16`` (the forward under ``torch.autocast`` to bfloat16: matrix
  products and attention in bf16, weights, gradients and optimizer state in float32; the task upcasts the logits
  before its cross entropy). The forward itself enters autocast, so every caller gets it: the one-point step, the
  packed step (``functional_call`` runs this forward under vmap), probes and the diagnostics. bf16 changes a
  point's numbers, so the key is part of its identity (``point.signature``: not a nuisance key); and the same key
  means the same arithmetic on every device (``device`` is a nuisance key), so bf16 autocasts on a CPU too rather
  than falling back to float32 there or being refused.

A model is called with token ids (batch x seq_len) and returns an output whose ``.logits`` the task's loss reads.
"""

from __future__ import annotations

import functools

import torch

GPT2_VOCAB = 50257  # the BPE's 50,000 merges + 256 byte tokens + <|endoftext|>
PRECISIONS = ("fp32", "bf16")


class Bf16Autocast:
    """Mixed into a transformers model class: its forward runs under bf16 autocast on the device of its inputs."""

    def forward(self, *args, **kwargs):
        device = next(a.device for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor))
        with torch.autocast(device.type, dtype=torch.bfloat16):
            return super().forward(*args, **kwargs)


@functools.cache
def _bf16_class(cls: type) -> type:
    """``cls`` with ``Bf16Autocast``: same parameters, names and init, so checkpoints and packs see no difference."""
    return type(f"Bf16{cls.__name__}", (Bf16Autocast, cls), {"__module__": __name__})


def _with_precision(cls: type, precision: str, name: str) -> type:
    if precision not in PRECISIONS:
        raise ValueError(f"model {name}: precision={precision!r}; one of {', '.join(PRECISIONS)}. "
                         f"Fix: model.precision=bf16 (or fp32)")
    return _bf16_class(cls) if precision == "bf16" else cls


def gpt2(*, n_layer: int, n_embd: int, n_head: int, n_positions: int, vocab_size: int = GPT2_VOCAB,
         attn_implementation: str = "sdpa", precision: str = "fp32"):
    """GPT-2 (pre-LayerNorm blocks, learned positions, GELU MLP of width 4 d, tied input and output embeddings)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=vocab_size, n_positions=n_positions, n_embd=n_embd, n_layer=n_layer,
                        n_head=n_head, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, summary_first_dropout=0.0,
                        use_cache=False)
    config._attn_implementation = attn_implementation
    return _with_precision(GPT2LMHeadModel, precision, "gpt2")(config)


def moe(*, num_hidden_layers: int, hidden_size: int, num_attention_heads: int, num_key_value_heads: int,
        num_experts: int, num_experts_per_tok: int, moe_intermediate_size: int, shared_expert_intermediate_size: int,
        max_position_embeddings: int, vocab_size: int = GPT2_VOCAB, tie_word_embeddings: bool = True,
        attn_implementation: str = "sdpa", experts_implementation: str = "eager", precision: str = "fp32"):
    """A Mixtral-style decoder (RMSNorm, rotary positions, SwiGLU experts, softmax top-k routing) with a shared expert
    in every layer, as DeepSeekMoE adds: transformers' Qwen2-MoE. Every layer is sparse (``decoder_sparse_step=1``).

    The loss is the language-modelling cross entropy alone: the router's load-balancing loss is off
    (``output_router_logits=False``), since the paper's heatmaps are of the training loss and it names no auxiliary
    loss. ``experts_implementation``: transformers' ways to run the experts ("eager": a loop over the experts hit;
    "batched_mm": a gather of each token's expert weights, which torch.func.vmap can batch but which holds a copy of
    the expert weights per routed token; "grouped_mm": grouped matrix products, fastest on recent GPUs)."""
    from transformers import Qwen2MoeConfig, Qwen2MoeForCausalLM

    config = Qwen2MoeConfig(
        vocab_size=vocab_size, hidden_size=hidden_size, num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads, num_key_value_heads=num_key_value_heads,
        intermediate_size=moe_intermediate_size,  # the dense MLP's width; unused, as every layer is sparse
        moe_intermediate_size=moe_intermediate_size, shared_expert_intermediate_size=shared_expert_intermediate_size,
        num_experts=num_experts, num_experts_per_tok=num_experts_per_tok, norm_topk_prob=True,
        decoder_sparse_step=1, mlp_only_layers=[], max_position_embeddings=max_position_embeddings,
        attention_dropout=0.0, output_router_logits=False, use_cache=False, tie_word_embeddings=tie_word_embeddings)
    config._attn_implementation = attn_implementation
    config._experts_implementation = experts_implementation
    return _with_precision(Qwen2MoeForCausalLM, precision, "moe")(config)
