"""The ComfyUI node pack's logic that needs no ComfyUI: key maps, geometry of every student size and layout,
header-only checks and their errors, node specs, the root `__init__`, and the example graphs."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from comfyui_nodes import logic
from comfyui_nodes.loader import inspect_compact_file, load_compact_file
from t5_compact import STUDENT_SIZES, compact_config, geometry
from t5_compact.errors import (
    CheckpointError,
    CorruptCheckpointError,
    NotACompactEncoderError,
    WidthMismatchError,
)
from t5_compact.loading import expected_shapes
from t5_compact.tiny import tiny_compact_encoder

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "comfyui"
# Paper sizes: (d_model, layers, parameters of encoder + projector in millions, as published).
SIZES = {"small": (512, 8, 54), "base": (768, 12, 130), "large": (1024, 24, 362), "xl": (2048, 24, 1250)}
_ST_DTYPES = {"fp32": ("F32", 4), "fp16": ("F16", 2), "bf16": ("BF16", 2)}


def _paper_layout(shapes: dict) -> dict:
    """Our names -> the paper's (`encoder.` wraps a whole T5EncoderModel; tied embedding copy included)."""
    out = {}
    for key, value in shapes.items():
        out[key if key.startswith("final_projection.") else "encoder." + key] = value
    out["encoder.encoder.embed_tokens.weight"] = shapes["shared.weight"]
    return out


