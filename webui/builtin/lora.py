"""LoRAs on the built-in model: PEFT adapters on its transformer, with the method names of diffusers' pipelines.

`EaselLoraLoaderMixin` gives EaselPipeline `load_lora_weights`, `set_adapters`, `delete_adapters`,
`get_list_adapters`, `get_active_adapters` and `enable_lora_hotswap`. The file layout is
`transformer.<module path>.lora_A.weight` / `.lora_B.weight` (see webui/model_manager/loras.py), plus, when the
trainer learned a vector for the trigger word, AUTOMATIC1111's bundled-embedding key
`bundle_emb.<word>.string_to_param.*` [n,dim] (`bundle_key`): while that adapter is active at a weight other than 0,
the word in a prompt stands for those vectors (`active_words`, which the pipeline passes to the text encoder).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from webui.builtin.model import EaselTransformer
from webui.builtin.text import EaselTextEncoder


def bundle_key(word: str) -> str:
    """The key of a learned word's vectors in a LoRA file (AUTOMATIC1111's for an embedding bundled in a LoRA)."""
    return f"bundle_emb.{word}.string_to_param.*"


class EaselLoraLoaderMixin:
    """LoRA adapters on the built-in model's transformer, through PEFT, with diffusers' pipeline method names
    (`load_lora_weights`, `set_adapters`, `delete_adapters`, `get_list_adapters`, `enable_lora_hotswap`).

    A LoRA is a dict (or .safetensors file) of `transformer.<module path>.lora_A.weight` [rank, in] and
    `.lora_B.weight` [out, rank]; it is applied unscaled (rank == alpha), so any alpha must already be folded into
    lora_B (webui/model_manager/loras.py does that from the file's metadata).
    """

    transformer: EaselTransformer
    text_encoder: EaselTextEncoder
    _lora_loadable_modules = ["transformer"]
    _lora_hotswap_kwargs: dict | None = None

    @staticmethod
    def _read_lora(source: str | Path | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if isinstance(source, dict):
            return dict(source)
        from safetensors.torch import load_file

        return load_file(str(source))

    @classmethod
    def lora_state_dict(cls, source: str | Path | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The transformer's LoRA tensors with the `transformer.` prefix removed."""
        state = cls._read_lora(source)
        inner = {k.removeprefix("transformer."): v for k, v in state.items() if k.startswith("transformer.")}
        if not inner or not all(".lora_A." in k or ".lora_B." in k for k in inner):
            raise ValueError("not a LoRA for the built-in model: its keys must be `transformer.<module>.lora_A.weight`"
                             " / `.lora_B.weight`")
        return inner

    def bundled_words(self, source: str | Path | dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The LoRA's learned words: `bundle_emb.<word>.<key>` -> {word: vectors [n,dim]}, checked against the
        text encoder (one tensor per word, a single word as the tokenizer splits, the encoder's width)."""
        dim = self.text_encoder.embed.embedding_dim
        words: dict[str, torch.Tensor] = {}
        for key, value in self._read_lora(source).items():
            if not key.startswith("bundle_emb."):
                continue
            word = key.split(".")[1].lower()
            vectors = value.reshape(1, -1) if value.ndim == 1 else value
            if self.text_encoder.tokenizer.split(word) != [word]:
                raise ValueError(f"bundled embedding {word!r}: the built-in model's tokenizer reads it as "
                                 f"{len(self.text_encoder.tokenizer.split(word))} words; one word is needed")
            if word in words:
                raise ValueError(f"bundled embedding {word!r} appears more than once")
            if vectors.ndim != 2 or vectors.shape[1] != dim or not 1 <= vectors.shape[0] <= 8:
                raise ValueError(f"bundled embedding {word!r} has shape {list(value.shape)}; the built-in text "
                                 f"encoder takes [n, {dim}] with n from 1 to 8")
            words[word] = vectors.detach().to(torch.float32)
        return words

    def active_words(self) -> dict[str, torch.Tensor]:
        """The learned words of the adapters active at a weight other than 0 (a later adapter wins a shared
        word); {} without any."""
        bundled = self._bundled()
        if not bundled:
            return {}
        words: dict[str, torch.Tensor] = {}
        layers = self._lora_layers()
        for name in self.get_active_adapters():
            if bundled.get(name) and any(name in layer.lora_A and float(layer.scaling[name]) != 0.0
                                         for layer in layers):
                words.update(bundled[name])
        return words

    def load_lora_weights(self, source: str | Path | dict[str, torch.Tensor], adapter_name: str | None = None,
                          hotswap: bool = False, **kwargs: object) -> None:
        """Add the LoRA as adapter `adapter_name`; with `hotswap`, replace that adapter's weights in place."""
        from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict
        from peft.utils.hotswap import hotswap_adapter_from_state_dict, prepare_model_for_compiled_hotswap

        source = self._read_lora(source)
        state = self.lora_state_dict(source)
        words = self.bundled_words(source)
        ranks = {k.rsplit(".lora_B.", 1)[0]: int(v.shape[1]) for k, v in state.items() if ".lora_B." in k}
        modules = {name for name, _ in self.transformer.named_modules()}
        missing = sorted(m for m in ranks if m not in modules)
        if missing:
            raise ValueError(f"the LoRA names layers the built-in model does not have: {', '.join(missing[:5])}")
        rank = max(ranks.values())
        config = LoraConfig(r=rank, lora_alpha=rank, target_modules=sorted(ranks),
                            rank_pattern={m: r for m, r in ranks.items() if r != rank},
                            alpha_pattern={m: r for m, r in ranks.items() if r != rank})
        adapter_name = adapter_name or f"default_{len(self.get_list_adapters().get('transformer', []))}"
        if hotswap:
            named = {k.replace(".lora_A.weight", f".lora_A.{adapter_name}.weight")
                     .replace(".lora_B.weight", f".lora_B.{adapter_name}.weight"): v for k, v in state.items()}
            hotswap_adapter_from_state_dict(self.transformer, named, adapter_name, config=config)
            self.set_bundled_words(adapter_name, words)
            return
        with warnings.catch_warnings():  # PEFT warns on every adapter after the first; several are intended
            warnings.filterwarnings("ignore", message="Already found a `peft_config`")
            inject_adapter_in_model(config, self.transformer, adapter_name=adapter_name)
        result = set_peft_model_state_dict(self.transformer, state, adapter_name=adapter_name)
        unexpected = [k for k in getattr(result, "unexpected_keys", []) or [] if "lora_" in k]
        if unexpected:
            self.delete_adapters([adapter_name])
            raise ValueError(f"LoRA keys not used by the built-in model: {', '.join(unexpected[:5])}")
        self.set_bundled_words(adapter_name, words)
        if self._lora_hotswap_kwargs is not None and len(self.get_list_adapters()["transformer"]) == 1:
            prepare_model_for_compiled_hotswap(self.transformer, config=config, **self._lora_hotswap_kwargs)

    def enable_lora_hotswap(self, target_rank: int = 128, check_compiled: str = "error") -> None:
        """Pad adapters to `target_rank` once the first is loaded, so later ones swap in without recompiling."""
        self._lora_hotswap_kwargs = {"target_rank": target_rank, "check_compiled": check_compiled}

    def get_list_adapters(self) -> dict[str, list[str]]:
        names: dict[str, None] = {}
        for layer in self._lora_layers():
            names.update(dict.fromkeys(layer.lora_A.keys()))
        return {"transformer": list(names)}

    def get_active_adapters(self) -> list[str]:
        for layer in self._lora_layers():
            return list(layer.active_adapters)
        return []

    def set_adapters(self, adapter_names: list[str] | str, adapter_weights: list[float] | float | None = None
                     ) -> None:
        """Activate these adapters with these weights (default 1.0 each)."""
        names = [adapter_names] if isinstance(adapter_names, str) else list(adapter_names)
        if adapter_weights is None:
            weights = [1.0] * len(names)
        elif isinstance(adapter_weights, (int, float)):
            weights = [float(adapter_weights)] * len(names)
        else:
            weights = list(adapter_weights)
        present = set(self.get_list_adapters()["transformer"])
        unknown = [n for n in names if n not in present]
        if unknown:
            raise ValueError(f"adapter(s) {unknown} are not loaded; loaded: {sorted(present)}")
        for layer in self._lora_layers():
            here = [n for n in names if n in layer.lora_A]
            layer.set_adapter(here)
            for name, weight in zip(names, weights):
                if name in layer.lora_A:
                    layer.set_scale(name, weight)

    def delete_adapters(self, adapter_names: list[str] | str) -> None:
        names = [adapter_names] if isinstance(adapter_names, str) else list(adapter_names)
        for layer in self._lora_layers():
            for name in names:
                if name in layer.lora_A:
                    layer.delete_adapter(name)
        config = getattr(self.transformer, "peft_config", None)
        if isinstance(config, dict):
            for name in names:
                config.pop(name, None)
        for name in names:
            self._bundled().pop(name, None)

    def _bundled(self) -> dict[str, dict[str, torch.Tensor]]:
        """adapter -> its learned words; kept on the transformer, which every pipeline of the checkpoint shares."""
        return self.transformer.__dict__.setdefault("easel_bundled_words", {})

    def set_bundled_words(self, adapter_name: str, words: dict[str, torch.Tensor]) -> None:
        """Make `words` (word -> vectors [n,dim]) the learned words of adapter `adapter_name` ({} = none)."""
        bundled = self._bundled()
        bundled.pop(adapter_name, None)
        if words:
            bundled[adapter_name] = words

    def _lora_layers(self) -> list[torch.nn.Module]:
        from peft.tuners.lora import LoraLayer

        return [m for m in self.transformer.modules() if isinstance(m, LoraLayer)]
