"""Model download end to end, against a fake hub on 127.0.0.1 serving a tiny SD repository.

The fake hub answers the calls huggingface_hub makes: model info with file metadata
(/api/models/{repo}/revision/{rev}?blobs=true), then HEAD and GET on /{repo}/resolve/{rev}/{file}
with X-Repo-Commit, ETag, X-Linked-Etag / X-Linked-Size for LFS files and Range support. It can
drop a connection midway or serve damaged bytes for a chosen file.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import safetensors.torch
import torch

from engine import cli_models, hub
from engine.errors import ArtveilError, Cancelled
from engine.events import Progress
from engine.jobs import Job

REPO = "stable-diffusion-v1-5/stable-diffusion-v1-5"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
UNET_FP16 = "unet/diffusion_pytorch_model.fp16.safetensors"
VAE_FP16 = "vae/diffusion_pytorch_model.fp16.safetensors"
LFS_SUFFIXES = (".safetensors", ".bin")


# ---------------------------------------------------------------------------------------------
# A tiny SD repository, laid out like the real one (fp32 and fp16 weights, a safety checker, a .bin)


def _write_tiny_tokenizer(folder: Path) -> None:
    """A CLIP-style BPE vocabulary of printable ASCII, enough for CLIPTokenizer to load and run."""
    chars = [chr(code) for code in range(33, 127)]
    tokens = chars + [c + "</w>" for c in chars] + ["ph", "ot</w>", "<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\np h\no t</w>\n", encoding="utf-8")
    special = {"bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
               "pad_token": "<|endoftext|>"}
    (folder / "special_tokens_map.json").write_text(json.dumps(special), encoding="utf-8")


# One worker runs this module: its tests share an expensive module-scoped fixture.
pytestmark = pytest.mark.xdist_group("fake_hub")

@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory) -> dict[str, bytes]:
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("tiny_repo")
    vocab_dir = tmp_path_factory.mktemp("vocab")
    _write_tiny_tokenizer(vocab_dir)
    unet = UNet2DConditionModel(
        block_out_channels=(32, 64), layers_per_block=1, sample_size=16, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, norm_num_groups=32,
    )
    vae = AutoencoderKL(
        block_out_channels=(32, 64), in_channels=3, out_channels=3, latent_channels=4, norm_num_groups=32,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
    )
    text_encoder = CLIPTextModel(CLIPTextConfig(
        hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, vocab_size=200,
        max_position_embeddings=77, bos_token_id=188, eos_token_id=189, pad_token_id=189,
    ))
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=CLIPTokenizer(str(vocab_dir / "vocab.json"),
                                                                     str(vocab_dir / "merges.txt")),
        unet=unet, scheduler=PNDMScheduler(skip_prk_steps=True, steps_offset=1), safety_checker=None, feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(root)
    pipe.to(torch.float16).save_pretrained(root, variant="fp16")
    _write_tiny_tokenizer(root / "tokenizer")
    # Files the real repository has and Artveil must never fetch.
    (root / "safety_checker").mkdir()
    (root / "safety_checker" / "model.safetensors").write_bytes(b"\0" * 5000)
    (root / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"\0" * 5000)
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------------
# The fake hub


class FakeHub:
    def __init__(self, files: dict[str, bytes]):
        self.files = files
        self.requests: list[tuple[str, str, str | None]] = []  # (method, file, Range header)
        self.drop_once: dict[str, int] = {}  # file -> bytes to send before hanging up, first GET only
        self.corrupt: dict[str, int] = {}  # file -> how many GETs serve damaged bytes
        self._lock = threading.Lock()

    def sibling(self, path: str) -> dict:
        data = self.files[path]
        entry = {"rfilename": path, "size": len(data),
                 "blobId": hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()}
        if path.endswith(LFS_SUFFIXES):
            entry["lfs"] = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
        return entry

    def gets(self, path: str) -> list[str | None]:
        return [rng for method, file, rng in self.requests if method == "GET" and file == path]

    def handle(self, request: BaseHTTPRequestHandler, head: bool) -> None:
        path = unquote(urlsplit(request.path).path)
        if path.startswith("/api/models/"):
            repo = path[len("/api/models/"):].split("/revision/")[0]
            if repo != REPO:
                return self._reply(request, 404, b'{"error":"Repository not found"}', {"X-Error-Code": "RepoNotFound"})
            info = {"id": REPO, "sha": COMMIT, "siblings": [self.sibling(p) for p in self.files]}
            return self._reply(request, 200, json.dumps(info).encode(), {"Content-Type": "application/json"})
        repo, _, rest = path.lstrip("/").partition("/resolve/")
        file = rest.partition("/")[2]
        if repo != REPO or file not in self.files:
            return self._reply(request, 404, b"", {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": COMMIT})
        rng = request.headers.get("Range")
        with self._lock:
            self.requests.append(("HEAD" if head else "GET", file, rng))
        data = self.files[file]
        entry = self.sibling(file)
        headers = {"X-Repo-Commit": COMMIT, "Accept-Ranges": "bytes"}
        if "lfs" in entry:
            headers.update({"ETag": f'"{entry["lfs"]["sha256"]}"', "X-Linked-Etag": f'"{entry["lfs"]["sha256"]}"',
                            "X-Linked-Size": str(len(data))})
        else:
            headers["ETag"] = f'"{entry["blobId"]}"'
        if head:
            return self._reply(request, 200, data, headers, send_body=False)
        with self._lock:
            if self.corrupt.get(file, 0) > 0:
                self.corrupt[file] -= 1
                middle = len(data) // 2
                data = data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:]
            cut = self.drop_once.pop(file, None)
        status, start = 200, 0
        if rng:
            start = int(rng.removeprefix("bytes=").split("-")[0])
            status = 206
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        self._reply(request, status, data[start:], headers, cut=cut)

    @staticmethod
    def _reply(request, status, body, headers, send_body=True, cut=None):
        request.send_response(status)
        for key, value in headers.items():
            request.send_header(key, value)
        request.send_header("Content-Length", str(len(body)))
        if cut is not None:
            request.send_header("Connection", "close")
        request.end_headers()
        if send_body:
            request.wfile.write(body if cut is None else body[:cut])
        if cut is not None:
            request.wfile.flush()
            request.close_connection = True


@pytest.fixture(scope="module")
def server(tiny_repo):
    hub_state = FakeHub(tiny_repo)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            hub_state.handle(self, head=False)

        def do_HEAD(self):
            hub_state.handle(self, head=True)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    hub_state.endpoint = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield hub_state
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)
    assert not thread.is_alive()


@pytest.fixture
def fake_hub(server, monkeypatch):
    from huggingface_hub import constants

    # The suite runs with HF_HUB_OFFLINE=1 so nothing reaches the real hub; these tests talk only
    # to the 127.0.0.1 server, named explicitly as the endpoint of every call.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    server.requests.clear()
    server.drop_once.clear()
    server.corrupt.clear()
    return server


SELECTED = {
    "model_index.json", "scheduler/scheduler_config.json", "text_encoder/config.json",
    "text_encoder/model.fp16.safetensors", "tokenizer/merges.txt", "tokenizer/special_tokens_map.json",
    "tokenizer/tokenizer_config.json", "tokenizer/vocab.json", "unet/config.json", UNET_FP16, "vae/config.json",
    VAE_FP16,
}


# ---------------------------------------------------------------------------------------------
# Tests


def test_download_fetches_only_inference_files_and_diffusers_loads_them_offline(fake_hub, tiny_repo, tmp_path):
    from diffusers import StableDiffusionPipeline

    result = hub.download_model("sd15", cache_dir=tmp_path / "cache", endpoint=fake_hub.endpoint)

    assert set(result.files) == SELECTED
    assert {file for method, file, _ in fake_hub.requests if method == "GET"} == SELECTED
    assert result.variant == "fp16"
    assert result.bytes_total == sum(len(tiny_repo[f]) for f in SELECTED)
    pipe = StableDiffusionPipeline.from_pretrained(result.path, variant="fp16", local_files_only=True,
                                                   dtype=torch.float16)
    served = safetensors.torch.load(tiny_repo[UNET_FP16])
    assert torch.equal(pipe.unet.conv_in.weight, served["conv_in.weight"])
    assert pipe.unet.dtype == torch.float16 and pipe.unet.config.block_out_channels == [32, 64]
    assert pipe.tokenizer("a photo").input_ids[0] == pipe.tokenizer.bos_token_id
    for name in SELECTED:
        assert (Path(result.path) / name).read_bytes() == tiny_repo[name], name


def test_progress_reports_growing_bytes_against_a_fixed_total(fake_hub, tiny_repo, tmp_path):
    reported = []
    result = hub.download_model("sd15", local_dir=tmp_path / "sd15", endpoint=fake_hub.endpoint,
                                job=Job(reported.append))
    assert all(isinstance(e, Progress) and e.phase == "download" and (e.step, e.total) == (e.detail.bytes_done, e.detail.bytes_total)
               for e in reported)
    events: list[hub.DownloadProgress] = [e.detail for e in reported]

    total = sum(len(tiny_repo[f]) for f in SELECTED)
    assert len(events) >= len(SELECTED)
    assert {event.bytes_total for event in events} == {total}
    done = [event.bytes_done for event in events]
    assert done == sorted(done) and done[-1] == total and done[0] < total
    assert {event.current_file for event in events} == SELECTED
    assert all(event.speed_bps >= 0 for event in events)
    assert Path(result.path) == tmp_path / "sd15"
    assert (tmp_path / "sd15" / UNET_FP16).read_bytes() == tiny_repo[UNET_FP16]


def test_dropped_connection_resumes_with_a_range_request(fake_hub, tiny_repo, tmp_path, monkeypatch):
    from huggingface_hub import constants

    # huggingface_hub writes in 10 MB chunks and resumes from the last whole chunk; the tiny
    # weights are 2 MB, so smaller chunks let the cut land after some of them were written.
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 64 * 1024)
    size = len(tiny_repo[UNET_FP16])
    fake_hub.drop_once[UNET_FP16] = size // 2

    result = hub.download_model("sd15", cache_dir=tmp_path / "cache", endpoint=fake_hub.endpoint)

    (first, resumed) = fake_hub.gets(UNET_FP16)
    assert first is None and resumed is not None
    resumed_at = int(resumed.removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_at <= size // 2
    assert (Path(result.path) / UNET_FP16).read_bytes() == tiny_repo[UNET_FP16]


def test_file_corrupted_in_transit_is_named_and_removed(fake_hub, tmp_path):
    fake_hub.corrupt[VAE_FP16] = 99

    with pytest.raises(ArtveilError) as caught:
        hub.download_model("sd15", cache_dir=tmp_path / "cache", endpoint=fake_hub.endpoint)

    assert caught.value.kind == "model"
    assert VAE_FP16 in caught.value.message and "corrupted" in caught.value.message
    assert len(fake_hub.gets(VAE_FP16)) == 2  # fetched once more before giving up
    (sd15,) = [m for m in hub.list_local_models(cache_dir=tmp_path / "cache") if m.name == "sd15"]
    assert VAE_FP16 in sd15.missing and not sd15.present


def test_damage_is_cured_by_one_refetch_in_transit_and_on_disk(fake_hub, tiny_repo, tmp_path):
    fake_hub.corrupt[UNET_FP16] = 1
    result = hub.download_model("sd15", cache_dir=tmp_path / "cache", endpoint=fake_hub.endpoint)
    assert (Path(result.path) / UNET_FP16).read_bytes() == tiny_repo[UNET_FP16]
    assert len(fake_hub.gets(UNET_FP16)) == 2

    # Bit rot in the cache: the next download notices it and fetches that file alone.
    blob = (Path(result.path) / VAE_FP16).resolve()
    damaged = bytearray(blob.read_bytes())
    damaged[100] ^= 0xFF
    blob.write_bytes(bytes(damaged))
    fake_hub.requests.clear()
    hub.download_model("sd15", cache_dir=tmp_path / "cache", endpoint=fake_hub.endpoint)
    assert {file for method, file, _ in fake_hub.requests if method == "GET"} == {VAE_FP16}
    assert (Path(result.path) / VAE_FP16).read_bytes() == tiny_repo[VAE_FP16]


def test_cancel_stops_the_transfer_and_keeps_nothing_half_written(fake_hub, tmp_path):
    def on_progress(event: Progress) -> None:
        if event.detail.current_file == UNET_FP16:
            job.cancel()  # Stop, pressed as the weights begin

    job = Job(on_progress)
    with pytest.raises(Cancelled):
        hub.download_model("sd15", cache_dir=tmp_path / "cache", endpoint=fake_hub.endpoint, job=job)

    assert not list((tmp_path / "cache").rglob("*.incomplete"))
    assert fake_hub.gets(VAE_FP16) == []  # nothing after the cancelled file
    (sd15,) = [m for m in hub.list_local_models(cache_dir=tmp_path / "cache") if m.name == "sd15"]
    assert UNET_FP16 in sd15.missing


def test_list_local_models_names_missing_files_in_cache_and_folders(fake_hub, tmp_path):
    cache = tmp_path / "cache"
    before = {m.name: m for m in hub.list_local_models(cache_dir=cache)}
    assert not before["sd15"].present and before["sd15"].path is None
    assert set(before["sd15"].missing) == set(hub.KNOWN_MODELS["sd15"].required_files)

    result = hub.download_model("sd15", cache_dir=cache, endpoint=fake_hub.endpoint)
    (Path(result.path) / UNET_FP16).unlink()
    folder = tmp_path / "models" / "stable-diffusion-v1-5"
    hub.download_model("sd15", local_dir=folder, endpoint=fake_hub.endpoint)
    (folder / "tokenizer" / "vocab.json").unlink()

    in_cache = {m.name: m for m in hub.list_local_models(cache_dir=cache)}
    assert in_cache["sd15"].missing == (UNET_FP16,) and in_cache["sd15"].source == "cache"
    assert not in_cache["sd21-base"].present and in_cache["sd21-base"].path is None

    # The folder is found by its name; once complete it is the copy to use.
    with_folder = {m.name: m for m in hub.list_local_models(cache_dir=cache, extra_dirs=[tmp_path / "models"])}
    assert len(with_folder["sd15"].missing) == 1 and not with_folder["sd15"].present
    (folder / "tokenizer" / "vocab.json").write_bytes(fake_hub.files["tokenizer/vocab.json"])
    fixed = {m.name: m for m in hub.list_local_models(cache_dir=cache, extra_dirs=[tmp_path / "models"])}
    assert fixed["sd15"].present and fixed["sd15"].missing == ()
    assert fixed["sd15"].path == str(folder) and fixed["sd15"].source == "folder" and fixed["sd15"].variant == "fp16"


def test_unknown_model_and_unknown_repository_are_clear_errors(fake_hub, tmp_path):
    with pytest.raises(ArtveilError, match="Unknown model 'sd99'"):
        hub.download_model("sd99", cache_dir=tmp_path, endpoint=fake_hub.endpoint)
    with pytest.raises(ArtveilError, match="someone/nothing was not found"):
        hub.download_model("someone/nothing", cache_dir=tmp_path, endpoint=fake_hub.endpoint)


def test_cli_lists_models_and_downloads_with_a_progress_line(fake_hub, tmp_path, capsys):
    cache = str(tmp_path / "cache")
    assert cli_models.main(["models", "--cache-dir", cache]) == 0
    listing = capsys.readouterr().out
    assert "sd15" in listing and "sd21-base" in listing and "not downloaded" in listing

    folder = tmp_path / "sd15"
    code = cli_models.main(["models", "download", "sd15", "--dir", str(folder), "--endpoint", fake_hub.endpoint])
    out, err = capsys.readouterr()
    assert code == 0
    assert "B/s" in err and "100%" in err
    assert str(folder) in out
    (folder / VAE_FP16).unlink()

    assert cli_models.main(["models", "--cache-dir", cache, "--extra-dir", str(folder)]) == 0
    listing = capsys.readouterr().out
    sd15_line = next(line for line in listing.splitlines() if line.startswith("sd15"))
    assert "incomplete" in sd15_line and VAE_FP16 in listing

    assert cli_models.main(["models", "download", "nope/nope", "--endpoint", fake_hub.endpoint,
                            "--dir", str(tmp_path / "x")]) == 1
    assert "nope/nope was not found" in capsys.readouterr().err
