"""Model manager: which diffusion models Artveil knows, which are on disk, and fetching them.

Qt-free. Nothing here downloads anything except `download_model`, and only when called: listing
and loading never reach the network on their own.

Downloads go through huggingface_hub, so HF_ENDPOINT (or the `endpoint` argument), HF_HOME /
HF_HUB_CACHE, HF_TOKEN and the hub cache layout all work as in every other Hugging Face tool, and
a model fetched here is found by `from_pretrained(repo_id)` elsewhere. On top of that this module
picks only the files inference needs, reports progress as plain values to an engine.jobs.Job, honours
its Stop, and checks every file's checksum against the hub's own metadata.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Mapping

from engine.errors import ArtveilError
from engine.events import Progress
from engine.jobs import Job

# The only parts of a Stable Diffusion repository that inference uses. safety_checker and
# feature_extractor are left out on purpose: the checker is 1.2 GB and Artveil never runs it.
PIPELINE_FOLDERS = ("scheduler", "text_encoder", "tokenizer", "unet", "vae")
_CONFIG_SUFFIXES = (".json", ".txt")
_FP16_SUFFIX = ".fp16.safetensors"
_PLAIN_SUFFIX = ".safetensors"

_SD_CONFIG_FILES = (
    "model_index.json",
    "scheduler/scheduler_config.json",
    "text_encoder/config.json",
    "tokenizer/merges.txt",
    "tokenizer/tokenizer_config.json",
    "tokenizer/vocab.json",
    "unet/config.json",
    "vae/config.json",
)
# Fetched when the repository has it; recent transformers folds it into tokenizer_config.json.
_SD_OPTIONAL_FILES = ("tokenizer/special_tokens_map.json",)
_SD_WEIGHT_STEMS = (
    "text_encoder/model",
    "unet/diffusion_pytorch_model",
    "vae/diffusion_pytorch_model",
)


@dataclass(frozen=True)
class ModelSpec:
    """A downloadable model and the files a complete local copy must have.

    Each weight is named by its stem; on disk either `<stem>.fp16.safetensors` (preferred, half
    the download) or `<stem>.safetensors` completes it. cross_attention_dim tells apart local
    diffusers folders that carry no repository name (768 for SD 1.x, 1024 for SD 2.x).
    """

    name: str
    repo_id: str
    title: str
    config_files: tuple[str, ...] = _SD_CONFIG_FILES
    weight_stems: tuple[str, ...] = _SD_WEIGHT_STEMS
    optional_files: tuple[str, ...] = _SD_OPTIONAL_FILES
    cross_attention_dim: int | None = None
    # What the window tells a person before they click Download: bytes of the files fetched (fp16
    # weights and configs, as listed on the hub) and the licence they accept by using the weights.
    download_bytes: int | None = None
    licence: str | None = None
    licence_url: str | None = None

    @property
    def required_files(self) -> tuple[str, ...]:
        """The files to fetch, weights named in their preferred fp16 form."""
        return self.config_files + tuple(stem + _FP16_SUFFIX for stem in self.weight_stems)


KNOWN_MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("sd15", "stable-diffusion-v1-5/stable-diffusion-v1-5", "Stable Diffusion 1.5", cross_attention_dim=768,
                  # unet 1.72 GB + text encoder 0.25 GB + VAE 0.17 GB in fp16, and small configs
                  download_bytes=2_133_000_000, licence="CreativeML OpenRAIL-M",
                  licence_url="https://huggingface.co/stable-diffusion-v1-5/stable-diffusion-v1-5/blob/main/LICENSE.md"),
        ModelSpec("sd21-base", "stabilityai/stable-diffusion-2-1-base", "Stable Diffusion 2.1 base (512 px)",
                  cross_attention_dim=1024, download_bytes=2_600_000_000, licence="CreativeML OpenRAIL++-M"),
    )
}


@dataclass(frozen=True)
class DownloadProgress:
    """One progress report for a whole model download.

    bytes_done and bytes_total count bytes over all files of the model (files already on disk
    count as done). speed_bps is bytes per second over the last few seconds, 0.0 until measured;
    eta_s is seconds left, None until the speed has settled.
    """

    bytes_done: int
    bytes_total: int
    speed_bps: float
    eta_s: float | None
    current_file: str


def download_event(progress: DownloadProgress) -> Progress:
    """A download's progress as the event stream carries it: Progress("download", bytes done, bytes total)."""
    return Progress("download", progress.bytes_done, progress.bytes_total, detail=progress)


