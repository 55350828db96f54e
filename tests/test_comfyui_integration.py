"""The node pack inside a real ComfyUI checkout (marked `comfyui`; skipped unless COMFYUI_PATH is set).

Last run green against ComfyUI v0.33.0, commit 783545f689a0af730065994b46b382ae24844c99 (2026-08-22), on CPU.
Run it from the repository root with a venv that has ComfyUI's requirements and this package installed:

    COMFYUI_PATH=.comfyui .venv-comfy/bin/python -m pytest tests/test_comfyui_integration.py -m comfyui

With `COMFYUI_TF4_OVERLAY` naming a `pip install --no-deps --target DIR "transformers==4.57.3"
"huggingface_hub==0.36.0" "tokenizers==0.22.1"` folder (ComfyUI's own dependency floor), `test_pack_on_transformers_4`
also runs the pack in a child process on transformers 4 and compares it with this process (transformers 5).

It loads the pack the way ComfyUI loads custom nodes (`nodes.load_custom_node` on a symlink in a custom_nodes
folder), writes random-weight CLIP-L / CLIP-G files with the real shapes and tiny compact T5 files (vocab 32128,
because ComfyUI tokenizes with its bundled T5 tokenizer) into a temporary models folder, builds CLIPs through
our nodes and encodes with the stock encode nodes. ComfyUI is put on the import path with pytest's
`MonkeyPatch.syspath_prepend` for this module only; nothing of ComfyUI is installed or copied.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.comfyui
COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
if not COMFYUI_PATH:
    pytest.skip("COMFYUI_PATH is not set (points at a ComfyUI checkout)", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "comfyui"
PROMPT = "A panda holding a sign that says 'hello', golden hour"
OURS = "DualCLIPLoaderCompactT5", "TripleCLIPLoaderCompactT5", "CLIPLoaderCompactT5"
TINY = dict(vocab_size=32128, d_model=32, d_kv=8, num_heads=4, d_ff=64, num_layers=2, projection_hidden_dim=64)


def _random_clip(hidden: int, layers: int, heads: int, ff: int, projection: int, seed: int) -> dict:
    """A CLIP text model state dict with the real shapes (keys as ComfyUI reads them), random small weights."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=ff,
        projection_dim=projection,
        vocab_size=49408,
        max_position_embeddings=77,
        hidden_act="gelu",
    )
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in CLIPTextModelWithProjection(config).state_dict().items()}
    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in shapes.items():
        if key.endswith("position_ids"):
            continue
        value = torch.randn(shape, generator=gen) * 0.02
        if "layer_norm" in key and key.endswith(".weight"):
            value += 1.0
        sd[key] = value.half()
    return sd


def _paper_layout(sd: dict) -> dict:
    out = {k if k.startswith("final_projection.") else "encoder." + k: v for k, v in sd.items()}
    out["encoder.encoder.embed_tokens.weight"] = sd["shared.weight"].clone()
    return out


