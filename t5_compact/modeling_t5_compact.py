"""The compact text encoder: transformers' T5 encoder stack plus a projector to the diffusion model's width."""

from __future__ import annotations

import os

import torch
from torch import nn
from transformers import AutoConfig, AutoModel, PreTrainedModel, T5EncoderModel
from transformers.modeling_outputs import BaseModelOutput
from transformers.models.t5.modeling_t5 import T5PreTrainedModel, T5Stack

from .configuration_t5_compact import T5CompactConfig

# diffusers reloads a saved pipeline's custom component by importing the module recorded in model_index.json
# (this one) and looking up its loadable base classes *in this module's namespace* (`PreTrainedModel` ->
# `from_pretrained`); without the name here, `FluxPipeline.from_pretrained(saved_dir)` fails. Public API: keep both.
__all__ = ["PreTrainedModel", "T5CompactEncoder"]

_ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "gelu_new": lambda: nn.GELU(approximate="tanh"), "silu": nn.SiLU}


class T5CompactEncoder(T5EncoderModel):
    """A small T5 encoder whose output is projected to the width of T5-XXL's embeddings.

    It subclasses `T5EncoderModel`, so diffusers accepts it in the `text_encoder_2` (FLUX) and `text_encoder_3`
    (SD3) slots without a type warning. `forward` returns a `BaseModelOutput` whose `last_hidden_state` is
    `[batch, seq, projection_out_dim]`; `hidden_states` (when asked for) are the encoder's, before projection.

    Parameter names: `shared`, `encoder.*` (as in `T5EncoderModel`) and `final_projection.{0,3}` (as in the
    paper's release), so the published checkpoints map onto this class by stripping one `encoder.` prefix.
    """

    config_class = T5CompactConfig
    config: T5CompactConfig
    base_model_prefix = "t5_compact"
    _no_split_modules = ["T5Block"]
    _keep_in_fp32_modules = ["wo"]
    _tied_weights_keys = {"encoder.embed_tokens.weight": "shared.weight"}

    def __init__(self, config: T5CompactConfig):
        T5PreTrainedModel.__init__(self, config)
        self.shared = nn.Embedding(config.vocab_size, config.d_model)
        config.use_cache = False
        config.is_encoder_decoder = False
        self.encoder = T5Stack(config)
        self.final_projection = nn.Sequential(
            nn.Linear(config.d_model, config.projection_hidden_dim, bias=config.projection_bias),
            _ACTIVATIONS[config.projection_act](),
            nn.Dropout(config.projection_dropout),
            nn.Linear(config.projection_hidden_dim, config.projection_out_dim, bias=config.projection_bias),
        )
        self.post_init()

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        projector = getattr(self, "final_projection", None)
        if projector is not None and (module is projector[0] or module is projector[3]):
            nn.init.normal_(module.weight, std=self.config.initializer_factor * module.in_features**-0.5)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    @property
    def out_dim(self) -> int:
        """Width of the embeddings this encoder produces (the transformer's `joint_attention_dim`)."""
        return self.config.projection_out_dim

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> BaseModelOutput | tuple[torch.Tensor, ...]:
        """Encode token ids (`[batch, seq]`) to `[batch, seq, projection_out_dim]` embeddings."""
        encoded = self.encoder(
            input_ids=input_ids,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
            return_dict=True,
            **kwargs,
        )
        hidden = encoded.last_hidden_state
        projection = self.final_projection[0]
        projected = self.final_projection(hidden.to(projection.weight.dtype))
        output = BaseModelOutput(
            last_hidden_state=projected, hidden_states=encoded.hidden_states, attentions=encoded.attentions
        )
        if return_dict is False:
            return output.to_tuple()
        return output

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *model_args,
        torch_dtype: torch.dtype | str | None = None,
        device: torch.device | str | None = None,
        **kwargs,
    ) -> T5CompactEncoder:
        """Load a compact encoder from any supported source.

        `source` may be a folder written by `save_pretrained`, the paper's published folder layout
        (`LifuWang/DistillT5`), a single `.safetensors` file with or without config (the geometry is read off the
        tensor shapes), or a hub repo id (resolved with huggingface_hub, honouring `HF_HUB_OFFLINE` and its cache).
        `torch_dtype` (or `dtype`) defaults to `"auto"` as in transformers 5: the checkpoint's own dtype; fp16 keeps
        T5's `wo` layers in fp32. `device` (or a single-device `device_map`) is where the tensors are read to.
        Also accepts transformers' hub arguments (`revision`, `token`, `cache_dir`, `local_files_only`,
        `subfolder`, `variant`). Errors are raised before any large allocation; see `t5_compact.errors`.
        """
        if model_args:
            raise TypeError(f"T5CompactEncoder.from_pretrained takes no positional model args, got {model_args}")
        from .loading import load_compact_encoder

        return load_compact_encoder(pretrained_model_name_or_path, torch_dtype=torch_dtype, device=device, **kwargs)

    @classmethod
    def from_t5(
        cls,
        t5: str | os.PathLike | T5EncoderModel,
        *,
        projection_hidden_dim: int = 4096,
        projection_out_dim: int = 4096,
        projection_act: str = "relu",
        projection_dropout: float = 0.1,
        projection_bias: bool = False,
        seed: int | None = None,
        **t5_kwargs,
    ) -> T5CompactEncoder:
        """A new student: the encoder weights of a pretrained T5 (e.g. `google/flan-t5-base`, the paper's start)
        plus a freshly initialised projector. `t5` is a hub id, a folder, or a loaded `T5EncoderModel`."""
        if isinstance(t5, (str, os.PathLike)):
            t5 = T5EncoderModel.from_pretrained(t5, **t5_kwargs)
        if not isinstance(t5, T5EncoderModel) or isinstance(t5, cls):
            raise TypeError(f"from_t5 expects a T5EncoderModel or its source, got {type(t5).__name__}")
        fields = {k: v for k, v in t5.config.to_dict().items() if k in T5CompactConfig.__dataclass_fields__}
        fields.pop("model_type", None)
        config = T5CompactConfig(
            **fields,
            projection_hidden_dim=projection_hidden_dim,
            projection_out_dim=projection_out_dim,
            projection_act=projection_act,
            projection_dropout=projection_dropout,
            projection_bias=projection_bias,
        )
        if seed is not None:
            torch.manual_seed(seed)
        model = cls(config)
        encoder_state = {k: v for k, v in t5.state_dict().items() if not k.startswith("decoder.")}
        missing, unexpected = model.load_state_dict(encoder_state, strict=False)
        missing = [k for k in missing if not k.startswith("final_projection.")]
        if missing or unexpected:
            raise ValueError(f"from_t5: T5 weights do not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")
        model.set_input_embeddings(model.shared)
        model.train(t5.training)  # eval like a loaded `from_pretrained` T5, unless the T5 given was training
        return model.to(t5.dtype)


# `AutoConfig` / `AutoModel` know the `t5_compact` model type as soon as this module has run (`import t5_compact`
# runs it on first use of a model class; see the package docstring).
AutoConfig.register(T5CompactConfig.model_type, T5CompactConfig, exist_ok=True)
AutoModel.register(T5CompactConfig, T5CompactEncoder, exist_ok=True)
