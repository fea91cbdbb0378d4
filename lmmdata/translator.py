"""Translation backends behind one small interface: `translate_batch(list[str]) -> list[str]`.

`ArgosBackend` uses an installed Argos Translate package but drives its
CTranslate2 model directly: every sentence of a whole batch goes through one
`Translator.translate_batch` call (token-budget batches, all cores), instead of
one `argostranslate.translate.translate()` call per string. Tokenisation,
sentence splitting, decoding options and detokenisation follow argos, so the
output equals argos' own for the same package.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Protocol

from .config import ConfigError

INSTALL_HINT = (
    "install one with `argospm update && argospm install translate-{src}_{tgt}` on a machine with network, "
    "or pass --package FILE.argosmodel (a package file copied from such a machine)"
)


class Backend(Protocol):
    """What `lmmdata translate` needs from a translation engine."""

    id: str  # backend + model identity; part of every cache key

    def translate_batch(self, texts: list[str]) -> list[str]: ...


def argos_package_dirs() -> list[Path]:
    """Where Argos Translate looks for installed packages, resolved as argos does, without importing it
    (importing argostranslate creates its data, config and cache directories in the user's home)."""
    home = Path(os.environ["SNAP_USER_DATA"]) if "SNAP" in os.environ else Path.home()
    data_dir = Path(os.getenv("XDG_DATA_HOME", home / ".local" / "share")) / "argos-translate"
    settings = Path(os.getenv("XDG_CONFIG_HOME", home / ".config")) / "argos-translate" / "settings.json"
    configured = os.getenv("ARGOS_PACKAGES_DIR")
    if configured is None and settings.is_file():
        try:
            configured = json.loads(settings.read_text(encoding="utf-8")).get("ARGOS_PACKAGES_DIR")
        except (ValueError, AttributeError, OSError):
            configured = None
    dirs = [Path(configured) if configured else data_dir / "packages"]
    if "SNAP" in os.environ:
        dirs.append(Path(os.environ["SNAP"]) / "snap_custom" / "packages")
    return dirs


def _argos_package_present(src: str, tgt: str) -> bool:
    """Cheap look at the package directories' metadata.json files (argos' own test, without argos)."""
    for d in argos_package_dirs():
        for meta in d.glob("*/metadata.json") if d.is_dir() else ():
            try:
                info = json.loads(meta.read_text(encoding="utf-8"))
            except (ValueError, OSError):
                continue
            if isinstance(info, dict) and info.get("from_code") == src and info.get("to_code") == tgt:
                return True
    return False


def find_argos_package(src: str, tgt: str, package_file: str | None = None):
    """The installed argos package for src->tgt, installing `package_file` first if given."""
    if not package_file and not _argos_package_present(src, tgt):
        raise ConfigError(f"no {src}->{tgt} Argos Translate package is installed; "
                          + INSTALL_HINT.format(src=src, tgt=tgt))
    import argostranslate.package as ap

    if package_file:
        if not Path(package_file).is_file():
            raise ConfigError(f"--package {package_file}: no such file")
        try:
            ap.install_from_path(Path(package_file))
        except Exception as e:  # argos raises bare Exception for a bad archive
            raise ConfigError(f"--package {package_file}: cannot install it as an Argos package ({e})") from None
    for pkg in ap.get_installed_packages():
        if pkg.type == "translate" and pkg.from_code == src and pkg.to_code == tgt:
            return pkg
    raise ConfigError(f"no {src}->{tgt} Argos Translate package is installed; " + INSTALL_HINT.format(src=src, tgt=tgt))


class ArgosBackend:
    """An argos package run through CTranslate2 in large batches."""

    def __init__(self, src: str = "en", tgt: str = "zh", package_file: str | None = None,
                 workers: int | None = None, beam_size: int = 4, max_batch_tokens: int = 4096):
        self.pkg = find_argos_package(src, tgt, package_file)
        model_bin = Path(self.pkg.package_path) / "model" / "model.bin"
        digest = hashlib.sha256(model_bin.read_bytes()).hexdigest()[:16] if model_bin.exists() else "?"
        self.id = f"argos:{self.pkg.from_code}-{self.pkg.to_code}:{self.pkg.package_version}:{digest}:beam{beam_size}"
        self.workers = workers or os.cpu_count() or 1
        self.beam_size, self.max_batch_tokens = beam_size, max_batch_tokens
        self.max_tokens = 510  # tokens per piece; lowered to the model's own limit the first time it is exceeded
        self._translator = None
        self._sentencizer = None

    def _load(self) -> None:
        import ctranslate2
        from argostranslate.translate import PackageTranslation

        cores = os.cpu_count() or 1
        inter = max(1, min(self.workers, cores))
        self._translator = ctranslate2.Translator(
            str(Path(self.pkg.package_path) / "model"), device="cpu",
            inter_threads=inter, intra_threads=max(1, cores // inter))
        self._sentencizer = PackageTranslation(None, None, self.pkg).sentencizer

    def _pieces(self, tokens: list[str]) -> list[list[str]]:
        n = self.max_tokens
        return [tokens[k:k + n] for k in range(0, len(tokens), n)] or [tokens]

    def _translate(self, tokens: list[list[str]]):
        prefix = [[self.pkg.target_prefix]] * len(tokens) if self.pkg.target_prefix else None
        return self._translator.translate_batch(
            tokens, target_prefix=prefix, replace_unknowns=True, max_batch_size=self.max_batch_tokens,
            batch_type="tokens", beam_size=self.beam_size, num_hypotheses=1, length_penalty=0.2)

    def translate_batch(self, texts: list[str]) -> list[str]:
        if not texts:
            return []
        if self._translator is None:
            self._load()
        # each text -> sentences -> pieces of at most `max_tokens` tokens (a "sentence" can be any length: a
        # long code line, an unbroken string); pieces are translated alone and joined back in order
        sentences: list[list[list[str]]] = [
            [piece for s in self._sentencizer.split_sentences(t) for piece in self._pieces(self.pkg.tokenizer.encode(s))]
            for t in texts]
        tokens = [piece for group in sentences for piece in group]
        try:
            results = self._translate(tokens)
        except RuntimeError as e:  # the model's position table is shorter than a piece: learn its length, retry
            limit = re.search(r"positions >= (\d+)", str(e))
            if not limit or self.max_tokens <= int(limit.group(1)) - 2:
                raise
            self.max_tokens = int(limit.group(1)) - 2
            return self.translate_batch(texts)
        out, i = [], 0
        for group in sentences:
            toks = [t for r in results[i: i + len(group)] for t in r.hypotheses[0]]
            i += len(group)
            value = self.pkg.tokenizer.decode(toks)
            if self.pkg.target_prefix and value.startswith(self.pkg.target_prefix):
                value = value[len(self.pkg.target_prefix):]
            out.append(value[1:] if value.startswith(" ") else value)
        return out