@pytest.fixture(scope="module")
def comfyui(tmp_path_factory):
    """ComfyUI (CPU) with our pack loaded from a custom_nodes symlink, and a temporary text_encoders folder."""
    mp = pytest.MonkeyPatch()
    mp.syspath_prepend(str(Path(COMFYUI_PATH).resolve()))
    import comfy.cli_args

    comfy.cli_args.args.cpu = True
    import folder_paths
    import nodes
    from safetensors.torch import save_file

    from t5_compact.convert import save_comfyui
    from t5_compact.tiny import tiny_compact_encoder

    models = tmp_path_factory.mktemp("text_encoders")
    folder_paths.add_model_folder_path("text_encoders", str(models), is_default=True)
    save_file(_random_clip(768, 12, 12, 3072, 768, seed=1), str(models / "clip_l.safetensors"))
    encoder = tiny_compact_encoder(out_dim=4096, **TINY)
    save_comfyui(encoder, models / "compact_fp32.safetensors", "fp32")
    save_comfyui(encoder, models / "compact_fp16.safetensors", "fp16")
    save_comfyui(encoder, models / "compact_bf16.safetensors", "bf16")
    save_comfyui(tiny_compact_encoder(out_dim=2048, **TINY), models / "compact_narrow.safetensors")
    # The paper's published layout, as downloaded: a folder with model.safetensors (wrapped keys) + config.json.
    (models / "DistillT5").mkdir()
    state = {k: v for k, v in encoder.state_dict().items() if k != "encoder.embed_tokens.weight"}
    save_file(_paper_layout(state), str(models / "DistillT5" / "model.safetensors"))
    paper_config = {k: TINY[k] for k in ("vocab_size", "d_model", "d_kv", "d_ff", "num_layers", "num_heads")}
    paper_config |= {
        "model_type": "t5",
        "architectures": ["T5EncoderWithProjection"],
        "feed_forward_proj": "gated-gelu",
    }
    paper_config |= {"project_in_dim": TINY["d_model"], "project_out_dim": 4096}
    (models / "DistillT5" / "config.json").write_text(json.dumps(paper_config))
    # Wrong files for the compact slot: a projector-less T5 of T5-XXL's width, and a truncated download.
    save_file(
        {
            "shared.weight": torch.zeros(8, 4096),
            "encoder.block.0.layer.0.SelfAttention.q.weight": torch.zeros(64, 4096),
            "encoder.final_layer_norm.weight": torch.ones(4096),
        },
        str(models / "t5xxl_fp16.safetensors"),
    )
    data = (models / "compact_fp32.safetensors").read_bytes()
    (models / "compact_truncated.safetensors").write_bytes(data[: len(data) // 2])

    custom_nodes = tmp_path_factory.mktemp("custom_nodes")
    (custom_nodes / "t5-compact").symlink_to(ROOT, target_is_directory=True)
    assert asyncio.run(nodes.load_custom_node(str(custom_nodes / "t5-compact")))
    extras = Path(COMFYUI_PATH).resolve() / "comfy_extras"
    for name in ("nodes_flux.py", "nodes_sd3.py", "nodes_model_advanced.py"):
        assert asyncio.run(nodes.load_custom_node(str(extras / name), module_parent="comfy_extras"))
    yield nodes, models
    mp.undo()


def _node(nodes, name: str):
    return nodes.NODE_CLASS_MAPPINGS[name]


def _reference(path: Path, ids: list[int], clip) -> torch.Tensor:
    """The diffusers-side (`t5_compact`) embeddings of the same token ids, no attention mask.

    Its weights are rounded to the dtype ComfyUI holds the compact T5 in and computed in fp32, as ComfyUI's
    `manual_cast` ops do, so the comparison is exact up to fp32 arithmetic.
    """
    from t5_compact import T5CompactEncoder

    weight_dtype = clip.cond_stage_model.t5xxl.transformer.shared.weight.dtype
    encoder = T5CompactEncoder.from_pretrained(path, torch_dtype=torch.float32).to(weight_dtype).float()
    with torch.no_grad():
        return encoder(torch.tensor([ids])).last_hidden_state


def _t5_ids(clip, text: str) -> list[int]:
    chunks = clip.tokenize(text)["t5xxl"]
    assert len(chunks) == 1
    return [token for token, _weight in chunks[0]]


def test_pack_registers_its_nodes(comfyui) -> None:
    nodes, _ = comfyui
    for name in OURS:
        assert name in nodes.NODE_CLASS_MAPPINGS
        assert nodes.NODE_DISPLAY_NAME_MAPPINGS[name]
        assert _node(nodes, name).RELATIVE_PYTHON_MODULE == "custom_nodes.t5-compact"
    files = _node(nodes, "DualCLIPLoaderCompactT5").INPUT_TYPES()["required"]["compact_t5"][0]
    assert {"compact_fp16.safetensors", "DistillT5/model.safetensors"} <= set(files)


@pytest.mark.parametrize(
    ("name", "dtype", "weight_dtype"),
    [
        ("compact_fp32.safetensors", "fp32", torch.float32),
        ("compact_fp32.safetensors", "default", torch.float16),  # as the stock T5 loader on CPU: fp16 weights
        ("compact_fp16.safetensors", "default", torch.float16),
        ("compact_bf16.safetensors", "default", torch.bfloat16),
        ("compact_fp16.safetensors", "bf16", torch.bfloat16),
        ("DistillT5/model.safetensors", "default", torch.float16),  # the paper's layout, as downloaded
    ],
)
def test_flux_conditioning_equals_t5_compact_and_pooled_equals_stock_clip_l(
    comfyui, name: str, dtype: str, weight_dtype: torch.dtype
) -> None:
    nodes, models = comfyui
    (clip,) = _node(nodes, "DualCLIPLoaderCompactT5")().load_clip("clip_l.safetensors", name, dtype=dtype)
    t5 = clip.cond_stage_model.t5xxl.transformer
    assert {p.dtype for p in t5.parameters()} == {weight_dtype}  # projector included
    (cond,) = _node(nodes, "CLIPTextEncodeFlux").execute(clip, PROMPT, PROMPT, 3.5).args
    embeds, extra = cond[0]
    ids = _t5_ids(clip, PROMPT)
    assert len(ids) == 256  # ComfyUI's FLUX tokenizer pads T5 to >= 256 tokens, no attention mask
    assert embeds.shape == (1, 256, 4096) and extra["guidance"] == 3.5
    torch.testing.assert_close(embeds, _reference(models / name, ids, clip), atol=1e-5, rtol=1e-4)

    (stock,) = nodes.CLIPLoader().load_clip("clip_l.safetensors", "stable_diffusion")
    _, pooled = stock.encode_from_tokens(stock.tokenize(PROMPT), return_pooled="unprojected")
    assert extra["pooled_output"].shape == (1, 768)
    torch.testing.assert_close(extra["pooled_output"], pooled, atol=1e-6, rtol=1e-6)


def test_flux_token_weights_and_long_prompts(comfyui) -> None:
    nodes, models = comfyui
    (clip,) = _node(nodes, "DualCLIPLoaderCompactT5")().load_clip("clip_l.safetensors", "compact_fp32.safetensors")
    encode = nodes.CLIPTextEncode()
    plain = encode.encode(clip, "a red cat")[0][0][0]
    weighted = encode.encode(clip, "a (red:1.5) cat")[0][0][0]
    assert weighted.shape == plain.shape == (1, 256, 4096)
    assert not torch.allclose(weighted, plain)  # weights act on our (projected) output as on stock T5's
    long_prompt = " ".join(["a small red cube on a large blue sphere"] * 30)
    cond = encode.encode(clip, long_prompt)[0][0][0]
    ids = _t5_ids(clip, long_prompt)
    assert len(ids) > 256 and cond.shape == (1, len(ids), 4096)
    reference = _reference(models / "compact_fp32.safetensors", ids, clip)
    torch.testing.assert_close(cond, reference, atol=1e-5, rtol=1e-4)


def test_encoder_is_built_on_comfyuis_machinery(comfyui) -> None:
    import comfy.ops
    import comfy.sd
    import comfy.text_encoders.t5

    nodes, _ = comfyui
    (clip,) = _node(nodes, "DualCLIPLoaderCompactT5")().load_clip(
        "clip_l.safetensors", "compact_fp32.safetensors", dtype="bf16", device="cpu"
    )
    assert isinstance(clip, comfy.sd.CLIP) and clip.patcher.load_device == torch.device("cpu")
    t5 = clip.cond_stage_model.t5xxl.transformer
    assert isinstance(t5, comfy.text_encoders.t5.T5)  # ComfyUI's own T5, not a copy
    for layer in (t5.final_projection[0], t5.final_projection[3], t5.encoder.block[0].layer[0].SelfAttention.q):
        assert isinstance(layer, comfy.ops.manual_cast.Linear) and layer.weight.dtype == torch.bfloat16
    # As stock loaders, it can rebuild itself (non-dynamic clones for hooks, multi-GPU copies).
    factory, args = clip.patcher.cached_patcher_init
    rebuilt = factory(*args, disable_dynamic=True)
    assert not rebuilt.is_dynamic() and rebuilt.model.t5xxl.transformer.shared.weight.dtype == torch.bfloat16
    # The current calling convention: no input ids, embeddings instead.
    embeds = t5.get_input_embeddings()(torch.tensor([[1, 0, 0]]), out_dtype=torch.float32)
    out, _ = t5(None, None, embeds=embeds, dtype=torch.float32)
    assert out.shape == (1, 3, 4096)


def test_sd3_loader_with_stock_sd3_encode(comfyui) -> None:
    from safetensors.torch import save_file

    nodes, models = comfyui
    save_file(_random_clip(1280, 32, 20, 5120, 1280, seed=2), str(models / "clip_g.safetensors"))
    loader = _node(nodes, "TripleCLIPLoaderCompactT5")()
    (clip,) = loader.load_clip("clip_l.safetensors", "clip_g.safetensors", "compact_fp16.safetensors")
    (cond,) = _node(nodes, "CLIPTextEncodeSD3").execute(clip, PROMPT, PROMPT, PROMPT, "none").args
    embeds, extra = cond[0]
    ids = _t5_ids(clip, PROMPT)
    assert len(ids) == 77 and embeds.shape == (1, 77 + 77, 4096)  # CLIP-L|G (padded to 4096) then T5
    assert extra["pooled_output"].shape == (1, 768 + 1280)
    reference = _reference(models / "compact_fp16.safetensors", ids, clip)
    torch.testing.assert_close(embeds[:, 77:], reference, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(("kind", "length"), [("sd3", 77), ("chroma", None), ("pixart", None)])
def test_t5_only_loader(comfyui, kind: str, length: int | None) -> None:
    nodes, models = comfyui
    (clip,) = _node(nodes, "CLIPLoaderCompactT5")().load_clip("compact_bf16.safetensors", kind)
    embeds = nodes.CLIPTextEncode().encode(clip, PROMPT)[0][0][0]
    key = "t5xxl"
    ids = [t for t, _ in clip.tokenize(PROMPT)[key][0]]
    assert embeds.shape == (1, length or len(ids), 4096)
    reference = _reference(models / "compact_bf16.safetensors", ids, clip)
    torch.testing.assert_close(embeds, reference, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    ("clip_l", "compact", "error", "match"),
    [
        (
            "clip_l.safetensors",
            "t5xxl_fp16.safetensors",
            "NotACompactEncoderError",
            r"compact_t5 = 't5xxl_fp16.*T5-XXL",
        ),
        ("clip_l.safetensors", "clip_l.safetensors", "NotACompactEncoderError", r"compact_t5 = 'clip_l.*CLIP text"),
        ("clip_l.safetensors", "compact_truncated.safetensors", "CorruptCheckpointError", r"truncated.*truncated"),
        ("clip_l.safetensors", "compact_narrow.safetensors", "WidthMismatchError", r"narrow.*2048.*FLUX.1 needs 4096"),
        ("compact_fp16.safetensors", "compact_fp16.safetensors", "ValueError", r"clip_l = 'compact_fp16.*CLIP-L"),
    ],
)
def test_errors_name_the_file(comfyui, clip_l: str, compact: str, error: str, match: str) -> None:
    from t5_compact import errors

    nodes, _ = comfyui
    with pytest.raises(ValueError, match=match) as info:
        _node(nodes, "DualCLIPLoaderCompactT5")().load_clip(clip_l, compact)
    assert type(info.value).__name__ == error and (error == "ValueError" or isinstance(info.value, ValueError))
    assert errors  # the pack raises the core's error types (its own copy when loaded from custom_nodes)


@pytest.mark.parametrize("example", ["flux_compact.json", "sd3_compact.json"])
def test_example_graphs_use_nodes_and_inputs_this_comfyui_has(comfyui, example: str) -> None:
    nodes, _ = comfyui
    graph = json.loads((EXAMPLES / example).read_text())
    for node in graph.values():
        cls = nodes.NODE_CLASS_MAPPINGS[node["class_type"]]
        spec = cls.INPUT_TYPES()
        known = {**spec.get("required", {}), **spec.get("optional", {})}
        assert set(node["inputs"]) <= set(known), (node["class_type"], set(node["inputs"]) - set(known))


def _http(port: int, path: str, body: dict | None = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def _run_prompt(port: int, graph: dict, timeout: float = 120.0) -> dict:
    prompt_id = _http(port, "/prompt", {"prompt": graph, "client_id": "t5-compact-tests"})["prompt_id"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        history = _http(port, f"/history/{prompt_id}")
        if prompt_id in history and history[prompt_id]["status"].get("completed") is not None:
            return history[prompt_id]
        time.sleep(0.5)
    raise TimeoutError(f"prompt {prompt_id} did not finish in {timeout} s")


def test_server_loads_the_pack_and_runs_a_graph(comfyui, tmp_path: Path) -> None:
    """`python main.py --cpu --listen 127.0.0.1`: the server's own custom-node loading, /object_info, /prompt."""
    _, models = comfyui
    base = tmp_path / "base"
    (base / "custom_nodes").mkdir(parents=True)
    (base / "models").mkdir()
    (base / "custom_nodes" / "t5-compact").symlink_to(ROOT, target_is_directory=True)
    (base / "models" / "text_encoders").symlink_to(models, target_is_directory=True)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = open(tmp_path / "server.log", "w")  # closed in finally
    command = [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port)]
    server = subprocess.Popen(
        [*command, "--base-directory", str(base)], cwd=COMFYUI_PATH, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                info = _http(port, "/object_info/DualCLIPLoaderCompactT5")["DualCLIPLoaderCompactT5"]
                break
            except OSError:
                assert server.poll() is None, (tmp_path / "server.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "the server did not come up"
                time.sleep(1)
        assert info["display_name"] == "DualCLIPLoader (compact T5, FLUX)"
        assert "compact_fp16.safetensors" in info["input"]["required"]["compact_t5"][0]

        def graph(compact: str) -> dict:
            loader = {"clip_l": "clip_l.safetensors", "compact_t5": compact, "dtype": "default", "device": "cpu"}
            return {
                "1": {"class_type": "DualCLIPLoaderCompactT5", "inputs": loader},
                "2": {"class_type": "CLIPTextEncode", "inputs": {"text": PROMPT, "clip": ["1", 0]}},
                "3": {"class_type": "PreviewAny", "inputs": {"source": ["2", 0]}},
            }

        done = _run_prompt(port, graph("compact_fp16.safetensors"))
        assert done["status"]["status_str"] == "success", done["status"]
        failed = _run_prompt(port, graph("t5xxl_fp16.safetensors"))
        assert failed["status"]["status_str"] == "error"
        message = json.dumps(failed["status"]["messages"])
        assert "t5xxl_fp16.safetensors" in message and "T5-XXL" in message  # shown to the user, naming the file
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


CLONE_ONLY = """
import asyncio, sys
sys.modules["t5_compact"] = None  # as in a ComfyUI venv where t5-compact was never pip-installed
import comfy.cli_args
comfy.cli_args.args.cpu = True
import folder_paths, nodes
folder_paths.add_model_folder_path("text_encoders", sys.argv[1], is_default=True)
assert asyncio.run(nodes.load_custom_node(sys.argv[2]))
clip, = nodes.NODE_CLASS_MAPPINGS["DualCLIPLoaderCompactT5"]().load_clip("clip_l.safetensors", sys.argv[3])
print(tuple(nodes.CLIPTextEncode().encode(clip, "a cat")[0][0][0].shape))
"""


def test_clone_only_install_uses_the_core_shipped_in_the_checkout(comfyui, tmp_path: Path) -> None:
    """Cloned into custom_nodes without `pip install`: the pack imports its sibling `t5_compact` relatively."""
    _, models = comfyui
    (tmp_path / "t5-compact").symlink_to(ROOT, target_is_directory=True)
    args = [str(models), str(tmp_path / "t5-compact"), "DistillT5/model.safetensors"]
    result = subprocess.run(
        [sys.executable, "-c", CLONE_ONLY, *args], cwd=COMFYUI_PATH, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "(1, 256, 4096)"


TRANSFORMERS_4 = """
import asyncio, importlib, json, sys
import huggingface_hub, torch, transformers
print("versions", transformers.__version__, huggingface_hub.__version__)
import comfy.cli_args
comfy.cli_args.args.cpu = True
import folder_paths, nodes
folder_paths.add_model_folder_path("text_encoders", sys.argv[1], is_default=True)
assert asyncio.run(nodes.load_custom_node(sys.argv[2]))
cases, errors = json.loads(sys.argv[4]), json.loads(sys.argv[5])
out = {}
for name, node, args in cases:
    clip, = nodes.NODE_CLASS_MAPPINGS[node]().load_clip(*args)
    out[name] = nodes.CLIPTextEncode().encode(clip, sys.argv[6])[0][0][0]
torch.save(out, sys.argv[3])
for compact in errors:
    try:
        nodes.NODE_CLASS_MAPPINGS["DualCLIPLoaderCompactT5"]().load_clip("clip_l.safetensors", compact)
    except ValueError as err:
        print("refused:", type(err).__name__, str(err).splitlines()[0])
try:
    core = next(name for name in sys.modules if name.endswith(".t5_compact"))  # the pack's own core subpackage
    importlib.import_module(core).T5CompactEncoder
except ImportError as err:
    print("model class:", err)
"""
# (case name, node, load_clip args): FLUX in fp32, the paper's layout, and the T5-only loader.
TF4_CASES = [
    ("flux_fp32", "DualCLIPLoaderCompactT5", ["clip_l.safetensors", "compact_fp32.safetensors", "fp32"]),
    ("paper_layout", "DualCLIPLoaderCompactT5", ["clip_l.safetensors", "DistillT5/model.safetensors"]),
    ("chroma_bf16", "CLIPLoaderCompactT5", ["compact_bf16.safetensors", "chroma"]),
]
TF4_ERRORS = {
    "t5xxl_fp16.safetensors": "NotACompactEncoderError",
    "compact_truncated.safetensors": "CorruptCheckpointError",
    "compact_narrow.safetensors": "WidthMismatchError",
}


@pytest.mark.skipif(
    not os.environ.get("COMFYUI_TF4_OVERLAY"),
    reason="COMFYUI_TF4_OVERLAY is not set (a `pip install --target` folder with transformers 4.5x, hub < 1.0)",
)
def test_pack_on_transformers_4(comfyui, tmp_path: Path) -> None:
    """ComfyUI's own floor (transformers 4.50-4.57, huggingface_hub < 1.0), in a child process on that overlay:
    the pack loads, encodes exactly as here, refuses wrong files naming them, and says which version the model
    classes need."""
    nodes, models = comfyui
    (tmp_path / "t5-compact").symlink_to(ROOT, target_is_directory=True)
    out = tmp_path / "cond.pt"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.environ["COMFYUI_TF4_OVERLAY"], COMFYUI_PATH])}
    args = [str(models), str(tmp_path / "t5-compact"), str(out), json.dumps(TF4_CASES), json.dumps(list(TF4_ERRORS))]
    command = [sys.executable, "-c", TRANSFORMERS_4, *args, PROMPT]
    result = subprocess.run(command, cwd=COMFYUI_PATH, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    transformers_version, hub_version = next(line for line in lines if line.startswith("versions")).split()[1:]
    assert transformers_version.startswith("4.") and hub_version.startswith("0."), (transformers_version, hub_version)
    refused = [line.split(" ", 2)[1:] for line in lines if line.startswith("refused:")]
    assert [error for error, _ in refused] == list(TF4_ERRORS.values())
    assert all(name in message for name, (_, message) in zip(TF4_ERRORS, refused, strict=True))
    needs = next(line for line in lines if line.startswith("model class:"))
    assert f"needs transformers>=5.0 (this environment has {transformers_version})" in needs

    theirs = torch.load(out, weights_only=True)
    for name, node, load_args in TF4_CASES:
        (clip,) = _node(nodes, node)().load_clip(*load_args)
        here = nodes.CLIPTextEncode().encode(clip, PROMPT)[0][0][0]
        torch.testing.assert_close(theirs[name], here, atol=0, rtol=0, msg=name)  # bit for bit as on transformers 5
        compact = load_args[0] if node == "CLIPLoaderCompactT5" else load_args[1]
        reference = _reference(models / compact, _t5_ids(clip, PROMPT), clip)
        torch.testing.assert_close(theirs[name], reference, atol=1e-5, rtol=1e-4, msg=name)


def test_memory_of_a_base_student_vs_t5xxl() -> None:
    """The README's memory claim, from parameter counts (bf16): T5-XXL encoder 4.76 B vs Base 130 M."""
    from comfyui_nodes import logic
    from t5_compact import compact_config

    base = logic.comfy_t5_config(compact_config("base"), "base")
    saved_gb = (4.762e9 - logic.parameter_count(base)) * 2 / 1e9
    assert math.isclose(saved_gb, 9.26, abs_tol=0.1)


def test_t5_only_types_are_every_stock_cliploader_type_that_runs_t5xxl_alone(comfyui) -> None:
    """Read from this ComfyUI's `load_text_encoder_state_dicts`: the CLIPLoader types its single-T5-XXL branch
    serves (the final `else` is Mochi), minus wan (a UMT5-XXL file takes that branch too)."""
    import inspect
    import re

    import comfy.sd

    from comfyui_nodes import logic

    nodes, _ = comfyui
    source = inspect.getsource(comfy.sd.load_text_encoder_state_dicts)
    branch = source.split("te_model == TEModel.T5_XXL:")[1].split("elif te_model ==")[0]
    stock = {name.lower() for name in re.findall(r"CLIPType\.(\w+)", branch)} | {"mochi"}
    assert "#CLIPType.MOCHI" in branch.replace(" ", "")  # the else branch is Mochi's
    assert stock - {"wan"} == set(logic.T5_ONLY_TYPES)
    loader_types = set(nodes.CLIPLoader.INPUT_TYPES()["required"]["type"][0])
    assert set(logic.T5_ONLY_TYPES) <= loader_types


# type -> (stock T5 padding, the stock T5 runs with the attention mask, the conditioning carries that mask)
VIDEO_AND_HIDREAM = {
    "ltxv": (128, True, True),
    "mochi": (256, True, True),
    "cogvideox": (226, False, False),
    "hidream": (128, True, False),
}


@pytest.mark.parametrize("kind", list(VIDEO_AND_HIDREAM))
def test_t5_only_loader_video_and_hidream_types(comfyui, kind: str) -> None:
    """Same tokenization as the stock tokenizer of that type; embeddings = t5_compact's with the same mask."""
    nodes, models = comfyui
    length, masked, mask_in_cond = VIDEO_AND_HIDREAM[kind]
    if kind == "hidream" and not (Path(COMFYUI_PATH) / "comfy/text_encoders/llama_tokenizer/tokenizer.json").exists():
        _hidream_composition_without_its_tokenizer(models)
        pytest.skip("this ComfyUI checkout lacks llama_tokenizer/tokenizer.json, which HiDreamTokenizer loads: the "
                    "composition was checked alone (T5 tokens as HiDream's T5 tokenizer makes them)")  # fmt: skip
    (clip,) = _node(nodes, "CLIPLoaderCompactT5")().load_clip("compact_bf16.safetensors", kind)
    ids = [t for t, _ in clip.tokenize(PROMPT)["t5xxl"][0]]
    assert len(ids) == length and ids[-1] == 0  # padded as the stock tokenizer of this type
    cond = nodes.CLIPTextEncode().encode(clip, PROMPT)[0][0]
    embeds = cond[0]
    assert embeds.shape == (1, length, 4096)
    assert ("attention_mask" in cond[1]) == mask_in_cond
    from t5_compact import T5CompactEncoder

    weight_dtype = clip.cond_stage_model.t5xxl.transformer.shared.weight.dtype
    path = models / "compact_bf16.safetensors"
    encoder = T5CompactEncoder.from_pretrained(path, torch_dtype=torch.float32).to(weight_dtype).float()
    ids_t = torch.tensor([ids])
    mask = (ids_t != 0).long() if masked else None
    with torch.no_grad():
        reference = encoder(ids_t, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(embeds, reference, atol=1e-5, rtol=1e-4)


def _hidream_composition_without_its_tokenizer(models: Path) -> None:
    """`CompactHiDreamClipModel` loaded with the compact file, fed T5 tokens padded to 128 as HiDream's tokenizer."""
    import comfy.text_encoders.sd3_clip

    from comfyui_nodes.loader import load_compact_file
    from comfyui_nodes.model import CompactHiDreamClipModel
    from t5_compact import T5CompactEncoder

    path = models / "compact_fp32.safetensors"
    compact = load_compact_file(path, expected_width=4096)
    model = CompactHiDreamClipModel(compact.config, dtype_t5="fp32", force_dtype_t5=True, dtype=torch.float32)
    model.load_sd(compact.state_dict)
    tokenizer = comfy.text_encoders.sd3_clip.T5XXLTokenizer(min_length=128, max_length=128)
    tokens = tokenizer.tokenize_with_weights(PROMPT)
    t5_out, pooled, extra = model.encode_token_weights({"l": [], "g": [], "t5xxl": [tokens[0]], "llama": []})
    ids = torch.tensor([[t for t, _ in tokens[0]]])
    assert t5_out.shape == (1, 128, 4096) and pooled.shape == (1, 768 + 1280)
    with torch.no_grad():
        reference = T5CompactEncoder.from_pretrained(path)(ids, attention_mask=(ids != 0).long()).last_hidden_state
    torch.testing.assert_close(t5_out, reference, atol=1e-5, rtol=1e-4)