def _sparse_safetensors(path: Path, shapes: dict, dtype: str, metadata: dict | None = None) -> Path:
    """A full-size safetensors file whose data is a hole: a valid header, no bytes on disk."""
    code, size = _ST_DTYPES[dtype]
    header, offset = {}, 0
    for key, shape in shapes.items():
        n = size
        for d in shape:
            n *= d
        header[key] = {"dtype": code, "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    if metadata:
        header["__metadata__"] = metadata
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as fh:
        fh.write(len(blob).to_bytes(8, "little") + blob)
        fh.truncate(8 + len(blob) + offset)
    return path


def _tiny_file(path: Path, *, layout: str = "ours", dtype=torch.float32, out_dim: int = 4096, **overrides) -> Path:
    enc = tiny_compact_encoder(out_dim=out_dim, **overrides).to(dtype)
    sd = {k: v.contiguous() for k, v in enc.state_dict().items() if k != "encoder.embed_tokens.weight"}
    if layout == "paper":
        sd = _paper_layout(sd)
        sd["encoder.encoder.embed_tokens.weight"] = sd["encoder.shared.weight"].clone()
    save_file(sd, str(path))
    return path


# --- key maps --------------------------------------------------------------------------------------------------


def test_remap_key_strips_the_papers_wrapper_and_drops_the_tied_copy() -> None:
    assert logic.remap_key("encoder.shared.weight") == "shared.weight"
    assert logic.remap_key("encoder.encoder.block.3.layer.1.DenseReluDense.wo.weight") == (
        "encoder.block.3.layer.1.DenseReluDense.wo.weight"
    )
    assert logic.remap_key("encoder.block.0.layer.0.SelfAttention.q.weight") == (
        "encoder.block.0.layer.0.SelfAttention.q.weight"
    )
    assert logic.remap_key("final_projection.3.weight") == "final_projection.3.weight"
    assert logic.remap_key("encoder.encoder.embed_tokens.weight") is None
    assert logic.remap_key("encoder.embed_tokens.weight") is None


@pytest.mark.parametrize("layout", ["ours", "paper"])
def test_remap_agrees_with_the_core_and_gives_comfyuis_names(layout: str) -> None:
    ours = expected_shapes(compact_config("small"))
    shapes = _paper_layout(ours) if layout == "paper" else ours
    remapped = logic.remap_state_dict(shapes)
    assert remapped == ours  # ComfyUI's T5 + our projector use exactly the core's names
    for key in shapes:
        canon = geometry.canonical_key(key)
        assert logic.remap_key(key) == (None if canon in logic.DROP_KEYS else canon)


# --- geometry of every student size and layout (full-size sparse files: headers only) -----------------------


@pytest.mark.parametrize("dtype", ["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("layout", ["ours", "paper"])
@pytest.mark.parametrize("size", STUDENT_SIZES)
def test_inspect_every_student_size_layout_and_dtype(tmp_path: Path, size: str, layout: str, dtype: str) -> None:
    config = compact_config(size)
    shapes = expected_shapes(config)
    if layout == "paper":
        shapes = _paper_layout(shapes)
    path = _sparse_safetensors(tmp_path / f"{size}.safetensors", shapes, dtype)
    info = inspect_compact_file(path, expected_width=4096, family="FLUX.1")
    d_model, layers, millions = SIZES[size]
    cfg = info.config
    assert (cfg["d_model"], cfg["num_layers"], cfg["vocab_size"]) == (d_model, layers, 32128)
    assert (cfg["dense_act_fn"], cfg["is_gated_act"], cfg["model_type"]) == ("gelu_pytorch_tanh", True, "t5")
    assert (cfg["projection_hidden_dim"], cfg["projection_out_dim"], cfg["projection_act"]) == (4096, 4096, "relu")
    assert cfg["d_kv"] * cfg["num_heads"] == config.d_kv * config.num_heads
    assert info.stored_dtype == dtype
    assert abs(info.parameters / 1e6 - millions) / millions < 0.03
    assert info.parameters == sum(math.prod(shape) for shape in expected_shapes(config).values())


def test_metadata_config_from_our_export_is_used(tmp_path: Path) -> None:
    config = compact_config("small", projection_act="gelu")
    meta = {geometry.METADATA_CONFIG_KEY: config.to_json_string()}
    path = _sparse_safetensors(tmp_path / "ours.safetensors", expected_shapes(config), "bf16", meta)
    assert inspect_compact_file(path).config["projection_act"] == "gelu"  # shapes alone cannot tell


def test_load_compact_file_returns_comfyui_names_for_the_paper_layout(tmp_path: Path) -> None:
    path = _tiny_file(tmp_path / "paper.safetensors", layout="paper", dtype=torch.float16)
    info = load_compact_file(path, expected_width=4096)
    ref = tiny_compact_encoder(out_dim=4096).half().state_dict()
    ref.pop("encoder.embed_tokens.weight")
    assert set(info.state_dict) == set(ref)
    assert all(torch.equal(info.state_dict[k], ref[k]) for k in ref)
    assert info.stored_dtype == "fp16"


# --- errors name the file --------------------------------------------------------------------------------------


def test_t5xxl_file_in_the_compact_slot(tmp_path: Path) -> None:
    shapes = {
        "shared.weight": (8, 4096),
        "encoder.block.0.layer.0.SelfAttention.q.weight": (64, 4096),
        "encoder.final_layer_norm.weight": (4096,),
    }
    path = _sparse_safetensors(tmp_path / "t5xxl_fp16.safetensors", shapes, "fp16")
    with pytest.raises(NotACompactEncoderError, match=r"t5xxl_fp16\.safetensors.*T5-XXL"):
        inspect_compact_file(path)


def test_clip_file_in_the_compact_slot(tmp_path: Path) -> None:
    shapes = {"text_model.embeddings.token_embedding.weight": (49408, 768), "text_projection.weight": (768, 768)}
    path = _sparse_safetensors(tmp_path / "clip_l.safetensors", shapes, "fp16")
    with pytest.raises(NotACompactEncoderError, match=r"clip_l\.safetensors.*CLIP"):
        inspect_compact_file(path)


def test_truncated_file(tmp_path: Path) -> None:
    path = _tiny_file(tmp_path / "compact.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptCheckpointError, match=r"compact\.safetensors.*truncated"):
        inspect_compact_file(path)


def test_not_a_safetensors_file(tmp_path: Path) -> None:
    path = tmp_path / "junk.safetensors"
    path.write_bytes(b"<html>not found</html>")
    with pytest.raises(CorruptCheckpointError, match=r"junk\.safetensors"):
        inspect_compact_file(path)


def test_width_mismatch(tmp_path: Path) -> None:
    path = _tiny_file(tmp_path / "narrow.safetensors", out_dim=2048)
    with pytest.raises(WidthMismatchError, match=r"narrow\.safetensors.*2048.*FLUX\.1 needs 4096"):
        inspect_compact_file(path, expected_width=4096, family="FLUX.1")


def test_geometry_comfyuis_t5_cannot_run(tmp_path: Path) -> None:
    path = _tiny_file(tmp_path / "buckets.safetensors", relative_attention_num_buckets=16)
    with pytest.raises(CheckpointError, match=r"buckets\.safetensors.*relative_attention_num_buckets=16"):
        inspect_compact_file(path)


def test_slot_error_keeps_the_type_and_names_slot_and_file() -> None:
    err = logic.slot_error("compact_t5", "x.safetensors", WidthMismatchError("/m/x.safetensors: width"))
    assert isinstance(err, WidthMismatchError)
    assert str(err) == "compact_t5 = 'x.safetensors': /m/x.safetensors: width"


# --- options, node specs and metadata ---------------------------------------------------------------------------


def test_dtype_option() -> None:
    assert logic.resolve_dtype_option("default", "bf16") == ("bf16", False)
    assert logic.resolve_dtype_option("fp16", "fp32") == ("fp16", True)
    with pytest.raises(ValueError, match="dtype must be one of"):
        logic.resolve_dtype_option("fp8", None)


@pytest.mark.parametrize(
    ("spec", "required"),
    [
        (logic.flux_inputs, ["clip_l", "compact_t5"]),
        (logic.sd3_inputs, ["clip_l", "clip_g", "compact_t5"]),
        (logic.t5_only_inputs, ["compact_t5", "type"]),
    ],
)
def test_input_specs(spec, required: list[str]) -> None:
    files = ["clip_l.safetensors", "sub/distill_t5_base.safetensors"]
    inputs = spec(files)
    assert list(inputs["required"]) == required
    for name in required:
        if name != "type":
            assert inputs["required"][name][0] == files
    assert inputs["optional"]["device"][0] == ["default", "cpu"]  # the stock loaders' device option
    assert inputs["optional"]["device"][1]["advanced"] is True
    assert inputs["optional"]["dtype"][0] == ["default", "fp32", "fp16", "bf16"]
    json.dumps(inputs)  # ComfyUI serves specs as JSON (/object_info)


def test_node_metadata() -> None:
    assert set(logic.NODES) == {"DualCLIPLoaderCompactT5", "TripleCLIPLoaderCompactT5", "CLIPLoaderCompactT5"}
    for node_id, (title, replaces, description) in logic.NODES.items():
        assert node_id.startswith(replaces) and node_id.endswith("CompactT5")  # named after the stock node
        assert title and replaces in description
    assert logic.CATEGORY.startswith("model/loaders")


# --- the root __init__ (ComfyUI's entry point) -------------------------------------------------------------------


def test_root_init_imports_cleanly_outside_comfyui() -> None:
    if all(importlib.util.find_spec(name) is not None for name in ("comfy", "folder_paths")):
        pytest.skip("ComfyUI is importable here")
    name = "t5_compact_node_pack_under_test"
    spec = importlib.util.spec_from_file_location(name, ROOT / "__init__.py", submodule_search_locations=[str(ROOT)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        assert module.NODE_CLASS_MAPPINGS == {} and module.NODE_DISPLAY_NAME_MAPPINGS == {}
        assert not [m for m in sys.modules if m.startswith(name + ".")]  # nothing else was imported
    finally:
        sys.modules.pop(name, None)


# --- example graphs ----------------------------------------------------------------------------------------------

STOCK_NODES = {
    "UNETLoader",
    "VAELoader",
    "CheckpointLoaderSimple",
    "CLIPTextEncode",
    "CLIPTextEncodeFlux",
    "CLIPTextEncodeSD3",
    "FluxGuidance",
    "ModelSamplingSD3",
    "EmptySD3LatentImage",
    "KSampler",
    "VAEDecode",
    "SaveImage",
}
SPECS = {
    "DualCLIPLoaderCompactT5": logic.flux_inputs,
    "TripleCLIPLoaderCompactT5": logic.sd3_inputs,
    "CLIPLoaderCompactT5": logic.t5_only_inputs,
}


@pytest.mark.parametrize(
    ("name", "loader"), [("flux_compact", "DualCLIPLoaderCompactT5"), ("sd3_compact", "TripleCLIPLoaderCompactT5")]
)
def test_example_graphs(name: str, loader: str) -> None:
    graph = json.loads((EXAMPLES / f"{name}.json").read_text())
    types = {node["class_type"] for node in graph.values()}
    assert loader in types
    assert types <= STOCK_NODES | set(logic.NODES), types - STOCK_NODES - set(logic.NODES)
    for node_id, node in graph.items():
        for value in node["inputs"].values():
            if isinstance(value, list):  # a link: [source node id, output index]
                assert value[0] in graph, (node_id, value)
        if node["class_type"] in SPECS:
            spec = SPECS[node["class_type"]](["x"])
            allowed = {**spec["required"], **spec["optional"]}
            assert set(node["inputs"]) <= set(allowed)
            assert set(spec["required"]) <= set(node["inputs"])
            for key in ("dtype", "device"):
                assert node["inputs"][key] in allowed[key][0]
