"""Hugging Face transformers through lumos_fx (issue 18, item 4): tiny configs, random weights.

For BertModel, ViTForImageClassification, GPT-2 and a Llama with grouped-query attention:
instrument, one Adam step on ``output^2 + 1e-3 * complexity_loss``, every third unit of
every gate closed, prune, pruned vs gated on the example and on another batch and sequence
length (image batch), export + load. Needs transformers (the coverage venv):

    .venv-coverage/bin/python -m benchmarks.transformers_step
"""

from __future__ import annotations

import tempfile

import torch

import lumos_fx

_BERT = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
             max_position_embeddings=64)


def _models() -> dict:
    import transformers
    vit = transformers.ViTConfig(image_size=32, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2,
                                 num_attention_heads=4, intermediate_size=37, num_labels=5)
    llama = transformers.LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                                     use_cache=False)
    gpt2 = transformers.GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_positions=64, use_cache=False,
                                   bos_token_id=0, eos_token_id=0)
    tokens = (torch.randint(0, 100, (2, 8)), torch.randint(0, 100, (3, 12)))
    return {
        "BertModel": (transformers.BertModel(transformers.BertConfig(**_BERT)), *tokens),
        "ViTForImageClassification": (transformers.ViTForImageClassification(vit), torch.randn(2, 3, 32, 32),
                                      torch.randn(3, 3, 32, 32)),
        "GPT2Model": (transformers.GPT2Model(gpt2), *tokens),
        "LlamaModel (GQA)": (transformers.LlamaModel(llama), *tokens),
    }


def _first(out) -> torch.Tensor:
    if isinstance(out, (tuple, list)):
        return out[0]
    return out.last_hidden_state if getattr(out, "last_hidden_state", None) is not None else out.logits


def _rel_err(a, b) -> float:
    return ((_first(a) - _first(b)).abs().max() / _first(b).abs().max()).item()


def main() -> None:
    torch.manual_seed(0)
    for name, (model, x, other) in _models().items():
        wrapped = lumos_fx.instrument(model.eval(), (x,))
        opt = torch.optim.Adam(wrapped.parameters(), lr=1e-2)
        loss = _first(wrapped.train()(x)).pow(2).mean() + 1e-3 * lumos_fx.complexity_loss(wrapped)
        loss.backward()
        opt.step()
        with torch.no_grad():
            for gate in lumos_fx.gates(wrapped).values():
                gate.log_alpha[::3] = -10.0
        pruned = lumos_fx.prune(wrapped)
        loaded = lumos_fx.load(lumos_fx.export(pruned, tempfile.mkdtemp()))
        with torch.no_grad():
            err = max(_rel_err(pruned(t), wrapped.eval()(t)) for t in (x, other))
            export_err = _rel_err(loaded(other), pruned(other))
        before, after = (sum(p.numel() for p in m.parameters()) for m in (model, pruned))
        print(f"{name}: one step (loss {loss.item():.3f}); parameters {before:,} -> {after:,}; "
              f"pruned vs gated rel err {err:.1e} (example and {tuple(other.shape)}); export rel err {export_err:.1e}")
        for line in str(lumos_fx.summary(pruned)).splitlines():
            if "->" in line and not line.startswith(("parameters", "FLOPs")):
                print("   ", line.split("  ")[0], " ".join(line.split()[1:4]))


if __name__ == "__main__":
    main()