@dataclass(frozen=True)
class RemoteFile:
    """A file as the hub describes it: size in bytes and the checksum to verify it against.

    LFS files (all weights) carry the sha256 of their content; small git files carry their git
    blob id, the sha1 of "blob <size>\\0" + content.
    """

    path: str
    size: int
    sha256: str | None = None
    git_sha1: str | None = None


@dataclass(frozen=True)
class DownloadResult:
    """Where a finished, verified download lives.

    path is the folder to give `from_pretrained(path, variant=variant, local_files_only=True)`:
    the snapshot folder in the hub cache, or local_dir.
    """

    name: str
    repo_id: str
    path: str
    files: tuple[str, ...]
    variant: str | None
    bytes_total: int


@dataclass(frozen=True)
class LocalModel:
    """What is on disk for one known model.

    path is the most complete copy found (None if none at all); missing lists the files that
    copy still lacks, weights named in their fp16 form; source is "cache" (hub cache) or
    "folder" (a diffusers folder from extra_dirs).
    """

    name: str
    repo_id: str
    title: str
    present: bool
    path: str | None
    missing: tuple[str, ...]
    source: str | None
    variant: str | None


# ---------------------------------------------------------------------------------------------
# Which files to fetch


def resolve_model(name_or_repo: str) -> ModelSpec:
    """The known model of that short name or repository id; any other "owner/name" is taken as
    an SD-layout diffusers repository."""
    if name_or_repo in KNOWN_MODELS:
        return KNOWN_MODELS[name_or_repo]
    for spec in KNOWN_MODELS.values():
        if spec.repo_id == name_or_repo:
            return spec
    if name_or_repo.count("/") == 1 and all(name_or_repo.split("/")):
        return ModelSpec(name_or_repo, name_or_repo, name_or_repo)
    known = ", ".join(KNOWN_MODELS)
    raise ArtveilError("config", f"Unknown model '{name_or_repo}'. Known models: {known}; or give a repository id (owner/name).")


def select_files(spec: ModelSpec, available: Iterable[RemoteFile]) -> tuple[list[RemoteFile], str | None]:
    """Pick from a repository listing the files inference needs, fp16 weights where offered.

    Returns the files and the diffusers variant ("fp16" when every weight is fp16, else None).
    Raises ArtveilError("model") naming any required file the repository lacks.
    """
    by_path = {f.path: f for f in available}
    chosen: list[RemoteFile] = []
    missing: list[str] = []
    for path in spec.config_files:
        if path in by_path:
            chosen.append(by_path[path])
        else:
            missing.append(path)
    chosen += [by_path[path] for path in spec.optional_files if path in by_path]

    fp16_everywhere = True
    for stem in spec.weight_stems:
        if stem + _FP16_SUFFIX in by_path:
            chosen.append(by_path[stem + _FP16_SUFFIX])
        elif stem + _PLAIN_SUFFIX in by_path:
            chosen.append(by_path[stem + _PLAIN_SUFFIX])
            fp16_everywhere = False
        else:
            missing.append(stem + _PLAIN_SUFFIX)
    if missing:
        raise ArtveilError(
            "model",
            f"{spec.repo_id} lacks files Artveil needs (safetensors weights and configs): {', '.join(missing)}.",
        )
    # diffusers loads a variant for all components or none, so mixed repos load as plain.
    if not fp16_everywhere:
        chosen = [f for f in chosen if not f.path.endswith(_FP16_SUFFIX)]
        for stem in spec.weight_stems:
            if not any(f.path == stem + _PLAIN_SUFFIX for f in chosen):
                if stem + _PLAIN_SUFFIX not in by_path:
                    raise ArtveilError(
                        "model", f"{spec.repo_id} mixes fp16-only and fp32-only weights; no single variant loads."
                    )
                chosen.append(by_path[stem + _PLAIN_SUFFIX])
    return chosen, ("fp16" if fp16_everywhere else None)


# ---------------------------------------------------------------------------------------------
# Checksums


def file_checksum_error(path: str | os.PathLike, remote: RemoteFile) -> str | None:
    """Why the file at path is not the hub's file, or None when size and checksum match."""
    size = os.path.getsize(path)
    if size != remote.size:
        return f"size {size} bytes, expected {remote.size}"
    if remote.sha256:
        digest = hashlib.sha256()
    elif remote.git_sha1:
        digest = hashlib.sha1()
        digest.update(f"blob {size}\0".encode())
    else:
        return None
    with open(path, "rb") as handle:
        while chunk := handle.read(4 * 1024 * 1024):
            digest.update(chunk)
    expected = (remote.sha256 or remote.git_sha1 or "").lower()
    if digest.hexdigest() != expected:
        kind = "sha256" if remote.sha256 else "git sha1"
        return f"{kind} {digest.hexdigest()[:12]}…, expected {expected[:12]}…"
    return None


