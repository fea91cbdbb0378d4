"""`--backend argos`: an installed Argos Translate package (the default; CPU, or CUDA with --device cuda).

`ArgosBackend` uses an installed Argos Translate package but drives its
CTranslate2 model directly: every sentence of a whole batch goes through one
`Translator.translate_batch` call (token-budget batches, all cores), instead of
one `argostranslate.translate.translate()` call per string. Tokenisation,
sentence splitting, decoding options and detokenisation follow argos, so the
output equals argos' own for the same package.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..config import ConfigError
from .ct2 import Ct2Runner, model_digest

INSTALL_HINT = (
    "install one with `argospm update && argospm install translate-{src}_{tgt}` on a machine with network, "
    "or pass --package FILE.argosmodel (a package file copied from such a machine)"
)


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
    """An argos package run through CTranslate2 in large batches (argos' tokenizer and sentence splitter)."""

    sentinels = False

    def __init__(self, src: str = "en", tgt: str = "zh", package_file: str | None = None,
                 workers: int | None = None, beam_size: int = 4, device: str = "cpu", compute_type: str = "default"):
        self.pkg = find_argos_package(src, tgt, package_file)
        model_dir = Path(self.pkg.package_path) / "model"
        digest = model_digest(model_dir) if (model_dir / "model.bin").exists() else "?"
        self.id = f"argos:{self.pkg.from_code}-{self.pkg.to_code}:{self.pkg.package_version}:{digest}:beam{beam_size}"
        self.runner = Ct2Runner(model_dir, self.pkg.tokenizer.encode, self.pkg.tokenizer.decode, self._split,
                                device, workers, beam_size, self.pkg.target_prefix or None, compute_type=compute_type)
        self._sentencizer = None

    def _split(self, text: str) -> list[str]:
        if self._sentencizer is None:
            from argostranslate.translate import PackageTranslation

            self._sentencizer = PackageTranslation(None, None, self.pkg).sentencizer
        return self._sentencizer.split_sentences(text)

    def translate_batch(self, texts: list[str]) -> list[str]:
        return self.runner.translate_batch(texts)