# ---------------------------------------------------------------------------------------------
# Progress


class _ProgressTracker:
    """Turns huggingface_hub's per-file byte counts into whole-model DownloadProgress, for job.report.

    Reports are throttled to about 20 a second; the speed is measured over a sliding window so
    that it follows the connection, and no ETA is given before one second of transfer.
    """

    _MIN_INTERVAL_S = 0.05
    _WINDOW_S = 5.0
    _WARMUP_S = 1.0

    def __init__(self, bytes_total: int, job: Job):
        self.bytes_total = bytes_total
        self._job = job
        self._done_before_file = 0
        self._in_file = 0
        self._current = ""
        self._samples: deque[tuple[float, int]] = deque()
        self._transfer_started: float | None = None
        self._last_report = 0.0
        self._lock = threading.Lock()

    def start_file(self, path: str) -> None:
        self.check_cancel()
        with self._lock:
            self._current = path
            self._in_file = 0
        self.report(force=True)

    def add(self, n: int) -> None:
        """n bytes of the current file arrived (negative when huggingface_hub restarts a file)."""
        now = time.monotonic()
        with self._lock:
            self._in_file += n
            if self._transfer_started is None:
                self._transfer_started = now
            self._samples.append((now, self.bytes_done))
            while len(self._samples) > 2 and now - self._samples[0][0] > self._WINDOW_S:
                self._samples.popleft()
        self.check_cancel()
        self.report()

    def finish_file(self, size: int) -> None:
        with self._lock:
            self._done_before_file += size
            self._in_file = 0
        self.report(force=True)

    def restart_file(self) -> None:
        with self._lock:
            self._in_file = 0

    @property
    def bytes_done(self) -> int:
        return min(self._done_before_file + max(self._in_file, 0), self.bytes_total)

    def check_cancel(self) -> None:
        self._job.check("Download stopped by the user; finished files are kept.")

    def _speed(self, now: float) -> float:
        if len(self._samples) < 2:
            return 0.0
        (t0, b0), (t1, b1) = self._samples[0], self._samples[-1]
        return (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0

    def report(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_report < self._MIN_INTERVAL_S:
            return
        self._last_report = now
        with self._lock:
            speed = self._speed(now)
            done = self.bytes_done
            warmed_up = self._transfer_started is not None and now - self._transfer_started >= self._WARMUP_S
            eta = (self.bytes_total - done) / speed if speed > 0 and warmed_up else None
            event = DownloadProgress(done, self.bytes_total, speed, eta, self._current)
        self._job.report(download_event(event))

    def bar_class(self) -> type:
        """A tqdm stand-in for huggingface_hub's `tqdm_class` that feeds this tracker."""
        tracker = self

        class _TrackerBar:
            # update_transfer existing makes huggingface_hub's Xet path use one bar for both
            # counts; only update() (bytes written to disk) is counted, so nothing counts twice.
            def __init__(self, *args, **kwargs):
                self.n = kwargs.get("initial") or 0
                self.total = kwargs.get("total")
                self.format_dict: dict = {}

            def update(self, n: int = 1) -> None:
                self.n += n
                tracker.add(n)

            def update_transfer(self, n: int = 1) -> None:
                pass

            def set_postfix_str(self, *args, **kwargs) -> None:
                pass

            set_transfer_postfix_str = set_postfix_str
            set_description = set_postfix_str
            refresh = set_postfix_str
            close = set_postfix_str

            def __enter__(self):
                return self

            def __exit__(self, *exc) -> None:
                pass

            def __getattr__(self, name: str):
                # huggingface_hub calls more tqdm methods in some versions; none matter here.
                return lambda *args, **kwargs: None

        return _TrackerBar


# ---------------------------------------------------------------------------------------------
# Download


def _hub_error(exc: Exception, repo_id: str, endpoint: str | None) -> ArtveilError:
    """A one-line message for a person, from whatever huggingface_hub or the network raised."""
    from huggingface_hub import errors as hub_errors

    where = endpoint or os.environ.get("HF_ENDPOINT") or "huggingface.co"
    if isinstance(exc, hub_errors.OfflineModeIsEnabled):
        return ArtveilError("config", "Downloads are switched off (HF_HUB_OFFLINE is set).")
    if isinstance(exc, hub_errors.GatedRepoError):
        return ArtveilError("model", f"{repo_id} is gated: accept its licence on the hub and log in (HF_TOKEN), then retry.")
    if isinstance(exc, hub_errors.RepositoryNotFoundError):
        return ArtveilError("model", f"{repo_id} was not found on {where} (or needs a login).")
    if isinstance(exc, hub_errors.RevisionNotFoundError):
        return ArtveilError("model", f"{repo_id} has no such revision on {where}.")
    if isinstance(exc, hub_errors.HfHubHTTPError):
        status = exc.response.status_code if exc.response is not None else "?"
        return ArtveilError("model", f"{where} answered HTTP {status} for {repo_id}; try again later.")
    if isinstance(exc, OSError) and getattr(exc, "errno", None) == 28:
        return ArtveilError("output", "The disk is full; free some space and download again (finished files are kept).")
    return ArtveilError("model", f"Could not download {repo_id} from {where}: {exc}. Check the connection and retry.")


def fetch_file_list(spec: ModelSpec, *, revision: str = "main", endpoint: str | None = None,
                    token: str | bool | None = None) -> tuple[str, list[RemoteFile]]:
    """The repository's commit id and every file in it with size and checksum (one hub call)."""
    from huggingface_hub import HfApi

    try:
        info = HfApi(endpoint=endpoint, token=token).model_info(spec.repo_id, revision=revision, files_metadata=True)
    except Exception as exc:  # every failure here is the hub or the network; say which, in words
        raise _hub_error(exc, spec.repo_id, endpoint) from exc
    files = []
    for sibling in info.siblings or []:
        lfs = sibling.lfs
        files.append(RemoteFile(
            path=sibling.rfilename,
            size=lfs.size if lfs else (sibling.size or 0),
            sha256=lfs.sha256 if lfs else None,
            git_sha1=None if lfs else sibling.blob_id,
        ))
    return info.sha or revision, files


def download_model(
    name_or_repo: str,
    *,
    cache_dir: str | os.PathLike | None = None,
    local_dir: str | os.PathLike | None = None,
    job: Job | None = None,
    endpoint: str | None = None,
    revision: str = "main",
    token: str | bool | None = None,
) -> DownloadResult:
    """Fetch the inference files of a model, verify each against the hub's checksums, return where.

    name_or_repo: a KNOWN_MODELS name ("sd15") or a diffusers repository id. Files land in the hub
    cache (cache_dir, default HF_HUB_CACHE) or, with local_dir, in that folder as a plain diffusers
    layout. endpoint overrides HF_ENDPOINT (a mirror). job (an engine.jobs.Job) receives DownloadProgress
    through job.report about 20 times a second; Stop on it ends the transfer at the next chunk with
    Cancelled. Files already present and intact are not fetched again; a dropped connection is resumed
    with an HTTP Range request. A file whose checksum fails is fetched once more, then refused with
    ArtveilError("model") naming it.
    """
    from huggingface_hub import hf_hub_download

    spec = resolve_model(name_or_repo)
    commit, listing = fetch_file_list(spec, revision=revision, endpoint=endpoint, token=token)
    files, variant = select_files(spec, listing)
    tracker = _ProgressTracker(sum(f.size for f in files), job or Job())
    bar_class = tracker.bar_class()

    def fetch(remote: RemoteFile, force: bool) -> str:
        try:
            return hf_hub_download(
                spec.repo_id, remote.path, revision=revision, cache_dir=cache_dir, local_dir=local_dir,
                endpoint=endpoint, token=token, tqdm_class=bar_class, force_download=force,
            )
        except ArtveilError:
            raise
        except Exception as exc:  # network and hub failures become one readable line
            raise _hub_error(exc, spec.repo_id, endpoint) from exc

    paths: dict[str, str] = {}
    for remote in files:
        tracker.start_file(remote.path)
        path = fetch(remote, force=False)
        problem = file_checksum_error(path, remote)
        if problem is not None:
            # Bytes damaged on the way or on disk: one clean fetch usually cures it.
            tracker.restart_file()
            path = fetch(remote, force=True)
            problem = file_checksum_error(path, remote)
            if problem is not None:
                _discard(path)
                raise ArtveilError(
                    "model",
                    f"{remote.path} from {spec.repo_id} is corrupted ({problem}) even after downloading it again; "
                    "the file was removed. Try again later or another mirror.",
                )
        paths[remote.path] = path
        tracker.finish_file(remote.size)

    root = Path(local_dir) if local_dir is not None else _snapshot_root(paths["model_index.json"], "model_index.json")
    return DownloadResult(spec.name, spec.repo_id, str(root), tuple(f.path for f in files), variant, tracker.bytes_total)


def _discard(path: str) -> None:
    """Remove a bad file: in the hub cache both the blob and the snapshot link to it."""
    real = os.path.realpath(path)
    for victim in {path, real}:
        try:
            os.remove(victim)
        except FileNotFoundError:
            pass


def _snapshot_root(file_path: str, relative: str) -> Path:
    root = Path(file_path)
    for _ in Path(relative).parts:
        root = root.parent
    return root


# ---------------------------------------------------------------------------------------------
# What is on disk (never touches the network)


def download_destination(cache_dir: str | os.PathLike | None = None) -> str:
    """The folder a download lands in: cache_dir, else the hub cache (HF_HUB_CACHE, HF_HOME)."""
    if cache_dir is not None:
        return str(Path(cache_dir).expanduser())
    from huggingface_hub import constants

    return str(Path(constants.HF_HUB_CACHE).expanduser())


def _missing_in(spec: ModelSpec, exists: Callable[[str], bool]) -> tuple[tuple[str, ...], str | None]:
    missing = [path for path in spec.config_files if not exists(path)]
    fp16 = [exists(stem + _FP16_SUFFIX) for stem in spec.weight_stems]
    plain = [exists(stem + _PLAIN_SUFFIX) for stem in spec.weight_stems]
    if all(fp16):
        variant = "fp16"
    elif all(plain):
        variant = None
    else:
        variant = "fp16" if any(fp16) or not any(plain) else None
        suffix = _FP16_SUFFIX if variant == "fp16" else _PLAIN_SUFFIX
        missing += [stem + suffix for stem in spec.weight_stems if not exists(stem + suffix)]
    return tuple(missing), variant


def _cached_copy(spec: ModelSpec, cache_dir) -> LocalModel | None:
    from huggingface_hub import try_to_load_from_cache

    found: dict[str, str] = {}

    def exists(path: str) -> bool:
        hit = try_to_load_from_cache(spec.repo_id, path, cache_dir=cache_dir)
        if isinstance(hit, str) and os.path.isfile(hit):
            found[path] = hit
            return True
        return False

    missing, variant = _missing_in(spec, exists)
    if not found:
        return None
    relative, local = next(iter(found.items()))
    root = _snapshot_root(local, relative)
    return LocalModel(spec.name, spec.repo_id, spec.title, not missing, str(root), missing, "cache", variant)


def _folder_matches(spec: ModelSpec, folder: Path) -> bool:
    if folder.name in (spec.name, spec.repo_id.split("/")[-1]):
        return True
    try:
        unet = json.loads((folder / "unet" / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return spec.cross_attention_dim is not None and unet.get("cross_attention_dim") == spec.cross_attention_dim


def _candidate_folders(extra_dirs: Iterable[str | os.PathLike]) -> list[Path]:
    """Diffusers folders (those with model_index.json) given directly or one level down."""
    found = []
    for entry in extra_dirs:
        base = Path(entry).expanduser()
        if (base / "model_index.json").is_file():
            found.append(base)
        elif base.is_dir():
            found += sorted(child for child in base.iterdir() if (child / "model_index.json").is_file())
    return found


def list_local_models(
    cache_dir: str | os.PathLike | None = None,
    extra_dirs: Iterable[str | os.PathLike] = (),
    models: Mapping[str, ModelSpec] | None = None,
) -> list[LocalModel]:
    """For each known model, the most complete copy on disk and what it still lacks.

    Looks in the hub cache (cache_dir, default HF_HUB_CACHE) and in diffusers folders under
    extra_dirs. Reads no file contents beyond small configs and never uses the network.
    """
    folders = _candidate_folders(extra_dirs)
    report = []
    for spec in (models or KNOWN_MODELS).values():
        copies = []
        cached = _cached_copy(spec, cache_dir)
        if cached is not None:
            copies.append(cached)
        for folder in folders:
            if _folder_matches(spec, folder):
                missing, variant = _missing_in(spec, lambda path, f=folder: (f / path).is_file())
                copies.append(LocalModel(spec.name, spec.repo_id, spec.title, not missing, str(folder), missing,
                                         "folder", variant))
        if copies:
            report.append(min(copies, key=lambda copy: len(copy.missing)))
        else:
            report.append(LocalModel(spec.name, spec.repo_id, spec.title, False, None, spec.required_files, None, None))
    return report
